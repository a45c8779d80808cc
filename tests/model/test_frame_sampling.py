"""Sampling one frame with cached context (`world.sample_frame`) is the plain flow-matching loop
over the whole window: frame p alone, with the earlier frames' keys and values computed once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drivesim.model.dynamics import Dynamics
from drivesim.model.world import sample_frame


def _reference(dyn, bc, bo, motion, layout, layout_on, p, key, cfg):
    """The Euler loop over the whole window (each step runs every frame)."""
    B, W = bc.shape[:2]
    kc, ko = jax.random.split(key)
    xc = jax.random.normal(kc, bc.shape[:1] + (1,) + bc.shape[2:])[:, 0]
    xo = jax.random.normal(ko, bo.shape[:1] + (1,) + bo.shape[2:])[:, 0]
    pos = jnp.arange(W)
    dt = 1.0 / cfg.sample_steps
    for s in range(cfg.sample_steps):
        tau = jnp.broadcast_to(jnp.where(pos < p, 1.0, jnp.where(pos == p, s * dt, 0.0)), (B, W))
        vc, vo = dyn(bc.at[:, p].set(xc), bo.at[:, p].set(xo), tau, motion, layout, layout_on)
        xc, xo = xc + dt * vc[:, p], xo + dt * vo[:, p]
    return xc, xo


@pytest.mark.slow
@pytest.mark.parametrize("with_layout", [True, False])
def test_cached_context_sampling_is_the_whole_window_loop(tiny_model_config, with_layout):
    cfg = tiny_model_config
    dyn = Dynamics(cfg, rngs=nnx.Rngs(0))
    # adaLN-zero starts at zero: give every weight a random value so that every path matters
    state = nnx.state(dyn, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    nnx.update(
        dyn, jax.tree.unflatten(tree, [0.2 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)])
    )
    B, W = 2, cfg.window
    r, c = cfg.cam_grid
    g = cfg.occ_latent_grid
    rng = np.random.default_rng(0)
    bc = jnp.asarray(rng.normal(size=(B, W, cfg.cameras, r, c, cfg.cam_latent)), jnp.float32)
    bo = jnp.asarray(rng.normal(size=(B, W, g, g, cfg.occ_latent)), jnp.float32)
    motion = jnp.asarray(rng.normal(size=(B, W, 3)), jnp.float32)
    layout = jnp.asarray(rng.integers(0, 9, (B, W, cfg.occ_grid, cfg.occ_grid)), jnp.int32) if with_layout else None
    on = jnp.asarray(rng.uniform(size=(B, W)) < 0.5) if with_layout else None
    fast = jax.jit(lambda bc, p, k: sample_frame(dyn, bc, bo, motion, layout, on, p, k, cfg))
    for p in (0, W - 1):
        key = jax.random.key(p)
        want = _reference(dyn, bc, bo, motion, layout, on, p, key, cfg)
        got = fast(bc, jnp.int32(p), key)
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
        # and the frames after p do not matter
        other = fast(bc.at[:, p + 1 :].set(9.0), jnp.int32(p), key)
        np.testing.assert_allclose(np.asarray(other[0]), np.asarray(got[0]), rtol=1e-4, atol=1e-4)

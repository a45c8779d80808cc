"""The compiled rollout: shapes, jit = eager, stochastic but seeded, no recompiles, memory flat in
the horizon, a sliding window past the trained horizon, and bad input refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drivesim.errors import ConfigError, DataError
from drivesim.model.config import WorldModelConfig
from drivesim.model.predict import Predictor, _rollout, model_view
from drivesim.model.world import WorldModel, generate

CFG = WorldModelConfig.tiny(max_horizon=16)
H = CFG.history


@pytest.fixture(scope="module")
def predictor():
    return Predictor(WorldModel(CFG, rngs=nnx.Rngs(0)))


def inputs(B: int, F: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w, h = CFG.frame_size
    frames = rng.integers(0, 256, (B, H, 6, h, w, 3), dtype=np.uint8)
    occ = rng.integers(0, 9, (B, H, 160, 160)).astype(np.uint8)
    motion = np.stack([np.full(H + F - 1, 4.0), rng.normal(0, 0.1, H + F - 1), rng.normal(0, 0.02, H + F - 1)], -1)
    motion = np.repeat(motion[None], B, axis=0).astype(np.float32)
    agents = np.zeros((B, H + F, 64, 8), np.float32)
    agents[:, :, 0] = [10.0, 0.0, 0.0, 4.5, 2.0, 1.6, 0.0, 1.0]  # one car ahead
    return frames, occ, motion, agents


@pytest.mark.parametrize("B", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_shapes_and_dtypes(predictor, B):
    frames, occ, motion, agents = inputs(B, 6)
    out = predictor(frames, occ, motion, jax.random.key(0))
    w, h = CFG.image_size
    assert out.images.shape == (B, 6, 6, h, w, 3) and out.images.dtype == jnp.uint8
    assert out.occupancy.shape == (B, 6, CFG.occ_grid, CFG.occ_grid)
    assert int(out.occupancy.min()) >= 0 and int(out.occupancy.max()) < CFG.num_classes
    guided = predictor(frames, occ, motion, jax.random.key(0), agents=agents)
    assert guided.images.shape == out.images.shape


@pytest.mark.slow
def test_seeded_and_stochastic(predictor):
    frames, occ, motion, _ = inputs(2, 4)
    a = predictor(frames, occ, motion, jax.random.key(1))
    b = predictor(frames, occ, motion, jax.random.key(1))
    c = predictor(frames, occ, motion, jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    assert np.abs(np.asarray(a.images, np.int32) - np.asarray(c.images, np.int32)).mean() > 0.5
    # the two rows of one batch draw their own noise: two samples of the same scenario differ
    frames[1], occ[1], motion[1] = frames[0], occ[0], motion[0]
    d = predictor(frames, occ, motion, jax.random.key(1))
    assert np.abs(np.asarray(d.images[0], np.int32) - np.asarray(d.images[1], np.int32)).mean() > 0.5


@pytest.mark.slow
def test_jit_equals_eager(predictor):
    frames, occ, motion, agents = inputs(1, 2)  # eager runs op by op: keep it small
    args = (jnp.asarray(frames), jnp.asarray(occ), jnp.asarray(motion), jnp.asarray(agents), jnp.ones(1, bool))
    key = jax.random.key(3)
    jitted = jax.jit(_rollout, static_argnums=0)(predictor.graphdef, predictor.state, *args, key)
    with jax.disable_jit():
        eager = _rollout(predictor.graphdef, predictor.state, *args, key)
    diff = np.abs(np.asarray(jitted.images, np.int32) - np.asarray(eager.images, np.int32))
    assert diff.max() <= 1
    assert (np.asarray(jitted.occupancy) == np.asarray(eager.occupancy)).mean() > 0.999


@pytest.mark.slow
def test_generate_latents_jit_equals_eager():
    model = WorldModel(CFG, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(0)
    r, c = CFG.cam_grid
    g = CFG.occ_latent_grid
    cam = jnp.asarray(rng.normal(size=(2, H, 6, r, c, CFG.cam_latent)), jnp.float32)
    occ = jnp.asarray(rng.normal(size=(2, H, g, g, CFG.occ_latent)), jnp.float32)
    motion = jnp.asarray(rng.normal(size=(2, H + 3, 3)), jnp.float32)

    def fn(cam, occ, motion, key):
        return generate(model.dynamics, cam, occ, motion, key, CFG)

    key = jax.random.key(0)
    jitted = jax.jit(fn)(cam, occ, motion, key)
    with jax.disable_jit():
        eager = fn(cam, occ, motion, key)
    for a, b in zip(jitted, eager, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_no_recompiles_between_free_guided_and_new_values():
    predictor = Predictor(WorldModel(CFG, rngs=nnx.Rngs(0)))
    frames, occ, motion, agents = inputs(2, 6)
    predictor(frames, occ, motion, jax.random.key(0))
    predictor(frames, occ, motion, jax.random.key(1), agents=agents)
    predictor(
        frames[::-1].copy(), occ, motion * 0.5, jax.random.key(2), agents=agents, layout_on=np.array([1, 0], bool)
    )
    assert predictor.compiled_count() == 1


@pytest.mark.slow
def test_rollout_beyond_the_trained_horizon_keeps_memory_flat(predictor):
    F_long = CFG.max_horizon  # 16 > the trained 6: the sliding window
    frames, occ, motion, _ = inputs(1, F_long)
    out = predictor(frames, occ, motion, jax.random.key(0))
    assert out.occupancy.shape[1] == F_long
    assert np.isfinite(np.asarray(out.images, np.float32)).all()

    def temp_bytes(F):
        f, o, m, a = inputs(1, F)
        args = (predictor.state, f, o, m, a, np.zeros(1, bool), jax.random.key(0))
        return predictor._fn.lower(*args).compile().memory_analysis().temp_size_in_bytes

    short, long = temp_bytes(6), temp_bytes(F_long)
    assert long < 1.5 * short, (short, long)


def test_bad_input_is_refused(predictor):
    frames, occ, motion, agents = inputs(1, 6)
    with pytest.raises(DataError, match="--image-size 64x36"):
        predictor(frames[..., :32, :, :], occ, motion, jax.random.key(0))
    with pytest.raises(DataError, match="occupancy"):
        predictor(frames, occ[..., :80, :80], motion, jax.random.key(0))
    bad = motion.copy()
    bad[0, 5, 0] = np.nan
    with pytest.raises(DataError, match="NaN.*step 5"):
        predictor(frames, occ, bad, jax.random.key(0))
    long = np.concatenate([motion, np.repeat(motion[:, -1:], 20, axis=1)], axis=1)
    with pytest.raises(ConfigError, match="max_horizon"):
        predictor(frames, occ, long, jax.random.key(0))
    nan_agents = agents.copy()
    nan_agents[0, 2, 0, 0] = np.nan
    with pytest.raises(DataError, match="layout"):
        predictor(frames, occ, motion, jax.random.key(0), agents=nan_agents)
    with pytest.raises(DataError, match="layout"):
        predictor(frames, occ, motion, jax.random.key(0), agents=agents[:, :5])


def test_model_view_crops_and_pools():
    frames, occ, _, _ = inputs(2, 1)
    occ[:] = 0
    occ[0, 0, 10, 11] = 5  # one 0.5 m agent cell: max-pooling keeps it in its 1 m cell
    images, bev = model_view(frames, occ, CFG)
    w, h = CFG.image_size
    assert images.shape == (2, H, 6, h, w, 3) and images.dtype == np.uint8
    top = (CFG.frame_size[1] - h) // 2
    np.testing.assert_array_equal(images[1, 2, 3], frames[1, 2, 3, top : top + h, :w])
    assert bev.shape == (2, H, 80, 80) and bev[0, 0, 5, 5] == 5 and bev.sum() == 5

"""The BEV refiner: the anchor's geometry, an untrained refiner is the plain decoder, re-anchoring,
and that training it learns to use the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from drivesim.model.config import WorldModelConfig
from drivesim.model.evaluate import compose
from drivesim.model.refine import Anchor, OccRefiner, compose_pose, decode_rollout, reference
from drivesim.model.world import WorldModel

CFG = WorldModelConfig(
    cam_channels=(8, 16, 16), cam_latent=4, occ_channels=(8, 16, 16), occ_latent=8, d_model=32, heads=2,
    layers=1, mlp_ratio=2, sample_steps=2, occ_refine=True, refine_channels=(8, 16, 16), refine_gap=3,
)  # fmt: skip


def test_compose_pose_matches_the_host_composition():
    m = np.random.default_rng(0).normal(size=(5, 3)) * np.array([4.0, 0.5, 0.2])
    pose = jnp.zeros(3)
    for k in range(5):
        pose = compose_pose(pose, jnp.asarray(m[k], jnp.float32))
    np.testing.assert_allclose(np.asarray(pose), compose(m)[-1], atol=1e-5)


def test_reference_moves_the_grid_with_the_ego():
    grid = jnp.asarray(np.random.default_rng(1).integers(0, 9, (80, 80)), jnp.int32)
    same = reference(grid, jnp.zeros(3), CFG)
    np.testing.assert_allclose(np.asarray(same), np.asarray(jax.nn.one_hot(grid, 9)), atol=1e-6)
    # 1 m forward: what was one row ahead (row i - 1: forward is up) is now at row i
    fwd = np.asarray(reference(grid, jnp.array([1.0, 0.0, 0.0]), CFG))
    np.testing.assert_allclose(fwd[1:], np.asarray(jax.nn.one_hot(grid, 9))[:-1], atol=1e-5)
    assert np.all(fwd[0] == 0)  # unseen by the anchor: no class
    # 2 m to the left: columns shift right by two (left is column 0)
    left = np.asarray(reference(grid, jnp.array([0.0, 2.0, 0.0]), CFG))
    np.testing.assert_allclose(left[:, 2:], np.asarray(jax.nn.one_hot(grid, 9))[:, :-2], atol=1e-5)


def test_an_untrained_refiner_is_the_plain_decoder():
    model = WorldModel(CFG, rngs=nnx.Rngs(0))
    z = jax.random.normal(jax.random.key(0), (2, 10, 10, CFG.occ_latent))
    anchor = Anchor(
        jnp.ones((2, 80, 80), jnp.int32), jnp.array([[3.0, 0.5, 0.1], [0.0, 0.0, 0.0]]), jnp.ones(2, jnp.int32)
    )
    np.testing.assert_allclose(
        np.asarray(model.occupancy_logits(z, anchor)), np.asarray(model.occupancy_logits(z)), atol=1e-5
    )


def test_the_anchor_renews_after_refine_gap_keyframes():
    a = Anchor.at(jnp.zeros((80, 80), jnp.int32))
    new = jnp.full((80, 80), 2, jnp.int32)
    for _ in range(CFG.refine_gap - 1):
        a = a.moved(jnp.array([5.0, 0.0, 0.0])).renewed(new, CFG)
    assert int(a.age) == CFG.refine_gap - 1 and int(a.grid[0, 0]) == 0 and float(a.pose[0]) == pytest.approx(10.0)
    a = a.moved(jnp.array([5.0, 0.0, 0.0])).renewed(new, CFG)
    assert int(a.age) == 0 and int(a.grid[0, 0]) == 2 and float(a.pose[0]) == 0.0


def test_decode_rollout_refines_every_frame_and_compiles_once():
    model = WorldModel(CFG, rngs=nnx.Rngs(0))
    gd, st = nnx.split(model)
    fn = jax.jit(lambda st, z, g, m: decode_rollout(nnx.merge(gd, st), z, g, m))
    z = jax.random.normal(jax.random.key(1), (2, 7, 10, 10, CFG.occ_latent))
    grids = fn(st, z, jnp.zeros((2, 80, 80), jnp.int32), jnp.ones((2, 7, 3)) * jnp.array([4.0, 0.0, 0.0]))
    assert grids.shape == (2, 7, 80, 80) and grids.dtype == jnp.int32
    eager = decode_rollout(model, z, jnp.zeros((2, 80, 80), jnp.int32), jnp.ones((2, 7, 3)) * jnp.array([4.0, 0, 0]))
    assert np.mean(np.asarray(eager) == np.asarray(grids)) > 0.999
    fn(st, z + 1.0, jnp.ones((2, 80, 80), jnp.int32), jnp.zeros((2, 7, 3)))
    assert fn._cache_size() == 1


def test_training_the_refiner_learns_to_use_the_reference():
    """Uninformative decoder logits; the target is the anchor moved by the pose: a refiner that
    learns anything must lower the loss well below where it starts."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 9, (32, 10, 10))
    grids = jnp.asarray(np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2), jnp.int32)  # 8 m patches of a class
    poses = jnp.asarray(np.stack([rng.uniform(-4, 4, 32), rng.uniform(-2, 2, 32), np.zeros(32)], -1), jnp.float32)
    ref = reference(grids, poses, CFG)
    target = jnp.argmax(ref, -1)
    seen = ref.sum(-1) > 0.99
    refiner = OccRefiner(CFG, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(refiner, optax.adam(3e-3), wrt=nnx.Param)

    def loss_fn(r):
        logp = jax.nn.log_softmax(r(jnp.zeros(ref.shape), ref), -1)
        nll = -jnp.take_along_axis(logp, target[..., None], -1)[..., 0]
        return jnp.sum(nll * seen) / jnp.sum(seen)

    @nnx.jit
    def step(r, opt):
        loss, g = nnx.value_and_grad(loss_fn)(r)
        opt.update(r, g)
        return loss

    first = float(step(refiner, opt))
    for _ in range(60):
        last = float(step(refiner, opt))
    assert first == pytest.approx(np.log(9), rel=1e-3)  # zero head: uniform over the classes
    assert last < 0.5 * first, (first, last)

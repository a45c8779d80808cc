"""The BEV refiner: the reference is the constant-velocity forecast (map moved with the ego, agents
at their velocity, or the given boxes), an untrained refiner follows it where it knows, re-anchoring
carries the agents on, and training learns to use the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from drivesim.data.occupancy import paint_boxes
from drivesim.model.baselines import constant_velocity_occupancy
from drivesim.model.config import WorldModelConfig
from drivesim.model.refine import Anchor, OccRefiner, agent_velocity, compose_pose, decode_rollout, pool, reference
from drivesim.model.world import WorldModel
from drivesim.pipelines.eval_wm import compose

CFG = WorldModelConfig.tiny(occ_refine=True, refine_gap=3)


def test_compose_pose_matches_the_host_composition():
    m = np.random.default_rng(0).normal(size=(5, 3)) * np.array([4.0, 0.5, 0.2])
    pose = jnp.zeros(3)
    for k in range(5):
        pose = compose_pose(pose, jnp.asarray(m[k], jnp.float32))
    np.testing.assert_allclose(np.asarray(pose), compose(m)[-1], atol=1e-5)


def _fine(coarse):
    """A (..., 80, 80) grid at the 160 x 160 cells (each 1 m cell as four 0.5 m ones)."""
    return np.repeat(np.repeat(np.asarray(coarse), 2, axis=-2), 2, axis=-1)


def _anchor(grid, pose, age=1, agents=None, velocity=None):
    a = Anchor.at(jnp.asarray(grid), agents, velocity)
    return a._replace(pose=jnp.asarray(pose, jnp.float32), age=jnp.asarray(age, jnp.int32))


@pytest.mark.slow
def test_reference_moves_the_map_with_the_ego():
    grid = np.random.default_rng(1).integers(0, 5, (80, 80))  # map classes only
    onehot = np.asarray(jax.nn.one_hot(grid, 9))
    same = np.asarray(reference(_anchor(_fine(grid), [0.0, 0.0, 0.0], age=0), CFG))
    assert same.shape == (80, 80, 10)
    np.testing.assert_array_equal(same[..., :9], onehot)
    # 1 m forward: what was one row ahead (row i - 1: forward is up) is now at row i
    fwd = np.asarray(reference(_anchor(_fine(grid), [1.0, 0.0, 0.0], age=2), CFG))
    np.testing.assert_array_equal(fwd[1:, :, :9], onehot[:-1])
    assert np.all(fwd[0, :, :9] == 0)  # unseen by the anchor: no class
    np.testing.assert_allclose(fwd[..., 9], 2 / CFG.refine_gap)  # the age channel
    # 2 m to the left: columns shift right by two (left is column 0)
    left = np.asarray(reference(_anchor(_fine(grid), [0.0, 2.0, 0.0]), CFG))
    np.testing.assert_array_equal(left[:, 2:, :9], onehot[:, :-2])


@pytest.mark.slow  # compile-heavy: the full suite only (keeps --fast under 3 minutes)
def test_a_reanchored_grid_is_resampled_at_its_own_cells_and_does_not_grow():
    # the model's own 1 m grid (a re-anchoring): a walkway row across a road, seen 0.6 m on
    grid = np.ones((80, 80), np.int64)
    grid[40] = 2
    coarse = Anchor.at(jnp.asarray(grid))
    assert not bool(coarse.fine) and bool(Anchor.at(jnp.asarray(_fine(grid))).fine)
    ref = np.asarray(reference(coarse._replace(pose=jnp.asarray([0.6, 0.0, 0.0]), age=jnp.asarray(1)), CFG))
    walk = ref[..., 2] == 1
    assert walk.sum() == 80 and np.all(walk[41])  # one row, one row back: nearest, no growth
    # the same grid taken as a 0.5 m one is pooled as the truth is: the row spans two
    fine = np.asarray(reference(_anchor(_fine(grid), [0.6, 0.0, 0.0]), CFG))
    assert (fine[..., 2] == 1).sum() == 160


@pytest.mark.slow
def test_reference_moves_agents_at_constant_velocity_or_takes_the_given_boxes():
    grid = np.ones((160, 160), np.int64)
    car = np.array([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 1.0]], np.float32)  # a vehicle 10 m ahead
    grid[np.asarray(paint_boxes(car)) > 0] = 5
    # two keyframes later, 5 m/s forward, the ego 3 m on: the car is 12 m ahead of the ego
    ref = np.asarray(reference(_anchor(grid, [3.0, 0.0, 0.0], 2, car, np.array([[5.0, 0.0]])), CFG))
    moved = car.copy()
    moved[0, 0] = 12.0
    want = np.asarray(pool(jnp.asarray(paint_boxes(moved), jnp.int32), CFG)) == 5
    np.testing.assert_array_equal(ref[..., 5] == 1, want)
    # where the car was and no longer is: the road around it (as constant velocity fills it)
    was = np.asarray(pool(jnp.asarray(paint_boxes(car), jnp.int32), CFG))
    was = np.roll(was, 3, axis=0) == 5  # its old cells, seen from 3 m on
    assert (was & ~want).sum() > 4 and np.all(ref[was & ~want, 1] == 1)
    # an anchor without boxes: its agent cells are unknown (the decoder decides there)
    bare = np.asarray(reference(_anchor(grid, [3.0, 0.0, 0.0], 2), CFG))
    assert np.all(bare[was, :9].sum(-1) == 0) and not np.any(bare[..., 5])
    # layout-guided: the given box, wherever it is
    given = car.copy()
    given[0, :2] = (-6.0, 4.0)
    ref = np.asarray(reference(_anchor(grid, [3.0, 0.0, 0.0], 2, car, np.array([[5.0, 0.0]])), CFG, given, True))
    want = np.asarray(pool(jnp.asarray(paint_boxes(given), jnp.int32), CFG)) == 5
    np.testing.assert_array_equal(ref[..., 5] == 1, want)


@pytest.mark.slow
def test_reference_is_the_constant_velocity_baseline_where_it_knows():
    """The same agents, velocities and ego motion as `constant_velocity_occupancy`: the same
    classes wherever the reference is known."""
    rng = np.random.default_rng(3)
    grid = _fine(rng.integers(1, 5, (80, 80)))
    n = 12
    last = np.zeros((16, 8), np.float32)
    last[:n] = np.column_stack([rng.uniform(-30, 30, (n, 2)), rng.uniform(-3, 3, n), rng.uniform(1, 5, n),
                                rng.uniform(0.6, 2.2, n), np.ones(n), rng.integers(0, 4, n), np.ones(n)])  # fmt: skip
    motion_prev = np.array([4.0, 0.3, 0.05], np.float32)
    prev = last.copy()
    c, s = np.cos(motion_prev[2]), np.sin(motion_prev[2])
    back = last[:, :2] - rng.uniform(-3, 3, (16, 2))  # each agent's position a keyframe earlier
    prev[:, 0] = c * back[:, 0] - s * back[:, 1] + motion_prev[0]  # ... in the earlier ego frame
    prev[:, 1] = s * back[:, 0] + c * back[:, 1] + motion_prev[1]
    prev[3, 7] = 0.0  # one agent new in the last keyframe: it stands still
    grid[np.asarray(paint_boxes(last)) > 0] = np.asarray(paint_boxes(last))[np.asarray(paint_boxes(last)) > 0]
    future = np.array([[4.5, 0.2, 0.04], [4.0, -0.1, 0.02], [5.0, 0.0, -0.03]], np.float32)
    cv = constant_velocity_occupancy(grid, prev, last, motion_prev, future, resolution=0.5)
    anchor = Anchor.at(jnp.asarray(grid), last, agent_velocity(jnp.asarray(prev), jnp.asarray(last), motion_prev))
    for k in range(len(future)):
        anchor = anchor.moved(jnp.asarray(future[k]))
        ref = np.asarray(reference(anchor, CFG))
        known = ref[..., :9].sum(-1) > 0
        want = np.asarray(pool(jnp.asarray(cv[k], jnp.int32), CFG))
        assert known.mean() > 0.8
        assert np.mean(ref[..., :9].argmax(-1)[known] == want[known]) > 0.995
        agents = want >= 5
        assert agents.sum() > 20 and np.mean(ref[..., :9].argmax(-1)[agents] == want[agents]) > 0.97


@pytest.mark.slow
def test_an_untrained_refiner_takes_the_reference_where_it_knows_and_the_decoder_elsewhere():
    model = WorldModel(CFG, rngs=nnx.Rngs(0))
    z = jax.random.normal(jax.random.key(0), (2, 10, 10, CFG.occ_latent))
    anchor = _anchor(jnp.full((2, 160, 160), 3, jnp.int32), [[3.0, 0.5, 0.1], [0.0, 0.0, 0.0]], [1, 1])
    refined = np.asarray(model.decode_occupancy(z, anchor))
    plain = np.asarray(model.decode_occupancy(z))
    known = np.asarray(reference(anchor, CFG))[..., :9].sum(-1) > 0
    assert 0.8 < known[0].mean() < 1.0 and known[1].all()
    assert np.all(refined[known] == 3)
    np.testing.assert_array_equal(refined[~known], plain[~known])
    assert np.mean(plain == 3) < 0.5  # the decoder alone says otherwise: the reference decided


def test_the_anchor_renews_after_refine_gap_keyframes_and_carries_its_agents_on():
    car = jnp.array([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 1.0]])
    a = Anchor.at(jnp.zeros((80, 80), jnp.int32), car, jnp.array([[2.0, 0.0]]))
    new = jnp.full((80, 80), 2, jnp.int32)
    for _ in range(CFG.refine_gap - 1):
        a = a.moved(jnp.array([5.0, 0.0, 0.0])).renewed(new, CFG)
    assert int(a.age) == CFG.refine_gap - 1 and int(a.grid[0, 0]) == 0 and float(a.pose[0]) == pytest.approx(10.0)
    a = a.moved(jnp.array([5.0, 0.0, 0.0])).renewed(new, CFG)
    assert int(a.age) == 0 and int(a.grid[0, 0]) == 2 and float(a.pose[0]) == 0.0 and a.grid.shape == (160, 160)
    # 3 keyframes at 2 m/s: 13 m ahead of the anchor, the ego 15 m on: 2 m behind it now
    assert float(a.agents.xy[0, 0]) == pytest.approx(-2.0) and float(a.velocity[0, 0]) == pytest.approx(2.0)


@pytest.mark.slow
def test_decode_rollout_refines_every_frame_and_compiles_once():
    model = WorldModel(CFG, rngs=nnx.Rngs(0))
    gd, st = nnx.split(model)
    fn = jax.jit(lambda st, z, g, m: decode_rollout(nnx.merge(gd, st), z, Anchor.at(g), m))
    z = jax.random.normal(jax.random.key(1), (2, 7, 10, 10, CFG.occ_latent))
    grids = fn(st, z, jnp.zeros((2, 80, 80), jnp.int32), jnp.ones((2, 7, 3)) * jnp.array([4.0, 0.0, 0.0]))
    assert grids.shape == (2, 7, 80, 80) and grids.dtype == jnp.int32
    motion = jnp.ones((2, 7, 3)) * jnp.array([4.0, 0, 0])
    eager = decode_rollout(model, z, Anchor.at(jnp.zeros((2, 80, 80), jnp.int32)), motion)
    assert np.mean(np.asarray(eager) == np.asarray(grids)) > 0.999
    fn(st, z + 1.0, jnp.ones((2, 80, 80), jnp.int32), jnp.zeros((2, 7, 3)))
    assert fn._cache_size() == 1


@pytest.mark.slow
def test_training_the_refiner_learns_to_use_the_reference():
    """Uninformative decoder logits; the target is the anchor moved by the pose, with its classes
    renamed: the untrained refiner (which follows the reference) is wrong everywhere, and only the
    reference can tell the trained one the answer."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 9, (32, 10, 10))
    blocks = np.where(blocks >= 5, 1, blocks)  # map classes (agent cells are unknown to the reference)
    grids = jnp.asarray(np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2), jnp.int32)  # 8 m patches of a class
    poses = jnp.asarray(np.stack([rng.uniform(-4, 4, 32), rng.uniform(-2, 2, 32), np.zeros(32)], -1), jnp.float32)
    ref = reference(Anchor.at(grids)._replace(pose=poses, age=jnp.ones(32, jnp.int32)), CFG)
    target = jnp.asarray([2, 3, 4, 0, 1, 5, 6, 7, 8])[jnp.argmax(ref[..., :9], -1)]
    seen = ref[..., :9].sum(-1) > 0.99
    refiner = OccRefiner(CFG, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(refiner, optax.adam(3e-3), wrt=nnx.Param)

    def loss_fn(r):
        logp = jax.nn.log_softmax(r(jnp.zeros(ref.shape[:-1] + (9,)), ref), -1)
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
    assert first > 2.0  # the prior puts the reference's class first: the wrong one
    assert last < 0.25 * first, (first, last)

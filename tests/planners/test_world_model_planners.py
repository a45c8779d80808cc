"""World-model planners (MPC over imagined futures, gradient refinement through the model) with a
tiny random model: shapes under jit and vmap, no recompiles, obstacle avoidance on given imagined
grids, finite non-zero gradients through the model, refinement lowers the surrogate, and the
reference-scored rollout equals the reference engine for a planner that ignores the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drivesim.data.classes import OCC_DRIVABLE, OCC_OBSTACLE, OCC_VEHICLE, OCC_WALKWAY
from drivesim.data.occupancy import OccupancyConfig, rasterize
from drivesim.model.config import WorldModelConfig
from drivesim.model.world import WorldModel
from drivesim.planners.base import check_planner
from drivesim.planners.builtin import IdmPlanner
from drivesim.planners.world_model import (
    GradientPlanner,
    WorldModelMPC,
    frame_times,
    grid_terms,
    proposals,
    reference_rollout,
)
from drivesim.sim import engine, wm_engine
from drivesim.sim.closed_loop import evaluate, pdms_terms
from drivesim.sim.dynamics import to_ego_frame, to_global
from drivesim.sim.engine import SimConfig

# the tiny model of tests/sim/test_wm_engine.py
CFG = WorldModelConfig.tiny(max_horizon=16, motion_warp=True)
T0 = 40
WM = wm_engine.WMConfig(sim=SimConfig(replan_every=5), layout=True)


def jit(fn, **kw):
    """`jax.jit` with XLA's backend optimisations off: the programs here are tiny, their
    compilation is what takes time (about 3x less this way)."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0}, **kw)


MPC = WorldModelMPC(candidates=((1.0, 0.0), (0.5, 0.0), (1.0, 1.0)), frames=2, sample_steps=1)
GRAD = GradientPlanner(frames=2, sample_steps=1, steps=3, knots=4, learning_rate=2.0)


def context(log, t0=T0):
    """The log's last 4 keyframes up to t0 (blank cameras, true occupancy)."""
    steps = t0 - 5 * np.arange(CFG.history - 1, -1, -1)
    lg = jax.tree.map(jnp.asarray, log)
    ag = lg.agents
    grids = [
        np.asarray(
            rasterize(
                lg.map,
                lg.ego.xy[t],
                lg.ego.yaw[t],
                ag.xy[:, t],
                ag.yaw[:, t],
                ag.size,
                ag.category,
                ag.valid[:, t],
                OccupancyConfig(),
            ).grid
        )  # fmt: skip
        for t in steps
    ]
    xy, yaw = np.asarray(log.ego.xy), np.asarray(log.ego.yaw)
    motion = []
    for a, b in zip(steps[:-1], steps[1:], strict=True):
        d = np.asarray(to_ego_frame(jnp.asarray(xy[b][None]), jnp.asarray(xy[a]), jnp.asarray(yaw[a])))[0]
        motion.append([d[0], d[1], (yaw[b] - yaw[a] + np.pi) % (2 * np.pi) - np.pi])
    w, h = CFG.frame_size
    return wm_engine.Context(
        frames=np.full((CFG.history, 6, h, w, 3), 100, np.uint8),
        occupancy=np.stack(grids).astype(np.uint8),
        motion=np.asarray(motion, np.float32),
    )


@pytest.fixture(scope="module")
def handle():
    """The tiny model with random weights drawn on the host: initialising it eagerly compiles one
    program per parameter shape (most of a minute on a busy 2-core machine)."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: WorldModel(CFG, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "_std" in name:
            return jnp.ones(leaf.shape, leaf.dtype)
        if "_mean" in name:
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        return jnp.asarray(rng.normal(0.0, 1.0 / np.sqrt(fan_in), leaf.shape), leaf.dtype)

    params = jax.tree_util.tree_map_with_path(draw, abstract)
    return wm_engine.ModelHandle(graphdef=graphdef, params=params)


@pytest.fixture(scope="module")
def state(handle, sim_logs):
    log = sim_logs[0]
    return jit(lambda h, lg, c: wm_engine.reset(h, lg, T0, c, None, WM))(handle, log, context(log))


@pytest.mark.slow
def test_mpc_plans_under_jit_and_vmap_without_recompiles(handle, state):
    plan = jit(jax.vmap(lambda h, s, k: MPC.plan_wm(None, s, h, WM, k), in_axes=(None, 0, 0)))
    both = jax.tree.map(lambda a: jnp.stack([a, a]), state)  # two scenarios (the same, other keys)
    traj = plan(handle, both, jax.random.split(jax.random.key(0), 2))
    assert traj.xy.shape == (2, 40, 2) and traj.yaw.shape == (2, 40)
    assert np.all(np.isfinite(np.asarray(traj.xy))) and np.all(np.asarray(traj.xy[:, -1, 0]) > 1.0)
    plan(handle, both, jax.random.split(jax.random.key(1), 2))
    assert plan._cache_size() == 1
    # without a model (the reference engine) it is an ordinary planner
    obs = engine.observe(state.base)
    check_planner(MPC, obs)
    check_planner(GRAD, obs)
    assert jit(lambda o: MPC.plan(None, o, jax.random.key(0)))(obs).xy.shape == (40, 2)


def paint(state, candidates_xy, times, car_xy, half=(2.4, 1.1)):
    """Imagined grids (C, 1, F, G, G): road everywhere, and a standing car at global `car_xy`
    (half length, half width along the ego heading), each grid around its candidate's pose."""
    from drivesim.planners.world_model import _global_frames

    ego = state.base.ego
    G = CFG.occ_grid
    c = wm_engine.cell_centres(G, 40.0)
    gx, gy = jnp.meshgrid(c, c, indexing="ij")
    local = jnp.stack([gx, gy], axis=-1)

    def one(xy, yaw):
        fxy, fyaw, _ = _global_frames(xy, yaw, times, ego)

        def frame(p, h):
            pts = to_global(local.reshape(-1, 2), p, h)
            d = to_ego_frame(pts, car_xy, ego.yaw)
            inside = (jnp.abs(d[:, 0]) < half[0]) & (jnp.abs(d[:, 1]) < half[1])
            return jnp.where(inside, OCC_VEHICLE, OCC_DRIVABLE).reshape(G, G).astype(jnp.int32)

        return jax.vmap(frame)(fxy, fyaw)[None]

    return jax.vmap(one)(*candidates_xy)


@pytest.mark.slow
def test_mpc_avoids_a_predicted_car_in_its_lane(state):
    mpc = WorldModelMPC(candidates=((1.0, 0.0), (1.0, 4.0)), frames=5, drivable="prediction")
    ego, base = state.base.ego, state.base
    times = frame_times(state, WM, mpc.frames)

    @jit
    def run(car_xy):
        obs = wm_engine.observe(state, WM)
        # no agents to follow: the proposals drive free, the painted car is all there is
        obs = obs.replace(agents=obs.agents.replace(valid=jnp.zeros_like(obs.agents.valid)))
        xy, yaw, offsets = proposals(obs, mpc.idm, mpc.candidates, mpc.max_jerk, mpc.horizon)
        grids = paint(state, (xy, yaw), times, car_xy)
        pdms, progress = mpc.score_candidates(ego, base.route, base.log.map, xy, yaw, grids, times)
        return pdms, mpc.choose(pdms, progress, offsets), xy

    pdms, best, xy = run(ego.xy + 1000.0)  # a clear road: stay in the lane
    assert int(best) == 0 and float(pdms[0]) > 0.5
    # a car standing where the lane proposal is in 2 s (the other is 4 m aside by then)
    car = to_global(xy[0, 19][None], ego.xy, ego.yaw)[0]
    pdms, best, _ = run(car)
    assert float(pdms[0]) == 0.0 and float(pdms[1]) > 0.2
    assert int(best) == 1


def test_grid_terms_rules():
    """Collision under the footprint, TTC ahead of it, off-road corners, stopped means not at fault."""
    G = CFG.occ_grid
    road = jnp.full((3, G, G), OCC_DRIVABLE, jnp.int32)
    xy = jnp.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0]])
    yaw = jnp.zeros(3)
    speed = jnp.full((3,), 10.0)
    terms = jit(grid_terms)
    col, ttc, drv = terms(road, xy, yaw, speed)
    assert np.all(np.asarray(col) == 1.0) and np.all(np.asarray(ttc)) and np.all(np.asarray(drv))
    # a car at x = 6..8 m in frame 1 (its grid is centred at x = 5: rows 37, 38 are 1..3 m ahead):
    # frame 0 sees it coming (in 0.5 s at 10 m/s), frame 1 is on it
    car = road.at[1, 37:39, 39:41].set(OCC_VEHICLE)
    col, ttc, _ = terms(car, xy, yaw, speed)
    assert not bool(ttc[0]) and float(col[0]) == 1.0 and float(col[1]) == 0.0
    col, ttc, _ = terms(car, xy, yaw, jnp.zeros(3))  # stopped: never at fault
    assert np.all(np.asarray(col) == 1.0) and np.all(np.asarray(ttc))
    cone = road.at[2, 37:40, 39:41].set(OCC_OBSTACLE)  # a static obstacle under the ego at frame 2
    col, _, _ = terms(cone, xy, yaw, speed)
    assert float(col[2]) == 0.5
    walk = road.at[0].set(OCC_WALKWAY)
    _, _, drv = terms(walk, xy, yaw, speed)
    assert not bool(drv[0]) and bool(drv[1])


@pytest.mark.slow
def test_gradients_through_the_model_are_finite_and_refinement_helps(handle, state):
    @jit
    @jax.vmap
    def run(s, k):
        prob = GRAD.problem(s, WM, k)
        theta, costs, grads = GRAD.refine(prob, handle, WM)
        xy, _, _ = GRAD.trajectory(theta, prob)
        return costs, grads, xy

    # jitted and vmapped over two scenarios (the same state, other keys)
    both = jax.tree.map(lambda a: jnp.stack([a, a]), state)
    costs, grads, xy = run(both, jax.random.split(jax.random.key(1), 2))
    for k in ("accel", "lateral"):
        assert np.all(np.isfinite(np.asarray(grads[k]))), k
    # at zero corrections only the imagined grids depend on the lateral offset: a non-zero
    # gradient there has come through the world model
    assert np.all(np.abs(np.asarray(grads["lateral"][:, 0])).max(axis=-1) > 0.0)
    costs = np.asarray(costs)
    assert costs.shape == (2, GRAD.steps + 1) and np.all(np.isfinite(costs))
    assert np.all(costs.min(axis=1) < costs[:, 0] - 1e-4), costs  # the refinement lowers the surrogate
    assert xy.shape == (2, 40, 2) and np.all(np.isfinite(np.asarray(xy)))


@pytest.mark.slow
def test_reference_rollout_scores_a_plain_planner_as_the_reference_engine(handle, state, sim_logs):
    """IDM ignores the model: scored in the reference-synced world-model loop it scores exactly as
    in the reference engine."""
    horizon = 10
    idm = IdmPlanner()
    run = jit(lambda h, s, p, k: reference_rollout(h, s, p, None, horizon, k, WM)[0], static_argnums=2)
    ours = run(handle, state, idm, jax.random.key(0))

    @jit
    def reference(log):
        s = engine.reset(log, T0, None, WM.sim)
        _, trace = engine.rollout(s, idm, None, horizon, jax.random.key(0), WM.sim, pdms_terms())
        return evaluate(s, trace, horizon)

    ref = reference(sim_logs[0])
    for k in ("pdms", "nc", "dac", "ttc", "ep", "c", "ego_progress"):
        np.testing.assert_allclose(float(getattr(ours, k)), float(getattr(ref, k)), atol=1e-4, err_msg=k)

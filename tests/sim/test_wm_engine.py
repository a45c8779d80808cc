"""The world-model engine: the reference API, jit = eager, no recompiles, sampled futures, the
agents read off predicted grids, scores from the prediction, and 8 fake devices = 1."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drivesim.data.classes import OCC_DRIVABLE, OCC_VEHICLE, OCC_WALKWAY
from drivesim.data.occupancy import OccupancyConfig, rasterize
from drivesim.model.config import WorldModelConfig
from drivesim.model.world import WorldModel, prepare_occupancy
from drivesim.planners.builtin import IdmPlanner
from drivesim.sim import engine, wm_engine
from drivesim.sim.closed_loop import wm_pdms_terms
from drivesim.sim.dynamics import to_ego_frame

CFG = WorldModelConfig.tiny(max_horizon=16, motion_warp=True)
T0 = 40


@pytest.fixture(scope="module")
def handle():
    return wm_engine.ModelHandle.of(WorldModel(CFG, rngs=nnx.Rngs(0)))


def true_grid(log, t):
    """The log's occupancy at step t (0.5 m), as the cache holds it."""
    log = jax.tree.map(jnp.asarray, log)
    ag = log.agents
    occ = rasterize(log.map, log.ego.xy[t], log.ego.yaw[t], ag.xy[:, t], ag.yaw[:, t], ag.size, ag.category,
                    ag.valid[:, t], OccupancyConfig())  # fmt: skip
    return np.asarray(occ.grid)


def context(log, t0=T0):
    """A Context of the log's last 4 keyframes up to t0 (blank camera frames, true occupancy)."""
    steps = t0 - 5 * np.arange(CFG.history - 1, -1, -1)
    xy, yaw = np.asarray(log.ego.xy), np.asarray(log.ego.yaw)
    motion = []
    for a, b in zip(steps[:-1], steps[1:], strict=True):
        d = np.asarray(to_ego_frame(jnp.asarray(xy[b][None]), jnp.asarray(xy[a]), jnp.asarray(yaw[a])))[0]
        motion.append([d[0], d[1], (yaw[b] - yaw[a] + np.pi) % (2 * np.pi) - np.pi])
    w, h = CFG.frame_size
    return wm_engine.Context(
        frames=np.full((CFG.history, 6, h, w, 3), 100, np.uint8),
        occupancy=np.stack([true_grid(log, t) for t in steps]).astype(np.uint8),
        motion=np.asarray(motion, np.float32),
    )


def run_fn(handle, horizon, cfg=None):
    cfg = cfg or wm_engine.WMConfig()
    planner = IdmPlanner()
    terms = wm_pdms_terms()

    def run(h, log, ctx, key):
        state = wm_engine.reset(h, log, T0, ctx, None, cfg)
        return wm_engine.rollout(h, state, planner, planner.init(key), horizon, key, cfg, terms)[1]

    return run


@pytest.mark.slow
def test_reset_and_observe_share_the_reference_observation(handle, sim_logs):
    log = sim_logs[0]
    state = wm_engine.reset(handle, log, T0, context(log))
    obs = wm_engine.observe(state)
    ref = engine.observe(engine.reset(log, T0))
    assert jax.tree.structure(obs) == jax.tree.structure(ref)
    assert obs.occupancy.grid.shape == ref.occupancy.grid.shape
    np.testing.assert_allclose(np.asarray(obs.ego.xy), np.asarray(ref.ego.xy))
    A = log.agents.valid.shape[0]
    assert obs.agents.xy.shape == (A + wm_engine.WMConfig().extra_agents, 2)
    # at t0 the tracked agents are the log's
    np.testing.assert_allclose(np.asarray(obs.agents.xy[:A]), np.asarray(log.agents.xy[:, T0]), atol=1e-4)
    # the occupancy it shows is the context's last frame: same classes as the reference, up to pooling
    pooled = np.asarray(prepare_occupancy(jnp.asarray(ref.occupancy.grid), CFG))
    shown = np.asarray(prepare_occupancy(obs.occupancy.grid, CFG))
    assert np.mean(pooled == shown) > 0.97


@pytest.mark.slow
def test_step_api_predicts_a_frame_every_half_second(handle, sim_logs):
    log = sim_logs[0]
    state = wm_engine.reset(handle, log, T0, context(log))
    traj = IdmPlanner().plan(None, wm_engine.observe(state), jax.random.key(0))
    step = jax.jit(lambda s, k: wm_engine.step(handle, s, traj, k))
    counts = []
    for i in range(6):
        state = step(state, jax.random.key(i))
        counts.append(int(state.count))
    assert counts == [4, 4, 4, 4, 5, 5]
    assert int(state.base.step) == 6 and int(state.key_step) == 5


@pytest.mark.slow
def test_jit_equals_eager(handle, sim_logs):
    log = sim_logs[1]
    ctx = context(log)
    run = run_fn(handle, 5)
    jitted = jax.jit(run)(handle, log, ctx, jax.random.key(3))
    with jax.disable_jit():
        eager = run(handle, jax.tree.map(jnp.asarray, log), jax.tree.map(jnp.asarray, ctx), jax.random.key(3))
    np.testing.assert_allclose(np.asarray(jitted.ego.xy), np.asarray(eager.ego.xy), atol=1e-3)
    assert np.mean(np.asarray(jitted.grids) == np.asarray(eager.grids)) > 0.99
    np.testing.assert_allclose(np.asarray(jitted.terms.progress), np.asarray(eager.terms.progress), atol=1e-2)


@pytest.mark.slow
def test_seeded_futures_differ_and_no_recompiles(handle, sim_logs):
    run = jax.jit(jax.vmap(run_fn(handle, 10), in_axes=(None, None, None, 0)))
    log = sim_logs[0]
    ctx = context(log)
    a = run(handle, log, ctx, jax.random.split(jax.random.key(0), 2))
    b = run(handle, log, ctx, jax.random.split(jax.random.key(0), 2))
    np.testing.assert_array_equal(np.asarray(a.grids), np.asarray(b.grids))
    assert a.grids.shape == (2, 3, CFG.occ_grid, CFG.occ_grid) and a.ego.xy.shape == (2, 11, 2)
    # two keys, two futures: the predicted grids differ
    assert np.mean(np.asarray(a.grids[0, 1:]) != np.asarray(a.grids[1, 1:])) > 0.01
    # another scenario of the same shapes reuses the compiled program
    run(handle, sim_logs[2], context(sim_logs[2]), jax.random.split(jax.random.key(1), 2))
    assert run._cache_size() == 1


@pytest.mark.slow
def test_tracking_follows_the_agents_of_true_grids(sim_logs):
    """Fed the true occupancy, the tracker keeps the moving vehicles near the ego where they are."""
    cfg = wm_engine.WMConfig()
    checked = 0
    for log in sim_logs:
        lg = jax.tree.map(jnp.asarray, log)
        ag = lg.agents
        for t in (30, 60, 90):
            heading = jnp.stack([jnp.cos(ag.yaw[:, t]), jnp.sin(ag.yaw[:, t])], -1)
            speed = jnp.maximum(jnp.sum(ag.velocity[:, t] * heading, -1), 0)
            tracked = wm_engine.Seen(
                agents=wm_engine.AgentState(xy=ag.xy[:, t], yaw=ag.yaw[:, t], speed=speed, valid=ag.valid[:, t]),
                size=ag.size, category=ag.category,
            )  # fmt: skip
            grid = prepare_occupancy(jnp.asarray(true_grid(log, t + 5)), CFG)
            out = wm_engine.track_agents(tracked, grid, lg.ego.xy[t + 5], lg.ego.yaw[t + 5], cfg)
            near = np.asarray(
                ag.valid[:, t] & ag.valid[:, t + 5] & (jnp.linalg.norm(ag.xy[:, t + 5] - lg.ego.xy[t + 5], axis=-1) < 30)
                & (ag.category == 0)
            )  # fmt: skip
            err = np.linalg.norm(np.asarray(out.agents.xy - ag.xy[:, t + 5]), axis=-1)[near]
            assert np.all(np.asarray(out.agents.valid)[near])
            assert np.all(err < 1.0), err
            checked += int(near.sum())
    assert checked >= 5


@pytest.mark.slow
def test_scores_come_from_the_prediction(handle, sim_logs):
    """A predicted car on the ego is a collision; a predicted walkway under it is off the drivable
    area, though the map says road."""
    log = sim_logs[0]
    state = wm_engine.reset(handle, log, T0, context(log))
    terms = wm_pdms_terms()
    G = CFG.occ_grid
    road = jnp.full((G, G), OCC_DRIVABLE, jnp.int32)
    calm = terms(state.replace(grid=road), state.base.ego)
    assert bool(calm.drivable)
    walk = terms(state.replace(grid=jnp.full((G, G), OCC_WALKWAY, jnp.int32)), state.base.ego)
    assert not bool(walk.drivable)
    # "map": the prediction's walkway does not matter; the map says road
    by_map = wm_pdms_terms(drivable="map")(state.replace(grid=jnp.full((G, G), OCC_WALKWAY, jnp.int32)), state.base.ego)
    assert bool(by_map.drivable)
    # a car painted just ahead of the ego, with no tracked agent: an unexplained block in its way
    car = road.at[G // 2 - 6 : G // 2 - 2, G // 2 - 2 : G // 2 + 2].set(OCC_VEHICLE)
    tracked = state.tracked.replace(
        agents=state.tracked.agents.replace(valid=jnp.zeros_like(state.tracked.agents.valid))
    )
    extra = wm_engine.unexplained_blocks(car, tracked, state.key_xy, state.key_yaw, 16, wm_engine.WMConfig())
    seen = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), tracked, extra)
    hit = terms(state.replace(grid=car, tracked=tracked, seen=seen), state.base.ego)
    assert float(hit.collision) < 1.0 or not bool(hit.ttc_ok)
    clear = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), tracked,
                         wm_engine.unexplained_blocks(road, tracked, state.key_xy, state.key_yaw, 16, wm_engine.WMConfig()))  # fmt: skip
    ok = terms(state.replace(grid=road, tracked=tracked, seen=clear), state.base.ego)
    assert float(ok.collision) == 1.0 and bool(ok.ttc_ok)
    # a lone predicted agent cell is noise, not an agent
    speck = road.at[G // 2 - 4, G // 2].set(OCC_VEHICLE)
    none = wm_engine.unexplained_blocks(speck, tracked, state.key_xy, state.key_yaw, 16, wm_engine.WMConfig())
    assert not bool(none.agents.valid.any())


SHARD_SCRIPT = textwrap.dedent(
    """
    import os, sys, json
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    sys.path.insert(0, sys.argv[2])
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from drivesim.data.loader import LoadConfig
    from drivesim.synth.roads import generate_map
    from drivesim.synth.scenario import make_plan
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import simulate
    from drivesim.pipelines.batch import run_sharded_wm
    from drivesim.sim import wm_engine
    from drivesim.model.world import WorldModel
    from drivesim.planners.builtin import IdmPlanner
    from test_wm_engine import CFG, context
    assert jax.device_count() == 8
    load = LoadConfig(rate_hz=10.0, max_agents=32, max_lane_segments=200, raster_size=800, raster_resolution=0.5)
    rec = simulate(make_plan(generate_map("boston-seaport", 2), 70, "follow", duration=12.5))
    log = record_log(rec, load, annotation_range=None)[0]
    t0 = np.array([40] * 8)
    logs = jax.tree.map(lambda x: np.stack([x] * 8), log)
    ctx = jax.tree.map(lambda x: np.stack([x] * 8), context(log))
    handle = wm_engine.ModelHandle.of(WorldModel(CFG, rngs=nnx.Rngs(0)))
    sharded = run_sharded_wm(handle, IdmPlanner(), logs, t0, ctx, 10, devices=jax.devices())
    single = run_sharded_wm(handle, IdmPlanner(), logs, t0, ctx, 10, devices=jax.devices()[:1])
    print(json.dumps({"sharded": np.asarray(sharded.ep).tolist(), "single": np.asarray(single.ep).tolist(),
                      "p_sharded": np.asarray(sharded.ego_progress).tolist(),
                      "p_single": np.asarray(single.ego_progress).tolist()}))
    """
)


@pytest.mark.slow
def test_eight_devices_give_the_same_scores_as_one(tmp_path):
    import json

    script = tmp_path / "shard_wm.py"
    script.write_text(SHARD_SCRIPT)
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, str(script), "", here], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["p_sharded"], out["p_single"], atol=1e-3)
    np.testing.assert_allclose(out["sharded"], out["single"], atol=1e-3)

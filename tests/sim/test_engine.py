"""The engine API: jit = eager, no recompiles, batch dims, sharding, reactive agents."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from drivesim.data.types import Trajectory
from drivesim.planners.builtin import IdmPlanner, LogReplay
from drivesim.sim.closed_loop import evaluate, pdms_terms
from drivesim.sim.engine import SimConfig, observe, reset, rollout, step

H = 30


def run(log, t0, planner, cfg, horizon=H, key=0):
    state = reset(log, t0, None, cfg)
    _, trace = rollout(state, planner, planner.init(None), horizon, jax.random.key(key), cfg, pdms_terms())
    return evaluate(state, trace, horizon), trace


# One compiled program per (planner, config, horizon), shared by the tests.
run_jit = jax.jit(run, static_argnames=("planner", "cfg", "horizon", "key"))


def test_reset_starts_from_the_log(sim_logs):
    log = sim_logs[0]
    st = reset(log, 20)
    assert np.allclose(st.ego.xy, log.ego.xy[20]) and np.allclose(st.agents.xy, log.agents.xy[:, 20])
    assert bool(st.route_ok) and st.route.xy.shape[0] > 100
    obs = observe(st)
    assert obs.route.shape == (64, 2) and obs.expert.shape == (40, 2)
    # the route starts just behind the ego and goes forward
    assert float(obs.route[0, 0]) < 0.5 and float(obs.route[-1, 0]) > 20.0


def test_step_moves_along_the_trajectory(sim_logs):
    st = reset(sim_logs[0], 20)
    v = float(st.ego.speed)
    traj = Trajectory(xy=jnp.stack([v * 0.1 * (jnp.arange(40) + 1), jnp.zeros(40)], -1), yaw=jnp.zeros(40))
    nxt = step(st, traj)
    moved = np.asarray(nxt.ego.xy - st.ego.xy)
    assert np.linalg.norm(moved) == pytest.approx(v * 0.1, abs=0.05)
    assert int(nxt.step) == 1


@pytest.mark.slow
def test_expert_in_the_loop_reproduces_the_log(sim_logs):
    for log in sim_logs:
        scores, trace = run_jit(log, 20, LogReplay(), SimConfig(), horizon=80)
        err = np.linalg.norm(np.asarray(trace.ego.xy) - np.asarray(log.ego.xy[20:101]), axis=-1)
        assert err.max() < 1.0, err.max()
        assert float(scores.nc) == 1.0 and float(scores.dac) == 1.0 and float(scores.ep) > 0.95


@pytest.mark.slow
def test_jit_equals_eager(sim_logs):
    """reset, step (log and IDM agents) and observe give the same numbers compiled or not."""
    from drivesim.data.occupancy import OccupancyConfig

    log = jax.tree.map(jnp.asarray, sim_logs[1])
    small = OccupancyConfig(extent=10.0, resolution=1.0)
    traj = Trajectory(
        xy=jnp.stack([0.8 * (jnp.arange(40) + 1), 0.01 * (jnp.arange(40) + 1) ** 1.5], -1), yaw=jnp.zeros(40)
    )

    def api(lg, cfg, st=None):
        st = reset(lg, 25, None, cfg) if st is None else st
        nxt = step(st, traj, None, cfg)
        obs = observe(nxt, cfg)
        return nxt.ego, nxt.agents, obs.route, obs.expert, obs.occupancy.grid

    def same(a, b):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            assert np.allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), atol=1e-4)

    cfg = SimConfig(occupancy=small)
    with jax.disable_jit():
        eager = api(log, cfg)
    same(eager, jax.jit(lambda lg: api(lg, cfg))(log))
    # IDM agents: the (costly) reset compiled, the step eager
    cfg = SimConfig(agents="idm", occupancy=small)
    start = jax.jit(lambda lg: reset(lg, 25, None, cfg))(log)
    with jax.disable_jit():
        eager = api(log, cfg, start)
    same(eager, jax.jit(lambda st: api(log, cfg, st))(start))


def test_no_recompilation_on_a_second_call(sim_logs):
    traces = []

    @jax.jit
    def f(log, t0):
        traces.append(1)
        return run(log, t0, IdmPlanner(), SimConfig(), horizon=10)[0].pdms

    f(sim_logs[0], 20)
    f(sim_logs[2], 33)  # another log and start, same shapes
    assert len(traces) == 1
    with jax.log_compiles():  # nothing is compiled on a third call either
        import logging

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("jax").addHandler(handler)
        try:
            f(sim_logs[1], 40)
        finally:
            logging.getLogger("jax").removeHandler(handler)
    assert not [r for r in records if "Compiling" in r.getMessage()]


@pytest.mark.parametrize("batch", [(), (2, 3)])
@pytest.mark.slow
def test_batch_dims(sim_logs, batch):
    n = int(np.prod(batch)) if batch else 1
    logs = [sim_logs[i % len(sim_logs)] for i in range(n)]
    t0s = np.array([20 + 3 * i for i in range(n)])
    single = [
        float(run_jit(lg, t, IdmPlanner(), SimConfig(), horizon=10)[0].pdms) for lg, t in zip(logs, t0s, strict=True)
    ]
    stacked = jax.tree.map(lambda *x: jnp.stack(x).reshape(batch + x[0].shape), *logs)
    f = lambda lg, t: run(lg, t, IdmPlanner(), SimConfig(), horizon=10)[0].pdms  # noqa: E731
    for _ in batch:
        f = jax.vmap(f)
    out = jax.jit(f)(stacked, jnp.asarray(t0s).reshape(batch)) if batch else jax.jit(f)(logs[0], t0s[0])
    assert out.shape == batch
    assert np.allclose(np.ravel(out), single, atol=1e-5)


def _boxes(xy, yaw, size):
    out = []
    for (x, y), a, (length, width) in zip(xy, yaw, size, strict=True):
        c, s = np.cos(a), np.sin(a)
        out.append(
            Polygon(
                np.array([[length, width], [-length, width], [-length, -width], [length, -width]])
                / 2
                @ np.array([[c, s], [-s, c]])
                + [x, y]
            )
        )
    return out


@pytest.mark.slow
def test_idm_agents_do_not_collide(sim_logs):
    """Reactive agents over whole 20 s scenes: the IDM vehicles never overlap each other."""
    cfg = SimConfig(agents="idm")
    for log in sim_logs:
        T = int(np.asarray(log.ego.valid).sum())
        assert T >= 196  # 20 s at 10 Hz
        state = reset(log, 0, None, cfg)
        _, trace = jax.jit(lambda s, n=T - 1: rollout(s, LogReplay(), None, n, jax.random.key(0), cfg))(state)
        ctrl = np.asarray(state.idm.controlled)
        assert ctrl.sum() >= 3
        size = np.asarray(log.agents.size)[ctrl, :2]
        moved = False
        for t in range(0, T, 5):
            xy = np.asarray(trace.agents.xy[t])[ctrl]
            yaw = np.asarray(trace.agents.yaw[t])[ctrl]
            boxes = _boxes(xy, yaw, size)
            tree = shapely.STRtree(boxes)
            pairs = tree.query(boxes, predicate="intersects")
            for p, q in pairs[:, pairs[0] < pairs[1]].T:
                assert boxes[p].intersection(boxes[q]).area < 0.05, f"IDM agents collide at step {t}"
            moved |= not np.allclose(xy, np.asarray(log.agents.xy[:, t])[ctrl], atol=0.5)
        assert moved  # they are simulated, not replayed


@pytest.mark.slow
def test_idm_agents_brake_for_the_ego(sim_load):
    """A car following the ego stops behind it when the ego halts; replayed from the log it drives
    straight into the ego."""
    import math

    from drivesim.planners.base import PythonPlanner
    from drivesim.synth.roads import generate_map
    from drivesim.synth.scenario import make_plan
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import InsertAgent, resimulate

    plan = make_plan(generate_map("boston-seaport", 2), 71, "cruise", duration=10.5)
    base = resimulate(plan, None, [])
    x, y = base.ego_rear[0]
    yaw = float(base.ego_yaw[0])
    behind = InsertAgent("vehicle.car", x - 18 * math.cos(yaw), y - 18 * math.sin(yaw), yaw, float(base.ego_speed[0]))
    log = record_log(resimulate(plan, 0.0, [behind]), sim_load, annotation_range=None)[0]
    halt = PythonPlanner(lambda obs: (np.zeros((40, 2)), np.zeros(40)), name="halt")

    def ego_hits(agents_mode):
        cfg = SimConfig(agents=agents_mode)
        state = reset(log, 0, None, cfg)
        _, trace = jax.jit(lambda s: rollout(s, halt, None, 80, jax.random.key(0), cfg))(state)
        size = np.asarray(log.agents.size)[:, :2]
        worst = 0.0
        for t in range(0, 81, 2):
            e_xy = np.asarray(trace.ego.xy[t]) + 1.3 * np.array([np.cos(trace.ego.yaw[t]), np.sin(trace.ego.yaw[t])])
            ego_box = _boxes([e_xy], [float(trace.ego.yaw[t])], [(4.084, 1.73)])[0]
            ok = np.asarray(trace.agents.valid[t])
            for b in np.array(
                _boxes(np.asarray(trace.agents.xy[t]), np.asarray(trace.agents.yaw[t]), size), dtype=object
            )[ok]:
                worst = max(worst, ego_box.intersection(b).area)
        return worst

    assert ego_hits("log") > 0.5  # the logged car does not care
    assert ego_hits("idm") < 0.01  # the reactive one stops


SHARD_SCRIPT = textwrap.dedent(
    """
    import os, sys, json
    sys.path.insert(0, sys.argv[1])  # this checkout's drivesim
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from drivesim.data.loader import LoadConfig
    SIM_LOAD = LoadConfig(rate_hz=10.0, max_agents=32, max_lane_segments=200, raster_size=800, raster_resolution=0.5)
    from drivesim.synth.roads import generate_map
    from drivesim.synth.scenario import make_plan
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import simulate
    from drivesim.pipelines.batch import run_sharded
    from drivesim.planners.builtin import IdmPlanner
    from drivesim.sim.engine import SimConfig
    assert jax.device_count() == 8
    rec = simulate(make_plan(generate_map("boston-seaport", 2), 70, "follow", duration=12.5))
    log = record_log(rec, SIM_LOAD, annotation_range=None)[0]
    logs = jax.tree.map(lambda x: np.stack([x] * 8), log)
    t0 = np.arange(8) * 4 + 10
    cfg = SimConfig(agents="idm")
    sharded = run_sharded(IdmPlanner(), logs, t0, 20, cfg, devices=jax.devices())
    single = run_sharded(IdmPlanner(), logs, t0, 20, cfg, devices=jax.devices()[:1])
    print(json.dumps({"sharded": np.asarray(sharded.pdms).tolist(), "single": np.asarray(single.pdms).tolist(),
                      "ep_sharded": np.asarray(sharded.ep).tolist(), "ep_single": np.asarray(single.ep).tolist()}))
    """
)


@pytest.mark.slow
def test_eight_devices_give_the_same_scores_as_one(tmp_path):
    import json

    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, str(script), root], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert np.allclose(out["sharded"], out["single"], atol=1e-5)
    assert np.allclose(out["ep_sharded"], out["ep_single"], atol=1e-5)

"""Learned (and constant-velocity) agents in the kinematic engine: nothing from the log's future
enters, constant velocity is what it says, and a follower brakes when the ego stops."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drivesim.data.types import Trajectory
from drivesim.model.behaviour import BehaviourConfig, BehaviourModel
from drivesim.planners.builtin import BUILTIN
from drivesim.sim.engine import SimConfig, reset, rollout
from drivesim.sim.learned_agents import BehaviourHandle

SHIPPED = Path(__file__).parents[2] / "data" / "behaviour_small.npz"
T0 = 40


def _run(log, mode, handle, planner=BUILTIN["idm"], horizon=40, key=1, every=1):
    sim = SimConfig(agents=mode, agent_every=every)

    @jax.jit
    def go(log):
        st = reset(log, T0, jax.random.key(key), sim, handle)
        return rollout(st, planner, planner.init(jax.random.key(0)), horizon, jax.random.key(2), sim)[1]

    return go(log)


def _perturb_future(log):
    T = log.time.shape[0]
    fut = (jnp.arange(T) > T0)[None]
    ag = log.agents
    return log.replace(
        agents=ag.replace(
            xy=jnp.where(fut[..., None], ag.xy * 1.1 + 7.0, ag.xy),
            yaw=jnp.where(fut, ag.yaw + 1.0, ag.yaw),
            velocity=jnp.where(fut[..., None], -ag.velocity, ag.velocity),
            valid=jnp.where(fut, ~ag.valid, ag.valid),
        )
    )


@pytest.mark.slow  # three closed loops compiled twice each (about a minute)
@pytest.mark.parametrize(("mode", "every"), [("learned", 5), ("cv", 5), ("learned", 1)])
def test_future_log_frames_do_not_change_anything(sim_logs, mode, every):
    """Perturb every agent frame after the start: the whole trace is bit-identical."""
    log = jax.tree.map(jnp.asarray, sim_logs[0])
    assert bool(log.signals.known) and bool(log.signals.valid.any())  # the lights are read, and stay the same
    cfg = BehaviourConfig(width=32, point_width=16, signals=4)
    handle = BehaviourHandle.of(BehaviourModel(cfg, rngs=nnx.Rngs(0)))
    a = _run(log, mode, handle if mode == "learned" else None, every=every)
    b = _run(_perturb_future(log), mode, handle if mode == "learned" else None, every=every)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # ... while log replay does change (the check can fail)
    c, d = _run(log, "log", None), _run(_perturb_future(log), "log", None)
    assert not np.array_equal(np.asarray(c.agents.xy), np.asarray(d.agents.xy))


def test_constant_velocity_agents(sim_logs):
    log = jax.tree.map(jnp.asarray, sim_logs[0])
    tr = _run(log, "cv", None)
    v = np.asarray(tr.agents.valid[0])
    assert v.any()
    speed = np.asarray(tr.agents.speed)[:, v]
    np.testing.assert_allclose(speed, np.broadcast_to(speed[0], speed.shape), atol=1e-5)
    yaw = np.asarray(tr.agents.yaw)[:, v]
    np.testing.assert_allclose(yaw, np.broadcast_to(yaw[0], yaw.shape), atol=1e-5)
    step = np.linalg.norm(np.diff(np.asarray(tr.agents.xy)[:, v], axis=0), axis=-1)
    np.testing.assert_allclose(step, 0.1 * speed[1:], atol=1e-3)


def test_agents_deciding_every_step(sim_logs):
    """With agent_every=1 the agents decide at every 0.1 s step from the same 0.5 s-spaced history
    (kept at every step): the memory holds 21 states, the model sees every fifth; in closed loop
    (slow test below) the agents' motion differs from deciding every 0.5 s, while constant
    velocity is the same either way."""
    log = jax.tree.map(jnp.asarray, sim_logs[0])
    handle = BehaviourHandle.of(BehaviourModel(BehaviourConfig(width=32, point_width=16), rngs=nnx.Rngs(0)))
    sim = SimConfig(agents="learned", agent_every=1)
    st = jax.jit(lambda lg: reset(lg, T0, jax.random.key(0), sim, handle))(log)  # compiled: eager is slow
    assert st.learned.xy.shape[1] == 21 and st.learned.stride == 5
    np.testing.assert_allclose(np.asarray(st.learned.xy[1:, ::5]), np.asarray(log.agents.xy[:, T0 - 20 : T0 + 1 : 5])
                               * np.asarray(st.learned.valid[1:, ::5])[..., None], atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="agent_every"):
        SimConfig(agents="learned", agent_every=2)


@pytest.mark.slow  # four closed loops compiled
def test_agents_deciding_every_step_move_differently(sim_logs):
    log = jax.tree.map(jnp.asarray, sim_logs[0])
    handle = BehaviourHandle.of(BehaviourModel(BehaviourConfig(width=32, point_width=16), rngs=nnx.Rngs(0)))
    a, b = _run(log, "learned", handle, every=1), _run(log, "learned", handle, every=5)
    assert np.all(np.isfinite(np.asarray(a.agents.xy)))
    assert not np.allclose(np.asarray(a.agents.xy), np.asarray(b.agents.xy))
    np.testing.assert_allclose(
        np.asarray(_run(log, "cv", None, every=1).agents.xy),
        np.asarray(_run(log, "cv", None, every=5).agents.xy),
        atol=1e-5,
    )


def test_agents_see_the_lights_of_now(sim_logs):
    """A model that reads traffic lights sees, at log step t, each light's state at t (red, and
    amber in the 3 s before red), as the planners do; the map's lane points are computed once."""
    from drivesim.model.behaviour import lane_points, light_states
    from drivesim.sim.learned_agents import _input, init_learned

    log = jax.tree.map(jnp.asarray, sim_logs[1])
    cfg = BehaviourConfig(width=32, point_width=16, signals=4)
    handle = BehaviourHandle.of(BehaviourModel(cfg, rngs=nnx.Rngs(0)))
    mem, _ = jax.jit(lambda lg: init_learned(lg, T0, jax.random.key(0), handle, every=1))(log)
    pts, ok = lane_points(log.map, cfg.lane_stride)
    np.testing.assert_array_equal(np.asarray(mem.points), np.asarray(pts))
    np.testing.assert_array_equal(np.asarray(mem.points_valid), np.asarray(ok))
    red = np.asarray(log.signals.red)
    states = []
    for t in range(0, red.shape[0], 7):
        inp = _input(mem, log, t, True)
        np.testing.assert_array_equal(np.asarray(inp.signals[:, 4]), red[t].astype(np.float32))
        np.testing.assert_array_equal(
            np.asarray(inp.signals[:, 4:]), np.asarray(light_states(log.signals.red, t, 10.0))
        )
        states.append(np.asarray(inp.signals[:, 4:]))
    assert np.stack(states)[..., 0].any() and np.stack(states)[..., 1].any(), "no red or no amber: nothing checked"
    assert _input(mem, log, T0, False).signals is None


def test_learned_agents_need_the_model(sim_logs):
    with pytest.raises(ValueError, match="behaviour model"):
        reset(sim_logs[0], T0, None, SimConfig(agents="learned"))


@dataclasses.dataclass(frozen=True)
class _Stop:
    """Brake to a standstill where the ego is."""

    name: str = "stop"

    def init(self, rng):
        return None

    def plan(self, params, obs, rng):
        return Trajectory(xy=jnp.zeros((40, 2)), yaw=jnp.zeros((40,)))


def _follower_behind_ego(log, gap_s: float):
    """The log with agent slot 0 replaced by a car driving the ego's own path `gap_s` seconds
    behind it (present only up to the start: its future is the model's)."""
    lag = int(round(gap_s * 10))
    ego = log.ego
    T = log.time.shape[0]
    src = jnp.clip(jnp.arange(T) - lag, 0, T - 1)
    heading = jnp.stack([jnp.cos(ego.yaw[src]), jnp.sin(ego.yaw[src])], -1)
    ag = log.agents
    valid = (jnp.arange(T) <= T0) & (jnp.arange(T) >= lag) & ego.valid[src]
    return log.replace(
        agents=ag.replace(
            xy=ag.xy.at[0].set(ego.xy[src] + 1.3 * heading), yaw=ag.yaw.at[0].set(ego.yaw[src]),
            velocity=ag.velocity.at[0].set(ego.velocity[src]), valid=ag.valid.at[0].set(valid),
            size=ag.size.at[0].set(jnp.array([4.5, 1.9, 1.6])), category=ag.category.at[0].set(0),
        )
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped behaviour model")
@pytest.mark.xfail(
    strict=True,
    reason="known failure of the shipped behaviour model (issue 14): the car 1.5 s behind the ego (0.7 s of "
    "bumper gap at 5.7 m/s: closer than the synthetic world's drivers ever follow) brakes too late and too softly "
    "when the ego stops within a second and drives into it (model v6, fine-tuned on roll-in scenes: closest centre "
    "gap 0.14-0.21 m in 6 of 6 samples, still at 0.1-3.4 m/s at the end, and at a 2.5 s headway 0.03-1.7 m; v5 "
    "0.2-0.3 m). strict: when the model is fixed this XPASSes and the mark must go",
)
def test_follower_brakes_when_the_ego_stops(sim_logs):
    """The ego brakes to a stop; the car 1.5 s behind it in its lane stops behind it (learned),
    where at constant velocity it drives into the ego."""
    from drivesim.model.behaviour_file import load_behaviour
    from drivesim.sim.learned_agents import ego_centre

    handle = BehaviourHandle.of(load_behaviour(SHIPPED))
    log = jax.tree.map(jnp.asarray, sim_logs[0])  # "follow": the ego drives at speed on a road
    assert float(jnp.linalg.norm(log.ego.velocity[T0])) > 5.0
    log = _follower_behind_ego(log, 1.5)
    gaps = {}
    for mode in ("learned", "cv"):
        for key in range(3):
            tr = _run(log, mode, handle if mode == "learned" else None, _Stop(), horizon=60, key=key)
            ego_c = jax.vmap(ego_centre)(tr.ego)
            gap = np.linalg.norm(np.asarray(tr.agents.xy[:, 0] - ego_c), axis=-1)
            gaps.setdefault(mode, []).append((gap.min(), float(tr.agents.speed[-1, 0])))
    for gap_min, final_speed in gaps["learned"]:
        assert gap_min > 4.5, gaps  # centres more than a car length apart: no collision
        assert final_speed < 1.0, gaps
    assert min(g for g, _ in gaps["cv"]) < 2.0, gaps  # constant velocity runs into the ego


def _expected_accel_behind(model, log):
    """The model's expected acceleration (m/s^2) of the follower (agent slot 0) at T0, as a function
    of the ego's speeds (5 keyframes, 0.5 s apart, ending now; the ego stands where the log has it
    now)."""
    from drivesim.model import motion_tokens
    from drivesim.model.behaviour import features
    from drivesim.sim.learned_agents import _input, init_learned

    handle = BehaviourHandle.of(model)
    mem, _ = jax.jit(lambda lg: init_learned(lg, T0, jax.random.key(0), handle, every=1))(log)
    inp0 = _input(mem, log, T0, model.cfg.signals > 0)
    yaw = np.asarray(inp0.yaw[0])
    heading = np.stack([np.cos(yaw), np.sin(yaw)], -1)
    accels = jnp.asarray(motion_tokens.controls()[:, 0])

    def expected(ego_speeds):
        xy = [np.asarray(inp0.xy[0, -1])]
        for k in range(3, -1, -1):  # the ego's earlier positions, consistent with its speeds
            xy.insert(0, xy[0] - 0.25 * (ego_speeds[k] + ego_speeds[k + 1]) * heading[k])
        inp = inp0.replace(xy=inp0.xy.at[0].set(np.stack(xy)), speed=inp0.speed.at[0].set(jnp.asarray(ego_speeds)))
        return float(jax.nn.softmax(model(features(inp, model.cfg))[1]) @ accels)

    return expected


@pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped behaviour model")
@pytest.mark.slow
def test_the_follower_reads_the_car_ahead_not_its_own_past(sim_logs):
    """The car 2.5 s behind the ego, cruising: when the ego ahead has just stopped, the shipped
    model, run without its own past (`own_past=False`), expects it to brake by at least 1 m/s^2
    more than behind a cruising ego. A model trained always seeing its own 0.5 s-spaced past
    learns to copy its own braking instead of reading the car ahead (the copycat shortcut): the
    previous model (v4), the same way, brakes by under 0.5 m/s^2 more, which this check shows it
    can catch. (The shipped model runs seeing its own past, chosen on the benchmark's validity.)"""
    from drivesim.model.behaviour_file import load_behaviour

    def blind(path):
        model = load_behaviour(path)
        model.cfg = dataclasses.replace(model.cfg, own_past=False)
        return model

    log = _follower_behind_ego(jax.tree.map(jnp.asarray, sim_logs[0]), 2.5)
    v = float(jnp.linalg.norm(log.ego.velocity[T0]))
    cruise, stopped = np.full(5, v, np.float32), np.array([v, v, max(v - 3, 0), 0, 0], np.float32)

    def reaction(model):
        expected = _expected_accel_behind(model, log)
        return expected(cruise) - expected(stopped)

    assert reaction(blind(SHIPPED)) > 1.0
    v4 = SHIPPED.parents[1] / "experiments" / "results" / "ablations" / "behaviour_v4.npz"
    if v4.exists():
        assert reaction(blind(v4)) < 0.5

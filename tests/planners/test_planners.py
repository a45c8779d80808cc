"""Planners: the protocol, the built-ins' behaviour, the Python escape hatch, bad planners."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drivesim.data.types import Trajectory
from drivesim.planners.base import PythonPlanner, check_planner
from drivesim.planners.builtin import BUILTIN, ConstantVelocity, IdmPlanner, PdmClosed
from drivesim.sim.closed_loop import evaluate, pdms_terms
from drivesim.sim.engine import SimConfig, observe, reset, rollout


@pytest.fixture(scope="module")
def obs(sim_logs):
    return observe(reset(sim_logs[0], 20))


@pytest.mark.slow
def test_builtins_follow_the_protocol(obs):
    for name, planner in BUILTIN.items():
        assert planner.name == name
        check_planner(planner, obs)
        traj = jax.jit(lambda o, p=planner: p.plan(p.init(None), o, jax.random.key(0)))(obs)
        assert traj.xy.shape == (40, 2) and np.all(np.isfinite(traj.xy))


def test_route_followers_stay_on_the_route(obs):
    for planner in (IdmPlanner(), PdmClosed()):
        traj = jax.jit(lambda o, p=planner: p.plan(None, o, jax.random.key(0)))(obs)
        route = np.asarray(obs.route)[np.asarray(obs.route_valid)]
        d = np.min(np.linalg.norm(np.asarray(traj.xy)[:, None] - route[None], axis=-1), axis=1)
        assert d.max() < 1.6  # centreline, or a proposal at most 1 m beside it (plus sampling)
        assert float(traj.xy[-1, 0]) > 5.0  # and they go forward


def test_constant_velocity_goes_straight(obs):
    traj = ConstantVelocity().plan(None, obs, jax.random.key(0))
    v = float(obs.ego.speed)
    assert np.allclose(np.asarray(traj.xy[:, 1]), 0.0) and float(traj.xy[9, 0]) == pytest.approx(v, rel=1e-5)


@pytest.mark.slow
def test_idm_stops_behind_a_stopped_car(obs):
    """Put a stopped car 20 m ahead on the route: the IDM plan ends before it."""
    route = np.asarray(obs.route)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(route, axis=0), axis=1))])
    k = int(np.searchsorted(s, 20.0))
    c, sn = np.cos(float(obs.ego.yaw)), np.sin(float(obs.ego.yaw))
    ahead = np.asarray(obs.ego.xy) + np.array([c * route[k, 0] - sn * route[k, 1], sn * route[k, 0] + c * route[k, 1]])
    only = jnp.zeros_like(obs.agents.valid).at[0].set(True)  # no other traffic
    agents = obs.agents.replace(
        xy=obs.agents.xy.at[0].set(ahead), speed=obs.agents.speed.at[0].set(0.0), valid=only,
        yaw=obs.agents.yaw.at[0].set(obs.ego.yaw + np.arctan2(route[k + 1, 1] - route[k, 1], route[k + 1, 0] - route[k, 0])),
    )  # fmt: skip
    blocked = obs.replace(agents=agents, agent_size=obs.agent_size.at[0].set(jnp.array([4.5, 1.9, 1.6])))
    traj = IdmPlanner().plan(None, blocked, jax.random.key(0))
    travelled = float(np.linalg.norm(np.asarray(traj.xy[-1])))
    assert travelled < 20.0 - 2.25 - 1.3 - 2.04  # stopped before the car's rear bumper
    free = IdmPlanner().plan(
        None, obs.replace(agents=obs.agents.replace(valid=obs.agents.valid & False)), jax.random.key(0)
    )
    assert float(np.linalg.norm(np.asarray(free.xy[-1]))) > travelled


@pytest.mark.slow
def test_python_planner_matches_its_jax_twin(sim_logs):
    """The callback escape hatch works inside the compiled loop and gives the same closed loop."""

    def straight(o):
        v = float(o.ego.speed)
        t = (np.arange(40) + 1) * 0.1
        return np.stack([v * t, np.zeros(40)], -1), np.zeros(40)

    py = PythonPlanner(straight, name="py_cv")
    cfg = SimConfig()

    def run(planner):
        st = reset(sim_logs[0], 20, None, cfg)
        _, tr = jax.jit(lambda s: rollout(s, planner, None, 15, jax.random.key(0), cfg, pdms_terms()))(st)
        return np.asarray(tr.ego.xy), float(evaluate(st, tr, 15).pdms)

    xy_py, s_py = run(py)
    xy_jax, s_jax = run(ConstantVelocity())
    assert np.allclose(xy_py, xy_jax, atol=1e-4) and s_py == pytest.approx(s_jax, abs=1e-5)


def test_bad_planners_are_refused_by_name(obs):
    @dataclasses.dataclass(frozen=True)
    class WrongShape:
        name: str = "wrong_shape"

        def init(self, rng):
            return None

        def plan(self, params, o, rng):
            return Trajectory(xy=jnp.zeros((40, 3)), yaw=jnp.zeros(40))

    with pytest.raises(ValueError, match="wrong_shape"):
        check_planner(WrongShape(), obs)

    class NoPlan:
        name = "no_plan"

        def init(self, rng):
            return None

    with pytest.raises(TypeError, match="no_plan"):
        check_planner(NoPlan(), obs)


@pytest.mark.slow
def test_a_nan_planner_scores_zero_and_is_flagged(sim_logs):
    @dataclasses.dataclass(frozen=True)
    class Nan:
        name: str = "nan"

        def init(self, rng):
            return None

        def plan(self, params, o, rng):
            return Trajectory(xy=jnp.full((40, 2), jnp.nan), yaw=jnp.zeros(40))

    cfg = SimConfig()
    st = reset(sim_logs[0], 20, None, cfg)
    _, tr = jax.jit(lambda s: rollout(s, Nan(), None, 10, jax.random.key(0), cfg, pdms_terms()))(st)
    assert bool(tr.plan_nan.any())
    assert float(evaluate(st, tr, 10).pdms) == 0.0
    assert np.all(np.isfinite(np.asarray(tr.ego.xy)))  # the car braked instead of flying off


def _red_light_ahead(log, t0, metres, red=True):
    """The log with one stop line across its route `metres` ahead of the ego at t0 (red or green
    throughout), replacing its own lights."""
    from drivesim.data.types import Signals

    st = reset(log, t0)
    route = np.asarray(st.route.xy)[np.asarray(st.route.valid)]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(route, axis=0), axis=1))])
    s_ego = s[np.argmin(np.linalg.norm(route - np.asarray(st.ego.xy), axis=1))]
    k = int(np.searchsorted(s, s_ego + metres))
    d = route[k + 1] - route[k]
    S, T = np.asarray(log.signals.valid).shape[-1], np.asarray(log.time).shape[-1]
    centre = np.zeros((S, 2), np.float32)
    centre[0] = route[k]
    yaw = np.zeros(S, np.float32)
    yaw[0] = np.arctan2(d[1], d[0])
    sig = Signals(
        centre=jnp.asarray(centre), yaw=jnp.asarray(yaw), size=jnp.tile(jnp.asarray([[0.5, 3.5]], jnp.float32), (S, 1)),
        valid=jnp.arange(S) == 0, red=jnp.full((T, S), red), known=jnp.asarray(True),
    )  # fmt: skip
    return log.replace(signals=sig)


@pytest.mark.slow
def test_route_followers_stop_for_a_red_light_and_the_runner_does_not(sim_logs):
    from drivesim.planners.builtin import RedLightRunner

    def travelled(planner, red):
        o = observe(reset(_red_light_ahead(sim_logs[1], 20, 30.0, red), 20))
        o = o.replace(agents=o.agents.replace(valid=o.agents.valid & False))  # no traffic
        traj = jax.jit(lambda ob: planner.plan(None, ob, jax.random.key(0)))(o)
        return float(np.asarray(traj.xy)[-1, 0])

    front = 1.3 + 2.04
    stopping = travelled(IdmPlanner(), True)
    assert stopping < 30.0 - 0.25 - front  # stops before the line
    assert travelled(PdmClosed(), True) < 30.0 - 0.25 - front
    green = travelled(IdmPlanner(), False)
    assert green > stopping + 3.0  # green: it goes on
    assert travelled(RedLightRunner(), True) == pytest.approx(green, abs=0.05)  # red: the runner goes on too


@pytest.mark.slow
def test_running_a_red_light_costs_epdms_not_pdms(sim_logs):
    """Closed loop with a red light 30 m ahead: IDM stops (TLC 1), the runner crosses (TLC 0, EPDMS
    lower), PDMS does not see the light. The human filter is off: the log's ego had no such light."""
    from drivesim.metrics.pdms import MetricConfig
    from drivesim.planners.builtin import RedLightRunner

    log = _red_light_ahead(sim_logs[1], 20, 30.0)
    cfg, metrics = SimConfig(), MetricConfig(human_filter=False)
    st = reset(log, 20, None, cfg)

    def run(planner):
        _, tr = jax.jit(lambda s: rollout(s, planner, None, 60, jax.random.key(0), cfg, pdms_terms(metrics)))(st)
        return evaluate(st, tr, 60, metrics)

    idm, runner = run(IdmPlanner()), run(RedLightRunner())
    assert float(idm.tlc) == 1.0 and float(runner.tlc) == 0.0
    assert float(runner.epdms) == 0.0 < float(idm.epdms)
    assert float(runner.nc) * float(runner.dac) > 0 and float(runner.pdms) > 0.5  # PDMS does not see the light
    # with the filter on, the logged ego crossed the same (invented) red line: not held against it
    forgiven = evaluate(st, jax.jit(lambda s: rollout(s, RedLightRunner(), None, 60, jax.random.key(0), cfg,
                                                      pdms_terms()))(st)[1], 60)  # fmt: skip
    assert float(forgiven.tlc) == 1.0

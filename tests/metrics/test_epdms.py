"""EPDMS terms (NAVSIM v2) on hand-built situations whose right answer is known."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drivesim.data.classes import OCC_DRIVABLE
from drivesim.data.types import SIM_DT, AgentState, EgoState, EgoTrack, MapData, Route, Signals
from drivesim.metrics import epdms
from drivesim.metrics.pdms import MetricConfig, StepTerms, score, step_terms

CFG = MetricConfig()
X0, Y0 = 1200.0, 800.0  # far from the origin, as nuScenes maps
f32 = jnp.float32


def _ego(x=0.0, y=0.0, yaw=0.0, speed=10.0) -> EgoState:
    return EgoState(xy=jnp.array([X0 + x, Y0 + y], f32), yaw=f32(yaw), speed=f32(speed), accel=f32(0), steer=f32(0))


def _lane(start, direction, length=15.0, points=16):
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    return np.asarray(start, float) + np.linspace(0.0, length, points)[:, None] * d


def _map(lanes, connector=None) -> MapData:
    """All drivable (DAC is not under test here); lanes relative to (X0, Y0)."""
    lanes = np.asarray(lanes, np.float32) + np.array([X0, Y0], np.float32)
    L = len(lanes)
    return MapData(
        lane_xy=jnp.asarray(lanes),
        lane_valid=jnp.ones(L, bool),
        lane_successors=jnp.full((L, 2), -1, jnp.int32),
        lane_predecessors=jnp.full((L, 2), -1, jnp.int32),
        lane_is_connector=jnp.asarray(np.zeros(L, bool) if connector is None else connector),
        raster=jnp.full((400, 400), OCC_DRIVABLE, jnp.uint8),
        raster_origin=jnp.asarray([X0 - 50.0, Y0 - 50.0], f32),
        raster_resolution=f32(0.25),
    )


def _road(x_from, x_to, y, direction):
    edges = np.arange(x_from, x_to + 1e-6, 15.0)
    starts = edges[:-1] if direction > 0 else edges[1:][::-1]
    return [_lane([x, y], [direction, 0]) for x in starts]


def _signals(x, red, yaw=0.0, known=True, y=0.0) -> Signals:
    """One stop line across the lane at (X0 + x, Y0 + y), 0.5 m deep, 3.5 m wide; a padded slot."""
    return Signals(
        centre=jnp.asarray([[X0 + x, Y0 + y], [0.0, 0.0]], f32),
        yaw=jnp.asarray([yaw, 0.0], f32),
        size=jnp.asarray([[0.5, 3.5], [0.0, 0.0]], f32),
        valid=jnp.asarray([True, False]),
        red=jnp.asarray([red, True]),
        known=jnp.asarray(known),
    )


def _route():
    x = -20.0 + np.arange(120.0)
    xy = np.stack([X0 + x, np.full(120, Y0)], axis=-1)
    return Route(xy=jnp.asarray(xy, f32), valid=jnp.ones(120, bool), s=jnp.asarray(np.arange(120.0), f32))


def _no_agents():
    z = jnp.zeros(1, f32)
    agents = AgentState(xy=jnp.zeros((1, 2), f32), yaw=z, speed=z, valid=jnp.zeros(1, bool))
    return agents, jnp.ones((1, 3), f32), jnp.zeros(1, jnp.int32)


def _terms(ego, m, signals=None, cfg=CFG) -> StepTerms:
    agents, size, cat = _no_agents()
    return _step_jit(ego, agents, size, cat, m, _route(), cfg, None, signals)


_step_jit = jax.jit(step_terms, static_argnums=(6,))


ROAD = _map(_road(-30, 60, 0.0, +1) + _road(-30, 60, 3.5, -1))


# ------------------------------------------------------------------ traffic lights (TLC)


def test_red_light_only_when_the_box_overlaps_a_red_stop_line_of_its_direction():
    # Box centre 1.3 m ahead of the rear axle, 2.04 m half length: the stop line at x = 3 is
    # under the box with the rear axle at 0, clear of it with the rear axle at -5.
    def red(x=0.0, **kw):
        return bool(_terms(_ego(x=x), ROAD, _signals(3.0, **kw)).red_light)

    assert red(red=True)
    assert not red(red=False)  # green or amber
    assert not red(x=-5.0, red=True)  # stopped before the line
    assert not red(red=True, yaw=math.pi)  # the other direction's line
    assert not red(red=True, known=False)  # unknown states never count
    assert not bool(_terms(_ego(), ROAD, None).red_light)  # no lights at all
    assert not bool(_terms(_ego(), ROAD, _signals(3.0, red=True), MetricConfig(epdms=False)).red_light)


def test_running_a_red_light_zeroes_tlc_and_epdms_but_not_pdms():
    T = 30
    ok = _step_terms(T)
    ran = _step_terms(T, red_light=np.arange(T) == 12)
    trace = _trace(T)
    a = score(ok, trace, f32(10.0), jnp.ones(T, bool), CFG)
    b = score(ran, trace, f32(10.0), jnp.ones(T, bool), CFG)
    assert float(a.tlc) == 1.0 and float(b.tlc) == 0.0
    assert float(b.epdms) == 0.0 and float(a.epdms) > 0.9
    assert float(b.pdms) == pytest.approx(float(a.pdms))
    # a red step outside the valid steps does not count
    c = score(ran, trace, f32(10.0), jnp.arange(T) < 10, CFG)
    assert float(c.tlc) == 1.0


# ------------------------------------------------------------------ driving direction (DDC)


@pytest.mark.parametrize("metres_per_step, steps, ddc", [(0.1, 30, 1.0), (0.3, 10, 0.5), (1.0, 10, 0.0)])
def test_driving_against_traffic(metres_per_step, steps, ddc):
    T = 40
    wrong = np.where(np.arange(T) < steps, metres_per_step, 0.0)
    s = score(_step_terms(T, wrong_way=wrong), _trace(T), f32(10.0), jnp.ones(T, bool), CFG)
    assert float(s.ddc) == ddc
    assert float(s.epdms) == pytest.approx(ddc)  # everything else is perfect


def test_the_opposite_lane_is_wrong_way_in_the_step_terms():
    t = _terms(_ego(y=3.5), ROAD)  # 1 m per step (10 m/s) in the opposite lane
    assert float(t.wrong_way) == pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------ lane keeping (LK)


def test_lane_deviation_and_intersection_step_terms():
    assert float(_terms(_ego(), ROAD).lane_deviation) == pytest.approx(0.0, abs=1e-3)
    assert float(_terms(_ego(y=1.0), ROAD).lane_deviation) == pytest.approx(1.0, abs=1e-3)
    assert not bool(_terms(_ego(y=1.0), ROAD).in_intersection)
    # a connector under the ego, the lanes 20 m away: in an intersection
    m = _map([_lane([-10.0, 0.0], [1, 0], 20.0), _lane([-10.0, 20.0], [1, 0], 20.0)], connector=[True, False])
    t = _terms(_ego(), m)
    assert bool(t.in_intersection)
    assert float(t.lane_deviation) == pytest.approx(20.0, abs=1e-2)


def test_lane_keeping_needs_two_seconds_of_drift_without_a_break():
    T = 60
    dev = lambda steps: np.where((np.arange(T) >= 5) & (np.arange(T) < 5 + steps), 0.8, 0.1)  # noqa: E731

    def lk(deviation, **kw):
        return float(score(_step_terms(T, lane_deviation=deviation, **kw), _trace(T), f32(10.0), jnp.ones(T, bool)).lk)

    assert lk(dev(19)) == 1.0
    assert lk(dev(20)) == 0.0
    assert lk(np.full(T, 0.45)) == 1.0  # within 0.5 m
    # a step back in the lane breaks the run
    broken = dev(30)
    broken[15] = 0.1
    assert lk(broken) == 1.0
    # intersection steps neither count nor break a run (as NAVSIM v2)
    inter = np.zeros(T, bool)
    inter[15:25] = True
    drift = dev(30)  # 30 steps: 10 in the intersection, 20 outside
    assert lk(drift, in_intersection=inter) == 0.0
    drift = dev(28)  # 18 outside
    assert lk(drift, in_intersection=inter) == 1.0


# ------------------------------------------------------------------ history comfort (HC)


def _log_with_history(speeds, yaws=None):
    """A stand-in log: time and the ego track (all history_comfort reads)."""
    n = len(speeds)
    yaws = np.zeros(n) if yaws is None else yaws
    ego = EgoTrack(
        xy=jnp.zeros((n, 2), f32),
        yaw=jnp.asarray(yaws, f32),
        velocity=jnp.asarray(np.stack([speeds, np.zeros(n)], -1), f32),
        size=jnp.ones(3, f32),
        valid=jnp.ones(n, bool),
    )
    return types.SimpleNamespace(time=jnp.arange(n) * SIM_DT, ego=ego)


def test_history_comfort_sees_the_jolt_between_the_history_and_the_rollout():
    T, t0 = 40, 20
    rollout = _trace(T, speed=10.0)
    smooth = _log_with_history(np.full(t0 + T, 10.0))
    fast_before = _log_with_history(np.concatenate([np.full(t0, 14.0), np.full(T, 10.0)]))
    valid = jnp.ones(T, bool)
    assert float(epdms.history_comfort(smooth, t0, rollout, valid, CFG)) == 1.0
    # 4 m/s lost in one step at the start: -40 m/s^2 across the hand-over; the rollout alone is smooth
    assert float(epdms.history_comfort(fast_before, t0, rollout, valid, CFG)) == 0.0
    assert float(score(_step_terms(T), rollout, f32(10.0), valid, CFG).c) == 1.0
    # at the very start of a log there is no history: the rollout alone counts
    assert float(epdms.history_comfort(fast_before, 0, rollout, valid, CFG)) == 1.0
    # a jolt wholly inside the history (the log's own, the same for every planner) does not count
    early = np.full(t0 + T, 10.0)
    early[: t0 - 12] = 14.0  # 1.2 s before the start: no comfort window reaches past t0
    assert float(epdms.history_comfort(_log_with_history(early), t0, rollout, valid, CFG)) == 1.0
    late = np.full(t0 + T, 10.0)
    late[: t0 - 2] = 14.0  # 0.2 s before the start: windows across t0 see it
    assert float(epdms.history_comfort(_log_with_history(late), t0, rollout, valid, CFG)) == 0.0


# ------------------------------------------------------------------ extended comfort (EC)


def _plan(speed, accel, K=40, dt=SIM_DT, yaw_rate=0.0):
    t = (np.arange(K) + 1) * dt
    s = speed * t + 0.5 * accel * t * t
    yaw = yaw_rate * t
    if yaw_rate:
        # arc of the same length: integrate heading
        ds = np.diff(np.concatenate([[0.0], s]))
        h = np.concatenate([[0.0], yaw[:-1]])
        xy = np.cumsum(np.stack([ds * np.cos(h), ds * np.sin(h)], -1), axis=0)
    else:
        xy = np.stack([s, np.zeros(K)], -1)
    return jnp.asarray(xy, f32), jnp.asarray(yaw, f32)


def _plans(rows, age):
    xy = jnp.stack([r[0] for r in rows])
    yaw = jnp.stack([r[1] for r in rows])
    return xy, yaw, jnp.asarray(age, jnp.int32)


def test_consistent_plans_agree_and_flip_flopping_plans_do_not():
    # Replanning every step (0.1 s): the same steady plan each time
    T = 20
    steady = [_plan(10.0, 0.0) for _ in range(T)]
    xy, yaw, age = _plans(steady, [-1] + [0] * (T - 1))
    assert float(epdms.extended_comfort(xy, yaw, age, jnp.ones(T, bool), SIM_DT, CFG)) == 1.0
    # a constant acceleration, replanned as the speed grows: the plans agree too
    grow = [_plan(10.0 + 1.0 * SIM_DT * i, 1.0) for i in range(T)]
    xy, yaw, age = _plans(grow, [-1] + [0] * (T - 1))
    assert float(epdms.extended_comfort(xy, yaw, age, jnp.ones(T, bool), SIM_DT, CFG)) == 1.0
    # accelerate, coast, accelerate, ...: every pair disagrees by 2 m/s^2. (NAVSIM compares the
    # acceleration's magnitude, so braking at 1.5 after accelerating at 1.5 would pass.)
    flip = [_plan(10.0, 2.0 if i % 2 else 0.0) for i in range(T)]
    xy, yaw, age = _plans(flip, [-1] + [0] * (T - 1))
    assert float(epdms.extended_comfort(xy, yaw, age, jnp.ones(T, bool), SIM_DT, CFG)) == 0.0
    # turning left then right: the yaw rate flips
    turn = [_plan(10.0, 0.0, yaw_rate=0.2 if i % 2 else -0.2) for i in range(T)]
    xy, yaw, age = _plans(turn, [-1] + [0] * (T - 1))
    assert float(epdms.extended_comfort(xy, yaw, age, jnp.ones(T, bool), SIM_DT, CFG)) == 0.0


@pytest.mark.slow
def test_extended_comfort_counts_pairs_and_honours_the_cadence():
    # Replanning every 5 steps: 4 plans, 3 pairs; one bad plan spoils the two pairs it is in.
    rows, age = [], []
    plans = [_plan(10.0, 0.0), _plan(10.0, 0.0), _plan(10.0, 2.5), _plan(10.0, 0.0)]
    for p in plans:
        for j in range(5):
            rows.append(p)
            age.append(j)
    rows = [plans[0]] + rows
    age = [-1] + age
    xy, yaw, a = _plans(rows, age)
    T = len(age)
    ec = float(epdms.extended_comfort(xy, yaw, a, jnp.ones(T, bool), SIM_DT, CFG))
    assert ec == pytest.approx(1.0 / 3.0)
    # no second plan: nothing to compare
    assert float(epdms.extended_comfort(xy[:6], yaw[:6], a[:6], jnp.ones(6, bool), SIM_DT, CFG)) == 1.0


# ------------------------------------------------------------------ the score and its human filter


def test_epdms_weights_and_the_human_filter():
    T = 30
    ep_half = _step_terms(T, progress=np.linspace(0.0, 5.0, T))  # half the expert's 10 m
    s = score(ep_half, _trace(T), f32(10.0), jnp.ones(T, bool), CFG)
    assert float(s.epdms) == pytest.approx((5 * 0.5 + 5 + 2 + 2 + 2) / 16)
    assert float(s.pdms) == pytest.approx((5 * 0.5 + 5 + 2) / 12)
    e = epdms.extend(s, hc=0.0, ec=0.5)
    assert float(e.epdms) == pytest.approx((5 * 0.5 + 5 + 2 + 0 + 1) / 16)
    drifting = score(_step_terms(T, lane_deviation=np.full(T, 2.0)), _trace(T), f32(10.0), jnp.ones(T, bool), CFG)
    assert float(drifting.lk) == 0.0
    human_ok = {k: f32(1.0) for k in ("dac", "ddc", "tlc", "lk", "hc")}
    human_drifts = dict(human_ok, lk=f32(0.0))
    assert float(epdms.extend(drifting, 1.0, 1.0, human_ok).lk) == 0.0
    assert float(epdms.extend(drifting, 1.0, 1.0, human_drifts).lk) == 1.0  # the human drifted too
    red = score(_step_terms(T, red_light=np.arange(T) == 3), _trace(T), f32(10.0), jnp.ones(T, bool), CFG)
    assert float(epdms.extend(red, 1.0, 1.0, human_ok).epdms) == 0.0
    assert float(epdms.extend(red, 1.0, 1.0, dict(human_ok, tlc=f32(0.0))).epdms) > 0.9


def test_epdms_is_jittable_and_batched():
    T = 20
    terms = jax.tree.map(lambda a: jnp.stack([a, a]), _step_terms(T, lane_deviation=np.full(T, 2.0)))
    trace = jax.tree.map(lambda a: jnp.stack([a, a]), _trace(T))
    s = jax.jit(jax.vmap(lambda t, tr: score(t, tr, f32(10.0), jnp.ones(T, bool), CFG)))(terms, trace)
    assert s.lk.shape == (2,) and float(s.lk[0]) == 0.0


# ------------------------------------------------------------------ helpers


def _trace(T=40, speed=5.0, accel=0.0):
    t = np.arange(T) * SIM_DT
    return EgoState(
        xy=jnp.zeros((T, 2), f32),
        yaw=jnp.zeros(T, f32),
        speed=jnp.asarray(speed + accel * t, f32),
        accel=jnp.full((T,), accel, f32),
        steer=jnp.zeros(T, f32),
    )


def _step_terms(T=40, progress=None, wrong_way=None, lane_deviation=None, in_intersection=None, red_light=None):
    return StepTerms(
        collision=jnp.ones(T, f32),
        drivable=jnp.ones(T, bool),
        ttc=jnp.full((T,), jnp.inf, f32),
        ttc_ok=jnp.ones(T, bool),
        progress=jnp.asarray(np.linspace(0.0, 20.0, T) if progress is None else progress, f32),
        wrong_way=jnp.asarray(np.zeros(T) if wrong_way is None else wrong_way, f32),
        speed=jnp.full((T,), 5.0, f32),
        lane_deviation=jnp.asarray(np.zeros(T) if lane_deviation is None else lane_deviation, f32),
        in_intersection=jnp.asarray(np.zeros(T, bool) if in_intersection is None else in_intersection),
        red_light=jnp.asarray(np.zeros(T, bool) if red_light is None else red_light),
    )

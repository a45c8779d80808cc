"""Planner scores on hand-built situations whose right answer is known, and JAX habits."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drivesim.data.classes import (
    OBSTACLE,
    OCC_CROSSING,
    OCC_DRIVABLE,
    OCC_FREE,
    OCC_LANE_MARKING,
    OCC_WALKWAY,
    PEDESTRIAN,
    VEHICLE,
)
from drivesim.data.types import EGO_REAR_AXLE_TO_CENTER, EGO_SIZE, SIM_DT, AgentState, EgoState, MapData, Route
from drivesim.metrics.pdms import (
    MetricConfig,
    Scores,
    StepTerms,
    comfort,
    comfort_extremes,
    route_progress,
    score,
    step_terms,
)

CFG = MetricConfig()
step_jit = jax.jit(step_terms, static_argnames="cfg")
score_jit = jax.jit(score, static_argnames="cfg")

# The scene sits far from the global origin, as nuScenes maps do.
X0, Y0 = 1200.0, 800.0
ROAD_Y = (Y0 - 10.0, Y0 + 10.0)  # drivable band; walkway outside
EGO_HALF_L = EGO_SIZE[0] / 2
CAR = (4.5, 1.9, 1.6)


def _ego(x=0.0, y=0.0, yaw=0.0, speed=10.0) -> EgoState:
    """Ego with its rear axle at (X0 + x, Y0 + y)."""
    f = jnp.float32
    return EgoState(xy=jnp.array([X0 + x, Y0 + y], f), yaw=f(yaw), speed=f(speed), accel=f(0.0), steer=f(0.0))


def _ego_center(ego_x=0.0):
    return ego_x + EGO_REAR_AXLE_TO_CENTER


def _agents(*rows, num=4):
    """rows: (x, y, yaw, speed, size, category) relative to (X0, Y0); padded to `num` invalid slots."""
    xy = np.zeros((num, 2), np.float32)
    yaw, speed = np.zeros(num, np.float32), np.zeros(num, np.float32)
    size = np.tile(np.float32(CAR), (num, 1))
    cat = np.zeros(num, np.int32)
    valid = np.zeros(num, bool)
    for i, (x, y, ya, sp, sz, c) in enumerate(rows):
        xy[i], yaw[i], speed[i], size[i], cat[i], valid[i] = (X0 + x, Y0 + y), ya, sp, sz, c, True
    return AgentState(xy=jnp.asarray(xy), yaw=jnp.asarray(yaw), speed=jnp.asarray(speed), valid=jnp.asarray(valid)), (
        jnp.asarray(size),
        jnp.asarray(cat),
    )


def _map(lanes=None, connector=None, raster=None) -> MapData:
    """A 100 m raster (0.25 m cells) centred on (X0, Y0): road band ROAD_Y, walkway elsewhere."""
    res, n = 0.25, 400
    origin = np.array([X0 - 50.0, Y0 - 50.0], np.float32)
    if raster is None:
        y = origin[1] + (np.arange(n) + 0.5) * res  # row r covers y in origin + [r, r + 1) * res
        on_road = (y >= ROAD_Y[0]) & (y < ROAD_Y[1])
        raster = np.where(on_road[:, None], OCC_DRIVABLE, OCC_WALKWAY) * np.ones((1, n))
    if lanes is None:
        lanes = np.zeros((1, 16, 2))
        valid = np.zeros(1, bool)
    else:
        lanes = np.asarray(lanes, np.float32) + np.array([X0, Y0], np.float32)
        valid = np.ones(len(lanes), bool)
    L = len(lanes)
    return MapData(
        lane_xy=jnp.asarray(lanes, jnp.float32),
        lane_valid=jnp.asarray(valid),
        lane_successors=jnp.full((L, 2), -1, jnp.int32),
        lane_predecessors=jnp.full((L, 2), -1, jnp.int32),
        lane_is_connector=jnp.asarray(np.zeros(L, bool) if connector is None else connector),
        raster=jnp.asarray(raster, jnp.uint8),
        raster_origin=jnp.asarray(origin),
        raster_resolution=jnp.float32(res),
    )


def _route(n=120, spacing=1.0, num_valid=None) -> Route:
    """Straight along +x through the ego, starting 20 m behind (X0, Y0)."""
    x = -20.0 + spacing * np.arange(n)
    xy = np.stack([X0 + x, np.full(n, Y0)], axis=-1)
    valid = np.arange(n) < (n if num_valid is None else num_valid)
    s = np.minimum(np.arange(n), valid.sum() - 1) * spacing
    return Route(xy=jnp.asarray(xy, jnp.float32), valid=jnp.asarray(valid), s=jnp.asarray(s, jnp.float32))


def _lane(start, direction, length=15.0, points=16):
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    return np.asarray(start, float) + np.linspace(0.0, length, points)[:, None] * d


def _terms(ego, *agent_rows, map=None, prev_ego=None) -> StepTerms:
    agents, (size, cat) = _agents(*agent_rows)
    return step_jit(ego, agents, size, cat, _map() if map is None else map, _route(), cfg=CFG, prev_ego=prev_ego)


# --------------------------------------------------------------------------------------------
# NC: collisions and fault


def test_head_on_crash_is_at_fault():
    ego = _ego(speed=8.0)
    head_on = (_ego_center() + 4.0, 0.0, math.pi, 8.0, CAR, VEHICLE)  # boxes 0.3 m into each other
    assert float(_terms(ego, head_on).collision) == 0.0
    assert float(_terms(ego, (_ego_center() + 4.4, 0.0, math.pi, 8.0, CAR, VEHICLE)).collision) == 1.0


def test_rear_ended_while_stopped_is_not_at_fault():
    from_behind = (_ego_center() - 4.0, 0.0, 0.0, 6.0, CAR, VEHICLE)
    assert float(_terms(_ego(speed=0.0), from_behind).collision) == 1.0
    # Hit from behind while creeping: the agent is behind the rear axle, still not the ego's fault.
    assert float(_terms(_ego(speed=1.0), from_behind).collision) == 1.0
    # The same contact in front of a moving ego is.
    in_front = (_ego_center() + 4.0, 0.0, 0.0, 6.0, CAR, VEHICLE)
    assert float(_terms(_ego(speed=1.0), in_front).collision) == 0.0
    # A stopped ego is never at fault, wherever the contact is.
    assert float(_terms(_ego(speed=0.0), in_front).collision) == 1.0


@pytest.mark.parametrize(
    "row",
    [
        (EGO_HALF_L + EGO_REAR_AXLE_TO_CENTER + 2.0, 0.5, 0.2, 0.0, CAR, VEHICLE),  # parked car
        (EGO_HALF_L + EGO_REAR_AXLE_TO_CENTER + 0.1, -0.4, 0.0, 0.0, (0.4, 0.4, 0.7), OBSTACLE),  # cone
        (EGO_HALF_L + EGO_REAR_AXLE_TO_CENTER + 0.1, -0.4, 0.0, 2.0, (0.4, 0.4, 0.7), OBSTACLE),  # moving debris
    ],
    ids=["parked_car", "cone", "obstacle_class"],
)
def test_driving_into_a_static_object_scores_half(row):
    assert float(_terms(_ego(speed=5.0), row).collision) == 0.5


@pytest.mark.parametrize("ped_speed", [0.0, 1.4])
def test_hitting_a_pedestrian_is_at_fault_even_a_standing_one(ped_speed):
    ped = (EGO_HALF_L + EGO_REAR_AXLE_TO_CENTER + 0.1, 0.3, math.pi / 2, ped_speed, (0.6, 0.6, 1.8), PEDESTRIAN)
    assert float(_terms(_ego(speed=5.0), ped).collision) == 0.0
    # Any static contact beside it does not soften it.
    cone = (EGO_HALF_L + EGO_REAR_AXLE_TO_CENTER + 0.1, -0.6, 0.0, 0.0, (0.4, 0.4, 0.7), OBSTACLE)
    assert float(_terms(_ego(speed=5.0), ped, cone).collision) == 0.0


def test_invalid_agent_never_collides():
    agents, (size, cat) = _agents((_ego_center() + 1.0, 0.0, 0.0, 5.0, CAR, VEHICLE))
    agents = agents.replace(valid=jnp.zeros_like(agents.valid))
    assert float(step_jit(_ego(), agents, size, cat, _map(), _route(), cfg=CFG).collision) == 1.0


# --------------------------------------------------------------------------------------------
# DAC


def test_leaving_the_road_by_one_metre_is_off_drivable_area():
    half_w = EGO_SIZE[1] / 2
    on_road = _ego(y=ROAD_Y[1] - Y0 - half_w - 0.2)  # left side 0.2 m inside the road edge
    off_road = _ego(y=ROAD_Y[1] - Y0 - half_w + 1.0)  # left side 1 m over it
    assert bool(_terms(on_road).drivable)
    assert not bool(_terms(off_road).drivable)
    # Turned 90 degrees at the centre line the car still fits in the 20 m road.
    assert bool(_terms(_ego(yaw=math.pi / 2)).drivable)


@pytest.mark.parametrize(
    "cls, ok",
    [
        (OCC_DRIVABLE, True),
        (OCC_CROSSING, True),
        (OCC_LANE_MARKING, True),
        (OCC_WALKWAY, False),
        (OCC_FREE, False),
    ],
)
def test_drivable_classes(cls, ok):
    raster = np.full((400, 400), OCC_DRIVABLE, np.uint8)
    # A 1 m patch under the ego's front-left corner (rear axle at the raster centre, heading +x).
    c = (np.array([EGO_REAR_AXLE_TO_CENTER + EGO_HALF_L, EGO_SIZE[1] / 2]) + 50.0) / 0.25
    raster[int(c[1]) - 2 : int(c[1]) + 2, int(c[0]) - 2 : int(c[0]) + 2] = cls
    assert bool(_terms(_ego(), map=_map(raster=raster)).drivable) == ok


def test_outside_the_raster_is_not_drivable():
    assert not bool(_terms(_ego(x=60.0)).drivable)


# --------------------------------------------------------------------------------------------
# TTC


def _gap_ahead(gap, length=CAR[0]):
    """x of an agent centre whose rear is `gap` metres ahead of the ego's front bumper."""
    return EGO_REAR_AXLE_TO_CENTER + EGO_HALF_L + gap + length / 2


def test_ttc_three_seconds_behind_a_slower_car_is_ok():
    lead = (_gap_ahead(15.0), 0.0, 0.0, 5.0, CAR, VEHICLE)  # closing at 5 m/s: 3 s
    t = _terms(_ego(speed=10.0), lead)
    assert bool(t.ttc_ok) and math.isinf(float(t.ttc))


def test_ttc_half_a_second_to_a_stopped_car_is_a_violation():
    stopped = (_gap_ahead(4.95), 0.0, 0.0, 0.0, CAR, VEHICLE)  # 0.495 s at 10 m/s
    t = _terms(_ego(speed=10.0), stopped)
    assert not bool(t.ttc_ok)
    assert float(t.ttc) == pytest.approx(0.5)
    assert float(t.collision) == 1.0  # no contact yet
    # Just beyond the threshold: first projected contact at 1.0 s is fine.
    t = _terms(_ego(speed=10.0), (_gap_ahead(9.95), 0.0, 0.0, 0.0, CAR, VEHICLE))
    assert bool(t.ttc_ok) and float(t.ttc) == pytest.approx(1.0)


def test_ttc_ignores_stopped_ego_rear_approaches_and_existing_contact():
    stopped = (_gap_ahead(4.95), 0.0, 0.0, 0.0, CAR, VEHICLE)
    assert bool(_terms(_ego(speed=0.0), stopped).ttc_ok)
    # A faster car closing from behind would hit the ego's rear: not the ego's fault.
    behind = (-(CAR[0] / 2) - (EGO_HALF_L - EGO_REAR_AXLE_TO_CENTER) - 2.0, 0.0, 0.0, 15.0, CAR, VEHICLE)
    assert bool(_terms(_ego(speed=10.0), behind).ttc_ok)
    # An agent already overlapping is a collision, not a TTC violation.
    touching = (_gap_ahead(-0.2), 0.0, 0.0, 0.0, CAR, VEHICLE)
    t = _terms(_ego(speed=10.0), touching)
    assert float(t.collision) == 0.5 and bool(t.ttc_ok)
    # A crossing car that would cut in front within 0.5 s.
    crossing = (_gap_ahead(3.0), -6.0, math.pi / 2, 10.0, CAR, VEHICLE)
    assert not bool(_terms(_ego(speed=10.0), crossing).ttc_ok)


# --------------------------------------------------------------------------------------------
# Route progress and EP


def test_route_progress_projects_the_rear_axle():
    route = _route()
    assert float(route_progress(route, jnp.array([X0 + 12.3, Y0 + 1.5]))) == pytest.approx(32.3, abs=1e-3)
    # Behind the start clips to 0, beyond the last valid point to its arc length.
    assert float(route_progress(route, jnp.array([X0 - 30.0, Y0]))) == pytest.approx(0.0)
    short = _route(num_valid=50)
    assert float(route_progress(short, jnp.array([X0 + 60.0, Y0]))) == pytest.approx(49.0)
    # Through step_terms too.
    assert float(_terms(_ego(x=7.25)).progress) == pytest.approx(27.25, abs=1e-3)


def test_route_progress_follows_a_corner():
    # 10 m east, then 10 m north; a point beside the second leg projects onto it.
    xy = np.array([[0, 0], [10, 0], [10, 10]], np.float32) + np.array([X0, Y0], np.float32)
    route = Route(xy=jnp.asarray(xy), valid=jnp.ones(3, bool), s=jnp.array([0.0, 10.0, 20.0]))
    assert float(route_progress(route, jnp.array([X0 + 9.0, Y0 + 6.0]))) == pytest.approx(16.0, abs=1e-3)


def _trace(T=40, speed=5.0, accel=0.0, yaw_rate=0.0, yaw0=0.0):
    t = np.arange(T) * SIM_DT
    v = speed + accel * t
    f = jnp.float32
    return EgoState(
        xy=jnp.zeros((T, 2), f),
        yaw=jnp.asarray(yaw0 + yaw_rate * t, f),
        speed=jnp.asarray(v, f),
        accel=jnp.full((T,), accel, f),
        steer=jnp.zeros((T,), f),
    )


def _step_terms(
    T=40, progress=None, collision=None, drivable=None, ttc_ok=None, wrong_way=None, speed=None,
    lane_deviation=None, in_intersection=None, red_light=None,
):  # fmt: skip
    f = jnp.float32
    return StepTerms(
        lane_deviation=jnp.asarray(np.zeros(T) if lane_deviation is None else lane_deviation, f),
        in_intersection=jnp.asarray(np.zeros(T, bool) if in_intersection is None else in_intersection),
        red_light=jnp.asarray(np.zeros(T, bool) if red_light is None else red_light),
        collision=jnp.asarray(np.ones(T) if collision is None else collision, f),
        drivable=jnp.asarray(np.ones(T, bool) if drivable is None else drivable),
        ttc=jnp.full((T,), jnp.inf, f),
        ttc_ok=jnp.asarray(np.ones(T, bool) if ttc_ok is None else ttc_ok),
        progress=jnp.asarray(np.linspace(0.0, 20.0, T) if progress is None else progress, f),
        wrong_way=jnp.asarray(np.zeros(T) if wrong_way is None else wrong_way, f),
        speed=jnp.asarray(np.full(T, 5.0) if speed is None else speed, f),
    )


def _score(terms, expert=40.0, valid=None, trace=None) -> Scores:
    T = terms.progress.shape[0]
    valid = np.ones(T, bool) if valid is None else valid
    return score_jit(terms, _trace(T) if trace is None else trace, jnp.float32(expert), jnp.asarray(valid), cfg=CFG)


@pytest.mark.parametrize(
    "ego_progress, expert, ep",
    [(20.0, 40.0, 0.5), (50.0, 40.0, 1.0), (-3.0, 40.0, 0.0), (0.0, 4.9, 1.0), (0.0, 5.1, 0.0)],
)
def test_ep_ratio_and_min_progress_rule(ego_progress, expert, ep):
    terms = _step_terms(progress=np.linspace(100.0, 100.0 + ego_progress, 40))
    s = _score(terms, expert)
    assert float(s.ep) == pytest.approx(ep, abs=1e-5)
    assert float(s.ego_progress) == pytest.approx(ego_progress, abs=1e-4)


def test_progress_counts_only_valid_steps():
    progress = np.array([0.0, 0.0, 10.0, 20.0, 30.0, 99.0])
    valid = np.array([False, True, True, True, True, False])
    s = _score(_step_terms(T=6, progress=progress), expert=60.0, valid=valid)
    assert float(s.ego_progress) == pytest.approx(30.0)
    assert float(s.ep) == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------
# Comfort


def test_smooth_trace_is_comfortable_even_near_the_bounds():
    # Constant acceleration 2.3 m/s^2 and yaw rate 0.5 rad/s, heading wrapping through +-pi.
    trace = _trace(T=40, speed=0.5, accel=2.3, yaw_rate=0.5, yaw0=2.5)
    trace = trace.replace(yaw=(trace.yaw + jnp.pi) % (2 * jnp.pi) - jnp.pi)
    ext = comfort_extremes(trace, SIM_DT, CFG)
    assert ext["max_lon_accel"] == pytest.approx(2.3, abs=1e-3)
    assert ext["yaw_rate"] == pytest.approx(0.5, abs=1e-3)
    assert float(ext["lon_jerk"]) < 1e-2 and float(ext["yaw_accel"]) < 1e-2
    assert float(comfort(trace, SIM_DT, CFG)) == 1.0


def test_jerk_spike_is_uncomfortable():
    # Accelerate at 2 m/s^2, then brake at 3 m/s^2 from one step to the next: both accelerations
    # are allowed, the jump between them is not.
    T = 40
    a = np.where(np.arange(T) < 20, 2.0, -3.0)
    v = 5.0 + np.concatenate([[0.0], np.cumsum(a[:-1] * SIM_DT)])
    trace = _trace(T).replace(speed=jnp.asarray(v, jnp.float32))
    ext = comfort_extremes(trace, SIM_DT, CFG)
    assert CFG.min_lon_accel <= float(ext["min_lon_accel"]) and float(ext["max_lon_accel"]) <= CFG.max_lon_accel
    assert float(ext["lon_jerk"]) > CFG.max_lon_jerk
    assert float(comfort(trace, SIM_DT, CFG)) == 0.0
    # The same spike inside padding does not count.
    valid = np.arange(T) < 18
    assert float(comfort(trace, SIM_DT, CFG, jnp.asarray(valid))) == 1.0


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(speed=2.0, yaw_rate=1.2), "yaw_rate"),
        (dict(speed=8.0, yaw_rate=0.7), "lat_accel"),  # 5.6 m/s^2
        (dict(speed=0.0, accel=2.6), "max_lon_accel"),
        (dict(speed=20.0, accel=-4.5), "min_lon_accel"),
    ],
)
def test_each_comfort_bound(kwargs, key):
    trace = _trace(T=30, **kwargs)
    assert float(comfort(trace, SIM_DT, CFG)) == 0.0
    ext = comfort_extremes(trace, SIM_DT, CFG)
    bound = {
        "yaw_rate": CFG.max_yaw_rate,
        "lat_accel": CFG.max_lat_accel,
        "max_lon_accel": CFG.max_lon_accel,
        "min_lon_accel": CFG.min_lon_accel,
    }[key]
    assert abs(float(ext[key])) > abs(bound)


def test_yaw_acceleration_bound():
    # Steering from 0 to 0.6 rad/s of yaw rate in 0.2 s: 3 rad/s^2 (at a crawl, so no lateral g).
    T = 30
    rate = np.clip((np.arange(T) - 10) * 0.3, 0.0, 0.6)
    yaw = np.concatenate([[0.0], np.cumsum(rate[:-1] * SIM_DT)])
    trace = _trace(T, speed=0.5).replace(yaw=jnp.asarray(yaw, jnp.float32))
    assert float(comfort_extremes(trace, SIM_DT, CFG)["yaw_accel"]) > CFG.max_yaw_accel
    assert float(comfort(trace, SIM_DT, CFG)) == 0.0


# --------------------------------------------------------------------------------------------
# Aggregates


def test_nc_dac_ttc_take_the_worst_valid_step_and_report_when():
    T = 30
    collision = np.ones(T)
    collision[12], collision[25] = 0.5, 0.0
    drivable = np.ones(T, bool)
    drivable[20] = False
    ttc_ok = np.ones(T, bool)
    ttc_ok[8] = False
    terms = _step_terms(T, collision=collision, drivable=drivable, ttc_ok=ttc_ok)
    s = _score(terms)
    assert (float(s.nc), float(s.dac), float(s.ttc)) == (0.0, 0.0, 0.0)
    assert float(s.first_collision_time) == pytest.approx(1.2)
    assert float(s.first_offroad_time) == pytest.approx(2.0)
    assert float(s.first_ttc_violation_time) == pytest.approx(0.8)
    # Only the first 20 steps count (from step 2 on): the static contact, nothing else.
    valid = (np.arange(T) >= 2) & (np.arange(T) < 20)
    s = _score(terms, valid=valid)
    assert (float(s.nc), float(s.dac), float(s.ttc)) == (0.5, 1.0, 0.0)
    assert float(s.first_collision_time) == pytest.approx(1.0)
    assert math.isnan(float(s.first_offroad_time))


def test_pdms_formula():
    T = 40
    collision = np.ones(T)
    collision[30] = 0.5
    ttc_ok = np.ones(T, bool)
    ttc_ok[5] = False
    terms = _step_terms(T, progress=np.linspace(0.0, 10.0, T), collision=collision, ttc_ok=ttc_ok)
    s = _score(terms, expert=20.0)
    nc, dac, ttc, ep, c = 0.5, 1.0, 0.0, 0.5, 1.0
    assert (float(s.nc), float(s.dac), float(s.ttc), float(s.ep), float(s.c)) == pytest.approx((nc, dac, ttc, ep, c))
    assert float(s.pdms) == pytest.approx(nc * dac * (5 * ttc + 5 * ep + 2 * c) / 12)  # 0.1875
    # CLS on the same rollout: progress 10 >= 0.2 * 20, no wrong way, speed 5 under the limit.
    assert (float(s.making_progress), float(s.driving_direction), float(s.speed_limit)) == (1.0, 1.0, 1.0)
    assert float(s.cls) == pytest.approx(nc * dac * (5 * ep + 5 * ttc + 4 * 1.0 + 2 * c) / 16)
    # A single step off the road zeroes both.
    drivable = np.ones(T, bool)
    drivable[7] = False
    off_road = _score(_step_terms(T, progress=np.linspace(0.0, 20.0, T), drivable=drivable), expert=20.0)
    assert float(off_road.nc) == 1.0 and float(off_road.pdms) == 0.0 and float(off_road.cls) == 0.0
    perfect = _score(_step_terms(T, progress=np.linspace(0.0, 20.0, T)), expert=20.0)
    assert float(perfect.pdms) == pytest.approx(1.0) and float(perfect.cls) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "wrong_steps, direction", [(0, 1.0), (1, 1.0), (3, 0.5), (5, 0.5), (7, 0.0), (20, 0.0)], ids=str
)
def test_cls_driving_direction(wrong_steps, direction):
    # 1 m per step against the lane: within any 1 s (10 steps) that is min(wrong_steps, 10) m.
    T = 40
    wrong = np.zeros(T)
    wrong[10 : 10 + wrong_steps] = 1.0
    s = _score(_step_terms(T, wrong_way=wrong, progress=np.linspace(0, 40, T)))
    assert float(s.max_wrong_way) == pytest.approx(min(wrong_steps, 10))
    assert float(s.driving_direction) == direction
    assert float(s.cls) == pytest.approx(direction)
    assert float(s.pdms) == pytest.approx(1.0)  # PDMS has no direction term


def test_cls_driving_direction_window_is_one_second():
    # 1.5 m every 0.6 s: at most 3 m within any 1 s, although 12 m in total.
    wrong = np.zeros(40)
    wrong[::6] = 1.5
    s = _score(_step_terms(40, wrong_way=wrong))
    assert float(s.max_wrong_way) == pytest.approx(3.0)
    assert float(s.driving_direction) == 0.5


def test_cls_making_progress_and_speed_limit():
    s = _score(_step_terms(40, progress=np.linspace(0, 6.0, 40)), expert=40.0)  # 15% < 20%
    assert float(s.making_progress) == 0.0 and float(s.cls) == 0.0
    assert float(s.pdms) == pytest.approx((5 + 5 * 0.15 + 2) / 12, abs=1e-5)
    s = _score(_step_terms(40, progress=np.linspace(0, 2.0, 40)), expert=4.0)  # expert below min_progress
    assert float(s.making_progress) == 1.0
    speed = np.full(40, CFG.speed_limit)
    speed[:20] = 1.5 * CFG.speed_limit  # half the steps 50% over
    s = _score(_step_terms(40, speed=speed, progress=np.linspace(0, 40, 40)))
    assert float(s.speed_limit) == pytest.approx(0.75)
    assert float(s.cls) == pytest.approx((5 + 5 + 4 * 0.75 + 2) / 16)


def _road(x_from, x_to, y, direction):
    """15 m lane segments (as the loader cuts them) along x at height y, driven in `direction` (+-1)."""
    edges = np.arange(x_from, x_to + 1e-6, 15.0)
    starts = edges[:-1] if direction > 0 else edges[1:][::-1]
    return [_lane([x, y], [direction, 0]) for x in starts]


def test_wrong_way_step_term_uses_the_nearest_lane_direction():
    # Our lane along +x at y = 0, the opposite lane along -x at y = 3.5.
    m = _map(lanes=_road(-30, 60, 0.0, +1) + _road(-30, 60, 3.5, -1))

    def wrong_way(y, yaw=0.0, speed=10.0, prev=None):
        return float(_terms(_ego(y=y, yaw=yaw, speed=speed), map=m, prev_ego=prev).wrong_way)

    assert wrong_way(0.0) == 0.0  # in our lane
    assert wrong_way(0.8) == 0.0  # drifting, still nearer our lane
    assert wrong_way(3.5) == pytest.approx(1.0, abs=1e-3)  # 1 m per step against the opposite lane
    assert wrong_way(3.5, yaw=math.pi) == 0.0  # with it
    assert wrong_way(3.5, yaw=math.pi / 3) == pytest.approx(0.5, abs=1e-3)
    assert wrong_way(3.5, speed=0.0) == 0.0
    assert wrong_way(12.0) == 0.0  # farther than lane_search_radius from every lane
    # With the previous pose, the true displacement is used.
    assert wrong_way(3.5, prev=_ego(x=-0.4, y=3.5)) == pytest.approx(0.4, abs=1e-3)


def test_wrong_way_uses_the_nearest_lane_piece_not_the_nearest_point():
    # Our lane has few points (every 5 m); the opposite lane's points are dense. With the ego's box
    # centre 1.4 m off our centreline, midway between two of its points, the nearest *point* is on
    # the opposite lane (2.2 m vs 2.9 m) but the nearest piece of lane is ours (1.4 m).
    ours = [_lane([-30.0, 0.0], [1, 0], length=75.0), _lane([45.0, 0.0], [1, 0], length=75.0)]
    m = _map(lanes=ours + _road(-30, 60, 3.5, -1))
    x = 2.5 - EGO_REAR_AXLE_TO_CENTER  # box centre at x = 2.5
    for y, expected in ((1.4, 0.0), (2.3, 1.0), (0.0, 0.0)):
        assert float(_terms(_ego(x=x, y=y, speed=10.0), map=m).wrong_way) == pytest.approx(expected, abs=1e-3)


def test_wrong_way_ignores_lane_connectors():
    # A lane through the ego against its heading: wrong way, unless it is an intersection
    # connector (connectors cross each other at every angle).
    lane = [_lane([10.0, 0.0], [-1, 0])]
    assert float(_terms(_ego(), map=_map(lanes=lane, connector=np.array([False]))).wrong_way) == pytest.approx(1.0)
    assert float(_terms(_ego(), map=_map(lanes=lane, connector=np.array([True]))).wrong_way) == 0.0


def test_wrong_way_rollout_zeroes_cls():
    # Ten steps at 10 m/s in the opposite lane: 10 m within 1 s.
    m = _map(lanes=_road(-30, 60, 0.0, -1) + _road(-30, 60, 3.5, +1))
    T = 10
    egos = [_ego(x=float(k), speed=10.0) for k in range(T)]
    terms = [_terms(e, map=m) for e in egos]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *terms)
    trace = jax.tree.map(lambda *x: jnp.stack(x), *egos)
    s = score_jit(stacked, trace, jnp.float32(9.0), jnp.ones(T, bool), cfg=CFG)
    assert float(s.max_wrong_way) == pytest.approx(10.0, abs=1e-2)
    assert float(s.driving_direction) == 0.0 and float(s.cls) == 0.0
    assert float(s.ep) == pytest.approx(1.0) and float(s.nc) == 1.0


# --------------------------------------------------------------------------------------------
# JAX habits


def _scenario(seed):
    """A random busy scene: eight agents around a moving ego, lanes both ways."""
    rng = np.random.default_rng(seed)
    rows = [
        (
            rng.uniform(-15, 15),
            rng.uniform(-6, 6),
            rng.uniform(-3, 3),
            rng.uniform(0, 8) * (rng.random() > 0.3),
            (rng.uniform(0.5, 5), rng.uniform(0.5, 2.2), 1.5),
            rng.integers(0, 4),
        )
        for _ in range(8)
    ]
    agents, (size, cat) = _agents(*rows, num=10)
    ego = _ego(x=rng.uniform(-3, 3), y=rng.uniform(-3, 3), yaw=rng.uniform(-0.5, 0.5), speed=rng.uniform(0, 12))
    m = _map(lanes=_road(-30, 30, 0.0, +1) + _road(-30, 30, 3.5, -1))
    return ego, agents, size, cat, m, _route()


@pytest.mark.slow
def test_step_terms_jit_equals_eager():
    for seed in range(2):
        args = _scenario(seed)
        eager = step_terms(*args, CFG)
        jitted = step_jit(*args, cfg=CFG)
        for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-5)


def test_score_jit_equals_eager_and_does_not_recompile():
    def score_default_cfg(*args):  # its own function, so that its compile cache is its own
        return score(*args, CFG)

    fn = jax.jit(score_default_cfg)
    for seed in range(2):
        rng = np.random.default_rng(seed)
        T = 30
        terms = _step_terms(
            T,
            progress=np.cumsum(rng.uniform(0, 1, T)),
            collision=np.where(rng.random(T) < 0.05, 0.5, 1.0),
            drivable=rng.random(T) > 0.05,
            wrong_way=rng.uniform(0, 0.5, T),
            speed=rng.uniform(0, 20, T),
        )
        trace = _trace(T, speed=3.0, accel=rng.uniform(-1, 1), yaw_rate=rng.uniform(-0.3, 0.3))
        args = (terms, trace, jnp.float32(12.0), jnp.asarray(rng.random(T) > 0.1))
        eager, jitted = score(*args, CFG), fn(*args)
        for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    assert fn._cache_size() == 1


@pytest.mark.parametrize("batch", [(), (2, 3)], ids=str)
@pytest.mark.slow
def test_batch_dims(batch):
    n = int(np.prod(batch, dtype=int))
    scenes = [_scenario(seed) for seed in range(max(n, 1))]
    if batch == ():
        batched = scenes[0]
    else:
        batched = jax.tree.map(lambda *x: jnp.stack(x).reshape(batch + x[0].shape), *scenes)
    fn = lambda *a: step_terms(*a, CFG)  # noqa: E731
    for _ in batch:
        fn = jax.vmap(fn)
    terms = jax.jit(fn)(*batched)
    for leaf in jax.tree.leaves(terms):
        assert leaf.shape == batch
    flat = jax.tree.map(lambda x: x.reshape((n if batch else 1,)), terms)
    for i, scene in enumerate(scenes[: max(n, 1)]):
        one = step_jit(*scene, cfg=CFG)
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(flat), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b)[i], rtol=1e-6, atol=1e-5)

    # Scores over a (T,) axis behind the batch dims.
    T = 25
    terms_t = jax.tree.map(lambda x: jnp.broadcast_to(x[..., None], batch + (T,)), terms)
    terms_t = terms_t.replace(progress=terms_t.progress + jnp.arange(T, dtype=jnp.float32))
    trace = jax.tree.map(lambda x: jnp.broadcast_to(x, batch + x.shape), _trace(T))
    valid = jnp.ones(batch + (T,), bool)
    expert = jnp.full(batch, 30.0)
    score_fn = lambda *a: score(*a, CFG)  # noqa: E731
    for _ in batch:
        score_fn = jax.vmap(score_fn)
    scores = jax.jit(score_fn)(terms_t, trace, expert, valid)
    for leaf in jax.tree.leaves(scores):
        assert leaf.shape == batch and leaf.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(scores.ego_progress), T - 1.0, rtol=1e-5)


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="comfort_window"):
        MetricConfig(comfort_window=4)
    with pytest.raises(ValueError, match="ttc_dt"):
        MetricConfig(ttc_dt=0.0)
    assert MetricConfig().ttc_times.tolist() == pytest.approx([0.1 * k for k in range(1, 11)])

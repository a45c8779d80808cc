"""Scene plans: where the ego starts, what it does, and who is around it.

Each scene gets one ego behaviour (its scenario type) so that a set of logs covers the situations
planners are scored on: cruising, following, stop-and-go traffic, turns, lane changes and hard
braking for a pedestrian who steps out. The rest of the traffic is drawn around the ego's start.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from shapely.geometry import LineString

from drivesim.synth.roads import SynthMap
from drivesim.synth.traffic import AgentSpec, ScenePlan, SpeedWindow, random_cyclist, random_vehicle

SCENARIOS = ("cruise", "follow", "stop_and_go", "turn_left", "turn_right", "lane_change", "hard_brake")
"""Ego behaviours. `hard_brake`: a pedestrian steps onto the road in front of the ego."""

EGO_SIZE = (4.084, 1.730, 1.562)

PEDESTRIAN_TYPES = (
    ("human.pedestrian.adult", 0.85, (0.55, 0.85), (0.55, 0.75), (1.55, 1.9)),
    ("human.pedestrian.child", 0.08, (0.4, 0.55), (0.4, 0.55), (1.0, 1.35)),
    ("human.pedestrian.construction_worker", 0.04, (0.6, 0.85), (0.6, 0.75), (1.65, 1.9)),
    ("human.pedestrian.police_officer", 0.03, (0.6, 0.8), (0.6, 0.75), (1.7, 1.9)),
)


def make_plan(smap: SynthMap, seed: int, scenario: str, duration: float = 20.0) -> ScenePlan:
    """Draw a scene of `duration` seconds on `smap` with the given ego scenario (deterministic)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; use one of {SCENARIOS}")
    rng = np.random.default_rng([seed, 4242])
    ego_lane, ego_s, turns, lane_changes = _ego_start(smap, rng, scenario)
    lane = smap.lanes[ego_lane]
    v0 = float(lane.speed_limit * rng.uniform(0.9, 1.1))
    windows: tuple[SpeedWindow, ...] = ()
    ego = AgentSpec(
        uid=0,
        kind="ego",
        category="ego",
        size=EGO_SIZE,
        seed=seed,
        lane=ego_lane,
        s=ego_s,
        speed=float(v0 * rng.uniform(0.6, 0.9)),
        desired_speed=v0,
        headway=float(rng.uniform(1.2, 1.6)),
        max_accel=1.8,
        comfort_decel=2.5,
        min_gap=2.5,
        speed_windows=windows,
        turns=turns,
        lane_changes=lane_changes,
        random_lane_changes=False,
    )
    agents = [ego]
    uid = 1
    ego_xy = lane.poses[int(np.argmin(np.abs(lane.s - ego_s))), :2]

    # A lead vehicle for the car-following scenarios.
    keep_clear = 45.0
    if scenario in ("follow", "stop_and_go"):
        gap = float(rng.uniform(18.0, 28.0))
        lead = random_vehicle(rng, uid, ego_lane, ego_s + gap, smap, int(rng.integers(1 << 30)))
        lead = _replace(lead, category="vehicle.car", size=(4.5, 1.85, 1.55))
        if scenario == "follow":
            vl = float(v0 * rng.uniform(0.55, 0.75))
            lead = _replace(lead, desired_speed=vl, speed=vl, random_lane_changes=False)
        else:
            t, win = -2.0, []
            while t < duration:
                t += float(rng.uniform(2.5, 5.0))
                stop = float(rng.uniform(2.0, 4.0))
                win.append(SpeedWindow(t, t + stop, 0.0, float(rng.uniform(2.5, 4.0))))
                t += stop
            lead = _replace(lead, speed_windows=tuple(win), random_lane_changes=False, speed=0.7 * v0)
        lead = _replace(lead, turns=turns)
        agents.append(lead)
        uid += 1

    # Other vehicles along nearby lanes.
    density = float(rng.uniform(1 / 70, 1 / 30))
    for ln in smap.lanes:
        if ln.is_connector:
            continue
        near = np.hypot(*(ln.poses[:, :2] - ego_xy).T)
        if near.min() > 200.0:
            continue
        s = float(rng.exponential(1.0 / density))
        while s < ln.length - 6.0:
            p = ln.poses[int(np.argmin(np.abs(ln.s - s))), :2]
            clear = np.hypot(*(p - ego_xy)) > 15.0
            if ln.index == ego_lane and 0 < s - ego_s < keep_clear:
                clear = False
            if clear and float(np.hypot(*(p - ego_xy))) < 200.0:
                spec = random_vehicle(rng, uid, ln.index, s, smap, int(rng.integers(1 << 30)))
                if ln.stop_s is not None:  # able to stop comfortably at the lane's stop line
                    room = max(ln.stop_s - s - spec.size[0], 0.0)
                    spec = _replace(spec, speed=min(spec.speed, math.sqrt(2.0 * 2.0 * room)))
                agents.append(spec)
                uid += 1
                s += spec.size[0]
            s += 8.0 + float(rng.exponential(1.0 / density))

    # Cyclists.
    lanes_near = [
        ln.index
        for ln in smap.lanes
        if not ln.is_connector and np.hypot(*(ln.poses[:, :2] - ego_xy).T).min() < 120 and ln.length > 40
    ]
    for _ in range(int(rng.integers(0, 4))):
        ln = smap.lanes[lanes_near[int(rng.integers(len(lanes_near)))]]
        outer = ln.right if smap.right_hand else ln.left
        if outer >= 0:
            continue  # cyclists ride in the kerb-side lane
        s = float(rng.uniform(0, ln.length - 10))
        if ln.index == ego_lane and abs(s - ego_s) < keep_clear:
            continue
        if any(a.lane == ln.index and abs(a.s - s) < 12.0 for a in agents):
            continue
        agents.append(random_cyclist(rng, uid, ln.index, s, smap, int(rng.integers(1 << 30))))
        uid += 1

    # Parked cars and a few traffic cones / barriers on shoulders.
    spots = [p for road in smap.roads for p in road.parking if math.hypot(p[0] - ego_xy[0], p[1] - ego_xy[1]) < 160]
    occupancy = float(rng.uniform(0.15, 0.45))
    cone_run = int(rng.integers(0, 3))
    for x, y, yaw in spots:
        u = rng.uniform()
        if u < occupancy:
            cat = "vehicle.car" if rng.uniform() < 0.9 else "vehicle.truck"
            size = (
                float(rng.uniform(4.2, 4.9)),
                float(rng.uniform(1.75, 1.95)),
                float(rng.uniform(1.45, 1.7)),
            )
            if cat == "vehicle.truck":
                size = (float(rng.uniform(6.0, 7.5)), 2.3, float(rng.uniform(2.6, 3.2)))
            agents.append(_static(uid, cat, size, (x, y, yaw + (math.pi if rng.uniform() < 0.2 else 0.0)), seed))
            uid += 1
        elif u > 0.97 and cone_run > 0:
            cone_run -= 1
            c, s_ = math.cos(yaw), math.sin(yaw)
            for j in range(int(rng.integers(3, 6))):
                agents.append(
                    _static(
                        uid,
                        "movable_object.trafficcone",
                        (0.4, 0.4, 0.75),
                        (x + 1.5 * j * c, y + 1.5 * j * s_, yaw),
                        seed,
                    )
                )
                uid += 1
    walk_edges = [sw for sw in smap.sidewalks if np.hypot(*(sw.xy - ego_xy).T).min() < 120]
    for _ in range(int(rng.integers(0, 4))):
        sw = walk_edges[int(rng.integers(len(walk_edges)))]
        i = int(rng.integers(len(sw.xy) - 1))
        d = sw.xy[i + 1] - sw.xy[i]
        d = d / max(float(np.hypot(*d)), 1e-9)
        outward = sw.side * np.array([-d[1], d[0]])  # away from the road
        x, y = sw.xy[i] + (0.5 * smap.roads[sw.road].sidewalk + 0.6) * outward
        cat = "movable_object.barrier" if rng.uniform() < 0.5 else "movable_object.pushable_pullable"
        size = (2.2, 0.6, 1.0) if cat == "movable_object.barrier" else (0.6, 0.6, 1.1)
        agents.append(_static(uid, cat, size, (float(x), float(y), math.atan2(d[1], d[0])), seed))
        uid += 1

    # Pedestrians on the sidewalks near the ego, many heading for a crossing.
    starts: list[np.ndarray] = []
    for _ in range(int(rng.integers(8, 19))):
        path = _pedestrian_path(smap, rng, walk_edges)
        if any(np.hypot(*(path[0] - q)) < 1.2 for q in starts):
            continue
        starts.append(path[0])
        agents.append(_pedestrian(rng, uid, path, seed))
        uid += 1

    # The pedestrian who steps out in front of the ego (from the kerb, into the ego's lane).
    if scenario == "hard_brake":
        s_cross = min(ego_s + float(rng.uniform(45.0, 70.0)), lane.length - 12.0)
        path = _jaywalk_path(smap, lane, s_cross)
        statics = np.array([a.pose[:2] for a in agents if a.kind == "static"]).reshape(-1, 2)
        while len(statics) and np.min(np.hypot(*(statics - path[0]).T)) < 4.0 and s_cross > ego_s + 30.0:
            s_cross -= 3.0  # step out between parked cars, not through one
            path = _jaywalk_path(smap, lane, s_cross)
        spec = _pedestrian(rng, uid, path, seed)
        agents.append(
            _replace(
                spec,
                desired_speed=float(rng.uniform(1.6, 2.2)),
                start_when_ego_within=float(rng.uniform(2.4, 3.0)),
                on_crosswalk_only=False,
            )
        )
        uid += 1

    return ScenePlan(map=smap, seed=seed, scenario=scenario, duration=duration, agents=tuple(agents))


def _replace(spec: AgentSpec, **kw) -> AgentSpec:
    return dataclasses.replace(spec, **kw)


def _static(uid: int, category: str, size, pose, seed: int) -> AgentSpec:
    return AgentSpec(
        uid=uid, kind="static", category=category, size=size, seed=seed, pose=tuple(float(v) for v in pose)
    )


def _pedestrian(rng, uid: int, path: np.ndarray, seed: int) -> AgentSpec:
    probs = np.array([p[1] for p in PEDESTRIAN_TYPES])
    cat, _p, lr, wr, hr = PEDESTRIAN_TYPES[int(rng.choice(len(PEDESTRIAN_TYPES), p=probs / probs.sum()))]
    speed = 0.0 if rng.uniform() < 0.12 else float(rng.uniform(1.0, 1.6))
    return AgentSpec(
        uid=uid,
        kind="pedestrian",
        category=cat,
        size=(float(rng.uniform(*lr)), float(rng.uniform(*wr)), float(rng.uniform(*hr))),
        seed=seed,
        path=tuple((float(x), float(y)) for x, y in path),
        desired_speed=speed,
        speed=speed,
    )


def _pedestrian_path(smap: SynthMap, rng, sidewalks) -> np.ndarray:
    """Walk along a sidewalk towards one end; cross there (if there is a crossing) and walk back."""
    sw = sidewalks[int(rng.integers(len(sidewalks)))]
    forward = rng.uniform() < 0.5
    xy = sw.xy if forward else sw.xy[::-1]
    crossing = sw.crossing_at_end if forward else sw.crossing_at_start
    # start within 25 m of the end most of the time, so that crossings happen within a scene
    length = len(xy)
    start = (
        int(rng.integers(max(0, length - 30), length - 1)) if rng.uniform() < 0.7 else int(rng.integers(0, length - 1))
    )
    path = [xy[start:]]
    if crossing >= 0 and rng.uniform() < 0.75:
        c = smap.crossings[crossing]
        ends = c.path if np.hypot(*(c.path[0] - xy[-1])) < np.hypot(*(c.path[1] - xy[-1])) else c.path[::-1]
        near = int(np.argmin(np.hypot(*(xy - ends[0]).T)))
        path = [xy[start : max(near, start + 1) + 1], ends]
        other = [o for o in sidewalks + smap.sidewalks if o.road == sw.road and o.side == -sw.side][0]
        oxy = other.xy if not forward else other.xy[::-1]
        j = int(np.argmin(np.hypot(*(oxy - ends[1]).T)))
        path.append(oxy[j:])
    pts = np.concatenate(path)
    keep = np.concatenate([[True], np.hypot(*np.diff(pts, axis=0).T) > 1e-6])
    pts = pts[keep]
    # Each pedestrian keeps to its own line across the sidewalk, so that they pass each other.
    half = max(0.5 * smap.roads[sw.road].sidewalk - 0.7, 0.0)
    if half > 0 and len(pts) > 1:
        shifted = LineString(pts).offset_curve(float(rng.uniform(-half, half)), join_style="mitre", mitre_limit=3.0)
        if isinstance(shifted, LineString) and shifted.length > 0.5 * LineString(pts).length:
            pts = np.asarray(shifted.coords)
    return pts


def _jaywalk_path(smap: SynthMap, lane, s: float) -> np.ndarray:
    """From the kerb-side sidewalk straight across a kerb-side lane, stopping just past it."""
    road = smap.roads[lane.road]
    x, y, yaw = lane.poses[int(np.argmin(np.abs(lane.s - s)))]
    kerb = -1.0 if smap.right_hand else 1.0  # kerb side relative to the driving direction
    normal = kerb * np.array([-math.sin(yaw), math.cos(yaw)])
    # lane centre to kerb: the rest of the road on that side beyond this (outermost) lane
    forward = lane.index in road.forward_lanes
    road_side = kerb if forward else -kerb  # the same side, relative to the road's reference direction
    to_edge = road.half_width(int(road_side)) - (road.lanes_per_dir - 0.5) * road.lane_width
    start = np.array([x, y]) + (to_edge + 0.5 * road.sidewalk) * normal
    end = np.array([x, y]) - (0.5 * lane.width + 0.7) * normal
    return np.stack([start, end])


def _ego_start(smap: SynthMap, rng, scenario: str) -> tuple[int, float, tuple[str, ...], tuple]:
    """Pick the ego's start lane and arc length, turn plan and lane changes for a scenario."""
    lanes = smap.lanes
    candidates = []
    for ln in lanes:
        if ln.is_connector or not ln.successors or ln.length < 60:
            continue
        if not any(lanes[lanes[c].successors[0]].successors for c in ln.successors):
            continue  # would leave the map
        turns = {lanes[c].turn for c in ln.successors}
        if scenario == "turn_left" and "left" not in turns:
            continue
        if scenario == "turn_right" and "right" not in turns:
            continue
        if scenario == "lane_change" and (ln.left < 0 and ln.right < 0 or ln.length < 100):
            continue
        kerb_side = ln.right < 0 if smap.right_hand else ln.left < 0
        if scenario == "hard_brake" and not kerb_side:
            continue
        if scenario in ("follow", "stop_and_go", "hard_brake", "cruise") and ln.length < 90:
            continue
        candidates.append(ln.index)
    if not candidates:
        raise RuntimeError(f"this map has no lane for scenario {scenario!r}")
    ln = lanes[candidates[int(rng.integers(len(candidates)))]]
    turns: tuple[str, ...] = ()
    lane_changes: tuple = ()
    if scenario in ("turn_left", "turn_right"):
        s = max(0.0, ln.length - float(rng.uniform(45.0, 90.0)))
        turns = (scenario.split("_")[1],)
    elif scenario == "lane_change":
        s = float(rng.uniform(0.0, max(ln.length - 100.0, 1.0)))
        direction = 1 if ln.left >= 0 else -1
        lane_changes = ((float(rng.uniform(2.0, 6.0)), direction),)
    else:
        s = float(rng.uniform(0.0, max(ln.length - 90.0, 1.0)))
        straight = [lanes[c].turn for c in ln.successors]
        turns = (str(rng.choice(straight)),)
    return ln.index, s, turns, lane_changes

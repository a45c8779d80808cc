"""Traffic of the synthetic world: vehicles, cyclists, pedestrians, parked cars and obstacles.

Vehicles (the ego included) are kinematic bicycles (rear-axle reference) that track their route
through the lane graph with pure pursuit and control their speed with IDM. The IDM leader is the
nearest object inside the vehicle's corridor ahead (vehicles, cyclists, pedestrians stepping into
the road, obstacles), or a virtual stop: a stop line when the vehicle must yield at an
intersection, or a crosswalk with pedestrians on it. Vehicles pick turns at intersections, change
lanes to overtake or at random, and yield by arrival order to conflicting traffic. Pedestrians walk
sidewalks, wait for a gap and cross at zebra crossings.

Determinism: the world is a pure function of its `ScenePlan`. Every random choice an agent makes
comes from its own generator (seeded by the scene seed and the agent's uid), so removing or adding
one agent changes only what follows physically from the change.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from drivesim.synth.roads import SynthMap

DT = 0.1
"""Simulation step (s)."""

KIND_EGO, KIND_VEHICLE, KIND_PEDESTRIAN, KIND_STATIC = 0, 1, 2, 3
KINDS = {"ego": KIND_EGO, "vehicle": KIND_VEHICLE, "pedestrian": KIND_PEDESTRIAN, "static": KIND_STATIC}

# What limits a mover's speed in the last step (`Traffic.constraint`).
LIMIT_FREE, LIMIT_LEADER, LIMIT_CROSSWALK, LIMIT_YIELD = 0, 1, 2, 3

ROUTE_POINTS = 1400  # route buffer per agent (lane samples are 0.5 m apart: 700 m)
WINDOW_STRIDE = 2  # leader search every 2nd route point (1 m)
WINDOW_POINTS = 60  # ... over 60 m ahead
MAX_DECEL = 9.0  # physical braking limit (m/s^2)
STEER_RATE = 2.5  # steering rate limit (rad/s)
LAT_ACCEL = 2.2  # comfortable lateral acceleration in curves (m/s^2)


@dataclasses.dataclass(frozen=True)
class SpeedWindow:
    """Between `t0` and `t1` (s, log time) the agent aims for `speed`, braking at most `decel`."""

    t0: float
    t1: float
    speed: float
    decel: float = 3.0


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    """How one agent starts and behaves. Frozen: edits replace specs, never mutate them.

    Vehicles start on `lane` at arc length `s` (rear axle). Pedestrians walk `path` (N, 2) from its
    start. Static objects stand at `pose`. `pose` is also used to insert a vehicle off the lane
    graph's sample points (it is then snapped to the nearest lane going its way).
    """

    uid: int
    kind: str  # ego | vehicle | pedestrian | static
    category: str  # nuScenes category name
    size: tuple[float, float, float]  # length, width, height
    seed: int
    lane: int = -1
    s: float = 0.0
    speed: float = 0.0
    pose: tuple[float, float, float] | None = None  # (x, y, yaw) of the box centre
    path: tuple[tuple[float, float], ...] | None = None
    desired_speed: float = 10.0
    headway: float = 1.5
    max_accel: float = 1.8
    comfort_decel: float = 2.5
    min_gap: float = 2.0
    lateral_offset: float = 0.0  # cyclists keep to the kerb side of their lane
    start_time: float = -1e9  # pedestrians: stand still until then (log time)
    start_when_ego_within: float = 0.0  # pedestrians: ... or until the ego is this many seconds away
    speed_windows: tuple[SpeedWindow, ...] = ()
    turns: tuple[str, ...] = ()  # the ego's choices at the next intersections
    lane_changes: tuple[tuple[float, int], ...] = ()  # the ego's (time, +1 left / -1 right)
    random_lane_changes: bool = True
    on_crosswalk_only: bool = True  # pedestrians: False for one who steps out anywhere

    @property
    def wheelbase(self) -> float:
        if self.category == "ego":
            return 2.588
        return 0.6 * self.size[0] if self.size[0] < 6 else 0.55 * self.size[0]

    @property
    def rear_to_center(self) -> float:
        """Distance from the rear axle (the simulated point) to the box centre."""
        if self.kind == "ego":
            return 1.3
        if self.kind == "vehicle":
            return 0.5 * self.wheelbase
        return 0.0


@dataclasses.dataclass(frozen=True)
class ScenePlan:
    """Everything a scene is made of: the map, the agents and their behaviour, the seed.

    `agents[0]` is the ego. Simulation starts `warmup` seconds before the log so that the traffic
    has settled when recording begins; log time 0 is the first recorded step.
    """

    map: SynthMap
    seed: int
    scenario: str
    duration: float
    agents: tuple[AgentSpec, ...]
    warmup: float = 3.0
    entry_rate: float = 0.06  # new vehicles per second per boundary lane (if clear)


@dataclasses.dataclass
class Snapshot:
    """The world at one step (box centres; the ego also as its rear axle)."""

    time: float
    center: np.ndarray  # (A, 2)
    yaw: np.ndarray  # (A,)
    speed: np.ndarray  # (A,)
    accel: np.ndarray  # (A,)
    steer: np.ndarray  # (A,)
    active: np.ndarray  # (A,) bool
    ego_rear: np.ndarray  # (2,)


class Traffic:
    """The mutable simulation of one `ScenePlan`; `step()` advances it by `DT`.

    Agent slot k holds the agent with uid `uids[k]`; slots only grow (spawns and inserts append).
    """

    def __init__(self, plan: ScenePlan):
        self.plan = plan
        self.map = plan.map
        self.t = -plan.warmup
        self.step_index = 0
        self.specs: list[AgentSpec] = []
        cap = len(plan.agents) + 64
        self._alloc(cap)
        self.spawn_rng = np.random.default_rng([plan.seed, 991])
        self.next_uid = max(a.uid for a in plan.agents) + 1
        self.entry_lanes = self.map.entry_lanes
        # Scenes on the same map see the signals at different points of their cycles.
        self.signal_shift = float(np.random.default_rng([plan.seed, 313]).uniform(0.0, 120.0))
        self.ego_override: np.ndarray | None = None
        self.ego_command: tuple[str, float] | None = (
            None  # (kind, value): see `command_ego`  # (K, 3) rear-axle poses from `override_from`
        )
        self.override_from = 0
        for spec in plan.agents:
            self.add(spec)
        self._time_signals_for_ego()

    def _time_signals_for_ego(self) -> None:
        """Shift the signal clock so that the ego meets its first light at green.

        Without it most 20 s logs would spend half their time queued at a red light, which says
        little about driving; red lights still stop the ego further on and stop other traffic.
        """
        lanes = self.map.lanes
        for stop, conn, _entry in self.route_stops[0]:
            node = self.map.nodes[lanes[conn].node]
            if not node.is_intersection:
                continue
            road = lanes[lanes[conn].predecessors[0]].road
            s_front = self._s_at(0, self.prog[0]) + self.cx[0] + self.length[0] / 2
            arrival = self.t + max(stop - s_front, 0.0) / max(self.specs[0].desired_speed, 1.0) + 2.0
            best, best_left = self.signal_shift, -1.0
            for shift in self.signal_shift + np.arange(0.0, 60.0, 2.5):
                u = arrival + shift
                if node.signal(road, u) == 0:
                    left = next((dt for dt in np.arange(0.0, 40.0, 0.5) if node.signal(road, u + dt) != 0), 40.0)
                    if left > best_left:
                        best, best_left = float(shift), left
            self.signal_shift = best
            return

    # ------------------------------------------------------------------ storage
    def _alloc(self, cap: int) -> None:
        old = getattr(self, "rear", None)
        n = 0 if old is None else len(self.specs)

        def grow(name, shape, dtype, fill=0):
            arr = np.full((cap, *shape), fill, dtype=dtype)
            if old is not None:
                arr[:n] = getattr(self, name)[:n]
            setattr(self, name, arr)

        grow("rear", (2,), np.float64)
        grow("yaw", (), np.float64)
        grow("v", (), np.float64)
        grow("acc", (), np.float64)
        grow("steer", (), np.float64)
        grow("active", (), bool, False)
        grow("kind", (), np.int8, KIND_STATIC)
        grow("length", (), np.float64)
        grow("width", (), np.float64)
        grow("cx", (), np.float64)
        grow("wheelbase", (), np.float64, 1.0)
        grow("route_xy", (ROUTE_POINTS, 2), np.float64)
        grow("route_yaw", (ROUTE_POINTS,), np.float64)
        grow("route_kappa", (ROUTE_POINTS,), np.float64)
        grow("route_s", (ROUTE_POINTS,), np.float64)
        grow("route_lane", (ROUTE_POINTS,), np.int32, -1)
        grow("route_cross", (ROUTE_POINTS,), np.int32, -1)
        grow("route_n", (), np.int32)
        grow("prog", (), np.float64)
        grow("route_done", (), bool, False)
        grow("lc_cooldown", (), np.float64)
        grow("triggered", (), bool, False)
        grow("head_since", (), np.float64, np.inf)
        grow("constraint", (), np.int8, 0)
        for name in ("p_v0", "p_headway", "p_gap", "p_accel", "p_decel", "p_offset"):
            grow(name, (), np.float64)
        if old is None:
            self.route_lanes: list[list[int]] = []
            self.route_stops: list[list[tuple[float, int, float]]] = []
            self.route_crossings: list[list[tuple[float, int]]] = []
            self.route_offsets: list[list[float]] = []
            self.lc_done: list[set[int]] = []
            self.rngs: list[np.random.Generator] = []
            self.turn_queue: list[list[str]] = []

    @property
    def n(self) -> int:
        return len(self.specs)

    @property
    def signal_time(self) -> float:
        return self.t + self.signal_shift

    def add(self, spec: AgentSpec) -> int:
        """Add an agent at the current time; returns its slot."""
        k = self.n
        if k >= len(self.rear):
            self._alloc(2 * len(self.rear))
        self.specs.append(spec)
        self.rngs.append(np.random.default_rng([self.plan.seed, spec.uid, 17]))
        self.turn_queue.append(list(spec.turns))
        self.route_lanes.append([])
        self.route_stops.append([])
        self.route_crossings.append([])
        self.route_offsets.append([])
        self.lc_done.append(set())
        self.kind[k] = KINDS[spec.kind]
        self.length[k], self.width[k] = spec.size[0], spec.size[1]
        self.cx[k] = spec.rear_to_center
        self.wheelbase[k] = spec.wheelbase
        self.v[k] = spec.speed
        self.acc[k] = 0.0
        self.steer[k] = 0.0
        self.active[k] = True
        self.lc_cooldown[k] = 4.0
        self.p_v0[k], self.p_headway[k], self.p_gap[k] = spec.desired_speed, spec.headway, spec.min_gap
        self.p_accel[k], self.p_decel[k], self.p_offset[k] = (
            spec.max_accel,
            spec.comfort_decel,
            spec.lateral_offset,
        )
        if spec.kind in ("ego", "vehicle"):
            if spec.pose is not None and spec.lane < 0:
                # Placed at an exact pose: keep it, and follow the nearest lane going its way.
                x, y, yaw = spec.pose
                self.rear[k] = (x - self.cx[k] * math.cos(yaw), y - self.cx[k] * math.sin(yaw))
                self.yaw[k] = yaw
                self._set_route(k, *self.snap_to_lane((*self.rear[k], yaw)))
            else:
                self._set_route(k, spec.lane, spec.s)
                i = int(round(self.prog[k]))
                self.rear[k] = self.route_xy[k, i]
                self.yaw[k] = self.route_yaw[k, i]
        elif spec.kind == "pedestrian":
            self._set_path(k, np.asarray(spec.path, dtype=np.float64))
            self.rear[k] = self.route_xy[k, 0]
            self.yaw[k] = self.route_yaw[k, 0]
        else:
            x, y, yaw = spec.pose
            self.rear[k] = (x, y)
            self.yaw[k] = yaw
            self.v[k] = 0.0
        return k

    def slot_of(self, uid: int) -> int:
        for k, spec in enumerate(self.specs):
            if spec.uid == uid:
                return k
        raise KeyError(uid)

    # ------------------------------------------------------------------ routes
    def snap_to_lane(self, pose: tuple[float, float, float]) -> tuple[int, float]:
        """The lane (not connector, if one is close) nearest a pose and heading its way."""
        pts, ids = self.map.lane_points()
        best, best_cost = None, np.inf
        d = np.hypot(pts[:, 0] - pose[0], pts[:, 1] - pose[1])
        for j in np.argsort(d)[:400]:
            lane = self.map.lanes[ids[j]]
            m = int(np.argmin(np.hypot(*(lane.poses[:, :2] - pose[:2]).T)))
            dyaw = abs((lane.poses[m, 2] - pose[2] + math.pi) % (2 * math.pi) - math.pi)
            cost = d[j] + 8.0 * dyaw + (1.0 if lane.is_connector else 0.0)
            if cost < best_cost:
                best, best_cost = (lane.index, float(lane.s[m])), cost
        return best

    def _choose_successor(self, k: int, lane_id: int) -> int | None:
        lane = self.map.lanes[lane_id]
        options = lane.successors
        if not options:
            return None
        if len(options) == 1:
            return options[0]
        lanes = self.map.lanes
        turns = [lanes[o].turn for o in options]
        if self.kind[k] == KIND_EGO:
            # The ego avoids roads that leave the map, and follows its planned turns.
            keep = [o for o in options if lanes[lanes[o].successors[0]].successors] or options
            wanted = self.turn_queue[k].pop(0) if self.turn_queue[k] else None
            match = [o for o in keep if lanes[o].turn == wanted]
            straight = [o for o in keep if lanes[o].turn == "straight"]
            pool = match or straight or keep
            return pool[int(self.rngs[k].integers(len(pool)))]
        weights = np.array([2.0 if t == "straight" else 1.0 for t in turns])
        return options[int(self.rngs[k].choice(len(options), p=weights / weights.sum()))]

    def _set_route(self, k: int, lane_id: int, s: float, lanes: list[int] | None = None) -> None:
        """(Re)build agent k's route from `lane_id` at arc length `s`, extending it ahead."""
        lanes = [lane_id] if lanes is None else lanes
        total = self.map.lanes[lanes[0]].length - s + sum(self.map.lanes[x].length for x in lanes[1:])
        done = False
        while total < 220.0:
            nxt = self._choose_successor(k, lanes[-1])
            if nxt is None:
                done = True
                break
            lanes.append(nxt)
            total += self.map.lanes[nxt].length
        xy, yaw, kap, ss, lid = [], [], [], [], []
        stops, crossings, offsets = [], [], []
        offset = 0.0
        for j, lane_id2 in enumerate(lanes):
            offsets.append(offset)
            lane = self.map.lanes[lane_id2]
            first = 0 if j == 0 else 1
            xy.append(lane.poses[first:, :2])
            yaw.append(lane.poses[first:, 2])
            kap.append(lane.curvature[first:])
            ss.append(lane.s[first:] + offset)
            lid.append(np.full(len(lane.s) - first, lane_id2, np.int32))
            for s_enter, c in lane.crossings:
                crossings.append((offset + s_enter, c))
            if lane.is_connector:
                prev = self.map.lanes[lanes[j - 1]] if j > 0 else None
                stop = offset - 5.0  # no stop line (a bend): wait back from the curve
                if prev is not None and prev.stop_s is not None:
                    stop = offset - prev.length + prev.stop_s
                stops.append((stop, lane_id2, offset))
            offset += lane.length
        xy = np.concatenate(xy)
        n = min(len(xy), ROUTE_POINTS)
        if len(xy) > ROUTE_POINTS:
            done = False  # truncated, not ended: it will be extended later
        self.route_xy[k, :n] = xy[:n]
        self.route_yaw[k, :n] = np.concatenate(yaw)[:n]
        self.route_kappa[k, :n] = np.concatenate(kap)[:n]
        self.route_s[k, :n] = np.concatenate(ss)[:n]
        self.route_lane[k, :n] = np.concatenate(lid)[:n]
        self.route_cross[k, :n] = -1
        self.route_n[k] = n
        self.route_done[k] = done
        self.route_lanes[k] = lanes
        self.route_stops[k] = stops
        self.route_crossings[k] = crossings
        self.route_offsets[k] = offsets
        self.prog[k] = float(np.interp(s, self.route_s[k, :n], np.arange(n)))

    def _set_path(self, k: int, path: np.ndarray) -> None:
        """A pedestrian's walking path, resampled at 0.5 m, with the crossings it uses marked."""
        seg = np.hypot(*np.diff(path, axis=0).T)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        ss = np.arange(0.0, s[-1] + 1e-9, 0.5)
        if ss[-1] < s[-1]:
            ss = np.append(ss, s[-1])
        xy = np.stack([np.interp(ss, s, path[:, 0]), np.interp(ss, s, path[:, 1])], axis=1)
        d = np.diff(xy, axis=0)
        yaw = np.arctan2(d[:, 1], d[:, 0])
        yaw = np.append(yaw, yaw[-1]) if len(yaw) else np.zeros(1)
        n = min(len(ss), ROUTE_POINTS)
        self.route_xy[k, :n] = xy[:n]
        self.route_yaw[k, :n] = yaw[:n]
        self.route_s[k, :n] = ss[:n]
        self.route_kappa[k, :n] = 0.0
        self.route_lane[k, :n] = -1
        cross = np.full(n, -1, np.int32)
        spec = self.specs[k]
        if spec.on_crosswalk_only:
            import shapely

            for c in self.map.crossings:
                inside = shapely.contains_xy(c.polygon, xy[:n, 0], xy[:n, 1])
                cross[inside] = c.index
        self.route_cross[k, :n] = cross
        self.route_n[k] = n
        self.route_done[k] = True
        self.prog[k] = 0.0

    def _maybe_extend(self, k: int) -> None:
        n = self.route_n[k]
        if self.route_done[k] or self.route_s[k, n - 1] - self._s_at(k, self.prog[k]) > 150.0:
            return
        lane, s_in_lane = self.lane_position(k)
        lanes = self.route_lanes[k]
        self._set_route(k, lane, s_in_lane, lanes=lanes[lanes.index(lane) :])

    def lane_position(self, k: int) -> tuple[int, float]:
        """The lane agent k's rear axle is on, and its arc length along that lane."""
        lane = int(self.route_lane[k, int(self.prog[k])])
        j = self.route_lanes[k].index(lane)
        return lane, self._s_at(k, self.prog[k]) - self.route_offsets[k][j]

    def _s_at(self, k: int, prog: float) -> float:
        i = min(int(prog), self.route_n[k] - 2)
        f = prog - i
        return float(self.route_s[k, i] * (1 - f) + self.route_s[k, i + 1] * f)

    def _s_now(self, k: np.ndarray) -> np.ndarray:
        """Arc length along their routes of agents k (M,) at their current progress."""
        i = np.minimum(self.prog[k].astype(int), self.route_n[k] - 2)
        f = self.prog[k] - i
        return self.route_s[k, i] * (1 - f) + self.route_s[k, i + 1] * f

    def _point_at_s(self, k: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Route points (M, 2) and headings (M,) at arc lengths s (M,) of agents k (M,)."""
        rs = self.route_s[k]
        valid = np.arange(ROUTE_POINTS)[None] < self.route_n[k][:, None]
        i = np.clip((valid & (rs <= s[:, None])).sum(axis=1) - 1, 0, self.route_n[k] - 2)
        s0, s1 = rs[np.arange(len(k)), i], rs[np.arange(len(k)), i + 1]
        f = np.clip((s - s0) / np.maximum(s1 - s0, 1e-9), 0.0, 1.0)[:, None]
        out = self.route_xy[k, i] * (1 - f) + self.route_xy[k, i + 1] * f
        return out, self.route_yaw[k, i]

    # ------------------------------------------------------------------ edits
    def remove(self, uid: int) -> None:
        self.active[self.slot_of(uid)] = False

    def move(self, uid: int, x: float, y: float, yaw: float | None = None) -> None:
        """Teleport an agent's box centre to (x, y) (and heading `yaw`, if given)."""
        k = self.slot_of(uid)
        yaw = float(self.yaw[k]) if yaw is None else float(yaw)
        if self.kind[k] == KIND_PEDESTRIAN:
            old = self.rear[k].copy()
            n = self.route_n[k]
            self.route_xy[k, :n] += np.array([x, y]) - old
            self.rear[k] = (x, y)
            return
        self.rear[k] = (x - self.cx[k] * math.cos(yaw), y - self.cx[k] * math.sin(yaw))
        self.yaw[k] = yaw
        if self.kind[k] <= KIND_VEHICLE:
            lane, s = self.snap_to_lane((*self.rear[k], yaw))
            self._set_route(k, lane, s)

    def set_speed(self, uid: int, speed: float, hold: bool = True) -> None:
        """Set an agent's speed now; with `hold` it also becomes the speed it wants to drive."""
        k = self.slot_of(uid)
        self.v[k] = speed
        if hold:
            self.p_v0[k] = speed
            self.specs[k] = dataclasses.replace(self.specs[k], desired_speed=speed, speed_windows=())

    def override_ego(self, poses: np.ndarray) -> None:
        """Drive the ego along rear-axle poses (K, 3), one per step from now (poses[0] is now)."""
        poses = np.asarray(poses, dtype=np.float64)
        self.ego_override = poses
        self.override_from = self.step_index
        self.rear[0] = poses[0, :2]
        self.yaw[0] = poses[0, 2]
        self._set_route(0, *self.snap_to_lane(tuple(poses[0])))

    def drive_ego(self, pose) -> None:
        """Put the ego's rear axle at `pose` [x, y, yaw] by the end of the next `step()`.

        For a driver outside the world (the truth engine's planner), one step at a time: it is a
        two-pose `override_ego` (now, then `pose`) that keeps the ego's route, so within that step
        the other agents decide seeing the ego where it is now, as for any mover, and the ego's
        speed, acceleration and steering are read off its motion as for an overridden ego. Without
        another call before the following step, the world's own driver takes the ego back.
        """
        now = (float(self.rear[0, 0]), float(self.rear[0, 1]), float(self.yaw[0]))
        self.ego_override = np.array([now, tuple(float(p) for p in pose)], dtype=np.float64)
        self.override_from = self.step_index

    def command_ego(self, kind: str, value: float | None = None) -> None:
        """Make the ego do something from now on, whatever the traffic around it does.

        brake: decelerate at `value` m/s^2 (default 4) to a stop and stay stopped.
        accelerate: speed up at `value` m/s^2 (default 2) to 1.5x its usual speed.
        keep: hold the current speed. stop_and_go... are not commands: see `speed_windows`.
        lane_change_left / lane_change_right: change lane now (no gap check).
        turn_left / turn_right / straight: take that turn at the next intersection.
        """
        if kind in ("brake", "accelerate", "keep"):
            default = {"brake": 4.0, "accelerate": 2.0, "keep": 0.0}[kind]
            self.ego_command = (kind, default if value is None else float(value))
            self.ego_command_speed = float(self.v[0])
        elif kind in ("lane_change_left", "lane_change_right"):
            lane, s = self.lane_position(0)
            cur = self.map.lanes[lane]
            target = cur.left if kind.endswith("left") else cur.right
            if target < 0 or cur.is_connector:
                raise ValueError(f"the ego cannot change lane to the {kind.split('_')[-1]} here (no such lane)")
            self._set_route(0, target, s + max(8.0, 1.2 * self.v[0]))
        elif kind in ("turn_left", "turn_right", "straight"):
            self.turn_queue[0] = [kind.replace("turn_", "")]
            lane, s = self.lane_position(0)
            if self.map.lanes[lane].is_connector:
                raise ValueError("the ego is inside an intersection; a turn applies before the next one")
            self._set_route(0, lane, s)
        else:
            raise ValueError(f"unknown ego command {kind!r}")

    def _commanded_accel(self) -> float:
        kind, value = self.ego_command
        v = self.v[0]
        if kind == "brake":
            return -min(value, v / DT)
        if kind == "accelerate":
            return min(value, max(0.0, (1.5 * self.specs[0].desired_speed - v) / DT))
        return float(np.clip((self.ego_command_speed - v) / DT, -MAX_DECEL, 3.0))

    # ------------------------------------------------------------------ queries
    def centers(self) -> np.ndarray:
        n = self.n
        d = np.stack([np.cos(self.yaw[:n]), np.sin(self.yaw[:n])], axis=1)
        return self.rear[:n] + self.cx[:n, None] * d

    def snapshot(self) -> Snapshot:
        n = self.n
        return Snapshot(
            time=self.t,
            center=self.centers().copy(),
            yaw=self.yaw[:n].copy(),
            speed=self.v[:n].copy(),
            accel=self.acc[:n].copy(),
            steer=self.steer[:n].copy(),
            active=self.active[:n].copy(),
            ego_rear=self.rear[0].copy(),
        )

    # ------------------------------------------------------------------ the step
    def step(self) -> None:
        n = self.n
        t = self.t
        centers = self.centers()
        movers = np.flatnonzero(self.active[:n] & (self.kind[:n] <= KIND_VEHICLE))
        peds = np.flatnonzero(self.active[:n] & (self.kind[:n] == KIND_PEDESTRIAN))

        crossing_busy, crossing_threat = self._crossing_state(movers, peds)
        gap, lead_v = self._leaders(movers, centers)
        s_front = self._s_now(movers) + self.cx[movers] + self.length[movers] / 2
        ped_gap = np.array(
            [self._yield_to_pedestrians(k, sf, crossing_busy) for k, sf in zip(movers, s_front, strict=True)]
        )
        stop_gap = self._intersection_stops(movers, gap, ped_gap)
        g, vl = gap.copy(), lead_v.copy()
        self.constraint[movers] = np.where(g < 1e8, LIMIT_LEADER, LIMIT_FREE)
        # virtual stopped leaders: busy crosswalks, stop lines, the end of the ego's route
        use = ped_gap < g
        g[use], vl[use] = ped_gap[use], 0.0
        self.constraint[movers[use]] = LIMIT_CROSSWALK
        use = stop_gap < g
        g[use], vl[use] = stop_gap[use], 0.0
        self.constraint[movers[use]] = LIMIT_YIELD
        end = self.route_s[movers, self.route_n[movers] - 1] - s_front - 2.0
        use = self.route_done[movers] & (self.kind[movers] == KIND_EGO) & (end < g)
        g[use], vl[use] = end[use], 0.0
        acc = self._idm(movers, self._desired_speed(movers), g, vl)
        if self.ego_command is not None and self.kind[movers[0]] == KIND_EGO:
            acc[0] = self._commanded_accel()
        for m, k in enumerate(movers):
            for w in self.specs[k].speed_windows:
                if w.t0 <= t < w.t1:
                    a_max = self.p_accel[k]
                    acc[m] = min(acc[m], float(np.clip(1.5 * (w.speed - self.v[k]), -w.decel, a_max)))
                    if w.speed > self.v[k] and g[m] > 30:
                        acc[m] = max(acc[m], min(a_max, 1.5 * (w.speed - self.v[k])))

        # Pure pursuit lateral control and kinematic bicycle update.
        overridden = self.ego_override is not None and self.step_index >= self.override_from
        drive = (self.kind[movers] != KIND_EGO) | (not overridden)
        self._drive(movers[drive], acc[drive])
        if overridden:
            self._follow_override()
        for k in peds:
            self._walk(k, crossing_threat, peds)

        self._lane_changes(movers, centers)
        self._spawn()
        self.t += DT
        self.step_index += 1

    def _desired_speed(self, k: np.ndarray) -> np.ndarray:
        """IDM desired speeds (M,), lowered ahead of curves to keep lateral acceleration comfortable."""
        i0 = self.prog[k].astype(int)
        idx = np.minimum(i0[:, None] + np.arange(0, 120, 2)[None], self.route_n[k][:, None] - 1)
        kappa = np.abs(self.route_kappa[k[:, None], idx])
        dist = np.maximum(self.route_s[k[:, None], idx] - self.route_s[k, i0][:, None], 0.0)
        v_curve = np.sqrt(LAT_ACCEL / np.maximum(kappa, 1e-4))
        v_allowed = np.sqrt(v_curve**2 + 2.0 * self.p_decel[k][:, None] * dist)
        return np.minimum(self.p_v0[k], v_allowed.min(axis=1))

    def _idm(self, k: np.ndarray, v0: np.ndarray, gap: np.ndarray, v_lead: np.ndarray) -> np.ndarray:
        """Intelligent Driver Model accelerations (M,) of agents k."""
        v, a, b = self.v[k], self.p_accel[k], self.p_decel[k]
        free = 1.0 - (v / np.maximum(v0, 0.1)) ** 4
        free = np.where(v0 < 0.1, np.where(v > 0.05, -1.0, 0.0), free)
        s_star = self.p_gap[k] + np.maximum(0.0, v * self.p_headway[k] + v * (v - v_lead) / (2 * np.sqrt(a * b)))
        interact = np.where(gap < 200, (s_star / np.maximum(gap, 0.05)) ** 2, 0.0)
        return np.clip(a * (free - interact), -MAX_DECEL, a)

    def _drive(self, k: np.ndarray, a: np.ndarray) -> None:
        """Pure pursuit steering and a kinematic bicycle step for the vehicles k."""
        if len(k) == 0:
            return
        v = self.v[k]
        lookahead = np.clip(3.0 + 0.6 * v, 4.5, 16.0)
        target, tyaw = self._point_at_s(k, self._s_now(k) + lookahead)
        off = self.p_offset[k][:, None]
        target = target + off * np.stack([-np.sin(tyaw), np.cos(tyaw)], axis=1)
        d = target - self.rear[k]
        c, s = np.cos(self.yaw[k]), np.sin(self.yaw[k])
        lx, ly = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        wb = self.wheelbase[k]
        delta = np.arctan(2.0 * wb * ly / np.maximum(lx * lx + ly * ly, 1e-6))
        max_steer = np.where(self.length[k] < 6, 0.6, 0.5)
        delta = np.clip(delta, self.steer[k] - STEER_RATE * DT, self.steer[k] + STEER_RATE * DT)
        delta = np.clip(delta, -max_steer, max_steer)
        v_new = np.maximum(0.0, v + a * DT)
        v_mid = 0.5 * (v + v_new)
        yaw_rate = v_mid * np.tan(delta) / wb
        yaw_mid = self.yaw[k] + 0.5 * yaw_rate * DT
        self.rear[k] += (v_mid * DT)[:, None] * np.stack([np.cos(yaw_mid), np.sin(yaw_mid)], axis=1)
        self.yaw[k] = (self.yaw[k] + yaw_rate * DT + math.pi) % (2 * math.pi) - math.pi
        self.acc[k] = (v_new - v) / DT
        self.v[k] = v_new
        self.steer[k] = delta
        self._project(k)
        gone = self.route_done[k] & (self.prog[k] >= self.route_n[k] - 1.5) & (self.kind[k] == KIND_VEHICLE)
        self.active[k[gone]] = False  # drove off the map
        ahead = self.route_s[k, self.route_n[k] - 1] - self._s_now(k)
        for kk in k[~self.route_done[k] & (ahead < 150.0) & ~gone]:
            self._maybe_extend(kk)

    def _project(self, k: np.ndarray) -> None:
        """Update route progress: nearest route segment to the rear axle, near the last progress."""
        i0 = self.prog[k].astype(int)
        idx = np.clip(i0[:, None] + np.arange(-4, 41)[None], 0, self.route_n[k][:, None] - 2)
        pts = self.route_xy[k[:, None], idx]  # (M, W, 2)
        dist = np.hypot(*(pts - self.rear[k][:, None]).transpose(2, 0, 1))
        j = idx[np.arange(len(k)), np.argmin(dist, axis=1)]
        a, b = self.route_xy[k, j], self.route_xy[k, j + 1]
        ab = b - a
        f = np.clip(((self.rear[k] - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-9), 0.0, 1.0)
        # at a segment start, the previous segment may be the closer one
        back = (j > 0) & (f == 0.0)
        a2 = self.route_xy[k, np.maximum(j - 1, 0)]
        ab2 = a - a2
        f2 = np.clip(((self.rear[k] - a2) * ab2).sum(1) / np.maximum((ab2 * ab2).sum(1), 1e-9), 0.0, 1.0)
        new = np.where(back, j - 1 + f2, j + f)
        # vehicles only move forward along their route; the ego may be pushed anywhere (overrides)
        self.prog[k] = np.where(self.kind[k] == KIND_EGO, new, np.maximum(self.prog[k], new))

    def _walk(self, k: int, threat: np.ndarray, peds: np.ndarray) -> None:
        spec = self.specs[k]
        n = self.route_n[k]
        if spec.start_when_ego_within > 0 and not self.triggered[k]:
            ego_center = self.rear[0] + self.cx[0] * np.array([math.cos(self.yaw[0]), math.sin(self.yaw[0])])
            dist = float(np.hypot(*(self.route_xy[k, n // 2] - ego_center)))
            self.triggered[k] = dist < spec.start_when_ego_within * max(self.v[0], 2.0) + 4.0
        waiting = self.t < spec.start_time or (spec.start_when_ego_within > 0 and not self.triggered[k])
        if waiting or self.prog[k] >= n - 1:
            self.v[k] = 0.0
            self.acc[k] = 0.0
            return
        i = int(self.prog[k])
        here = self.route_cross[k, i]
        ahead = self.route_cross[k, min(i + 2, n - 1)]
        v = spec.desired_speed
        if here < 0 and ahead >= 0 and (threat[ahead] or not self._may_cross(ahead, v)):
            v = 0.0
        # Keep a step behind a slower pedestrian ahead on the same line.
        heading = np.array([math.cos(self.yaw[k]), math.sin(self.yaw[k])])
        for j in peds:
            if j == k:
                continue
            rel = self.rear[j] - self.rear[k]
            lon = rel @ heading
            if 0.0 < lon < 1.4 and abs(rel @ np.array([-heading[1], heading[0]])) < 0.7:
                v = min(v, self.v[j] if lon > 0.9 else 0.0)
        self.acc[k] = (v - self.v[k]) / DT
        self.v[k] = v
        s_new = self._s_at(k, self.prog[k]) + v * DT
        rs = self.route_s[k, :n]
        self.prog[k] = float(np.interp(s_new, rs, np.arange(n)))
        j = min(int(self.prog[k]), n - 2)
        f = self.prog[k] - j
        self.rear[k] = self.route_xy[k, j] * (1 - f) + self.route_xy[k, j + 1] * f
        if v > 0:
            self.yaw[k] = self.route_yaw[k, j]

    def _may_cross(self, crossing: int, speed: float) -> bool:
        """Pedestrians start across a signalised crosswalk only while its road has red long enough."""
        c = self.map.crossings[crossing]
        node = self.map.nodes[c.node]
        if not node.signal_axis or speed <= 0:
            return True
        if node.signal(c.road, self.signal_time) != 2:
            return False
        width = float(np.hypot(*(c.path[1] - c.path[0])))
        return node.time_to_green(c.road, self.signal_time) > width / speed + 1.0

    def _follow_override(self) -> None:
        """Put the ego on its overridden trajectory (rear-axle poses, one per step)."""
        j = self.step_index - self.override_from + 1
        traj = self.ego_override
        if j >= len(traj):
            self.ego_override = None
            self._set_route(0, *self.snap_to_lane(tuple(traj[-1])))
            return
        prev = self.rear[0].copy()
        v_prev = self.v[0]
        self.rear[0] = traj[j, :2]
        yaw_new = traj[j, 2]
        dyaw = (yaw_new - self.yaw[0] + math.pi) % (2 * math.pi) - math.pi
        self.yaw[0] = yaw_new
        self.v[0] = float(np.hypot(*(traj[j, :2] - prev))) / DT
        self.acc[0] = (self.v[0] - v_prev) / DT
        self.steer[0] = math.atan(dyaw / DT * self.wheelbase[0] / max(self.v[0], 0.1))
        lane, s = self.snap_to_lane(tuple(traj[j]))
        if lane != int(self.route_lane[0, int(self.prog[0])]):
            self._set_route(0, lane, s)
        else:
            self._project(np.array([0]))

    # ------------------------------------------------------------------ interactions
    def leader_gaps(self, movers: np.ndarray) -> np.ndarray:
        """Gap (m) from each of `movers` to the nearest object in its corridor now (1e9 if none)."""
        return self._leaders(movers, self.centers())[0]

    def _leaders(self, movers: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gap to, and speed of, the nearest object in each mover's corridor (gap 1e9 if none).

        An object is in the corridor when its box reaches within half our width (plus a margin,
        larger for pedestrians) of our route over the next 60 m.
        """
        n = self.n
        gap = np.full(len(movers), 1e9)
        lead_v = np.zeros(len(movers))
        others = np.flatnonzero(self.active[:n])
        if len(movers) == 0 or len(others) < 2:
            return gap, lead_v
        # Candidate pairs: other objects within 75 m (straight line).
        dist = np.hypot(*(centers[others][None] - centers[movers][:, None]).transpose(2, 0, 1))
        pm, po = np.nonzero((dist < 75.0) & (others[None] != movers[:, None]))
        if len(pm) == 0:
            return gap, lead_v
        k, o = movers[pm], others[po]
        i0 = self.prog[movers].astype(int)
        idx = np.minimum(
            i0[:, None] + WINDOW_STRIDE * np.arange(WINDOW_POINTS)[None], self.route_n[movers][:, None] - 1
        )
        win = self.route_xy[movers[:, None], idx]  # (M, P, 2)
        win_s = self.route_s[movers[:, None], idx] - self.route_s[movers, i0][:, None]
        win_yaw = self.route_yaw[movers[:, None], idx]
        d = np.hypot(*(centers[o][:, None, :] - win[pm]).transpose(2, 0, 1))  # (C, P)
        j = np.argmin(d, axis=1)
        lat = d[np.arange(len(pm)), j]
        rel = self.yaw[o] - win_yaw[pm, j]
        cos, sin = np.abs(np.cos(rel)), np.abs(np.sin(rel))
        half_w = 0.5 * self.width[o] * cos + 0.5 * self.length[o] * sin
        margin = np.where(self.kind[o] == KIND_PEDESTRIAN, 0.8, 0.35)
        along = win_s[pm, j]
        extent = 0.5 * self.length[o] * cos + 0.5 * self.width[o] * sin
        g = along - self.cx[k] - 0.5 * self.length[k] - extent
        ok = (lat < 0.5 * self.width[k] + half_w + margin) & (along > self.cx[k] + 0.2) & (j < WINDOW_POINTS - 1)
        if not ok.any():
            return gap, lead_v
        pm, o, g, rel = pm[ok], o[ok], g[ok], rel[ok]
        order = np.lexsort((g, pm))  # per mover, nearest first
        first = np.ones(len(order), bool)
        first[1:] = pm[order][1:] != pm[order][:-1]
        best = order[first]
        gap[pm[best]] = g[best]
        lead_v[pm[best]] = np.maximum(0.0, self.v[o[best]] * np.cos(rel[best]))
        return gap, lead_v

    def _crossing_state(self, movers: np.ndarray, peds: np.ndarray) -> tuple[dict, np.ndarray]:
        """Pedestrians on each crosswalk (now and in 2 s), and crosswalks a vehicle is about to pass."""
        busy: dict[int, list[np.ndarray]] = {}
        threat = np.zeros(len(self.map.crossings), bool)
        for k in peds:
            i = int(self.prog[k])
            c = self.route_cross[k, i]
            nxt = self.route_cross[k, min(i + 2, self.route_n[k] - 1)]
            if c >= 0 or (nxt >= 0 and self.v[k] > 0):
                heading = np.array([math.cos(self.yaw[k]), math.sin(self.yaw[k])])
                now = self.rear[k]
                busy.setdefault(max(c, nxt), []).append(np.stack([now, now + 2.0 * self.v[k] * heading]))
        for k in movers:
            s_rear = self._s_at(k, self.prog[k])
            s_front = s_rear + self.cx[k] + self.length[k] / 2
            for s_enter, c in self.route_crossings[k]:
                d = s_enter - s_front
                on = d < 0 < s_enter + 4.5 - (s_rear - (self.length[k] / 2 - self.cx[k]))
                soon = 0 <= d < 40 and self.v[k] > 0.5 and d / self.v[k] < 3.0
                if on or soon:
                    threat[c] = True
        return busy, threat

    def _yield_to_pedestrians(self, k: int, s_front: float, busy: dict) -> float:
        """Gap to the first crosswalk ahead where a pedestrian is in (or walking into) our path."""
        for s_enter, c in self.route_crossings[k]:
            d = s_enter - 1.0 - s_front
            if c not in busy or d < -1.0 or d > 40.0:
                continue
            p, _ = self._point_at_s(np.array([k]), np.array([s_enter + 2.0]))
            reach = 0.5 * self.width[k] + 1.8
            for track in busy[c]:
                if np.min(np.hypot(*(track - p[0]).T)) < reach or _segment_distance(p[0], track) < reach:
                    return d
        return 1e9

    def _intersection_stops(self, movers: np.ndarray, leader_gap: np.ndarray, ped_gap: np.ndarray) -> np.ndarray:
        """Gap to the stop line for movers that must yield at the next intersection (else 1e9).

        Vehicles stop at red lights (and at amber when they can). Vehicles inside an intersection
        hold their connector. The first vehicle of each queue (no
        one between it and the stop line, no pedestrian in its way on the crosswalk after the stop
        line) asks for its connector; requests are served in order of
        arrival at the head of the queue (vehicles too close to stop first), and a request waits
        while a conflicting connector is held or claimed by an earlier request.
        """
        lanes = self.map.lanes
        stop_gap = np.full(len(movers), 1e9)
        held: set[int] = set()
        queue = []
        for m, k in enumerate(movers):
            cur = int(self.route_lane[k, int(self.prog[k])])
            if lanes[cur].is_connector:
                held.add(cur)
                self.head_since[k] = np.inf
                continue
            s_rear = self._s_at(k, self.prog[k])
            s_front = s_rear + self.cx[k] + self.length[k] / 2
            for stop, conn, entry in self.route_stops[k]:
                if entry > s_rear + 0.5:
                    d = stop - s_front
                    is_head = d < leader_gap[m] + 0.5 and ped_gap[m] > d + 8.0
                    v = self.v[k]
                    # Too close to stop comfortably (amber) / at all (red): carry on through.
                    committed = (v > 2.0 and d < v * v / (2 * 3.5) + 1.0) or d < -0.5
                    node = self.map.nodes[lanes[conn].node]
                    if node.is_intersection and d < 60.0:
                        light = node.signal(lanes[lanes[conn].predecessors[0]].road, self.signal_time)
                        if light == 2:
                            committed = (v > 2.0 and d < v * v / (2 * 0.8 * MAX_DECEL)) or d < -0.5
                        if light != 0 and not committed:
                            stop_gap[m] = d
                            self.head_since[k] = np.inf
                            break
                    if d < 30.0 and lanes[conn].conflicts and is_head:
                        if not np.isfinite(self.head_since[k]):
                            self.head_since[k] = self.t
                        queue.append((0 if committed else 1, self.head_since[k], self.specs[k].uid, m, conn, d))
                    else:
                        self.head_since[k] = np.inf
                    break
        queue.sort()
        # Earlier requests claim their connector even while they wait, so later arrivals cannot
        # starve them.
        claimed = set(held)
        for order, _since, _uid, m, conn, d in queue:
            if order == 0:  # committed: only a vehicle inside or committed before it can stop it
                blocked = d > 0 and any(c in claimed for c in lanes[conn].conflicts)
            else:
                blocked = any(c in claimed for c in lanes[conn].conflicts)
            if blocked:
                stop_gap[m] = d
            claimed.add(conn)
        return stop_gap

    def _lane_changes(self, movers: np.ndarray, centers: np.ndarray) -> None:
        lanes = self.map.lanes
        for k in movers:
            self.lc_cooldown[k] -= DT
            spec = self.specs[k]
            planned = [
                (j, d)
                for j, (tc, d) in enumerate(spec.lane_changes)
                if tc <= self.t < tc + 4.0 and j not in self.lc_done[k]
            ]
            if self.lc_cooldown[k] > 0 and not planned:
                continue
            if (self.step_index + spec.uid) % 10 and not planned:
                continue  # decide once a second
            i = int(self.prog[k])
            cur = lanes[int(self.route_lane[k, i])]
            if cur.is_connector:
                continue
            wish = 0
            if planned:
                wish = planned[0][1]
            elif spec.random_lane_changes and self.kind[k] == KIND_VEHICLE and self.v[k] > 3.0:
                r = self.rngs[k].uniform()
                if r < 0.04:
                    wish = 1 if r < 0.02 else -1
            if wish == 0:
                continue
            target = cur.left if wish > 0 else cur.right
            if target < 0:
                continue
            s_in = self.lane_position(k)[1] + max(8.0, 1.2 * self.v[k])
            tl = lanes[target]
            if tl.length - s_in < 35.0:
                continue
            # Gap acceptance on the target lane.
            m_idx = int(np.argmin(np.abs(tl.s - s_in)))
            p = tl.poses[m_idx, :2]
            heading = np.array([math.cos(tl.poses[m_idx, 2]), math.sin(tl.poses[m_idx, 2])])
            rel = centers - p
            lon = rel @ heading
            lat = np.abs(rel @ np.array([-heading[1], heading[0]]))
            others = self.active[: self.n] & (np.arange(self.n) != k)
            if np.any(others & (lat < 2.2) & (lon > -22.0) & (lon < 18.0)):
                continue
            self._set_route(k, target, s_in)
            self.lc_cooldown[k] = 6.0
            if planned:
                self.lc_done[k].add(planned[0][0])

    def _spawn(self) -> None:
        """New vehicles enter at the map boundary, once a second, where the entry is clear."""
        if self.step_index % 10:
            return
        centers = self.centers()
        for lane_id in self.entry_lanes:
            u = self.spawn_rng.uniform()
            spec_seed = int(self.spawn_rng.integers(1 << 30))
            if u > self.plan.entry_rate:
                continue
            start = self.map.lanes[lane_id].poses[0, :2]
            if np.any(self.active[: self.n] & (np.hypot(*(centers - start).T) < 25.0)):
                continue
            spec = random_vehicle(np.random.default_rng(spec_seed), self.next_uid, lane_id, 2.0, self.map, spec_seed)
            spec = dataclasses.replace(spec, speed=0.6 * spec.desired_speed)
            self.next_uid += 1
            self.add(spec)
            centers = self.centers()


def _segment_distance(p: np.ndarray, seg: np.ndarray) -> float:
    """Distance from point p (2,) to the segment seg (2, 2)."""
    a, b = seg
    ab = b - a
    f = float(np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-9), 0.0, 1.0))
    return float(np.hypot(*(a + f * ab - p)))


VEHICLE_TYPES = (
    # category, probability, length range, width range, height range, desired-speed factor, accel
    ("vehicle.car", 0.80, (4.2, 4.9), (1.75, 2.0), (1.45, 1.75), 1.0, 1.9),
    ("vehicle.truck", 0.07, (6.5, 8.5), (2.3, 2.5), (2.8, 3.4), 0.85, 1.1),
    ("vehicle.bus.rigid", 0.05, (10.5, 12.0), (2.5, 2.6), (3.1, 3.5), 0.8, 1.0),
    ("vehicle.motorcycle", 0.03, (2.0, 2.2), (0.75, 0.9), (1.4, 1.6), 1.05, 2.5),
    ("vehicle.emergency.police", 0.02, (4.6, 5.0), (1.9, 2.0), (1.5, 1.6), 1.05, 2.0),
    ("vehicle.construction", 0.03, (5.5, 7.0), (2.3, 2.5), (2.8, 3.3), 0.6, 0.9),
)


def random_vehicle(rng, uid: int, lane: int, s: float, smap: SynthMap, seed: int) -> AgentSpec:
    """A random vehicle (car, truck, bus, ...) with its own driving style, on `lane` at `s`."""
    probs = np.array([v[1] for v in VEHICLE_TYPES])
    cat, _p, lr, wr, hr, vf, acc = VEHICLE_TYPES[int(rng.choice(len(VEHICLE_TYPES), p=probs / probs.sum()))]
    limit = smap.lanes[lane].speed_limit
    v0 = float(limit * vf * rng.uniform(0.85, 1.15))
    return AgentSpec(
        uid=uid,
        kind="vehicle",
        category=cat,
        size=(float(rng.uniform(*lr)), float(rng.uniform(*wr)), float(rng.uniform(*hr))),
        seed=seed,
        lane=lane,
        s=s,
        speed=float(v0 * rng.uniform(0.5, 1.0)),
        desired_speed=v0,
        headway=float(rng.uniform(1.0, 1.8)),
        max_accel=float(acc * rng.uniform(0.8, 1.2)),
        comfort_decel=float(rng.uniform(2.0, 3.0)),
        min_gap=float(rng.uniform(2.0, 3.0)),
    )


def random_cyclist(rng, uid: int, lane: int, s: float, smap: SynthMap, seed: int) -> AgentSpec:
    """A cyclist keeping to the kerb side of its lane."""
    kerb = -1.0 if smap.right_hand else 1.0
    v0 = float(rng.uniform(3.5, 6.0))
    return AgentSpec(
        uid=uid,
        kind="vehicle",
        category="vehicle.bicycle",
        size=(float(rng.uniform(1.65, 1.85)), float(rng.uniform(0.55, 0.7)), float(rng.uniform(1.6, 1.8))),
        seed=seed,
        lane=lane,
        s=s,
        speed=v0,
        desired_speed=v0,
        headway=1.2,
        max_accel=1.2,
        comfort_decel=2.0,
        min_gap=1.5,
        lateral_offset=kerb * 0.9,
        random_lane_changes=False,
    )

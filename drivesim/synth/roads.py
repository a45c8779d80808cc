"""Procedural road networks: a jittered grid of 3- and 4-way intersections joined by straight and
curved multi-lane roads, with lane connectors, dividers, walkways, pedestrian crossings, stop lines,
shoulders for parked cars, and buildings in the blocks.

Everything is in the global frame of one nuScenes location (x east, y north, metres), offset well
away from the origin as real nuScenes maps are. The result, `SynthMap`, is plain numpy/shapely; the
writer turns it into a map expansion JSON, the renderer into a ground texture.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.ops import unary_union

from drivesim.synth.geometry import (
    Arc,
    connector_path,
    offset_path,
    path_length,
    reverse_path,
    sample_path,
    trim_path,
    wrap_angle,
)

# Locations nuscenes-devkit accepts, and which side of the road traffic keeps to there.
LOCATIONS = ("boston-seaport", "singapore-onenorth", "singapore-hollandvillage", "singapore-queenstown")
RIGHT_HAND = {"boston-seaport": True}

# Lane sampling step (m) for the lane polylines the traffic simulation follows.
LANE_STEP = 0.5
# Traffic signal timing (s).
SIGNAL_AMBER = 3.0
SIGNAL_ALL_RED = 1.5


@dataclasses.dataclass(frozen=True)
class MapConfig:
    """Knobs of the procedural map generator."""

    grid_x: tuple[int, int] = (3, 4)
    """Range (inclusive) of the number of intersection columns."""
    grid_y: tuple[int, int] = (3, 3)
    """Range (inclusive) of the number of intersection rows."""
    spacing: tuple[float, float] = (115.0, 165.0)
    """Range of the distance between neighbouring intersections (m)."""
    jitter: float = 12.0
    """Random displacement of each intersection (m)."""
    drop_edge_prob: float = 0.2
    """Chance of removing a grid road (giving 3-way intersections and bends)."""
    curved_prob: float = 0.35
    """Chance that a road is a circular arc rather than a straight line."""
    max_bend_deg: float = 36.0
    """Largest total turn of a curved road (degrees)."""
    two_lane_prob: float = 0.45
    """Chance that a road has two lanes per direction (else one)."""
    shoulder_prob: float = 0.5
    """Chance that a road side has a 2.5 m shoulder where cars park."""
    stub_prob: float = 0.6
    """Chance that a boundary intersection has a road leading off the map (traffic source/sink)."""
    stub_length: tuple[float, float] = (70.0, 110.0)
    margin: float = 60.0
    """Empty border around the network inside the canvas (m)."""
    buildings: int = 500
    """Candidate building footprints tried (those that fit are kept)."""


@dataclasses.dataclass
class Lane:
    """A lane or a lane connector: a directed centreline with its neighbours in the lane graph."""

    index: int
    pieces: list[Arc]
    width: float
    is_connector: bool
    road: int  # road index, -1 for connectors
    node: int  # intersection index for connectors, -1 for lanes
    speed_limit: float
    successors: list[int] = dataclasses.field(default_factory=list)
    predecessors: list[int] = dataclasses.field(default_factory=list)
    left: int = -1  # adjacent same-direction lane on the left, -1 if none
    right: int = -1
    turn: str = "straight"  # connectors: straight | left | right
    stop_s: float | None = None  # arc length where a vehicle's front stops before an intersection
    crossings: list[tuple[float, int]] = dataclasses.field(default_factory=list)  # (s_enter, crossing)
    conflicts: list[int] = dataclasses.field(default_factory=list)  # connectors: crossing connectors
    # Sampled geometry (filled by `_sample`): poses (N, 3), arc length (N,), curvature (N,).
    poses: np.ndarray = None
    s: np.ndarray = None
    curvature: np.ndarray = None

    @property
    def length(self) -> float:
        return path_length(self.pieces)

    def _sample(self) -> None:
        self.poses, self.s, self.curvature = sample_path(self.pieces, LANE_STEP)


@dataclasses.dataclass
class Road:
    """A two-way road between two nodes, trimmed at the intersections."""

    index: int
    nodes: tuple[int, int]
    reference: list[Arc]  # trimmed reference (centre) line, from nodes[0] to nodes[1]
    lanes_per_dir: int
    lane_width: float
    shoulder: tuple[float, float]  # (right, left) of the reference direction
    sidewalk: float
    speed_limit: float
    forward_lanes: list[int]  # lanes driving nodes[0] -> nodes[1], innermost first
    backward_lanes: list[int]
    polygon: Polygon = None  # lanes + shoulders
    lane_dividers: list[LineString] = dataclasses.field(default_factory=list)
    road_divider: LineString = None
    edge_lines: list[LineString] = dataclasses.field(default_factory=list)  # lane | shoulder lines
    parking: list[tuple[float, float, float]] = dataclasses.field(default_factory=list)

    def half_width(self, side: int) -> float:
        """Distance from the reference line to the road edge on `side` (+1 left, -1 right)."""
        return self.lanes_per_dir * self.lane_width + self.shoulder[0 if side < 0 else 1]


@dataclasses.dataclass
class Node:
    index: int
    xy: np.ndarray
    roads: list[int]
    radius: float = 0.0
    polygon: Polygon | None = None
    connectors: list[int] = dataclasses.field(default_factory=list)
    # Traffic signal (intersections only): which of two phases each incoming road belongs to,
    # the green time of each phase, and the cycle offset.
    signal_axis: dict[int, int] = dataclasses.field(default_factory=dict)
    signal_green: tuple[float, float] = (14.0, 14.0)
    signal_offset: float = 0.0

    def signal(self, road: int, t: float) -> int:
        """Light for traffic entering from `road` at time t: 0 green, 1 amber, 2 red."""
        axis = self.signal_axis[road]
        g0, g1 = self.signal_green
        cycle = g0 + g1 + 2 * (SIGNAL_AMBER + SIGNAL_ALL_RED)
        phase = (t + self.signal_offset) % cycle
        start = 0.0 if axis == 0 else g0 + SIGNAL_AMBER + SIGNAL_ALL_RED
        green = (g0, g1)[axis]
        u = (phase - start) % cycle
        return 0 if u < green else (1 if u < green + SIGNAL_AMBER else 2)

    def time_to_green(self, road: int, t: float) -> float:
        """Seconds until traffic from `road` next gets green (0 if green now)."""
        axis = self.signal_axis[road]
        g0, g1 = self.signal_green
        cycle = g0 + g1 + 2 * (SIGNAL_AMBER + SIGNAL_ALL_RED)
        start = 0.0 if axis == 0 else g0 + SIGNAL_AMBER + SIGNAL_ALL_RED
        u = (t + self.signal_offset - start) % cycle
        return 0.0 if u < (g0, g1)[axis] else cycle - u

    @property
    def is_intersection(self) -> bool:
        return len(self.roads) >= 3

    @property
    def is_terminal(self) -> bool:
        return len(self.roads) == 1


@dataclasses.dataclass
class Crossing:
    """A zebra crossing across one road end; pedestrians walk `path` (either way)."""

    index: int
    road: int
    node: int
    polygon: Polygon
    path: np.ndarray  # (2, 2) end points on the two sidewalks
    heading: float  # road direction at the crossing (stripes run along it)


@dataclasses.dataclass
class StopLine:
    lane: int
    polygon: Polygon
    crossing: int  # -1 if none


@dataclasses.dataclass
class SidewalkPath:
    """A pedestrian path along one side of one road, from its nodes[0] end to its nodes[1] end."""

    road: int
    side: int  # +1 left, -1 right of the road reference direction
    xy: np.ndarray  # (N, 2)
    crossing_at_start: int  # crossing index at the nodes[0] end, -1 if none
    crossing_at_end: int


@dataclasses.dataclass
class SynthMap:
    location: str
    seed: int
    right_hand: bool
    canvas: tuple[float, float]  # (width, height) in metres; the map spans [0, w] x [0, h]
    nodes: list[Node]
    roads: list[Road]
    lanes: list[Lane]
    crossings: list[Crossing]
    stop_lines: list[StopLine]
    sidewalks: list[SidewalkPath]
    drivable: MultiPolygon
    walkway: MultiPolygon
    buildings: np.ndarray  # (B, 6) x, y, yaw, length, width, height

    @property
    def entry_lanes(self) -> list[int]:
        """Lanes that start at the map boundary (where new traffic appears)."""
        return [ln.index for ln in self.lanes if not ln.is_connector and not ln.predecessors]

    def lane_points(self) -> tuple[np.ndarray, np.ndarray]:
        """All lane samples as (M, 2) points and the (M,) lane index of each, for lookups."""
        pts = np.concatenate([ln.poses[:, :2] for ln in self.lanes])
        ids = np.concatenate([np.full(len(ln.poses), ln.index) for ln in self.lanes])
        return pts, ids


def _road_reference(a: np.ndarray, b: np.ndarray, bend: float) -> list[Arc]:
    """Centre line from a to b: straight (bend 0) or a circular arc turning `bend` radians."""
    chord = float(np.hypot(*(b - a)))
    chord_yaw = math.atan2(b[1] - a[1], b[0] - a[0])
    if abs(bend) < 1e-3:
        return [Arc(float(a[0]), float(a[1]), chord_yaw, 0.0, chord)]
    radius = chord / (2.0 * math.sin(abs(bend) / 2.0))
    length = radius * abs(bend)
    return [Arc(float(a[0]), float(a[1]), chord_yaw - bend / 2.0, bend / length, length)]


def _strip(reference: list[Arc], d0: float, d1: float, step: float = 1.0) -> Polygon:
    """Polygon between left offsets d0 < d1 of a reference path."""
    left = sample_path(offset_path(reference, d1), step)[0][:, :2]
    right = sample_path(offset_path(reference, d0), step)[0][:, :2]
    return Polygon(np.concatenate([right, left[::-1]]))


def _line(pieces: list[Arc], step: float = 1.0) -> LineString:
    return LineString(sample_path(pieces, step)[0][:, :2])


def generate_map(location: str, seed: int, cfg: MapConfig = MapConfig()) -> SynthMap:
    """Build a random road network for `location` (deterministic in `seed`)."""
    if location not in LOCATIONS:
        raise ValueError(f"unknown location {location!r}; use one of {LOCATIONS}")
    rng = np.random.default_rng([seed, LOCATIONS.index(location), 7])
    right_hand = RIGHT_HAND.get(location, False)

    # 1. Intersections on a jittered grid, far from the origin like real nuScenes maps.
    nx = int(rng.integers(cfg.grid_x[0], cfg.grid_x[1] + 1))
    ny = int(rng.integers(cfg.grid_y[0], cfg.grid_y[1] + 1))
    gap_x = rng.uniform(*cfg.spacing, size=nx - 1)
    gap_y = rng.uniform(*cfg.spacing, size=ny - 1)
    xs = np.concatenate([[0.0], np.cumsum(gap_x)])
    ys = np.concatenate([[0.0], np.cumsum(gap_y)])
    grid = {}
    positions = []
    for j in range(ny):
        for i in range(nx):
            grid[i, j] = len(positions)
            positions.append(np.array([xs[i], ys[j]]) + rng.uniform(-cfg.jitter, cfg.jitter, 2))

    # 2. Grid edges, some dropped while keeping every node at degree >= 2 and the graph connected.
    edges = []
    for (i, j), n in grid.items():
        if (i + 1, j) in grid:
            edges.append((n, grid[i + 1, j]))
        if (i, j + 1) in grid:
            edges.append((n, grid[i, j + 1]))
    order = rng.permutation(len(edges))
    keep = set(range(len(edges)))
    for e in order:
        if rng.uniform() >= cfg.drop_edge_prob:
            continue
        trial = keep - {e}
        deg = np.zeros(len(positions), int)
        for k in trial:
            deg[edges[k][0]] += 1
            deg[edges[k][1]] += 1
        if deg.min() >= 2 and _connected(len(positions), [edges[k] for k in trial]):
            keep = trial
    edges = [edges[k] for k in sorted(keep)]

    # 3. Stubs leaving the map from boundary nodes (at least two, so traffic can enter and leave).
    boundary = []
    for (i, j), n in grid.items():
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            if (i + di, j + dj) not in grid:
                boundary.append((n, np.array([di, dj], float)))
    stub_order = rng.permutation(len(boundary))
    chosen = [k for k in stub_order if rng.uniform() < cfg.stub_prob]
    for k in stub_order:
        if len(chosen) >= 2:
            break
        if k not in chosen:
            chosen.append(k)
    for k in sorted(chosen):
        n, direction = boundary[k]
        length = rng.uniform(*cfg.stub_length)
        direction = direction + rng.uniform(-0.15, 0.15, 2) * (direction == 0)
        positions.append(positions[n] + length * direction / np.linalg.norm(direction))
        edges.append((n, len(positions) - 1))

    pos = np.array(positions)
    pos += cfg.margin - pos.min(axis=0)  # the canvas starts at the map's south-west corner
    canvas = tuple(float(v) for v in np.ceil(pos.max(axis=0) + cfg.margin))
    nodes = [Node(i, pos[i], []) for i in range(len(pos))]

    # 4. Roads: width, lanes, curvature.
    roads: list[Road] = []
    untrimmed: list[list[Arc]] = []
    for a, b in edges:
        is_stub = len([e for e in edges if b in e]) == 1 or len([e for e in edges if a in e]) == 1
        bend = 0.0
        if not is_stub and rng.uniform() < cfg.curved_prob:
            bend = math.radians(rng.uniform(12.0, cfg.max_bend_deg)) * rng.choice([-1.0, 1.0])
        lanes_per_dir = 2 if rng.uniform() < cfg.two_lane_prob else 1
        lane_width = float(rng.uniform(3.2, 3.8))
        shoulder = tuple(2.5 if rng.uniform() < cfg.shoulder_prob else 0.0 for _ in range(2))
        road = Road(
            index=len(roads),
            nodes=(a, b),
            reference=[],
            lanes_per_dir=lanes_per_dir,
            lane_width=lane_width,
            shoulder=shoulder,
            sidewalk=float(rng.uniform(2.5, 4.0)),
            speed_limit=float(rng.choice([8.3, 11.1, 13.9])) if lanes_per_dir == 2 else float(rng.choice([8.3, 11.1])),
            forward_lanes=[],
            backward_lanes=[],
        )
        roads.append(road)
        untrimmed.append(_road_reference(pos[a], pos[b], bend))
        nodes[a].roads.append(road.index)
        nodes[b].roads.append(road.index)

    # 5. Trim roads at each node by a radius that keeps neighbouring roads apart.
    def leaving_yaw(road: Road, node: int) -> float:
        ref = untrimmed[road.index]
        if road.nodes[0] == node:
            return ref[0].yaw
        return float(wrap_angle(ref[-1].end[2] + math.pi))

    for node in nodes:
        if node.is_terminal:
            node.radius = 0.0
            continue
        yaws = np.array([leaving_yaw(roads[r], node.index) for r in node.roads])
        order = np.argsort(yaws)
        radius = 4.0
        for k in range(len(order)):
            r1, r2 = roads[node.roads[order[k]]], roads[node.roads[order[(k + 1) % len(order)]]]
            gap = (yaws[order[(k + 1) % len(order)]] - yaws[order[k]]) % (2 * math.pi)
            if len(order) == 2 and abs(gap - math.pi) < math.radians(12):
                continue
            w = max(r1.half_width(1), r1.half_width(-1), r2.half_width(1), r2.half_width(-1)) + max(
                r1.sidewalk, r2.sidewalk
            )
            radius = max(radius, w / math.tan(min(gap, math.pi * 0.95) / 2.0) + 2.0)
        if node.is_intersection:
            radius += 4.0  # room for the crossing
        else:
            radius = max(radius, 15.0)  # a bend: room for lanes to merge smoothly
        node.radius = min(radius, 40.0)

    # Signals: the two most opposite roads of an intersection share a phase; the others the other.
    for node in nodes:
        if not node.is_intersection:
            continue
        yaws = {r: leaving_yaw(roads[r], node.index) for r in node.roads}
        best, pair = -1.0, None
        for a in node.roads:
            for b in node.roads:
                if a < b:
                    opp = abs(float(wrap_angle(yaws[a] - yaws[b])))
                    if opp > best:
                        best, pair = opp, (a, b)
        node.signal_axis = {r: (0 if r in pair else 1) for r in node.roads}
        node.signal_green = (float(rng.uniform(12.0, 20.0)), float(rng.uniform(10.0, 16.0)))
        node.signal_offset = float(rng.uniform(0.0, 60.0))

    for road in roads:
        ref = untrimmed[road.index]
        total = path_length(ref)
        s0, s1 = nodes[road.nodes[0]].radius, total - nodes[road.nodes[1]].radius
        if s1 - s0 < 25.0:
            raise RuntimeError("road too short after trimming; try another seed")
        road.reference = trim_path(ref, s0, s1)

    # 6. Lanes along the roads.
    side = 1.0 if right_hand else -1.0  # which side of the reference line forward lanes are on: -1*side*d
    lanes: list[Lane] = []
    for road in roads:
        w = road.lane_width
        for direction in (1, -1):
            ids = []
            for i in range(road.lanes_per_dir):
                d = -side * direction * (i + 0.5) * w
                pieces = offset_path(road.reference, d)
                if direction < 0:
                    pieces = reverse_path(pieces)
                lane = Lane(len(lanes), pieces, w, False, road.index, -1, road.speed_limit)
                lanes.append(lane)
                ids.append(lane.index)
            # neighbours: lane i (innermost = 0) is next to i + 1 further out.
            for i, lid in enumerate(ids):
                inner = ids[i - 1] if i > 0 else -1
                outer = ids[i + 1] if i + 1 < len(ids) else -1
                # Right-hand traffic: the inner lane is on the left.
                lanes[lid].left, lanes[lid].right = (inner, outer) if right_hand else (outer, inner)
            if direction > 0:
                road.forward_lanes = ids
            else:
                road.backward_lanes = ids
        n = road.lanes_per_dir
        road.polygon = _strip(road.reference, -road.half_width(-1), road.half_width(1))
        road.road_divider = _line(road.reference)
        for k in range(1, n):
            for sgn in (-1.0, 1.0):
                road.lane_dividers.append(_line(offset_path(road.reference, sgn * k * w)))
        for sgn, sh in ((-1.0, road.shoulder[0]), (1.0, road.shoulder[1])):
            if sh > 0:
                road.edge_lines.append(_line(offset_path(road.reference, sgn * n * w)))
                # Parking spots along the shoulder, facing the adjacent traffic.
                total = path_length(road.reference)
                for s in np.arange(8.0, total - 8.0, 7.0):
                    p = trim_path(road.reference, s, s + 0.1)[0]
                    q = p.offset(sgn * (n * w + sh / 2.0))
                    yaw = q.yaw if (sgn < 0) == right_hand else q.yaw + math.pi
                    road.parking.append((q.x, q.y, float(wrap_angle(yaw))))

    def lanes_into(node: int) -> list[tuple[Road, list[int]]]:
        out = []
        for r in nodes[node].roads:
            road = roads[r]
            out.append((road, road.forward_lanes if road.nodes[1] == node else road.backward_lanes))
        return out

    def lanes_out_of(node: int) -> list[tuple[Road, list[int]]]:
        out = []
        for r in nodes[node].roads:
            road = roads[r]
            out.append((road, road.forward_lanes if road.nodes[0] == node else road.backward_lanes))
        return out

    # 7. Connectors through every non-terminal node.
    for node in nodes:
        if node.is_terminal:
            continue
        for road_in, ins in lanes_into(node.index):
            yaw_in = lanes[ins[0]].pieces[-1].end[2]
            for road_out, outs in lanes_out_of(node.index):
                if road_out.index == road_in.index:
                    continue  # no U-turns
                yaw_out = lanes[outs[0]].pieces[0].yaw
                rel = float(wrap_angle(yaw_out - yaw_in))
                turn = "straight" if abs(rel) < math.radians(35) else ("left" if rel > 0 else "right")
                if len(node.roads) == 2:
                    turn = "straight"  # a bend: every lane continues
                pairs = _lane_pairs(turn, len(ins), len(outs), right_hand)
                for i, o in pairs:
                    src, dst = lanes[ins[i]], lanes[outs[o]]
                    pieces = connector_path(src.pieces[-1].end, (dst.pieces[0].x, dst.pieces[0].y, dst.pieces[0].yaw))
                    speed = min(src.speed_limit, dst.speed_limit)
                    con = Lane(len(lanes), pieces, src.width, True, -1, node.index, speed, turn=turn)
                    con.predecessors = [src.index]
                    con.successors = [dst.index]
                    src.successors.append(con.index)
                    dst.predecessors.append(con.index)
                    lanes.append(con)
                    node.connectors.append(con.index)

    for lane in lanes:
        lane._sample()

    # Conflicting connectors: they cross or merge (and do not come from the same lane).
    for node in nodes:
        lines = {c: LineString(lanes[c].poses[:, :2]) for c in node.connectors}
        for a in node.connectors:
            for b in node.connectors:
                if a < b and lanes[a].predecessors != lanes[b].predecessors:
                    if lines[a].distance(lines[b]) < 1.0:
                        lanes[a].conflicts.append(b)
                        lanes[b].conflicts.append(a)

    # 8. Intersection areas, drivable area, walkways.
    for node in nodes:
        if node.is_terminal:
            continue
        corners = []
        for r in node.roads:
            road = roads[r]
            end_s = 0.0 if road.nodes[0] == node.index else path_length(road.reference)
            p = trim_path(road.reference, max(end_s - 0.01, 0.0), max(end_s, 0.01))[0]
            for d in (-road.half_width(-1), road.half_width(1)):
                q = p.offset(d)
                corners.append((q.x, q.y))
        hull = shapely.MultiPoint(corners).convex_hull
        swept = [LineString(lanes[c].poses[:, :2]).buffer(lanes[c].width / 2 + 0.6) for c in node.connectors]
        node.polygon = unary_union([hull, *swept]).buffer(0.0)

    drivable = unary_union([r.polygon for r in roads] + [n.polygon for n in nodes if n.polygon is not None])
    drivable = _as_multipolygon(drivable.buffer(0.01).buffer(-0.01))
    walk_parts = []
    for road in roads:
        walk_parts.append(
            _strip(road.reference, -road.half_width(-1) - road.sidewalk, road.half_width(1) + road.sidewalk)
        )
    for node in nodes:
        if node.polygon is not None:
            sw = max(roads[r].sidewalk for r in node.roads)
            walk_parts.append(node.polygon.buffer(sw, join_style="mitre"))
    walkway = _as_multipolygon(unary_union(walk_parts).difference(drivable.buffer(0.3)))
    walkway = _as_multipolygon(walkway.intersection(shapely.box(0, 0, *canvas)))

    # 9. Crossings at the road ends of intersections; stop lines before them.
    crossings: list[Crossing] = []
    stop_lines: list[StopLine] = []
    crossing_width = 3.5
    for road in roads:
        total = path_length(road.reference)
        for end, node_id in ((0, road.nodes[0]), (1, road.nodes[1])):
            if not nodes[node_id].is_intersection:
                continue
            s_near = 0.5 if end == 0 else total - 0.5
            s_far = s_near + crossing_width if end == 0 else s_near - crossing_width
            lo, hi = sorted((s_near, s_far))
            piece = trim_path(road.reference, lo, hi)
            poly = _strip(piece, -road.half_width(-1) - 0.5, road.half_width(1) + 0.5, step=0.5)
            mid = trim_path(road.reference, (lo + hi) / 2, (lo + hi) / 2 + 0.01)[0]
            a = mid.offset(-road.half_width(-1) - road.sidewalk / 2)
            b = mid.offset(road.half_width(1) + road.sidewalk / 2)
            crossings.append(
                Crossing(len(crossings), road.index, node_id, poly, np.array([[a.x, a.y], [b.x, b.y]]), mid.yaw)
            )
            incoming = road.forward_lanes if end == 1 else road.backward_lanes
            for lid in incoming:
                lane = lanes[lid]
                # set back, so that long vehicles turning in front have room to swing
                lane.stop_s = lane.length - crossing_width - 4.0
                p = trim_path(lane.pieces, lane.stop_s + 0.5, lane.stop_s + 1.0)
                stop_lines.append(StopLine(lid, _strip(p, -lane.width / 2, lane.width / 2, 0.5), crossings[-1].index))

    # Where lanes and connectors enter crossings (vehicles yield to pedestrians there).
    for lane in lanes:
        line_pts = lane.poses[:, :2]
        for c in crossings:
            if not c.polygon.intersects(LineString(line_pts)):
                continue
            inside = shapely.contains_xy(c.polygon, line_pts[:, 0], line_pts[:, 1])
            if inside.any():
                lane.crossings.append((float(lane.s[np.argmax(inside)]), c.index))

    # 10. Sidewalk paths for pedestrians along both sides of every road.
    sidewalks = []
    for road in roads:
        ends = []
        for node_id in road.nodes:
            found = [c.index for c in crossings if c.road == road.index and c.node == node_id]
            ends.append(found[0] if found else -1)
        for sgn in (-1, 1):
            d = sgn * (road.half_width(sgn) + road.sidewalk / 2)
            xy = sample_path(offset_path(road.reference, d), 1.0)[0][:, :2]
            sidewalks.append(SidewalkPath(road.index, sgn, xy, ends[0], ends[1]))

    # 11. Buildings in the blocks, set back from walkways.
    built = _place_buildings(rng, cfg, canvas, unary_union([drivable, walkway]).buffer(3.0), roads)

    return SynthMap(
        location=location,
        seed=seed,
        right_hand=right_hand,
        canvas=canvas,
        nodes=nodes,
        roads=roads,
        lanes=lanes,
        crossings=crossings,
        stop_lines=stop_lines,
        sidewalks=sidewalks,
        drivable=drivable,
        walkway=walkway,
        buildings=built,
    )


def _lane_pairs(turn: str, n_in: int, n_out: int, right_hand: bool) -> list[tuple[int, int]]:
    """Which incoming lane (0 = innermost) feeds which outgoing lane for a turn.

    Turns across traffic (left in right-hand traffic, right in left-hand traffic) go from the
    innermost lane; turns with the traffic from the outermost lane; straight lanes continue.
    """
    if turn == "straight":
        return [(i, min(i, n_out - 1)) for i in range(n_in)]
    across = (turn == "left") == right_hand
    if across:
        return [(0, 0)]
    return [(n_in - 1, n_out - 1)]


def _connected(n: int, edges: list[tuple[int, int]]) -> bool:
    adj = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    seen, stack = {0}, [0]
    while stack:
        for m in adj[stack.pop()]:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return len(seen) == n


def _as_multipolygon(geom) -> MultiPolygon:
    if isinstance(geom, Polygon):
        return MultiPolygon([geom]) if not geom.is_empty else MultiPolygon()
    if isinstance(geom, MultiPolygon):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon) and not g.is_empty]
    return MultiPolygon(polys)


def _place_buildings(rng, cfg: MapConfig, canvas, keep_out, roads: list[Road]) -> np.ndarray:
    """Rectangular buildings where they fit, roughly aligned with the nearest road."""
    prepared = shapely.prepared.prep(keep_out)
    road_lines = [_line(r.reference, 5.0) for r in roads]
    boxes, polys = [], []
    for _ in range(cfg.buildings):
        x, y = rng.uniform(0, canvas[0]), rng.uniform(0, canvas[1])
        length, width = rng.uniform(12, 38), rng.uniform(10, 26)
        height = float(rng.choice([rng.uniform(6, 14), rng.uniform(14, 40)], p=[0.6, 0.4]))
        dists = [line.distance(Point(x, y)) for line in road_lines]
        nearest = road_lines[int(np.argmin(dists))]
        proj = nearest.interpolate(nearest.project(Point(x, y)))
        ahead = nearest.interpolate(min(nearest.project(Point(x, y)) + 1.0, nearest.length))
        yaw = math.atan2(ahead.y - proj.y, ahead.x - proj.x) if ahead.distance(proj) > 1e-6 else 0.0
        c, s = math.cos(yaw), math.sin(yaw)
        corners = np.array([[length, width], [-length, width], [-length, -width], [length, -width]]) / 2
        corners = corners @ np.array([[c, s], [-s, c]]) + [x, y]
        poly = Polygon(corners)
        if prepared.intersects(poly) or any(p.distance(poly) < 4.0 for p in polys):
            continue
        if not shapely.box(0, 0, *canvas).contains(poly):
            continue
        polys.append(poly)
        boxes.append((x, y, yaw, length, width, height))
    return np.array(boxes, dtype=np.float64).reshape(-1, 6)

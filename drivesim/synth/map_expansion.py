"""A synthetic map as a nuScenes map expansion (v1.3 schema) that `NuScenesMap` loads.

Geometry goes into the shared `node` / `line` / `polygon` tables; every semantic layer the devkit
reads is present (empty where the synthetic world has none, e.g. `carpark_area`). Lane centrelines
are written exactly as `arcline_path_3` records, and the lane graph as `connectivity`.
"""

from __future__ import annotations

import hashlib

import numpy as np
from shapely.geometry import MultiPolygon, Polygon

from drivesim.synth.geometry import arcline_records, offset_path, sample_path
from drivesim.synth.roads import SynthMap

MAP_VERSION = "1.3"


def token(*parts) -> str:
    """A deterministic 32-hex-digit token (nuScenes tokens look like this)."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


class _Builder:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[dict] = []
        self.lines: list[dict] = []
        self.polygons: list[dict] = []
        self._count = 0

    def _tok(self, kind: str) -> str:
        self._count += 1
        return token(self.prefix, kind, self._count)

    def node(self, x: float, y: float) -> str:
        t = self._tok("node")
        self.nodes.append({"token": t, "x": round(float(x), 4), "y": round(float(y), 4)})
        return t

    def line(self, coords) -> str:
        t = self._tok("line")
        self.lines.append({"token": t, "node_tokens": [self.node(x, y) for x, y in np.asarray(coords)[:, :2]]})
        return t

    def polygon(self, poly: Polygon) -> str:
        t = self._tok("polygon")
        ext = np.asarray(poly.exterior.coords)[:-1]
        holes = [{"node_tokens": [self.node(x, y) for x, y in np.asarray(h.coords)[:-1]]} for h in poly.interiors]
        self.polygons.append({"token": t, "exterior_node_tokens": [self.node(x, y) for x, y in ext], "holes": holes})
        return t


def map_expansion(smap: SynthMap) -> dict:
    """The map expansion JSON object of a synthetic map (a plain dict, ready for json.dump)."""
    b = _Builder(f"{smap.location}/{smap.seed}")
    lane_tok = {ln.index: token(smap.location, smap.seed, "lane", ln.index) for ln in smap.lanes}

    drivable_polys = [b.polygon(p) for p in smap.drivable.geoms]
    drivable_token = token(smap.location, smap.seed, "drivable_area")
    out: dict = {
        "version": MAP_VERSION,
        "canvas_edge": [float(smap.canvas[0]), float(smap.canvas[1])],
        "drivable_area": [{"token": drivable_token, "polygon_tokens": drivable_polys}],
        "road_segment": [],
        "road_block": [],
        "lane": [],
        "ped_crossing": [],
        "walkway": [],
        "stop_line": [],
        "carpark_area": [],
        "road_divider": [],
        "lane_divider": [],
        "traffic_light": [],
        "lane_connector": [],
        "arcline_path_3": {},
        "connectivity": {},
    }
    seg_tok = {}
    for road in smap.roads:
        t = token(smap.location, smap.seed, "road_segment", road.index)
        seg_tok[road.index] = t
        out["road_segment"].append(
            {
                "token": t,
                "polygon_token": b.polygon(road.polygon),
                "is_intersection": False,
                "drivable_area_token": drivable_token,
            }
        )
        for name, lanes in (("forward", road.forward_lanes), ("backward", road.backward_lanes)):
            pieces = smap.lanes[lanes[0]].pieces
            outer = max(smap.lanes[x].width for x in lanes) * len(lanes)
            block = _lane_polygon(pieces, smap.lanes[lanes[0]].width / 2 - outer, smap.lanes[lanes[0]].width / 2)
            out["road_block"].append(
                {
                    "token": token(smap.location, smap.seed, "road_block", road.index, name),
                    "polygon_token": b.polygon(block),
                    "from_edge_line_token": b.line(_edge(block, 0)),
                    "to_edge_line_token": b.line(_edge(block, -1)),
                    "road_segment_token": t,
                }
            )
        out["road_divider"].append(
            {
                "token": token(smap.location, smap.seed, "road_divider", road.index),
                "line_token": b.line(road.road_divider.coords),
                "road_segment_token": t,
            }
        )
        for j, line in enumerate(road.lane_dividers):
            coords = np.asarray(line.coords)[::5]
            nodes = [b.node(x, y) for x, y in coords]
            line_token = token(b.prefix, "divider_line", road.index, j)
            b.lines.append({"token": line_token, "node_tokens": nodes})
            out["lane_divider"].append(
                {
                    "token": token(smap.location, smap.seed, "lane_divider", road.index, j),
                    "line_token": line_token,
                    "lane_divider_segments": [{"node_token": n, "segment_type": "DOUBLE_DASHED_WHITE"} for n in nodes],
                    "road_segment_token": t,
                }
            )
    for node in smap.nodes:
        if node.polygon is None:
            continue
        t = token(smap.location, smap.seed, "road_segment", "node", node.index)
        out["road_segment"].append(
            {
                "token": t,
                "polygon_token": b.polygon(node.polygon),
                "is_intersection": True,
                "drivable_area_token": drivable_token,
            }
        )

    for ln in smap.lanes:
        t = lane_tok[ln.index]
        poly = _lane_polygon(ln.pieces, -ln.width / 2, ln.width / 2)
        out["arcline_path_3"][t] = arcline_records(ln.pieces)
        out["connectivity"][t] = {
            "incoming": [lane_tok[x] for x in ln.predecessors],
            "outgoing": [lane_tok[x] for x in ln.successors],
        }
        if ln.is_connector:
            out["lane_connector"].append({"token": t, "polygon_token": b.polygon(poly)})
            continue
        left = sample_path(offset_path(ln.pieces, ln.width / 2), 5.0)[0]
        right = sample_path(offset_path(ln.pieces, -ln.width / 2), 5.0)[0]
        out["lane"].append(
            {
                "token": t,
                "polygon_token": b.polygon(poly),
                "lane_type": "CAR",
                "from_edge_line_token": b.line(np.stack([left[0], right[0]])),
                "to_edge_line_token": b.line(np.stack([left[-1], right[-1]])),
                "left_lane_divider_segments": [{"node_token": b.node(x, y), "segment_type": "NIL"} for x, y, _ in left],
                "right_lane_divider_segments": [
                    {"node_token": b.node(x, y), "segment_type": "NIL"} for x, y, _ in right
                ],
            }
        )
    for c in smap.crossings:
        out["ped_crossing"].append(
            {
                "token": token(smap.location, smap.seed, "ped_crossing", c.index),
                "polygon_token": b.polygon(c.polygon),
                "road_segment_token": seg_tok[c.road],
            }
        )
    for j, p in enumerate(smap.walkway.geoms):
        out["walkway"].append({"token": token(smap.location, smap.seed, "walkway", j), "polygon_token": b.polygon(p)})
    for j, st in enumerate(smap.stop_lines):
        lane = smap.lanes[st.lane]
        out["stop_line"].append(
            {
                "token": token(smap.location, smap.seed, "stop_line", j),
                "polygon_token": b.polygon(st.polygon),
                "stop_line_type": "TRAFFIC_LIGHT",
                "ped_crossing_tokens": [],
                "traffic_light_tokens": [],
                "road_block_token": token(
                    smap.location,
                    smap.seed,
                    "road_block",
                    lane.road,
                    "forward" if st.lane in smap.roads[lane.road].forward_lanes else "backward",
                ),
            }
        )
    out["node"] = b.nodes
    out["line"] = b.lines
    out["polygon"] = b.polygons
    return out


def lane_token(smap: SynthMap, lane_index: int) -> str:
    """The map-expansion token of a synthetic lane or connector."""
    return token(smap.location, smap.seed, "lane", lane_index)


def _lane_polygon(pieces, d0: float, d1: float) -> Polygon:
    left = sample_path(offset_path(pieces, d1), 1.0)[0][:, :2]
    right = sample_path(offset_path(pieces, d0), 1.0)[0][:, :2]
    poly = Polygon(np.concatenate([right, left[::-1]]))
    if not poly.is_valid:
        poly = poly.buffer(0)
        if isinstance(poly, MultiPolygon):
            poly = max(poly.geoms, key=lambda g: g.area)
    return poly


def _edge(poly: Polygon, which: int) -> np.ndarray:
    """The two corners at the start (0) or end (-1) of a strip polygon built by `_lane_polygon`."""
    ext = np.asarray(poly.exterior.coords)[:-1]
    n = len(ext) // 2
    if which == 0:
        return np.stack([ext[0], ext[-1]])
    return np.stack([ext[n - 1], ext[n]])

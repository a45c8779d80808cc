"""The ground texture of a synthetic map: what the cameras see on the ground plane.

A top-down raster of surface ids (grass, asphalt, sidewalk, white and yellow paint) at 10 cm,
aligned with the global axes: row r, column c covers x in [c, c+1) * res, y in [r, r+1) * res.
Dashed lane dividers, double yellow centre lines, kerb-side edge lines, stop lines and zebra
stripes are painted here; the renderer only looks them up.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
from shapely.geometry import LineString, MultiPolygon, Polygon

from drivesim.synth.geometry import offset_path, sample_path
from drivesim.synth.roads import SynthMap

GRASS, ASPHALT, SIDEWALK, WHITE, YELLOW = 0, 1, 2, 3, 4
SURFACE_NAMES = ("grass", "asphalt", "sidewalk", "white", "yellow")
# Base colours (RGB) of each surface id.
SURFACE_COLORS = np.array(
    [
        (92, 128, 70),  # grass
        (88, 88, 92),  # asphalt
        (170, 166, 158),  # sidewalk
        (235, 235, 228),  # white paint
        (226, 190, 60),  # yellow paint
    ],
    dtype=np.uint8,
)

_SHIFT = 3  # cv2 fixed-point bits for sub-pixel polygon corners


@dataclasses.dataclass(frozen=True)
class GroundTexture:
    """Surface ids (H, W) uint8; cell (r, c) spans x in [c, c+1) * resolution, y likewise with r."""

    surface: np.ndarray
    resolution: float


def _pts(coords, res: float) -> np.ndarray:
    return np.round(np.asarray(coords)[:, :2] / res * (1 << _SHIFT)).astype(np.int32)


def _fill(img: np.ndarray, geom, value: int, res: float) -> None:
    """Paint polygons (holes left untouched) with `value`."""
    polys = geom.geoms if isinstance(geom, MultiPolygon) else [geom]
    for p in polys:
        if p.is_empty:
            continue
        x0, y0, x1, y1 = p.bounds
        c0, r0 = max(int(x0 / res) - 1, 0), max(int(y0 / res) - 1, 0)
        c1, r1 = min(int(x1 / res) + 2, img.shape[1]), min(int(y1 / res) + 2, img.shape[0])
        if c1 <= c0 or r1 <= r0:
            continue
        off = np.array([c0, r0]) * (1 << _SHIFT)
        rings = [_pts(p.exterior.coords, res) - off] + [_pts(h.coords, res) - off for h in p.interiors]
        mask = np.zeros((r1 - r0, c1 - c0), np.uint8)
        cv2.fillPoly(mask, rings, 1, lineType=cv2.LINE_8, shift=_SHIFT)  # even-odd: holes stay empty
        img[r0:r1, c0:c1][mask > 0] = value


def _stroke(img: np.ndarray, line: LineString, value: int, width: float, res: float) -> None:
    thick = max(1, int(round(width / res)))
    cv2.polylines(img, [_pts(line.coords, res)], False, value, thickness=thick, lineType=cv2.LINE_8, shift=_SHIFT)


def _dashes(line: LineString, on: float = 3.0, off: float = 6.0) -> list[LineString]:
    out, s = [], 1.0
    while s < line.length:
        a, b = s, min(s + on, line.length)
        out.append(LineString([line.interpolate(a), line.interpolate(b)]))
        s += on + off
    return out


def ground_texture(smap: SynthMap, resolution: float = 0.1) -> GroundTexture:
    """Paint the ground of a synthetic map."""
    w = int(math.ceil(smap.canvas[0] / resolution))
    h = int(math.ceil(smap.canvas[1] / resolution))
    img = np.full((h, w), GRASS, np.uint8)
    _fill(img, smap.walkway, SIDEWALK, resolution)
    _fill(img, smap.drivable, ASPHALT, resolution)
    for road in smap.roads:
        for line in road.lane_dividers:
            for dash in _dashes(line):
                _stroke(img, dash, WHITE, 0.15, resolution)
        for line in road.edge_lines:
            _stroke(img, line, WHITE, 0.15, resolution)
        for d in (-0.15, 0.15):
            line = LineString(sample_path(offset_path(road.reference, d), 1.0)[0][:, :2])
            _stroke(img, line, YELLOW, 0.15, resolution)
    for stop in smap.stop_lines:
        _fill(img, stop.polygon, WHITE, resolution)
    for c in smap.crossings:
        _zebra(img, c.polygon, c.heading, resolution)
    return GroundTexture(img, resolution)


def _zebra(img: np.ndarray, poly: Polygon, heading: float, res: float) -> None:
    """White stripes along the road direction inside a crosswalk polygon."""
    across = np.array([-math.sin(heading), math.cos(heading)])
    along = np.array([math.cos(heading), math.sin(heading)])
    pts = np.asarray(poly.exterior.coords)
    center = pts.mean(axis=0)
    span = np.abs((pts - center) @ across).max()
    depth = np.abs((pts - center) @ along).max()
    for u in np.arange(-span + 0.25, span, 1.0):
        a = center + across * u
        stripe = Polygon(
            [a - along * depth, a + along * depth, a + along * depth + across * 0.5, a - along * depth + across * 0.5]
        ).intersection(poly)
        if not stripe.is_empty and isinstance(stripe, Polygon | MultiPolygon):
            _fill(img, stripe, WHITE, res)

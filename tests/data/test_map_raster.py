"""`rasterize_map` against hand-computed rasters and a plain per-cell shapely test."""

import numpy as np
import pytest
import shapely
from shapely import affinity
from shapely.geometry import LineString, MultiPolygon, Polygon

from drivesim.data.classes import OCC_CROSSING, OCC_DRIVABLE, OCC_FREE, OCC_LANE_MARKING, OCC_WALKWAY
from drivesim.data.map_raster import rasterize_map


def test_hand_computed_raster_orientation_and_paint_order():
    # 4 x 4 cells of 1 m from (10, 20): cell (r, c) is centred at (10.5 + c, 20.5 + r).
    drivable = [shapely.box(10, 20, 14, 22)]  # rows 0-1 (y < 22), all columns
    walkway = [shapely.box(12, 20, 14, 21)]  # row 0, columns 2-3
    crossing = [shapely.box(13, 20, 14, 24)]  # column 3, all rows
    markings = [LineString([(10, 23.5), (11.5, 23.5)])]  # row 3, columns 0-1 (centres 0 m away)
    raster = rasterize_map(drivable, walkway, crossing, markings, (10.0, 20.0), 4, 1.0, marking_width=0.4)
    f, d, w, x, m = OCC_FREE, OCC_DRIVABLE, OCC_WALKWAY, OCC_CROSSING, OCC_LANE_MARKING
    expected = np.array(
        [
            [d, d, w, x],
            [d, d, d, x],
            [f, f, f, x],
            [m, m, f, x],
        ],
        dtype=np.uint8,
    )
    assert raster.dtype == np.uint8
    np.testing.assert_array_equal(raster, expected)


def _cell_centers(origin, size, res):
    x = origin[0] + (np.arange(size) + 0.5) * res
    y = origin[1] + (np.arange(size) + 0.5) * res
    return np.meshgrid(x, y)  # (size, size) each; row index follows y


def _ring(cx, cy, r, n, rng):
    a = np.sort(rng.uniform(0, 2 * np.pi, n))
    rr = r * rng.uniform(0.7, 1.0, n)
    return np.stack([cx + rr * np.cos(a), cy + rr * np.sin(a)], axis=-1)


def test_matches_per_cell_contains_on_holes_overlaps_and_lines():
    rng = np.random.default_rng(7)
    origin, size, res = (1003.3, 2507.9), 240, 0.5  # 120 m square at nuScenes-like coordinates
    ox, oy = origin
    # A drivable area larger than the raster (so it is clipped and mostly filled by whole tiles),
    # with holes, one hole holding an island; a multipolygon; a polygon wholly outside.
    holes = [_ring(ox + 30 + 40 * i, oy + 30 + 45 * j, 12, 40, rng) for i in range(2) for j in range(2)]
    drivable = [
        Polygon(_ring(ox + 60, oy + 60, 110, 300, rng), holes),
        Polygon(_ring(ox + 30, oy + 30, 5, 20, rng)),  # island inside the first hole
        MultiPolygon([Polygon(_ring(ox + 100, oy + 10, 6, 12, rng)), Polygon(_ring(ox + 110, oy + 25, 4, 9, rng))]),
        Polygon(_ring(ox - 50, oy - 50, 10, 12, rng)),
        Polygon(),
    ]
    walkway = [
        Polygon(_ring(ox + 30, oy + 30, 14, 60, rng), [_ring(ox + 30, oy + 30, 9, 30, rng)]),  # ring, with a hole
        Polygon(_ring(ox + 118, oy + 60, 15, 30, rng)),  # crosses the right edge
    ]
    crossing = [affinity.rotate(shapely.box(ox + 50, oy + 50, ox + 54, oy + 62), 33, origin="centroid")]
    markings = [
        LineString(_ring(ox + 70, oy + 90, 25, 15, rng)),
        LineString([(ox - 5, oy + 7.3), (ox + 130, oy + 61.1)]),  # runs past both edges
        LineString([(ox + 10.2, oy + 100.1), (ox + 40.7, oy + 100.1)]),  # axis-aligned
    ]

    raster = rasterize_map(drivable, walkway, crossing, markings, origin, size, res, marking_width=0.6)

    # Independent computation: test every cell centre against every geometry, unclipped.
    x, y = _cell_centers(origin, size, res)
    expected = np.full((size, size), OCC_FREE, np.uint8)
    boundaries = []
    for cls, geoms in (
        (OCC_DRIVABLE, drivable),
        (OCC_WALKWAY, walkway),
        (OCC_CROSSING, crossing),
        (OCC_LANE_MARKING, [line.buffer(0.3) for line in markings]),
    ):
        for g in geoms:
            expected[shapely.contains_xy(g, x, y)] = cls
            boundaries.append(g.boundary)
    near_edge = shapely.distance(shapely.union_all(boundaries), shapely.points(x, y)) < 1e-6

    assert set(np.unique(expected)) == {OCC_FREE, OCC_DRIVABLE, OCC_WALKWAY, OCC_CROSSING, OCC_LANE_MARKING}
    assert near_edge.sum() < 10
    np.testing.assert_array_equal(raster[~near_edge], expected[~near_edge])


def test_horizontal_marking_is_unbroken_at_half_metre_cells():
    raster = rasterize_map([], [], [], [LineString([(0, 10.37), (50, 10.37)])], (0.0, 0.0), 100, 0.5)
    rows = np.nonzero((raster == OCC_LANE_MARKING).any(axis=1))[0]
    assert len(rows) >= 1
    assert (raster[rows[0]] == OCC_LANE_MARKING).sum() == 100


def test_rejects_empty_raster():
    with pytest.raises(ValueError, match="size > 0"):
        rasterize_map([], [], [], [], (0.0, 0.0), 0, 0.5)

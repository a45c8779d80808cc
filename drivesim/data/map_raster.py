"""Map layers (shapely geometry) -> the semantic raster stored in `MapData.raster` (host side).

The raster is made once per scene, in numpy, and then sampled inside compiled code by
`drivesim.data.occupancy`. A cell takes a layer's class when its centre is strictly inside that
layer's geometry (`shapely.contains_xy`); layers are painted in `OCC_*` order, later wins.

Speed: a nuScenes drivable area is a few huge polygons with thousands of vertices, so testing
every cell centre against it is slow. Each geometry is clipped to the raster, and its bounding
window is cut into tiles; a tile lying wholly inside the geometry is filled, a tile not touching it
is skipped, and only tiles crossed by a boundary get per-centre point tests. The result is exactly
the per-centre test, at a cost that grows with the boundary length rather than the area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from drivesim.data.classes import OCC_CROSSING, OCC_DRIVABLE, OCC_FREE, OCC_LANE_MARKING, OCC_WALKWAY

# Sides (cells) of the tiles tried, coarse to fine, before single cells are point-tested.
_TILE_STEPS = (32, 8)
# Tiles this small are filled by indexing their cells at once rather than one slice each.
_FILL_BY_CELLS = 8


def rasterize_map(
    drivable: Sequence[BaseGeometry],
    walkway: Sequence[BaseGeometry],
    crossing: Sequence[BaseGeometry],
    markings: Sequence[BaseGeometry],
    origin: Sequence[float],
    size: int,
    resolution: float,
    marking_width: float = 0.6,
) -> np.ndarray:
    """Paint map layers into a square, global-axis-aligned raster of occupancy map classes.

    Args:
      drivable: polygons (holes and overlaps allowed) of the drivable area.
      walkway: polygons of walkways (sidewalks).
      crossing: polygons of pedestrian crossings.
      markings: line strings of lane and road dividers; each is buffered to a band
        `marking_width` wide (round caps) before painting.
      origin: global xy of the corner of cell (0, 0).
      size: cells per side.
      resolution: metres per cell.
      marking_width: full width (m) of a painted marking. A band narrower than
        `resolution * sqrt(2)` can miss every cell centre where a diagonal line runs through cell
        corners, so at 0.5 m cells the default 0.6 m leaves rare gaps in 45-degree markings.

    Returns:
      (size, size) uint8 raster: `OCC_FREE`, then `OCC_DRIVABLE`, `OCC_WALKWAY`, `OCC_CROSSING`,
      `OCC_LANE_MARKING` painted in that order (later wins). Cell (r, c) has its centre at global
      `(origin[0] + (c + 0.5) * resolution, origin[1] + (r + 0.5) * resolution)`, as
      `MapData.raster` documents.
    """
    if size <= 0 or resolution <= 0:
        raise ValueError(f"rasterize_map needs size > 0 and resolution > 0, got {size=} and {resolution=}")
    ox, oy = float(origin[0]), float(origin[1])
    extent = size * resolution
    bounds = shapely.box(ox, oy, ox + extent, oy + extent)
    shapely.prepare(bounds)
    lines = [g for g in markings if g is not None and not g.is_empty]
    bands = list(shapely.buffer(np.asarray(lines, dtype=object), marking_width / 2)) if lines else []

    raster = np.full((size, size), OCC_FREE, dtype=np.uint8)
    for cls, geoms in (
        (OCC_DRIVABLE, drivable),
        (OCC_WALKWAY, walkway),
        (OCC_CROSSING, crossing),
        (OCC_LANE_MARKING, bands),
    ):
        for geom in geoms:
            _paint(raster, geom, cls, ox, oy, resolution, bounds)
    return raster


def _paint(
    raster: np.ndarray, geom: BaseGeometry, cls: int, ox: float, oy: float, res: float, bounds: BaseGeometry
) -> None:
    """Set `raster` to `cls` on every cell whose centre is strictly inside `geom`."""
    if geom is None or geom.is_empty or not bounds.intersects(geom):
        return
    if not bounds.contains(geom):
        # Clipping drops far-away vertices; the box edges it adds lie outside every cell centre's
        # half-cell margin, so no centre changes side.
        try:
            geom = shapely.intersection(geom, bounds)
        except shapely.errors.GEOSException:
            pass  # an invalid input polygon (real maps have a few): test it unclipped
        if geom.is_empty:
            return
    size = raster.shape[0]
    minx, miny, maxx, maxy = geom.bounds
    # Cells whose centres fall in the geometry's bounding box.
    c0 = max(math.ceil((minx - ox) / res - 0.5), 0)
    c1 = min(math.floor((maxx - ox) / res - 0.5), size - 1)
    r0 = max(math.ceil((miny - oy) / res - 0.5), 0)
    r1 = min(math.floor((maxy - oy) / res - 0.5), size - 1)
    if c0 > c1 or r0 > r1:
        return
    shapely.prepare(geom)

    # Refine from the whole window down: fill tiles inside the geometry, drop tiles that miss it,
    # split the rest. A tile is tested as the box spanning its cell centres: `contains_properly`
    # puts every centre in the interior (none on the boundary, which contains_xy would reject), and
    # a box that does not intersect the geometry holds no centre inside it.
    tiles = np.array([[r0, c0, r1, c1]])
    for step in _TILE_STEPS:
        tiles = _split(tiles, step)
        boxes = shapely.box(
            ox + (tiles[:, 1] + 0.5) * res,
            oy + (tiles[:, 0] + 0.5) * res,
            ox + (tiles[:, 3] + 0.5) * res,
            oy + (tiles[:, 2] + 0.5) * res,
        )
        touched = shapely.intersects(geom, boxes)
        tiles, boxes = tiles[touched], boxes[touched]
        inside = shapely.contains_properly(geom, boxes)
        if step > _FILL_BY_CELLS:
            for tr0, tc0, tr1, tc1 in tiles[inside]:
                raster[tr0 : tr1 + 1, tc0 : tc1 + 1] = cls
        else:
            cells = _split(tiles[inside], 1)
            raster[cells[:, 0], cells[:, 1]] = cls
        tiles = tiles[~inside]
        if not len(tiles):
            return
    # Point tests for the cells of the small tiles left on the boundary.
    cells = _split(tiles, 1)
    rr, cc = cells[:, 0], cells[:, 1]
    hit = shapely.contains_xy(geom, ox + (cc + 0.5) * res, oy + (rr + 0.5) * res)
    raster[rr[hit], cc[hit]] = cls


def _split(tiles: np.ndarray, step: int) -> np.ndarray:
    """Cut (N, 4) inclusive `[r0, c0, r1, c1]` cell tiles into sub-tiles of side `step`."""
    if not len(tiles):
        return tiles
    span = int((tiles[:, 2:] - tiles[:, :2]).max()) + 1
    k = np.arange(-(-span // step)) * step
    r0 = tiles[:, None, None, 0] + k[None, :, None]
    c0 = tiles[:, None, None, 1] + k[None, None, :]
    r1 = np.minimum(r0 + step - 1, tiles[:, None, None, 2])
    c1 = np.minimum(c0 + step - 1, tiles[:, None, None, 3])
    r0, c0, r1, c1 = np.broadcast_arrays(r0, c0, r1, c1)
    keep = (r0 <= r1) & (c0 <= c1)
    return np.stack([r0[keep], c0[keep], r1[keep], c1[keep]], axis=-1)

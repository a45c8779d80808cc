"""Fast spatial lookups into a nuScenes map expansion, built once per location.

The devkit's `get_records_in_patch` scans every record of a layer on every call, which is slow on
the real maps (thousands of lanes). We parse each record's geometry once with the devkit and put
it in a shapely STRtree; cropping a scene's neighbourhood is then a tree query.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon, box

from drivesim.errors import DataError


class MapIndex:
    """Polygons, lines and lane centrelines of one map location, indexed for patch queries."""

    def __init__(self, dataroot: str | Path, location: str):
        from nuscenes.map_expansion.map_api import NuScenesMap

        path = Path(dataroot) / "maps" / "expansion" / f"{location}.json"
        if not path.exists():
            raise DataError(
                f"{path} not found: the map expansion for location {location!r} is needed; install the "
                f"nuScenes map expansion (v1.3) into {Path(dataroot) / 'maps' / 'expansion'}"
            )
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.nmap = NuScenesMap(dataroot=os.fspath(dataroot), map_name=location)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); re-download it") from None
        except KeyError as e:
            raise DataError(f"{path} lacks {e}: it is not a v1.3 map expansion; install map expansion v1.3") from None
        except Exception as e:  # the devkit raises a bare Exception for old map versions
            raise DataError(f"{path} could not be loaded by nuscenes-devkit: {e}") from None
        self.location = location
        m = self.nmap
        self.layers: dict[str, list] = {}
        drivable = []
        for rec in m.drivable_area:
            drivable.extend(m.extract_polygon(t) for t in rec["polygon_tokens"])
        self.layers["drivable_area"] = _valid(drivable)
        for name in ("walkway", "ped_crossing"):
            self.layers[name] = _valid([m.extract_polygon(rec["polygon_token"]) for rec in getattr(m, name)])
        lines = [m.extract_line(rec["line_token"]) for rec in m.lane_divider + m.road_divider]
        self.layers["markings"] = [g for g in lines if len(g.coords) >= 2]
        self.trees = {name: shapely.STRtree(geoms) for name, geoms in self.layers.items()}
        # lane centrelines (lanes and connectors), discretised once
        self.lane_tokens = [rec["token"] for rec in m.lane + m.lane_connector]
        self.connector = {rec["token"] for rec in m.lane_connector}
        poses = m.discretize_lanes(self.lane_tokens, 0.5)
        keep = [t for t in self.lane_tokens if len(poses.get(t, [])) >= 2]
        self.lane_tokens = keep
        self.lane_poses = {t: np.asarray(poses[t], dtype=np.float64) for t in keep}
        self.lane_tree = shapely.STRtree([LineString(self.lane_poses[t][:, :2]) for t in keep])
        self.connectivity = m.connectivity

    def crop(self, bounds: tuple[float, float, float, float]) -> dict[str, list]:
        """Geometries of each layer intersecting `bounds` (xmin, ymin, xmax, ymax), clipped to it."""
        patch = box(*bounds)
        out = {}
        for name, tree in self.trees.items():
            geoms = [self.layers[name][i] for i in tree.query(patch, predicate="intersects")]
            clipped = []
            for g in geoms:
                c = g.intersection(patch)
                if c.is_empty:
                    continue
                if isinstance(c, Polygon | LineString):
                    clipped.append(c)
                elif isinstance(c, MultiPolygon) or hasattr(c, "geoms"):
                    clipped.extend(p for p in c.geoms if isinstance(p, Polygon | LineString) and not p.is_empty)
            out[name] = clipped
        return out

    def lanes_in(self, bounds: tuple[float, float, float, float]) -> list[str]:
        """Tokens of lanes and connectors whose centreline passes through `bounds`."""
        idx = self.lane_tree.query(box(*bounds), predicate="intersects")
        return [self.lane_tokens[i] for i in sorted(idx)]


def _valid(polygons) -> list[Polygon]:
    """Repair invalid polygons (real maps have a few self-touching rings) and split multi-parts."""
    out = []
    for g in polygons:
        g = g if g.is_valid else g.buffer(0)
        parts = g.geoms if isinstance(g, MultiPolygon) else [g]
        out.extend(p for p in parts if isinstance(p, Polygon) and not p.is_empty)
    return out


@functools.lru_cache(maxsize=8)
def map_index(dataroot: str, location: str) -> MapIndex:
    """The (cached) index of a location's map in a dataroot."""
    return MapIndex(dataroot, location)

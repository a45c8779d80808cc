"""Ego-centric BEV semantic occupancy, rasterised in JAX from the map raster and agent boxes.

Pure functions of arrays, written for one example and `vmap`ped for batches, so that a compiled
rollout can make the occupancy of every simulated step. Grid convention (see `Occupancy`): cell
(i, j) has its centre at ego-frame `x = extent - (i + 0.5) * resolution` (forward is up) and
`y = extent - (j + 0.5) * resolution` (left is left).

Every cell first takes the map class found under its centre in `MapData.raster`; valid agents
are then painted over it as oriented boxes. Agent geometry is computed in the ego frame, from
positions taken relative to the ego before any rotation, so that float32 keeps millimetre accuracy
at nuScenes map coordinates (thousands of metres).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from drivesim.data.classes import (
    AGENT_TO_OCC,
    CYCLIST,
    OBSTACLE,
    OCC_FREE,
    PEDESTRIAN,
    VEHICLE,
)
from drivesim.data.types import AgentLayout, Log, MapData, Occupancy

# Agent classes from the lowest to the highest paint priority: where boxes overlap, the class
# later here wins (a pedestrian beside a car must not vanish under it).
AGENT_PAINT_ORDER = (OBSTACLE, VEHICLE, CYCLIST, PEDESTRIAN)


@dataclasses.dataclass(frozen=True)
class OccupancyConfig:
    """Size and resolution of the ego-centric grid (hashable: pass it as a static argument)."""

    extent: float = 40.0
    """Half-size of the square grid in metres: it covers [-extent, extent] around the ego origin
    (the rear axle) in both ego-frame axes."""
    resolution: float = 0.5
    """Metres per cell; `2 * extent / resolution` must be a whole number of cells."""

    def __post_init__(self):
        if not (self.extent > 0 and self.resolution > 0):
            raise ValueError(f"OccupancyConfig needs extent > 0 and resolution > 0, got {self}")
        cells = 2 * self.extent / self.resolution
        if abs(cells - round(cells)) > 1e-6:
            raise ValueError(
                f"OccupancyConfig: 2 * extent / resolution = {cells} is not a whole number of cells; "
                "pick an extent that is a multiple of resolution / 2"
            )

    @property
    def size(self) -> int:
        """H = W, cells per side."""
        return round(2 * self.extent / self.resolution)

    def cell_centers(self) -> np.ndarray:
        """(H, W, 2) float32 ego-frame xy of every cell centre."""
        c = self.extent - (np.arange(self.size) + 0.5) * self.resolution
        x, y = np.meshgrid(c, c, indexing="ij")
        return np.stack([x, y], axis=-1).astype(np.float32)


def rasterize(
    map: MapData,
    ego_xy: jnp.ndarray,
    ego_yaw: jnp.ndarray,
    agent_xy: jnp.ndarray,
    agent_yaw: jnp.ndarray,
    agent_size: jnp.ndarray,
    agent_category: jnp.ndarray,
    agent_valid: jnp.ndarray,
    cfg: OccupancyConfig = OccupancyConfig(),
) -> Occupancy:
    """The occupancy grid around one ego pose.

    Args:
      map: the scene's map (one example: `raster` (R, R)).
      ego_xy: (2,) global position of the ego frame origin.
      ego_yaw: () ego heading.
      agent_xy: (A, 2) global box centres.
      agent_yaw: (A,) box headings.
      agent_size: (A, 3) `(length, width, height)` (only length and width are used; (A, 2) works).
      agent_category: (A,) int agent class (`drivesim.data.classes`); out-of-range ids are clipped.
      agent_valid: (A,) bool; invalid slots are not painted.
      cfg: grid size and resolution (static).

    Returns:
      `Occupancy` with `grid` (H, W) uint8: the map class under each cell centre (nearest raster
      cell; `OCC_FREE` outside the raster), overwritten by `AGENT_TO_OCC[category]` where the
      centre lies strictly inside a valid agent's box. Overlaps are resolved by
      `AGENT_PAINT_ORDER` (pedestrian > cyclist > vehicle > obstacle). The ego is not painted.
    """
    with jax.named_scope("rasterize"):
        ego_xy = jnp.asarray(ego_xy, jnp.float32)
        ego_yaw = jnp.asarray(ego_yaw, jnp.float32)
        cos, sin = jnp.cos(ego_yaw), jnp.sin(ego_yaw)
        ego_to_global = jnp.array([[cos, -sin], [sin, cos]])
        centers = jnp.asarray(cfg.cell_centers())  # (H, W, 2) ego frame

        # Map: each centre's offset from the raster origin, in global axes.
        origin = jnp.asarray(map.raster_origin, jnp.float32)
        offset = (ego_xy - origin) + centers @ ego_to_global.T
        map_grid = _sample_raster(map.raster, offset / map.raster_resolution)

        # Agents, in the ego frame.
        rel_xy = (jnp.asarray(agent_xy, jnp.float32) - ego_xy) @ ego_to_global  # rows: R^T (p - ego)
        rel_yaw = jnp.asarray(agent_yaw, jnp.float32) - ego_yaw
        level = _agent_paint_level(
            centers, rel_xy, rel_yaw, jnp.asarray(agent_size, jnp.float32), agent_category, agent_valid
        )
        level_to_occ = jnp.array((OCC_FREE,) + tuple(AGENT_TO_OCC[c] for c in AGENT_PAINT_ORDER), jnp.uint8)
        grid = jnp.where(level > 0, level_to_occ[level], map_grid)
        return Occupancy(
            grid=grid,
            extent=jnp.asarray(cfg.extent, jnp.float32),
            resolution=jnp.asarray(cfg.resolution, jnp.float32),
        )


def log_occupancy(log: Log, cfg: OccupancyConfig = OccupancyConfig()) -> Occupancy:
    """The occupancy grid at every step of one log.

    Returns:
      `Occupancy` with `grid` (T, H, W) and `extent`, `resolution` (T,). Steps where
      `log.ego.valid` is False are rasterised at whatever pose is stored there; mask them with it.
    """
    with jax.named_scope("log_occupancy"):
        agents = log.agents

        def one_step(ego_xy, ego_yaw, agent_xy, agent_yaw, agent_valid):
            return rasterize(
                log.map, ego_xy, ego_yaw, agent_xy, agent_yaw, agents.size, agents.category, agent_valid, cfg
            )

        # Agent arrays are (A, T, ...): time is axis 1.
        return jax.vmap(one_step, in_axes=(0, 0, 1, 1, 1))(log.ego.xy, log.ego.yaw, agents.xy, agents.yaw, agents.valid)


def _sample_raster(raster: jnp.ndarray, cell_xy: jnp.ndarray) -> jnp.ndarray:
    """Raster classes at (..., 2) continuous (column, row) coordinates; `OCC_FREE` outside."""
    size_r, size_c = raster.shape
    col = jnp.floor(cell_xy[..., 0]).astype(jnp.int32)
    row = jnp.floor(cell_xy[..., 1]).astype(jnp.int32)
    inside = (col >= 0) & (col < size_c) & (row >= 0) & (row < size_r)
    flat = jnp.clip(row, 0, size_r - 1) * size_c + jnp.clip(col, 0, size_c - 1)
    values = jnp.take(raster.reshape(-1), flat, mode="clip")
    return jnp.where(inside, values, jnp.uint8(OCC_FREE)).astype(jnp.uint8)


def _agent_paint_level(
    centers: jnp.ndarray,
    rel_xy: jnp.ndarray,
    rel_yaw: jnp.ndarray,
    size: jnp.ndarray,
    category: jnp.ndarray,
    valid: jnp.ndarray,
) -> jnp.ndarray:
    """(H, W) uint8: 0 where no valid box covers the centre, else 1 + the highest
    `AGENT_PAINT_ORDER` index among the boxes that do."""
    # uint8 levels: XLA:CPU does not fuse the max over agents with the (A, H, W) box tests that
    # feed it (XLA:GPU does), so that operand is materialised; one byte per cell-agent keeps it small.
    priority = np.zeros(len(AGENT_TO_OCC), np.uint8)
    priority[list(AGENT_PAINT_ORDER)] = np.arange(1, len(AGENT_PAINT_ORDER) + 1)
    agent_level = jnp.asarray(priority)[jnp.clip(category, 0, len(AGENT_TO_OCC) - 1)]
    agent_level = jnp.where(valid, agent_level, jnp.uint8(0))  # (A,)

    # Box-frame coordinates of every centre, written per axis (two multiply-adds per cell-agent):
    # along = centre . heading - box centre . heading, likewise across.
    cos, sin = jnp.cos(rel_yaw), jnp.sin(rel_yaw)
    along0 = rel_xy[:, 0] * cos + rel_xy[:, 1] * sin
    across0 = rel_xy[:, 1] * cos - rel_xy[:, 0] * sin
    x, y = centers[None, ..., 0], centers[None, ..., 1]

    def per_agent(v):
        return v[:, None, None]

    along = x * per_agent(cos) + y * per_agent(sin) - per_agent(along0)
    across = y * per_agent(cos) - x * per_agent(sin) - per_agent(across0)
    inside = (jnp.abs(along) < per_agent(0.5 * size[:, 0])) & (jnp.abs(across) < per_agent(0.5 * size[:, 1]))
    return jnp.max(jnp.where(inside, per_agent(agent_level), jnp.uint8(0)), axis=0, initial=jnp.uint8(0))


def paint_boxes(boxes: AgentLayout, cfg: OccupancyConfig = OccupancyConfig()) -> jnp.ndarray:
    """Agent boxes painted as the rasteriser paints them, without the map.

    Args:
      boxes: an `AgentLayout` of A agents in the ego frame (or its packed (A, 8) rows).
      cfg: grid size and resolution (static).
    Returns:
      (H, W) uint8: `AGENT_TO_OCC[class]` where a cell centre lies strictly inside a valid box
      (overlaps by `AGENT_PAINT_ORDER`), `OCC_FREE` elsewhere — what `rasterize` paints over the map.
    """
    boxes = AgentLayout.from_packed(boxes)
    level = _agent_paint_level(
        jnp.asarray(cfg.cell_centers()),
        jnp.asarray(boxes.xy, jnp.float32),
        jnp.asarray(boxes.yaw, jnp.float32),
        jnp.asarray(boxes.size[:, :2], jnp.float32),
        jnp.asarray(boxes.category, jnp.int32),
        jnp.asarray(boxes.valid, bool),
    )
    level_to_occ = jnp.array((OCC_FREE,) + tuple(AGENT_TO_OCC[c] for c in AGENT_PAINT_ORDER), jnp.uint8)
    return level_to_occ[level]

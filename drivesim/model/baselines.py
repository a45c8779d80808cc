"""Baselines a world model has to beat: repeat the last frame, and constant-velocity physics.

`constant_velocity_occupancy` is the fair physics baseline for occupancy forecasting: it is told
the ego's future motion (as the world model is, through its action input), keeps the static map,
and moves every agent at its last velocity. Host-side numpy, vectorised over agents and cells.

Grid convention (as `drivesim.data.occupancy`): cell (i, j) of a (G, G) grid at `resolution` m has
its centre at ego-frame `x = extent - (i + 0.5) * resolution` (forward is up) and
`y = extent - (j + 0.5) * resolution` (left is column 0), with `extent = G * resolution / 2`.
An ego motion `(dx, dy, dyaw)` is the later ego's pose in the earlier ego's frame.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from drivesim.data.classes import (
    AGENT_TO_OCC,
    OCC_CROSSING,
    OCC_DRIVABLE,
    OCC_FREE,
    OCC_OBSTACLE,
    OCC_VEHICLE,
)
from drivesim.data.occupancy import AGENT_PAINT_ORDER, OccupancyConfig
from drivesim.data.types import AgentLayout

# Columns of an agent layout row.


def copy_last(history, future_steps: int, *, frame_ndim: int | None = None):
    """The last history frame, repeated over the horizon.

    Args:
      history: (..., T, G, G) occupancy grids or (..., T, H, W, 3) images, numpy or JAX (inside
        `jit` too); the result has the same array type.
      future_steps: F, frames to predict.
      frame_ndim: axes of one frame, 2 for grids and 3 for images; None takes 3 when the last axis
        has size 3 (RGB) and 2 otherwise.

    Returns:
      (..., F, G, G) or (..., F, H, W, 3), the dtype of `history`.
    """
    if frame_ndim is None:
        frame_ndim = 3 if history.shape[-1] == 3 else 2
    time_axis = history.ndim - frame_ndim - 1
    if time_axis < 0 or history.shape[time_axis] == 0:
        raise ValueError(
            f"copy_last needs a history (..., T >= 1, *frame) with {frame_ndim} frame axes, got shape {history.shape}"
        )
    xp = jnp if isinstance(history, jax.Array) else np
    last = xp.take(history, xp.asarray([history.shape[time_axis] - 1]), axis=time_axis)
    return xp.repeat(last, future_steps, axis=time_axis)


def constant_velocity_occupancy(
    last_grid,
    agents_prev,
    agents_last,
    motion_prev,
    future_motions,
    dt: float = 0.5,
    *,
    resolution: float = 1.0,
) -> np.ndarray:
    """Future occupancy grids by constant-velocity physics, given the ego's future motion.

    - Static map: the last grid's map classes (1..4). Cells under agents take the class of the
      nearest visible drivable / walkway / crossing / free cell (a car on a road leaves road behind;
      lane markings are not grown, since they are thin lines), or drivable if the grid has none. The
      map is warped into each future ego frame by nearest-neighbour resampling; cells that come
      from outside the last grid become free.
    - Agents: every agent valid in the last keyframe moves at its last velocity, its displacement
      from the previous keyframe (both positions in the last ego frame) over `dt`; agents not valid
      in the previous keyframe stand still. Headings and sizes are kept. Each is painted as an
      oriented box (length along its yaw, width across) on the cells whose centre lies strictly
      inside, with occupancy class `5 + agent class`; overlaps are resolved as the rasteriser does
      (`drivesim.data.occupancy.AGENT_PAINT_ORDER`: pedestrian > cyclist > vehicle > obstacle).

    Args:
      last_grid: (G, G) int occupancy classes of the last history keyframe.
      agents_prev: (A, 8) agents at the previous keyframe, in its ego frame: x, y, yaw, length,
        width, height, class (0 vehicle, 1 pedestrian, 2 cyclist, 3 obstacle), valid (1/0).
      agents_last: (A, 8) the same slots at the last keyframe, in its ego frame.
      motion_prev: (3,) ego motion (dx, dy, dyaw) from the previous keyframe to the last one.
      future_motions: (F, 3) ego motion from keyframe k-1 to k; row 0 is from the last history
        keyframe to the first future one.
      dt: seconds between keyframes (history and future alike; the velocity is per second, so with
        equal spacing each future keyframe moves an agent by its last displacement).
      resolution: metres per cell.

    Returns:
      (F, G, G) uint8 occupancy classes, each in its own future keyframe's ego frame.
    """
    grid = np.asarray(last_grid)
    prev = AgentLayout.from_packed(
        agents_prev if isinstance(agents_prev, AgentLayout) else np.asarray(agents_prev, np.float64)
    )
    last = AgentLayout.from_packed(
        agents_last if isinstance(agents_last, AgentLayout) else np.asarray(agents_last, np.float64)
    )
    motion_prev = np.asarray(motion_prev, np.float64)
    future_motions = np.asarray(future_motions, np.float64)
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1]:
        raise ValueError(f"constant_velocity_occupancy needs one square grid (G, G), got {grid.shape}")
    if prev.valid.shape != last.valid.shape or last.valid.ndim != 1:
        raise ValueError(
            f"agents_prev and agents_last must both be layouts of the same A agents, got {prev.valid.shape} and "
            f"{last.valid.shape} slots"
        )
    if motion_prev.shape != (3,) or future_motions.ndim != 2 or future_motions.shape[1] != 3:
        raise ValueError(
            f"motion_prev must be (3,) and future_motions (F, 3), got {motion_prev.shape} and {future_motions.shape}"
        )

    centers = OccupancyConfig(extent=grid.shape[0] * resolution / 2, resolution=resolution).cell_centers()
    centers = centers.astype(np.float64)
    poses = compose(future_motions)  # (F, 3) future egos in the last ego frame
    static = _warp_nearest(_static_map(grid), centers, poses, resolution)

    # Velocities in the last ego frame (a frame fixed to the ground, so differences are motion).
    valid = np.asarray(last.valid)
    moving = valid & np.asarray(prev.valid)
    last_xy = np.asarray(last.xy, np.float64)
    prev_xy = _into_later_frame(np.asarray(prev.xy, np.float64), motion_prev)
    velocity = np.where(moving[:, None], (last_xy - prev_xy) / dt, 0.0)  # (A, 2) m/s
    elapsed = dt * np.arange(1, len(poses) + 1)
    xy = last_xy[None] + elapsed[:, None, None] * velocity[None]  # (F, A, 2) last frame

    priority = np.zeros(len(AGENT_TO_OCC), np.uint8)
    priority[list(AGENT_PAINT_ORDER)] = np.arange(1, len(AGENT_PAINT_ORDER) + 1)
    level_to_occ = np.array((OCC_FREE,) + tuple(AGENT_TO_OCC[c] for c in AGENT_PAINT_ORDER), np.uint8)
    agent_class = np.clip(np.asarray(last.category).astype(np.int64), 0, len(AGENT_TO_OCC) - 1)
    agent_level = np.where(valid, priority[agent_class], 0).astype(np.uint8)
    half_size = 0.5 * np.asarray(last.size, np.float64)[:, :2]
    last_yaw = np.asarray(last.yaw, np.float64)

    out = np.empty((len(poses),) + grid.shape, np.uint8)
    for k, pose in enumerate(poses):
        # Agents into future frame k, then every cell centre into each agent's box frame.
        ego_xy = _into_later_frame(xy[k], pose)
        yaw = last_yaw - pose[2]
        cos, sin = np.cos(yaw)[:, None, None], np.sin(yaw)[:, None, None]
        rel_x = centers[None, ..., 0] - ego_xy[:, 0, None, None]
        rel_y = centers[None, ..., 1] - ego_xy[:, 1, None, None]
        along = rel_x * cos + rel_y * sin
        across = rel_y * cos - rel_x * sin
        inside = (np.abs(along) < half_size[:, 0, None, None]) & (np.abs(across) < half_size[:, 1, None, None])
        level = np.max(np.where(inside, agent_level[:, None, None], 0), axis=0, initial=0)
        out[k] = np.where(level > 0, level_to_occ[level], static[k])
    return out


def constant_velocity_layouts(agents_prev, agents_last, motion_prev, future_motions, dt: float = 0.5) -> np.ndarray:
    """The agents' boxes at each future keyframe under constant velocity, as packed rows in that
    keyframe's ego frame: (F, A, 8) float32 (the boxes `constant_velocity_occupancy` paints).

    Args as `constant_velocity_occupancy`: agents_prev, agents_last (A, 8); motion_prev (3,);
    future_motions (F, 3)."""
    prev = AgentLayout.from_packed(np.asarray(agents_prev, np.float64))
    last = AgentLayout.from_packed(np.asarray(agents_last, np.float64))
    poses = compose(future_motions)
    valid = np.asarray(last.valid)
    moving = valid & np.asarray(prev.valid)
    last_xy = np.asarray(last.xy, np.float64)
    prev_xy = _into_later_frame(np.asarray(prev.xy, np.float64), np.asarray(motion_prev, np.float64))
    velocity = np.where(moving[:, None], (last_xy - prev_xy) / dt, 0.0)
    rows = np.repeat(np.asarray(agents_last, np.float64)[None], len(poses), axis=0)
    for k, pose in enumerate(poses):
        rows[k, :, 0:2] = _into_later_frame(last_xy + dt * (k + 1) * velocity, pose)
        rows[k, :, 2] = np.asarray(last.yaw) - pose[2]
    rows[..., 7] = valid
    return rows.astype(np.float32)


def compose(motions) -> np.ndarray:
    """(F, 3) per-keyframe motions (each in the frame of the keyframe it starts from) -> (F, 3)
    float64 pose of keyframe k's ego in the frame of the keyframe before row 0."""
    motions = np.asarray(motions, np.float64)
    poses = np.zeros_like(motions)
    x = y = yaw = 0.0
    for k, (dx, dy, dyaw) in enumerate(motions):
        c, s = np.cos(yaw), np.sin(yaw)
        x, y, yaw = x + c * dx - s * dy, y + s * dx + c * dy, yaw + dyaw
        poses[k] = (x, y, yaw)
    return poses


def _into_later_frame(xy: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """(..., 2) points given in an earlier ego frame, in the frame of an ego that then moved by
    `motion` (3,): `R(-dyaw) (p - (dx, dy))`."""
    c, s = np.cos(motion[2]), np.sin(motion[2])
    rx, ry = xy[..., 0] - motion[0], xy[..., 1] - motion[1]
    return np.stack([c * rx + s * ry, -s * rx + c * ry], axis=-1)


def _static_map(grid: np.ndarray) -> np.ndarray:
    """(G, G) uint8 map classes, with agent cells filled from the nearest drivable / walkway /
    crossing / free cell (drivable where the grid has none)."""
    grid = grid.astype(np.uint8)
    agents = (grid >= OCC_VEHICLE) & (grid <= OCC_OBSTACLE)
    if not agents.any():
        return grid
    source = grid <= OCC_CROSSING
    if not source.any():
        return np.where(agents, np.uint8(OCC_DRIVABLE), grid)
    rows, cols = scipy.ndimage.distance_transform_edt(~source, return_distances=False, return_indices=True)
    return np.where(agents, grid[rows, cols], grid)


def _warp_nearest(image: np.ndarray, centers: np.ndarray, poses: np.ndarray, resolution: float) -> np.ndarray:
    """(F, G, G) `image` seen from egos at each of the (F, 3) poses (given in the image's ego
    frame): the cell under `R(yaw) q + (x, y)` for every cell centre q, free outside."""
    size = image.shape[0]
    extent = size * resolution / 2
    x, y, yaw = (poses[:, i, None, None] for i in range(3))
    c, s = np.cos(yaw), np.sin(yaw)
    qx, qy = centers[..., 0], centers[..., 1]
    row = np.floor((extent - (c * qx - s * qy + x)) / resolution).astype(np.int64)
    col = np.floor((extent - (s * qx + c * qy + y)) / resolution).astype(np.int64)
    inside = (row >= 0) & (row < size) & (col >= 0) & (col < size)
    values = image[np.clip(row, 0, size - 1), np.clip(col, 0, size - 1)]
    return np.where(inside, values, np.uint8(OCC_FREE)).astype(np.uint8)

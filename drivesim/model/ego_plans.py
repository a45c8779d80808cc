"""Ego plans for a world-model rollout: what the ego does over the future keyframes.

A plan is (F, 3) per-keyframe motions (dx, dy, dyaw): keyframe k's ego pose in keyframe k-1's ego
frame, row 0 from the last context keyframe (`drivesim.data.cache`'s `ego_motion` convention).
Plans come from the log, from a command turned into kinematics (bicycle-model-like arcs at the
current speed), or from a file of waypoints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from drivesim.errors import DataError

DT = 0.5
"""Seconds between keyframes."""
COMMANDS = ("keep", "brake", "accelerate", "left", "right", "lane_change_left", "lane_change_right")
BRAKE = 4.0
"""Deceleration of `brake` (m/s^2), as the synthetic world's EgoCommand."""
ACCEL = 2.0
TURN_RADIUS = 12.0
"""Radius (m) of the `left`/`right` arc (an urban intersection turn)."""
LANE_WIDTH = 3.5


def kinematic_plan(command: str, speed: float, steps: int) -> np.ndarray:
    """(steps, 3) motions for a command from the current `speed` (m/s).

    keep: constant speed, straight; brake / accelerate: constant deceleration (to a stop) /
    acceleration, straight; left / right: constant speed (at least 3 m/s) on a TURN_RADIUS arc
    for up to a quarter turn, then straight; lane_change_left / _right: one lane (3.5 m) sideways
    over 3 s along a smooth (cosine) profile.
    """
    if command not in COMMANDS:
        raise DataError(f"unknown ego command {command!r}; use one of {', '.join(COMMANDS)} or a waypoint file")
    if not math.isfinite(speed) or speed < 0:
        raise DataError(f"the ego speed {speed} is not a finite non-negative number")
    t = np.arange(steps + 1) * DT
    if command == "brake":
        stop = speed / BRAKE
        tc = np.minimum(t, stop)
        s = speed * tc - 0.5 * BRAKE * tc**2
    elif command == "accelerate":
        s = speed * t + 0.5 * ACCEL * t**2
    else:
        s = speed * t
    x, y, yaw = s.copy(), np.zeros_like(s), np.zeros_like(s)
    if command in ("left", "right"):
        v = max(speed, 3.0)
        s = v * t
        sign = 1.0 if command == "left" else -1.0
        arc = min(s[-1], TURN_RADIUS * math.pi / 2)
        on_arc = np.minimum(s, arc)
        theta = on_arc / TURN_RADIUS
        x = TURN_RADIUS * np.sin(theta)
        y = sign * TURN_RADIUS * (1 - np.cos(theta))
        yaw = sign * theta
        rest = s - on_arc
        x, y = x + rest * np.cos(yaw), y + rest * np.sin(yaw)
    elif command.startswith("lane_change"):
        sign = 1.0 if command.endswith("left") else -1.0
        frac = np.clip(t / 3.0, 0.0, 1.0)
        y = sign * LANE_WIDTH * 0.5 * (1 - np.cos(math.pi * frac))
        dy_dt = np.where(t < 3.0, sign * LANE_WIDTH * 0.5 * math.pi / 3.0 * np.sin(math.pi * frac), 0.0)
        yaw = np.arctan(dy_dt / speed) if speed > 0.5 else np.zeros_like(y)  # heading along the path
    return motions_from_poses(np.stack([x, y, yaw], axis=1))


def motions_from_poses(poses: np.ndarray) -> np.ndarray:
    """(F + 1, 3) poses (x, y, yaw) in one frame, the first the current ego -> (F, 3) motions."""
    poses = np.asarray(poses, np.float64)
    d = poses[1:, :2] - poses[:-1, :2]
    c, s = np.cos(poses[:-1, 2]), np.sin(poses[:-1, 2])
    dx = c * d[:, 0] + s * d[:, 1]
    dy = -s * d[:, 0] + c * d[:, 1]
    dyaw = (poses[1:, 2] - poses[:-1, 2] + np.pi) % (2 * np.pi) - np.pi
    return np.stack([dx, dy, dyaw], axis=1)


def load_waypoints(path) -> np.ndarray:
    """(F, 3) motions from a waypoint file: the ego's future poses every 0.5 s in the ego frame
    of the last context keyframe (x forward, y left, metres; optional yaw, radians). The current
    pose (0, 0, 0) is implied. Formats: .json ([[x, y(, yaw)], ...] or {"poses": [...]}), .npy,
    or .csv/.txt (one pose per line). Without yaw, the heading follows the path."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"--ego {path}: no such file (give a command: {', '.join(COMMANDS)}, log, or a waypoint file)")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            data = data["poses"] if isinstance(data, dict) else data
            pts = np.asarray(data, np.float64)
        elif path.suffix == ".npy":
            pts = np.load(path).astype(np.float64)
        else:
            pts = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
    except (ValueError, KeyError, OSError) as e:
        raise DataError(f"--ego {path}: cannot read waypoints ({e}); expected rows of x, y[, yaw]") from None
    if pts.ndim != 2 or pts.shape[1] not in (2, 3) or len(pts) < 1:
        raise DataError(
            f"--ego {path}: waypoints have shape {pts.shape}; expected (F, 2) or (F, 3) rows of x, y[, yaw]"
        )
    if not np.all(np.isfinite(pts)):
        row = int(np.argwhere(~np.isfinite(pts))[0, 0])
        raise DataError(f"--ego {path}: waypoint {row} holds NaN or infinity; fix the file")
    xy = np.concatenate([np.zeros((1, 2)), pts[:, :2]])
    if pts.shape[1] == 3:
        yaw = np.concatenate([[0.0], pts[:, 2]])
    else:
        d = np.diff(xy, axis=0)
        yaw = np.zeros(len(xy))
        for i in range(1, len(xy)):
            yaw[i] = math.atan2(d[i - 1, 1], d[i - 1, 0]) if np.hypot(*d[i - 1]) > 0.05 else yaw[i - 1]
    return motions_from_poses(np.concatenate([xy, yaw[:, None]], axis=1))

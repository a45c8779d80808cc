"""Plane curves made of constant-curvature pieces (arcs and straights), as nuScenes maps use.

Every lane of the synthetic world is a list of `Arc` pieces. They offset exactly (a lane of a
curved road is a concentric arc), they sample exactly, and they convert one-to-one into the map
expansion's `arcline_path_3` records, so the devkit's `discretize_lanes` reproduces our geometry.
Lane connectors through intersections are Dubins-like curve-straight-curve paths.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

TWO_PI = 2.0 * math.pi
# A piece with |curvature| below this is a straight line.
STRAIGHT_CURVATURE = 1e-9


def wrap_angle(a):
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(a) + math.pi) % TWO_PI - math.pi


@dataclasses.dataclass(frozen=True)
class Arc:
    """A constant-curvature piece starting at pose (x, y, yaw); curvature > 0 turns left."""

    x: float
    y: float
    yaw: float
    curvature: float
    length: float

    def pose_at(self, s: np.ndarray) -> np.ndarray:
        """(..., 3) poses (x, y, yaw) at arc lengths `s` (...) from the start."""
        s = np.asarray(s, dtype=np.float64)
        k = self.curvature
        if abs(k) < STRAIGHT_CURVATURE:
            x = self.x + s * math.cos(self.yaw)
            y = self.y + s * math.sin(self.yaw)
            yaw = np.full_like(s, self.yaw)
        else:
            yaw = self.yaw + k * s
            x = self.x + (np.sin(yaw) - math.sin(self.yaw)) / k
            y = self.y + (math.cos(self.yaw) - np.cos(yaw)) / k
        return np.stack([x, y, wrap_angle(yaw)], axis=-1)

    @property
    def end(self) -> tuple[float, float, float]:
        p = self.pose_at(np.array(self.length))
        return float(p[0]), float(p[1]), float(p[2])

    def offset(self, d: float) -> Arc:
        """The parallel piece `d` metres to the left (negative: right)."""
        scale = 1.0 - self.curvature * d
        if scale <= 0:
            raise ValueError(f"offset {d} m exceeds the radius {1 / self.curvature:.1f} m of this arc")
        return Arc(
            self.x - d * math.sin(self.yaw),
            self.y + d * math.cos(self.yaw),
            self.yaw,
            self.curvature / scale,
            self.length * scale,
        )

    def reversed(self) -> Arc:
        """The same piece driven the other way."""
        x, y, yaw = self.end
        return Arc(x, y, float(wrap_angle(yaw + math.pi)), -self.curvature, self.length)


def path_length(pieces: list[Arc]) -> float:
    return float(sum(p.length for p in pieces))


def sample_path(pieces: list[Arc], step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample a piecewise path uniformly in arc length.

    Returns:
      poses: (N, 3) x, y, yaw, including both end points; N >= 2.
      s: (N,) arc length of each sample.
      curvature: (N,) curvature of the piece each sample lies on.
    """
    total = path_length(pieces)
    n = max(int(math.ceil(total / step)) + 1, 2)
    s = np.linspace(0.0, total, n)
    poses, curvature = sample_path_at(pieces, s)
    return poses, s, curvature


def sample_path_at(pieces: list[Arc], s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poses (N, 3) and curvatures (N,) of a piecewise path at arc lengths `s` (N,)."""
    s = np.asarray(s, dtype=np.float64)
    starts = np.cumsum([0.0] + [p.length for p in pieces])
    idx = np.clip(np.searchsorted(starts, s, side="right") - 1, 0, len(pieces) - 1)
    poses = np.zeros(s.shape + (3,))
    curv = np.zeros(s.shape)
    for i, piece in enumerate(pieces):
        m = idx == i
        if np.any(m):
            poses[m] = piece.pose_at(np.clip(s[m] - starts[i], 0.0, piece.length))
            curv[m] = piece.curvature
    return poses, curv


def offset_path(pieces: list[Arc], d: float) -> list[Arc]:
    return [p.offset(d) for p in pieces]


def reverse_path(pieces: list[Arc]) -> list[Arc]:
    return [p.reversed() for p in reversed(pieces)]


def trim_path(pieces: list[Arc], s0: float, s1: float) -> list[Arc]:
    """The part of the path between arc lengths s0 < s1."""
    out = []
    start = 0.0
    for p in pieces:
        a, b = max(s0, start), min(s1, start + p.length)
        if b - a > 1e-9:
            x, y, yaw = p.pose_at(np.array(a - start))
            out.append(Arc(float(x), float(y), float(yaw), p.curvature, b - a))
        start += p.length
    return out


def _circle_center(x: float, y: float, yaw: float, r: float, left: bool) -> np.ndarray:
    sgn = 1.0 if left else -1.0
    return np.array([x - sgn * r * math.sin(yaw), y + sgn * r * math.cos(yaw)])


def _ccw(a: float) -> float:
    """Counter-clockwise angle in [0, 2pi), snapping values within 1e-6 of 2pi to 0."""
    a = a % TWO_PI
    return 0.0 if a > TWO_PI - 1e-6 else a


def dubins_csc(p0: tuple[float, float, float], p1: tuple[float, float, float], r: float) -> list[list[Arc]]:
    """All curve-straight-curve paths (LSL, RSR, LSR, RSL) of turning radius r from p0 to p1."""
    x0, y0, yaw0 = p0
    x1, y1, yaw1 = p1
    paths = []
    for first_left, second_left in ((True, True), (False, False), (True, False), (False, True)):
        c0 = _circle_center(x0, y0, yaw0, r, first_left)
        c1 = _circle_center(x1, y1, yaw1, r, second_left)
        v = c1 - c0
        dist = float(np.hypot(*v))
        phi = math.atan2(v[1], v[0])
        if first_left == second_left:
            theta, straight = phi, dist
        else:
            if dist < 2 * r:
                continue
            straight = math.sqrt(dist * dist - 4 * r * r)
            delta = math.asin(2 * r / dist)
            theta = phi + delta if first_left else phi - delta
        a0 = _ccw(theta - yaw0) if first_left else _ccw(yaw0 - theta)
        a1 = _ccw(yaw1 - theta) if second_left else _ccw(theta - yaw1)
        k0 = 1.0 / r if first_left else -1.0 / r
        k1 = 1.0 / r if second_left else -1.0 / r
        first = Arc(x0, y0, yaw0, k0, a0 * r)
        xs, ys, _ = first.end if a0 > 0 else (x0, y0, yaw0)
        mid = Arc(xs, ys, theta, 0.0, straight)
        xm, ym, _ = mid.end
        last = Arc(xm, ym, theta, k1, a1 * r)
        paths.append([p for p in (first, mid, last) if p.length > 1e-6])
    return paths


def connector_path(p0: tuple[float, float, float], p1: tuple[float, float, float]) -> list[Arc]:
    """A smooth lane connector from pose p0 to pose p1 (no loops, the largest radius that fits).

    Tries radii from gentle to tight and keeps the first one whose best curve-straight-curve path
    turns no more than the heading change plus a small S-bend allowance.
    """
    turn = abs(float(wrap_angle(p1[2] - p0[2])))
    chord = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
    for r in (60.0, 40.0, 30.0, 22.0, 17.0, 13.0, 10.0, 8.0, 6.5, 5.0, 4.0, 3.0):
        best = None
        for path in dubins_csc(p0, p1, r):
            turning = sum(abs(p.curvature) * p.length for p in path)
            length = path_length(path)
            if turning <= turn + 1.0 and length <= 1.8 * chord + 1.0:
                if best is None or length < path_length(best):
                    best = path
        if best is not None:
            return best
    raise ValueError(f"no smooth connector from {p0} to {p1}")


def arcline_records(pieces: list[Arc]) -> list[dict]:
    """nuScenes `arcline_path_3` records (one per piece) for a path.

    The devkit only knows Dubins words whose first and last segments curve, so a straight piece is
    written as 'LSL' with zero-length curves, and an arc as 'LSL'/'RSR' with only its first segment.
    """
    records = []
    for p in pieces:
        end = p.end
        if abs(p.curvature) < STRAIGHT_CURVATURE:
            shape, radius, lengths = "LSL", 1e4, [0.0, p.length, 0.0]
        else:
            shape = "LSL" if p.curvature > 0 else "RSR"
            radius, lengths = 1.0 / abs(p.curvature), [p.length, 0.0, 0.0]
        records.append(
            {
                "start_pose": [p.x, p.y, p.yaw],
                "end_pose": [end[0], end[1], end[2]],
                "shape": shape,
                "radius": radius,
                "segment_length": lengths,
            }
        )
    return records

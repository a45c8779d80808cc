"""Paths along the lane graph: the ego's route and the reactive agents' lanes, in JAX.

A path starts on the lane segment nearest a pose (heading-aware) and follows successors; where the
lane graph branches it takes the successor closest to a guide (the logged future positions of the
ego or agent), so the route goes where the log went. Fixed shapes: `n_segments` lane segments of
P points each, with a validity mask; the last valid point is followed by a straight extension.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from drivesim.data.types import MapData, Route

EXTENSION = 50.0
"""Metres a path continues straight past its last lane point."""


def _tangents(lane_xy):
    d = jnp.diff(lane_xy, axis=-2)
    d = jnp.concatenate([d, d[..., -1:, :]], axis=-2)
    return jnp.arctan2(d[..., 1], d[..., 0])


@jax.named_scope("nearest_lane")
def nearest_lane(map: MapData, xy, yaw):
    """(segment index, point index, distance) of the lane point nearest a pose going its way."""
    dist = jnp.linalg.norm(map.lane_xy - xy, axis=-1)  # (L, P)
    heading = jnp.cos(_tangents(map.lane_xy) - yaw)
    cost = dist + 4.0 * (1.0 - heading)
    cost = jnp.where(map.lane_valid[:, None], cost, jnp.inf)
    flat = jnp.argmin(cost)
    l, p = flat // cost.shape[1], flat % cost.shape[1]
    return l, p, dist[l, p]


@jax.named_scope("lane_path")
def lane_path(map: MapData, xy, yaw, guide_xy, guide_valid, n_segments: int) -> tuple[Route, jnp.ndarray]:
    """A path from pose (xy (2,), yaw ()) along the lanes, steered by guide points (G, 2) / (G,).

    Returns the path (n_segments * P points) and the distance from the pose to the path's lane.
    """
    l0, _p0, dist = nearest_lane(map, xy, yaw)
    P = map.lane_xy.shape[1]

    def choose(prev, _):
        succ = map.lane_successors[prev]  # (S,)
        ok = (succ >= 0) & (prev >= 0)
        cand = map.lane_xy[jnp.maximum(succ, 0)]  # (S, P, 2)
        d = jnp.linalg.norm(cand[:, :, None, :] - guide_xy[None, None], axis=-1)  # (S, P, G)
        d = jnp.where(guide_valid[None, None], d, jnp.inf).min(axis=(1, 2))
        # no guide nearby (it ended, or the log stopped): take the straightest successor
        straight = jnp.abs(
            (_tangents(cand)[:, -1] - _tangents(map.lane_xy[jnp.maximum(prev, 0)])[-1] + jnp.pi) % (2 * jnp.pi) - jnp.pi
        )
        score = jnp.where(d < 8.0, d, 100.0 + straight)
        nxt = succ[jnp.argmin(jnp.where(ok, score, jnp.inf))]
        nxt = jnp.where(ok.any(), nxt, -1)
        return nxt, nxt

    _, rest = jax.lax.scan(choose, l0, None, length=n_segments - 1)
    segs = jnp.concatenate([l0[None], rest])
    seg_ok = jnp.cumprod(segs >= 0).astype(bool)
    pts = map.lane_xy[jnp.maximum(segs, 0)].reshape(-1, 2)
    valid = jnp.repeat(seg_ok, P)
    return close_path(pts, valid), dist


def close_path(pts, valid) -> Route:
    """A Route from points (N, 2) and a validity prefix (N,): invalid points continue straight."""
    n_valid = jnp.maximum(valid.sum(), 1)
    last = pts[n_valid - 1]
    prev = pts[jnp.maximum(n_valid - 2, 0)]
    direction = last - prev
    norm = jnp.linalg.norm(direction)
    direction = jnp.where(norm > 1e-6, direction / jnp.maximum(norm, 1e-6), jnp.array([1.0, 0.0]))
    k = jnp.arange(pts.shape[0]) - (n_valid - 1)
    n_extra = jnp.maximum(pts.shape[0] - n_valid, 1)
    ext = last + direction * (k * EXTENSION / n_extra)[:, None]
    xy = jnp.where(valid[:, None], pts, ext)
    seg = jnp.linalg.norm(jnp.diff(xy, axis=0), axis=-1)
    s = jnp.concatenate([jnp.zeros(1), jnp.cumsum(seg)])
    return Route(xy=xy, valid=valid, s=s)


@jax.named_scope("project")
def project(path: Route, point):
    """Arc length along the path (continuous) and signed lateral offset (left +) of a point (2,)."""
    # x and y apart, relative to the point: XLA:CPU vectorises (N,) arrays far better than
    # reductions over a trailing axis of 2, and float32 stays accurate at map coordinates
    px, py = path.xy[:, 0] - point[0], path.xy[:, 1] - point[1]
    ax, ay = px[:-1], py[:-1]
    abx, aby = px[1:] - ax, py[1:] - ay
    length2 = jnp.maximum(abx * abx + aby * aby, 1e-9)
    f = jnp.clip(-(ax * abx + ay * aby) / length2, 0.0, 1.0)
    fx, fy = ax + f * abx, ay + f * aby
    d2 = fx * fx + fy * fy
    n = d2.shape[0]
    i = jnp.minimum(jnp.min(jnp.where(d2 == jnp.min(d2), jnp.arange(n), n)), n - 1)
    s = path.s[i] + f[i] * jnp.sqrt(length2[i])
    cross = abx[i] * (-ay[i]) - aby[i] * (-ax[i])
    lateral = jnp.sign(cross) * jnp.sqrt(d2[i])
    return s, lateral


def _argmin_last(v):
    """argmin over the last axis as two plain reductions (XLA:CPU vectorises these far better
    than the variadic reduce of `jnp.argmin`)."""
    n = v.shape[-1]
    idx = jnp.where(v == jnp.min(v, axis=-1, keepdims=True), jnp.arange(n), n)
    return jnp.minimum(jnp.min(idx, axis=-1), n - 1)


@jax.named_scope("project_many")
def project_many(path: Route, points):
    """`project` for many points (M, 2) at once, cheaper: the nearest path point, then the two
    segments around it. Exact unless the path doubles back within two points.

    Returns arc lengths (M,) and signed lateral offsets (M,).
    """
    n = path.xy.shape[0]
    dx = points[:, None, 0] - path.xy[None, :, 0]  # (M, N)
    dy = points[:, None, 1] - path.xy[None, :, 1]
    d2 = dx * dx + dy * dy
    k = _argmin_last(d2)  # (M,)
    best_s = jnp.zeros(points.shape[0])
    best_d2 = jnp.full(points.shape[0], jnp.inf)
    best_lat = jnp.zeros(points.shape[0])
    for off in (-1, 0):  # the segments before and after the nearest point
        i = jnp.clip(k + off, 0, n - 2)
        a, b = path.xy[i], path.xy[i + 1]
        abx, aby = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
        apx, apy = points[:, 0] - a[:, 0], points[:, 1] - a[:, 1]
        length2 = jnp.maximum(abx * abx + aby * aby, 1e-9)
        f = jnp.clip((apx * abx + apy * aby) / length2, 0.0, 1.0)
        ex, ey = apx - f * abx, apy - f * aby
        e2 = ex * ex + ey * ey
        s = path.s[i] + f * jnp.sqrt(length2)
        lat = jnp.sign(abx * apy - aby * apx) * jnp.sqrt(e2)
        better = e2 < best_d2
        best_s = jnp.where(better, s, best_s)
        best_lat = jnp.where(better, lat, best_lat)
        best_d2 = jnp.where(better, e2, best_d2)
    return best_s, best_lat


@jax.named_scope("point_at")
def point_at(path: Route, s):
    """Position (2,) and heading () at arc length s along the path (clipped to its ends)."""
    n = path.xy.shape[0]
    i = jnp.clip(jnp.searchsorted(path.s, s, side="right") - 1, 0, n - 2)
    # skip zero-length segments (repeated points) for the heading
    seg = path.xy[i + 1] - path.xy[i]
    length = path.s[i + 1] - path.s[i]
    f = jnp.clip((s - path.s[i]) / jnp.maximum(length, 1e-6), 0.0, 1.0)
    xy = path.xy[i] + seg * f
    heading_vec = jnp.where(length > 1e-6, seg, path.xy[jnp.minimum(i + 2, n - 1)] - path.xy[jnp.maximum(i - 1, 0)])
    return xy, jnp.arctan2(heading_vec[1], heading_vec[0])

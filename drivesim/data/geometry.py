"""Oriented boxes in the plane: corners and overlap by the separating-axis test.

Single-example functions; batch them with `vmap` (`overlap_one_to_many` is the one the scores
use). Two rectangles are disjoint iff their projections are disjoint on one of the four edge
normals (two per box), so four interval tests decide an overlap exactly.

Callers at nuScenes map coordinates (thousands of metres) should pass positions that are already
relative to a nearby point, or let `boxes_overlap` take the difference first (it does): float32
then keeps sub-millimetre accuracy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.named_scope("box_corners")
def box_corners(center: jnp.ndarray, yaw: jnp.ndarray, size: jnp.ndarray) -> jnp.ndarray:
    """The four corners of one oriented box.

    Args:
      center: (2,) box centre.
      yaw: () heading of the box's length axis.
      size: (2,) or (3,) `(length, width[, height])`; only length and width are used.

    Returns:
      (4, 2) corners, counter-clockwise from front-left: front-left, rear-left, rear-right,
      front-right.
    """
    center = jnp.asarray(center, jnp.float32)
    half_l, half_w = 0.5 * size[0], 0.5 * size[1]
    local = jnp.stack(
        [
            jnp.stack([half_l, half_w]),
            jnp.stack([-half_l, half_w]),
            jnp.stack([-half_l, -half_w]),
            jnp.stack([half_l, -half_w]),
        ]
    ).astype(jnp.float32)
    cos, sin = jnp.cos(yaw), jnp.sin(yaw)
    rot = jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])
    return center + local @ rot.T


def overlap_in_frame(
    offset: jnp.ndarray, rel_yaw: jnp.ndarray, half_a: jnp.ndarray, half_b: jnp.ndarray
) -> jnp.ndarray:
    """Whether box B overlaps box A, with B given in A's frame (the separating-axis test).

    Args:
      offset: (2,) centre of B minus centre of A, in A's frame (x along A's length).
      rel_yaw: () heading of B minus heading of A.
      half_a: (2,) half length and half width of A.
      half_b: (2,) half length and half width of B.

    Returns:
      () bool: True iff the interiors overlap (boxes that only touch do not).
    """
    c, s = jnp.abs(jnp.cos(rel_yaw)), jnp.abs(jnp.sin(rel_yaw))
    dx, dy = offset[..., 0], offset[..., 1]
    # On A's axes: B's projected half-extent is hl |cos| + hw |sin| (length axis), hl |sin| +
    # hw |cos| (width axis); symmetrically for A on B's axes, with the offset in B's frame.
    sep_a_x = jnp.abs(dx) >= half_a[0] + half_b[0] * c + half_b[1] * s
    sep_a_y = jnp.abs(dy) >= half_a[1] + half_b[0] * s + half_b[1] * c
    cos_r, sin_r = jnp.cos(rel_yaw), jnp.sin(rel_yaw)
    bx = dx * cos_r + dy * sin_r
    by = dy * cos_r - dx * sin_r
    sep_b_x = jnp.abs(bx) >= half_b[0] + half_a[0] * c + half_a[1] * s
    sep_b_y = jnp.abs(by) >= half_b[1] + half_a[0] * s + half_a[1] * c
    return ~(sep_a_x | sep_a_y | sep_b_x | sep_b_y)


@jax.named_scope("boxes_overlap")
def boxes_overlap(
    center_a: jnp.ndarray,
    yaw_a: jnp.ndarray,
    size_a: jnp.ndarray,
    center_b: jnp.ndarray,
    yaw_b: jnp.ndarray,
    size_b: jnp.ndarray,
) -> jnp.ndarray:
    """Whether two oriented boxes overlap (their interiors intersect).

    Args:
      center_a: (2,) centre of box A, global frame.
      yaw_a: () heading of A.
      size_a: (2,) or (3,) `(length, width[, height])` of A.
      center_b: (2,) centre of box B.
      yaw_b: () heading of B.
      size_b: (2,) or (3,) size of B.

    Returns:
      () bool.
    """
    d = jnp.asarray(center_b, jnp.float32) - jnp.asarray(center_a, jnp.float32)
    cos, sin = jnp.cos(yaw_a), jnp.sin(yaw_a)
    offset = jnp.stack([d[0] * cos + d[1] * sin, d[1] * cos - d[0] * sin])
    half_a = 0.5 * jnp.asarray(size_a, jnp.float32)[:2]
    half_b = 0.5 * jnp.asarray(size_b, jnp.float32)[:2]
    return overlap_in_frame(offset, yaw_b - yaw_a, half_a, half_b)


overlap_one_to_many = jax.vmap(boxes_overlap, in_axes=(None, None, None, 0, 0, 0))
"""`boxes_overlap` of one box A against N boxes B: centre_b (N, 2), yaw_b (N,), size_b (N, 2|3)
-> (N,) bool."""

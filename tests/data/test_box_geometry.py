"""Oriented-box corners and separating-axis overlap against shapely."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from shapely.geometry import Polygon

from drivesim.data.geometry import box_corners, boxes_overlap, overlap_one_to_many

overlap_jit = jax.jit(boxes_overlap)


def _shapely_box(center, yaw, size) -> Polygon:
    """The box built in float64 from an explicit rotation, independently of `box_corners`."""
    l, w = size[0] / 2, size[1] / 2
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[l, w], [-l, w], [-l, -w], [l, -w]])
    return Polygon(np.asarray(center, float) + local @ np.array([[c, s], [-s, c]]))


def test_box_corners_match_an_independent_rotation():
    center, yaw, size = np.array([1203.5, -402.25]), 0.7, np.array([4.5, 1.9, 1.6])
    corners = np.asarray(box_corners(jnp.asarray(center, jnp.float32), jnp.float32(yaw), jnp.asarray(size)))
    expected = np.asarray(_shapely_box(center, yaw, size).exterior.coords)[:4]
    np.testing.assert_allclose(corners, expected, atol=1e-3)
    # Front-left first: ahead of and left of the centre in the box frame.
    heading, left = np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])
    assert (corners[0] - center) @ heading > 0 and (corners[0] - center) @ left > 0
    axis_aligned = np.asarray(box_corners(jnp.zeros(2), jnp.float32(0.0), jnp.array([4.0, 2.0])))
    np.testing.assert_allclose(axis_aligned, [[2, 1], [-2, 1], [-2, -1], [2, -1]], atol=1e-6)


def test_sat_overlap_agrees_with_shapely_on_random_pairs():
    rng = np.random.default_rng(0)
    n = 2000
    ca = rng.uniform(-3, 3, (n, 2))
    cb = rng.uniform(-3, 3, (n, 2))
    ya, yb = rng.uniform(-np.pi, np.pi, n), rng.uniform(-np.pi, np.pi, n)
    sa, sb = rng.uniform(0.3, 5.0, (n, 2)), rng.uniform(0.3, 5.0, (n, 2))
    got = np.asarray(
        jax.jit(jax.vmap(boxes_overlap))(
            *(jnp.asarray(x, jnp.float32) for x in (ca, ya, sa, cb, yb, sb)),
        )
    )
    expected, unsure = np.zeros(n, bool), np.zeros(n, bool)
    for i in range(n):
        a, b = _shapely_box(ca[i], ya[i], sa[i]), _shapely_box(cb[i], yb[i], sb[i])
        area = a.intersection(b).area
        expected[i] = area > 0
        unsure[i] = area < 1e-4 and a.distance(b) < 1e-3  # touching: float32 may go either way
    # Both outcomes are well represented, so a wrong test on any axis would show.
    assert 0.2 < expected.mean() < 0.8 and unsure.sum() < 5
    np.testing.assert_array_equal(got[~unsure], expected[~unsure])


def test_sat_needs_all_four_axes():
    # A diamond off the corner of a square: separated only along the diamond's own axes (its
    # centre is 2.6 m out along the diagonal, beyond 1 + sqrt(2)), while on the square's axes the
    # projections overlap (|1.84| < 1 + sqrt(2)).
    size = jnp.array([2.0, 2.0])
    center_b = np.full(2, 2.6 / np.sqrt(2))
    assert _shapely_box([0, 0], 0.0, [2, 2]).distance(_shapely_box(center_b, np.pi / 4, [2, 2])) > 0.1
    assert not bool(
        overlap_jit(
            jnp.zeros(2), jnp.float32(0.0), size, jnp.asarray(center_b, jnp.float32), jnp.float32(np.pi / 4), size
        )
    )
    closer = np.full(2, 2.3 / np.sqrt(2))
    assert bool(
        overlap_jit(
            jnp.zeros(2), jnp.float32(0.0), size, jnp.asarray(closer, jnp.float32), jnp.float32(np.pi / 4), size
        )
    )


def test_touching_is_not_overlapping_and_far_coordinates_are_exact():
    size = jnp.array([4.0, 2.0])
    yaw = jnp.float32(0.3)
    heading = np.array([np.cos(0.3), np.sin(0.3)])
    for origin in (np.zeros(2), np.array([2300.0, 1400.0])):  # nuScenes map coordinates too
        a = jnp.asarray(origin, jnp.float32)
        # Exactly touching (representable in float32): no overlap.
        zero = jnp.float32(0.0)
        assert not bool(overlap_jit(a, zero, size, a + jnp.array([4.0, 0.0]), zero, size))
        assert not bool(overlap_jit(a, zero, size, a + jnp.array([0.0, 2.0]), zero, size))
        # A centimetre apart or into each other, rotated, far from the origin: still exact.
        apart = jnp.asarray(origin + 4.01 * heading, jnp.float32)
        into = jnp.asarray(origin + 3.99 * heading, jnp.float32)
        assert not bool(overlap_jit(a, yaw, size, apart, yaw, size))
        assert bool(overlap_jit(a, yaw, size, into, yaw, size))


@pytest.mark.parametrize("n", [1, 5])
def test_one_to_many_matches_single_calls(n):
    rng = np.random.default_rng(n)
    cb, yb, sb = rng.uniform(-4, 4, (n, 2)), rng.uniform(-3, 3, n), rng.uniform(1, 4, (n, 3))
    args = (jnp.zeros(2), jnp.float32(0.2), jnp.array([4.0, 2.0]))
    many = np.asarray(overlap_one_to_many(*args, jnp.asarray(cb), jnp.asarray(yb), jnp.asarray(sb)))
    assert many.shape == (n,)
    single = [bool(boxes_overlap(*args, jnp.asarray(cb[i]), jnp.asarray(yb[i]), jnp.asarray(sb[i]))) for i in range(n)]
    np.testing.assert_array_equal(many, single)

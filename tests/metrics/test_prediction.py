"""Prediction scores: IoU / mIoU on hand-made grids, PSNR / SSIM against a plain numpy SSIM and
closed forms, and the ego motion implied by grids rasterised from known road geometry."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drivesim.data.classes import (
    OCC_CROSSING,
    OCC_DRIVABLE,
    OCC_FREE,
    OCC_LANE_MARKING,
    OCC_PEDESTRIAN,
    OCC_VEHICLE,
    OCC_WALKWAY,
)
from drivesim.metrics.prediction import PSNR_CAP_DB, SSIM_C1, SSIM_C2, IouAccumulator, implied_motion, psnr, ssim

# ---- IoU

F, D, W, V, P = OCC_FREE, OCC_DRIVABLE, OCC_WALKWAY, OCC_VEHICLE, OCC_PEDESTRIAN


def test_iou_and_miou_on_a_hand_made_pair():
    truth = np.array(
        [
            [F, F, W, W],
            [D, D, D, W],
            [D, V, V, W],
            [D, V, V, P],
        ]
    )
    pred = np.array(
        [
            [F, W, W, W],
            [D, D, D, D],
            [D, D, V, V],
            [D, V, V, W],
        ]
    )
    acc = IouAccumulator()
    acc.update(pred, truth)
    r = acc.result()
    # drivable: truth {(1,0),(1,1),(1,2),(2,0),(3,0)}, pred adds (1,3),(2,1): I 5, U 7.
    # walkway: truth {(0,2),(0,3),(1,3),(2,3)}, pred {(0,1),(0,2),(0,3),(3,3)}: I 2, U 6.
    # vehicle: truth {(2,1),(2,2),(3,1),(3,2)}, pred {(2,2),(2,3),(3,1),(3,2)}: I 3, U 5.
    # pedestrian: truth {(3,3)}, pred none: I 0, U 1. Classes 3, 4, 7, 8 absent: skipped.
    expected = {"drivable": 5 / 7, "walkway": 2 / 6, "vehicle": 3 / 5, "pedestrian": 0.0}
    for name, value in expected.items():
        assert r["per_class"][name] == pytest.approx(value)
    for name in ("crossing", "lane_marking", "cyclist", "obstacle"):
        assert math.isnan(r["per_class"][name])
    assert r["miou"] == pytest.approx(np.mean(list(expected.values())))
    # agents: truth 5 cells, pred 4 cells (vehicles), shared 3 -> 3 / 6.
    assert r["iou"] == pytest.approx(3 / 6)
    # occupied (any class but free): truth 14 cells, pred 15 cells, shared 14 -> 14 / 15.
    assert r["occupied_iou"] == pytest.approx(14 / 15)


def test_iou_accumulates_intersections_and_unions_not_per_sample_scores():
    # Two pairs: a perfect small vehicle, then a big vehicle half found.
    truth_a = np.full((4, 4), D)
    truth_a[0, 0] = V
    pred_a = truth_a.copy()
    truth_b = np.full((4, 4), D)
    truth_b[:2, :] = V
    pred_b = np.full((4, 4), D)
    pred_b[0, :] = V
    acc = IouAccumulator()
    acc.update(pred_a, truth_a)
    acc.update(pred_b, truth_b)
    r = acc.result()
    # Dataset level: I = 1 + 4, U = 1 + 8 (per-sample mean would be (1 + 0.5) / 2 = 0.75).
    assert r["iou"] == pytest.approx(5 / 9)
    assert r["per_class"]["vehicle"] == pytest.approx(5 / 9)
    # Drivable: truth 15 + 8, pred 15 + 12, shared 15 + 8 -> 23 / 27.
    assert r["per_class"]["drivable"] == pytest.approx(23 / 27)
    assert r["miou"] == pytest.approx((5 / 9 + 23 / 27) / 2)
    # One stacked update is the same as two updates; batch dims of any depth work.
    stacked = IouAccumulator()
    stacked.update(np.stack([pred_a, pred_b])[None], jnp.asarray(np.stack([truth_a, truth_b])[None]))
    np.testing.assert_array_equal(stacked.confusion, acc.confusion)
    assert stacked.result()["miou"] == r["miou"]


def test_iou_class_absent_in_truth_but_predicted_counts_as_zero():
    truth = np.full((3, 3), D)
    pred = truth.copy()
    pred[1, 1] = OCC_CROSSING  # a hallucinated crossing: IoU 0, and it drags the mean down
    acc = IouAccumulator()
    acc.update(pred, truth)
    r = acc.result()
    assert r["per_class"]["crossing"] == 0.0
    assert r["per_class"]["drivable"] == pytest.approx(8 / 9)
    assert r["miou"] == pytest.approx((8 / 9 + 0) / 2)
    assert math.isnan(r["iou"])  # nothing occupied anywhere
    assert math.isnan(IouAccumulator().result()["miou"])


def test_iou_rejects_bad_inputs():
    acc = IouAccumulator()
    with pytest.raises(ValueError, match="one shape"):
        acc.update(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="outside 0..8"):
        acc.update(np.full((4, 4), 9), np.zeros((4, 4), int))


# ---- PSNR / SSIM


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of one (H, W, C) pair the slow way: every 7x7 window position, every channel, float64."""
    r = np.arange(7) - 3.0
    g1 = np.exp(-(r**2) / (2 * 1.5**2))
    window = np.outer(g1, g1)
    window /= window.sum()
    x, y = x.astype(np.float64), y.astype(np.float64)
    values = []
    for ch in range(x.shape[-1]):
        px = np.lib.stride_tricks.sliding_window_view(x[..., ch], (7, 7))  # (H-6, W-6, 7, 7)
        py = np.lib.stride_tricks.sliding_window_view(y[..., ch], (7, 7))
        mx = (px * window).sum((-2, -1))
        my = (py * window).sum((-2, -1))
        vx = (((px - mx[..., None, None]) ** 2) * window).sum((-2, -1))
        vy = (((py - my[..., None, None]) ** 2) * window).sum((-2, -1))
        cov = ((px - mx[..., None, None]) * (py - my[..., None, None]) * window).sum((-2, -1))
        s = ((2 * mx * my + SSIM_C1) * (2 * cov + SSIM_C2)) / ((mx**2 + my**2 + SSIM_C1) * (vx + vy + SSIM_C2))
        values.append(s.mean())
    return float(np.mean(values))


def _images(seed: int, shape=(32, 64, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # A smooth scene with edges, and a distorted copy: shifted, noised, darkened.
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = np.stack([128 + 80 * np.sin(xx / 5.0 + c) * np.cos(yy / 7.0) for c in range(shape[2])], -1)
    base[:, shape[1] // 2 :] -= 40
    x = np.clip(base + rng.normal(0, 5, shape), 0, 255).astype(np.uint8)
    y = np.clip(np.roll(base, 1, axis=1) * 0.9 + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)
    return x, y


def test_ssim_matches_a_plain_numpy_ssim():
    for seed in range(3):
        x, y = _images(seed)
        assert float(ssim(x, y)) == pytest.approx(_ssim_reference(x, y), abs=2e-5)
    x, y = np.random.default_rng(9).integers(0, 256, (2, 32, 64, 3), dtype=np.uint8)
    assert float(ssim(x, y)) == pytest.approx(_ssim_reference(x, y), abs=2e-5)


def test_identical_images_score_one_and_the_psnr_cap():
    x, _ = _images(0)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(psnr(x, x)) == PSNR_CAP_DB
    # One grey level off in one value: the largest finite PSNR, below the cap.
    y = x.copy()
    y[0, 0, 0] ^= 1
    assert float(psnr(x, y)) == pytest.approx(10 * math.log10(255**2 * x.size), rel=1e-5)
    assert float(psnr(x, y)) < PSNR_CAP_DB


def test_constant_offset_has_closed_forms():
    a, b = 100.0, 120.0
    x = np.full((32, 64, 3), a, np.uint8)
    y = np.full((32, 64, 3), b, np.uint8)
    # No variance anywhere: SSIM is the luminance term alone.
    assert float(ssim(x, y)) == pytest.approx((2 * a * b + SSIM_C1) / (a**2 + b**2 + SSIM_C1), rel=1e-5)
    assert float(psnr(x, y)) == pytest.approx(20 * math.log10(255 / 20), rel=1e-5)
    # The same offset on a textured image: PSNR unchanged, SSIM still below 1.
    tex, _ = _images(1)
    tex = np.clip(tex, 0, 200)
    shifted = tex + np.uint8(20)
    assert float(psnr(tex, shifted)) == pytest.approx(20 * math.log10(255 / 20), rel=1e-5)
    assert 0.9 < float(ssim(tex, shifted)) < 1.0


def test_noise_lowers_both_scores_monotonically():
    x = np.full((32, 64, 3), 128, np.uint8)
    x[:, 32:] = 60
    checker = np.where((np.indices((32, 64)).sum(0) % 2)[..., None] == 0, 1, -1)
    scores = []
    for amplitude in (2, 5, 10, 30):
        y = (x.astype(int) + amplitude * checker).astype(np.uint8)
        p = float(psnr(x, y))
        assert p == pytest.approx(10 * math.log10(255**2 / amplitude**2), rel=1e-5)
        scores.append((p, float(ssim(x, y))))
        assert scores[-1][1] == pytest.approx(_ssim_reference(x, y), abs=2e-5)
    assert all(a[0] > b[0] and a[1] > b[1] for a, b in zip(scores, scores[1:], strict=False))


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_image_scores_shapes_jit_and_vmap(batch):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, batch + (32, 64, 3), dtype=np.uint8)
    y = rng.integers(0, 256, batch + (32, 64, 3), dtype=np.uint8)
    for fn in (psnr, ssim):
        eager = fn(x, y)
        assert eager.shape == batch and eager.dtype == jnp.float32
        np.testing.assert_allclose(jax.jit(fn)(x, y), eager, rtol=1e-5)
        if batch:
            per_image = jax.vmap(jax.vmap(fn))(x, y)
            np.testing.assert_allclose(per_image, eager, rtol=1e-5)
            assert float(eager[1, 2]) == pytest.approx(float(fn(x[1, 2], y[1, 2])), rel=1e-5)


# ---- implied motion: grids rasterised from road geometry


def _ego_centers(size=80, resolution=1.0):
    c = size * resolution / 2 - (np.arange(size) + 0.5) * resolution
    return np.meshgrid(c, c, indexing="ij")  # x down the rows, y across the columns


def _t_junction(x, y):
    """A main road along x (10 m carriageway, 3 m walkways) with a side road leaving to the left
    at x = 25, a zebra crossing and a dashed centre line."""
    cls = np.zeros(x.shape, np.uint8)
    side = np.abs(x - 25)
    cls[(np.abs(y) < 8) | ((side < 8) & (y > 0))] = OCC_WALKWAY
    cls[(np.abs(y) < 5) | ((side < 5) & (y > 0))] = OCC_DRIVABLE
    zebra = (np.abs(y) < 5) & (x >= 10) & (x < 14)
    cls[zebra] = OCC_CROSSING
    cls[(np.abs(y) < 0.4) & (np.mod(x, 6) < 3) & ~zebra & ~(side < 5)] = OCC_LANE_MARKING
    return cls


def _curved_road(x, y, radius=40.0):
    """A straight road along x that bends left (radius 40 m) at x = 0, with a side street leaving
    the outside of the bend 20 m into it."""
    cls = np.zeros(x.shape, np.uint8)
    off_centre = np.where(x < 0, np.abs(y), np.abs(np.hypot(x, y - radius) - radius))
    cls[off_centre < 8] = OCC_WALKWAY
    cls[off_centre < 5] = OCC_DRIVABLE
    cls[off_centre < 0.4] = OCC_LANE_MARKING
    ux, uy = math.sin(0.5), -math.cos(0.5)  # outward normal of the bend at 0.5 rad
    along, across = x * ux + (y - radius) * uy, -x * uy + (y - radius) * ux
    street = (along > radius) & (np.abs(across) < 8)
    cls[street & (cls == OCC_FREE)] = OCC_WALKWAY
    cls[street & (np.abs(across) < 4) & (along > radius + 4)] = OCC_DRIVABLE
    return cls


def _rasterise(geometry, pose):
    """The ego-centric grid of an ego at world pose (x, y, yaw): each cell centre, in world
    coordinates, classified by the geometry."""
    qx, qy = _ego_centers()
    c, s = math.cos(pose[2]), math.sin(pose[2])
    return geometry(pose[0] + c * qx - s * qy, pose[1] + s * qx + c * qy)


def _moved(pose, motion):
    c, s = math.cos(pose[2]), math.sin(pose[2])
    return (pose[0] + c * motion[0] - s * motion[1], pose[1] + s * motion[0] + c * motion[1], pose[2] + motion[2])


GEOMETRIES = {"t_junction": (_t_junction, (-5.0, 0.0, 0.0)), "curved_road": (_curved_road, (-10.0, 0.0, 0.0))}
MOTIONS = [
    (15.0, 0.0, 0.0),
    (10.0, 3.0, 0.3),
    (20.0, -3.0, -0.3),
    (12.3, 2.7, 0.27),
    (17.6, -1.4, 0.12),
    (6.4, -2.2, -0.21),
    (18.9, 1.1, -0.08),
]


def _error(estimate, motion):
    return math.hypot(estimate[0] - motion[0], estimate[1] - motion[1]), abs(estimate[2] - motion[2])


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_implied_motion_recovers_known_ego_motions(geometry):
    fn, start = GEOMETRIES[geometry]
    before = _rasterise(fn, start)
    errors = []
    for motion in MOTIONS:
        estimate = implied_motion(before, _rasterise(fn, _moved(start, motion)))
        assert estimate.shape == (3,)
        position_error, yaw_error = _error(estimate, motion)
        assert position_error < 0.5 and yaw_error < 0.05, (motion, estimate)
        errors.append((position_error, yaw_error))
    # Measured on these motions: worst 0.1 m / 0.002 rad, mean 0.05 m / 0.001 rad.
    mean_position, mean_yaw = np.mean(errors, axis=0)
    assert mean_position < 0.15 and mean_yaw < 0.005


def test_implied_motion_on_random_motions_with_agents_on_the_road():
    rng = np.random.default_rng(0)
    fn, start = GEOMETRIES["t_junction"]
    for _ in range(6):
        motion = rng.uniform([5, -3, -0.3], [20, 3, 0.3])
        grids = []
        for pose in (start, _moved(start, motion)):
            grid = _rasterise(fn, pose)
            for i, j in rng.integers(0, 76, (6, 2)):  # parked cars and pedestrians hide the map
                grid[i : i + 4, j : j + 2] = rng.choice([OCC_VEHICLE, OCC_PEDESTRIAN])
            grids.append(grid)
        position_error, yaw_error = _error(implied_motion(*grids), motion)
        assert position_error < 0.5 and yaw_error < 0.05, motion


def test_implied_motion_sign_conventions_one_axis_at_a_time():
    fn, start = GEOMETRIES["t_junction"]
    before = _rasterise(fn, start)
    for motion in [(8.0, 0.0, 0.0), (0.0, 2.0, 0.0), (0.0, -2.0, 0.0), (0.0, 0.0, 0.2), (0.0, 0.0, -0.2)]:
        estimate = implied_motion(before, _rasterise(fn, _moved(start, motion)))
        np.testing.assert_allclose(estimate, motion, atol=0.1)
    np.testing.assert_allclose(implied_motion(before, before), 0.0, atol=1e-3)


def test_implied_motion_sub_cell_translation_is_quantised_without_rotation():
    # Axis-aligned edges rasterised at 1 m look the same for any shift within a cell, so a pure
    # translation is recovered only to the nearest cell per axis (the documented limit).
    fn, start = GEOMETRIES["t_junction"]
    motion = (12.3, 1.7, 0.0)
    estimate = implied_motion(_rasterise(fn, start), _rasterise(fn, _moved(start, motion)))
    assert np.all(np.abs(estimate[:2] - motion[:2]) <= 0.5 + 1e-6) and abs(estimate[2]) < 0.01


def test_implied_motion_without_a_map_is_nan():
    fn, start = GEOMETRIES["t_junction"]
    grid = _rasterise(fn, start)
    empty = np.zeros_like(grid)
    assert np.isnan(implied_motion(empty, grid)).all()
    assert np.isnan(implied_motion(grid, np.full_like(grid, OCC_DRIVABLE))).all()
    with pytest.raises(ValueError, match="square grids"):
        implied_motion(grid, grid[:40])

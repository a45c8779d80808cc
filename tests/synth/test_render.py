"""The camera renderer: geometry against the pinhole projection, horizon, paint, occlusion,
padding, compilation, and the per-camera box selection."""

from __future__ import annotations

import logging
import math

import jax
import numpy as np
import pytest

from drivesim.synth import rig
from drivesim.synth.render import RenderConfig, render_image, render_images, select_boxes

CAMS = rig.nuscenes_rig(160)
W, H = CAMS[0].width, CAMS[0].height
RES = 0.1
ORIGIN = np.array([100.0, 100.0])  # ego position inside a 200 m x 200 m raster
ASPHALT_ONLY = np.full((2000, 2000), 1, np.uint8)
PALETTE = np.array([(200, 30, 30), (70, 70, 75), (160, 160, 160), (250, 250, 250), (230, 190, 60)], np.uint8)
DEFAULT = RenderConfig()
EXACT = RenderConfig(fog_distance=1e12, ground_noise=0.0, ground_patch_noise=0.0)  # colours straight from palette


def _ego_rotation(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _cameras(cam_ids, ego_yaw: float = 0.0):
    """Intrinsics, camera-to-global rotations and positions of rig cameras on an ego at ORIGIN."""
    r_ego = _ego_rotation(ego_yaw)
    ego = np.array([ORIGIN[0], ORIGIN[1], 0.0])
    intr = np.stack([CAMS[i].intrinsics for i in cam_ids])
    rot = np.stack([r_ego @ CAMS[i].rotation for i in cam_ids])
    pos = np.stack([ego + r_ego @ CAMS[i].translation for i in cam_ids])
    return intr, rot, pos


def _render(boxes, color, valid, cam_ids=(0,), ego_yaw=0.0, surface=ASPHALT_ONLY, style=None, cfg=DEFAULT):
    intr, rot, pos = _cameras(cam_ids, ego_yaw)
    n = len(cam_ids)
    boxes = np.broadcast_to(np.asarray(boxes, np.float32), (n,) + np.shape(boxes))
    color = np.broadcast_to(np.asarray(color, np.float32), (n,) + np.shape(color))
    valid = np.broadcast_to(np.asarray(valid, bool), (n,) + np.shape(valid))
    style = np.zeros(valid.shape, np.int32) if style is None else np.broadcast_to(style, valid.shape)
    out = render_images(surface, RES, PALETTE, intr, rot, pos, boxes, color, style, valid, width=W, height=H, cfg=cfg)
    return np.asarray(out)


def _box_corners(box) -> np.ndarray:
    x, y, z, yaw, length, width, height = box
    c, s = math.cos(yaw), math.sin(yaw)
    out = []
    for a in (-0.5, 0.5):
        for b in (-0.5, 0.5):
            for h in (-0.5, 0.5):
                out.append([x + c * a * length - s * b * width, y + s * a * length + c * b * width, z + h * height])
    return np.array(out)


def _project(points, intrinsics, rotation, position) -> np.ndarray:
    """(P, 2) pixel coordinates by the pinhole model (independent of the renderer's ray caster)."""
    cam = (points - position) @ rotation  # global -> camera frame (rotation is camera -> global)
    assert (cam[:, 2] > 0).all(), "test box must be in front of the camera"
    uvw = cam @ intrinsics.T
    return uvw[:, :2] / uvw[:, 2:]


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(int) != b.astype(int)).any(-1)


@pytest.mark.parametrize(
    "cam_id, ego_yaw, offset",
    [(0, 0.0, (14.0, 1.0)), (0, 2.1, (12.0, -2.0)), (4, -0.7, (-3.0, 11.0)), (3, 0.4, (-16.0, 1.5))],
)
def test_box_covers_its_projected_corners(cam_id, ego_yaw, offset):
    r_ego = _ego_rotation(ego_yaw)
    xy = ORIGIN + r_ego[:2, :2] @ np.array(offset)
    box = np.array([xy[0], xy[1], 1.1, ego_yaw + 0.5, 4.2, 1.9, 2.2])  # top above the camera: spans the horizon
    boxes = np.stack([box, np.zeros(7)])
    empty = _render(boxes, [[1, 0, 0], [0, 0, 0]], [False, False], (cam_id,), ego_yaw)[0]
    img = _render(boxes, [[1, 0, 0], [0, 0, 0]], [True, False], (cam_id,), ego_yaw)[0]
    rows, cols = np.nonzero(_changed(img, empty))
    assert len(rows) > 50

    intr, rot, pos = _cameras((cam_id,), ego_yaw)
    uv = _project(_box_corners(box), intr[0], rot[0], pos[0])
    # Pixel (r, c) has its centre at (c + 0.5, r + 0.5): covered pixels are those whose centres
    # fall inside the projected corners' hull, so its bounding box is exact unless an extreme
    # corner projects within a hair of a pixel centre (then either neighbour is right).
    for got, lo, hi, size in [(cols, uv[:, 0].min(), uv[:, 0].max(), W), (rows, uv[:, 1].min(), uv[:, 1].max(), H)]:
        for value, edge, expect in [(got.min(), lo, math.ceil(lo - 0.5)), (got.max(), hi, math.floor(hi - 0.5))]:
            tol = 1 if abs(edge - 0.5 - round(edge - 0.5)) < 0.02 else 0
            assert abs(value - min(max(expect, 0), size - 1)) <= tol, (got.min(), got.max(), lo, hi)


@pytest.mark.parametrize("cam_id", [0, 3, 5])
def test_empty_world_ground_below_horizon_sky_above(cam_id):
    grass = np.zeros((50, 50), np.uint8)  # tiny raster: nearly all ground is "outside" -> grass
    img = _render(np.zeros((2, 7)), np.zeros((2, 3)), [False, False], (cam_id,), 0.3, surface=grass, cfg=EXACT)[0]
    is_ground = (img == PALETTE[0]).all(-1)
    cy = CAMS[cam_id].intrinsics[1, 2]
    below = np.arange(H) + 0.5 > cy
    assert is_ground[below].all(), "every pixel below the horizon row cy is ground"
    assert not is_ground[~below].any(), "no pixel above the horizon row cy is ground"
    sky = img[~below].astype(float)
    assert (sky[..., 2] > sky[..., 0]).all(), "the sky is bluish"
    assert sky[0].mean() < sky[-1].mean(), "the sky is lighter at the horizon"


def test_white_stripe_ahead_is_bright_in_lower_centre():
    striped = ASPHALT_ONLY.copy()
    r0, r1 = int((ORIGIN[1] - 0.2) / RES), int((ORIGIN[1] + 0.2) / RES)
    striped[r0:r1, int(ORIGIN[0] / RES) :] = 3  # 0.4 m of white paint straight ahead along +x
    no_boxes = (np.zeros((2, 7)), np.zeros((2, 3)), [False, False])
    img = _render(*no_boxes, surface=striped).astype(float)
    plain = _render(*no_boxes, surface=ASPHALT_ONLY).astype(float)
    intr = CAMS[0].intrinsics
    fx, cx, cy, fy = intr[0, 0], intr[0, 2], intr[1, 2], intr[1, 1]
    pz, cam_y = CAMS[0].translation[2], ORIGIN[1] + CAMS[0].translation[1]
    stripe_y = 0.5 * (r0 + r1) * RES
    near_rows = [r for r in range(H) if r + 0.5 - cy > pz * fy / 25.0]  # ground nearer than 25 m
    assert len(near_rows) > 20
    for r in near_rows:
        bright = img[0, r].mean(-1)
        assert bright.max() > 200 and np.median(bright) < 110, f"row {r}: no white stripe on dark asphalt"
        ahead = pz * fy / (r + 0.5 - cy)  # forward distance of this row's ground
        expect_u = cx + fx * (cam_y - stripe_y) / ahead  # the camera's right is -y
        centre = np.mean(np.nonzero(bright > 200)[0]) + 0.5
        assert abs(centre - expect_u) < 1.0, f"row {r}: stripe centred at u={centre:.1f}, expected {expect_u:.1f}"
    assert plain[0, near_rows].mean(-1).max() < 110


def test_nearer_box_occludes_farther_box_in_any_slot_order():
    near = [ORIGIN[0] + 10.0, ORIGIN[1], 1.0, 0.0, 2.0, 2.0, 2.0]
    far = [ORIGIN[0] + 20.0, ORIGIN[1], 2.5, 0.0, 4.0, 4.0, 5.0]  # larger: visible around the near box
    blue, red = [0.1, 0.1, 1.0], [1.0, 0.1, 0.1]
    a = _render([near, far], [blue, red], [True, True])[0]
    b = _render([far, near], [red, blue], [True, True])[0]
    np.testing.assert_array_equal(a, b)
    intr, rot, pos = _cameras((0,))
    u, v = _project(np.array([near[:3]]), intr[0], rot[0], pos[0])[0]
    centre = a[int(v), int(u)].astype(int)
    assert centre[2] > centre[0] + 40, "the near (blue) box is in front at its own centre"
    u_top, v_top = _project(np.array([[far[0] - 2.0, far[1], 4.5]]), intr[0], rot[0], pos[0])[0]
    above = a[int(v_top), int(u_top)].astype(int)
    assert above[0] > above[2] + 40, "the far (red) box shows above the near one"


def test_invalid_box_is_not_drawn():
    box = [ORIGIN[0] + 10.0, ORIGIN[1], 1.0, 0.0, 4.0, 2.0, 2.0]
    empty = _render(np.zeros((2, 7)), np.zeros((2, 3)), [False, False])
    padded = _render([box, box], [[1, 0, 0], [1, 0, 0]], [False, False])
    drawn = _render([box, box], [[1, 0, 0], [1, 0, 0]], [True, False])
    np.testing.assert_array_equal(padded, empty)
    assert _changed(drawn, empty).sum() > 100


def test_box_styles_and_shading_differ():
    """Sunlit and shaded sides and the roof differ, and vehicle style adds a dark window band."""
    box = [ORIGIN[0] + 8.0, ORIGIN[1] + 3.0, 0.6, -0.5, 4.0, 4.0, 1.2]  # low: the camera sees its roof
    grey = [[0.7, 0.7, 0.7]] * 2
    plain = _render([box, box], grey, [True, False], style=[0, 0], cfg=EXACT)[0].astype(int)
    car = _render([box, box], grey, [True, False], style=[1, 0], cfg=EXACT)[0].astype(int)
    empty = _render(np.zeros((2, 7)), np.zeros((2, 3)), [False, False], cfg=EXACT)[0].astype(int)
    levels = {tuple(p) for p in plain[_changed(plain, empty)]}
    assert len(levels) == 3, "without fog: one flat colour each for the roof, the sunlit and the shaded side"
    assert (car.sum(-1) < 120).sum() > 20 and (plain.sum(-1) < 120).sum() == 0


def test_fog_fades_far_boxes_towards_the_horizon_colour():
    horizon = np.round(np.array(DEFAULT.sky_horizon) * 255)
    boxes = [[ORIGIN[0] + d, ORIGIN[1], 2.0, 0.0, 2.0, 8.0, 4.0] for d in (15.0, 300.0)]
    colours = []
    for b in boxes:
        img = _render([b, b], [[0.1, 0.1, 0.1]] * 2, [True, False])[0]
        empty = _render(np.zeros((2, 7)), np.zeros((2, 3)), [False, False])[0]
        colours.append(img[_changed(img, empty)].astype(float).mean(0))
    near, far = (np.abs(c - horizon).mean() for c in colours)
    assert far < 0.3 * near


SMALL = rig.nuscenes_rig(48)  # an image size no other test uses, so its first render compiles


def _random_batch(seed: int, n: int, k: int = 3):
    """render_images arguments for n front-camera images of random boxes ahead, some padded."""
    rng = np.random.default_rng(seed)
    boxes = np.concatenate(
        [
            ORIGIN + rng.uniform(5, 30, (n, k, 2)),
            rng.uniform(0.5, 2, (n, k, 1)),
            rng.uniform(-3, 3, (n, k, 1)),
            rng.uniform(1, 5, (n, k, 3)),
        ],
        -1,
    )
    return (
        ASPHALT_ONLY,
        RES,
        PALETTE,
        np.stack([SMALL[0].intrinsics] * n),
        np.stack([SMALL[0].rotation] * n),
        np.array([[*ORIGIN, 1.5]] * n) + rng.uniform(-1, 1, (n, 3)) * [1, 1, 0],
        boxes,
        rng.uniform(0, 1, (n, k, 3)),
        rng.integers(0, 4, (n, k)),
        rng.uniform(size=(n, k)) < 0.8,
    )


def test_compiles_once_and_repeats_exactly(caplog):
    w, h = SMALL[0].width, SMALL[0].height

    def compiles():
        return [r for r in caplog.records if "Compiling jit(_render_chunk)" in r.getMessage()]

    caplog.set_level(logging.WARNING)
    with jax.log_compiles():
        first = np.asarray(render_images(*_random_batch(1, 11), width=w, height=h))
        n_first = len(compiles())
        again = np.asarray(render_images(*_random_batch(1, 11), width=w, height=h))
        other = np.asarray(render_images(*_random_batch(2, 11), width=w, height=h))
        fewer = np.asarray(render_images(*_random_batch(3, 5), width=w, height=h))  # N=5: padded, same chunk
    assert n_first == 1, "the first call compiles the renderer once"
    assert len(compiles()) == 1, "later calls with the same image size and K do not recompile"
    assert first.shape == (11, h, w, 3) and first.dtype == np.uint8 and fewer.shape == (5, h, w, 3)
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


@pytest.mark.slow
def test_jit_equals_eager():
    """The jitted, vmapped, chunk-padded renderer gives the per-image kernel's images run op by op."""
    w, h = SMALL[0].width, SMALL[0].height
    args = _random_batch(4, 11)
    batch = np.asarray(render_images(*args, width=w, height=h))
    for i in (0, 10):  # the first image, and the last one (in the padded chunk)
        eager = np.asarray(render_image(*args[:3], *[a[i] for a in args[3:]], width=w, height=h))
        assert (np.abs(eager.astype(int) - batch[i]) > 2).mean() < 0.01
        assert (eager != _render_image_empty(w, h, args, i)).any()


def _render_image_empty(w, h, args, i):
    """The same camera with no boxes (so the comparison above is not between two empty images)."""
    no_boxes = [a[i] for a in args[3:]]
    no_boxes[-1] = np.zeros_like(no_boxes[-1])
    return np.asarray(render_image(*args[:3], *no_boxes, width=w, height=h))


def test_select_boxes_keeps_nearest_in_view_and_pads():
    def box(x, y, length=4.0, width=2.0, yaw=0.0):
        return [x, y, 1.0, yaw, length, width, 2.0]

    boxes = np.array(
        [
            box(50.0, 0.0),  # 0 ahead, far
            box(10.0, 0.0),  # 1 ahead, near
            box(-6.0, 0.0),  # 2 behind
            box(3.0, 25.0),  # 3 far off to the left: outside a 90 deg cone
            box(0.0, 8.0, length=40.0, width=6.0),  # 4 centred beside the camera, reaching into view
            box(200.0, 0.0),  # 5 ahead but beyond max_distance
        ]
    )
    color = np.arange(18, dtype=np.float32).reshape(6, 3) / 18
    style = np.arange(6)
    pos = np.array([[0.0, 0.0, 1.5], [0.0, 0.0, 1.5]])
    fwd = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])  # a front and a back camera
    b, c, s, v = select_boxes(pos, fwd, boxes, color, style, k=4, fov_deg=90.0)
    assert b.shape == (2, 4, 7) and c.shape == (2, 4, 3) and s.shape == (2, 4) and v.shape == (2, 4)
    # Front: the long building (footprint 5 m away), then the near and the far box; one padded slot.
    np.testing.assert_array_equal(s[0], [4, 1, 0, 0])
    np.testing.assert_array_equal(v[0], [True, True, True, False])
    np.testing.assert_allclose(b[0, :3], boxes[[4, 1, 0]], rtol=1e-6)
    np.testing.assert_allclose(c[0, :3], color[[4, 1, 0]])
    assert (b[0, 3] == 0).all()
    # Back: the box behind (footprint 4 m away), then the building.
    np.testing.assert_array_equal(s[1][v[1]], [2, 4])
    # k smaller than the number in view keeps the nearest; no boxes at all gives all padding.
    _, _, s1, v1 = select_boxes(pos[0], fwd[0], boxes, color, style, k=1, fov_deg=90.0)
    assert s1.tolist() == [4] and v1.tolist() == [True]
    _, _, _, v0 = select_boxes(pos, fwd, np.zeros((0, 7)), np.zeros((0, 3)), np.zeros(0), k=3)
    assert v0.shape == (2, 3) and not v0.any()

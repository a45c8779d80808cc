"""The ego-warp camera baseline: identity without motion, a ground point moves where geometry puts
it, a view it leaves is filled from another camera, and it beats copy-last on a driving scene."""

import numpy as np
import pytest

from drivesim.data.types import CameraRig
from drivesim.model.baselines import compose
from drivesim.model.ego_warp import EgoWarp, compose_poses, crop_offset, dataroot_rig, project
from drivesim.synth.rig import nuscenes_rig


def _rig(width=160):
    cams = nuscenes_rig(width)
    return CameraRig(
        *(np.stack([getattr(c, f) for c in cams]) for f in ("intrinsics", "rotation", "translation"))
    ), cams[0]


def test_no_motion_is_the_last_frame():
    rig, cam = _rig(64)
    warp = EgoWarp(rig, (cam.width, cam.height), (64, 32))
    last = np.random.default_rng(0).integers(0, 256, (2, 6, 32, 64, 3), dtype=np.uint8)
    out = warp(last, np.zeros((2, 3, 3), np.float32))
    assert out.shape == (2, 3, 6, 32, 64, 3)
    assert np.abs(out.astype(int) - last[:, None].astype(int)).max() <= 1


def test_a_ground_point_moves_as_the_geometry_says():
    rig, cam = _rig(160)
    size = (cam.width, cam.height)
    offset = crop_offset(size, size)
    # a bright spot on the road 12 m ahead and 1.5 m to the left, seen by CAM_FRONT (index 0)
    row, col, vis = (np.asarray(a)[0] for a in project(np.array([12.0, 1.5, 0.0], np.float32), rig, offset, size))
    assert vis
    last = np.zeros((1, 6, cam.height, cam.width, 3), np.uint8)
    r, c = int(round(float(row))), int(round(float(col)))
    last[0, 0, r - 1 : r + 2, c - 1 : c + 2] = 255
    # the ego drives 4 m forward: the spot is now 8 m ahead, lower and further left in the image
    out = EgoWarp(rig, size, size)(last, np.array([[[4.0, 0.0, 0.0]]], np.float32))[0, 0, 0, ..., 0]
    want_r, want_c, _ = (np.asarray(a)[0] for a in project(np.array([8.0, 1.5, 0.0], np.float32), rig, offset, size))
    rows, cols = np.nonzero(out > 100)  # the spot, grown as it nears: its centre
    got_r, got_c = rows.mean(), cols.mean()
    assert out.max() > 200 and abs(got_r - want_r) <= 1.5 and abs(got_c - want_c) <= 1.5
    assert want_r > r + 3 and want_c < c - 3  # it moved: the check is not the identity


def test_what_leaves_a_view_comes_from_the_next_camera():
    rig, cam = _rig(64)
    size = (cam.width, cam.height)
    last = np.zeros((1, 6, 32, 64, 3), np.uint8)
    last[0, 1] = 200  # only CAM_FRONT_RIGHT is bright
    # a quarter turn to the right: what the front camera sees now was seen by the right cameras
    out = EgoWarp(rig, size, (64, 32))(last, np.array([[[0.0, 0.0, -0.9]]], np.float32))[0, 0]
    assert out[0].mean() > 100 and out[2].mean() < out[0].mean()


def test_compose_poses_matches_the_numpy_composition():
    m = np.array([[2.0, 0.1, 0.2], [1.5, -0.2, 0.3], [3.0, 0.0, -0.1]], np.float32)
    np.testing.assert_allclose(np.asarray(compose_poses(m[None]))[0], compose(m), atol=1e-5)


@pytest.mark.slow
def test_it_beats_copy_last_on_a_driving_scene(tiny_dataroot, tiny_config):
    from drivesim.metrics.prediction import psnr
    from drivesim.model.config import WorldModelConfig
    from drivesim.model.predict import model_view
    from drivesim.pipelines.forecast import scene_arrays

    cfg = WorldModelConfig()
    rig = dataroot_rig(tiny_dataroot, tiny_config.version, cfg.frame_size)
    clip = scene_arrays(tiny_dataroot, tiny_config.version, "scene-0001", cfg.frame_size)
    images, _ = model_view(clip["frames"], clip["occupancy"], cfg)
    warp = EgoWarp(rig, cfg.frame_size, cfg.image_size)
    T = len(images)
    starts = range(3, T - 2)
    out = warp(images[list(starts)], np.stack([clip["ego_motion"][t : t + 2] for t in starts]))
    ours = np.mean([np.mean(psnr(out[i, 1], images[t + 2])) for i, t in enumerate(starts)])
    last = np.mean([np.mean(psnr(images[t], images[t + 2])) for t in starts])
    moved = np.mean([np.hypot(*compose(clip["ego_motion"][t : t + 2])[-1][:2]) for t in starts])
    assert moved > 2.0 and ours > last + 0.5, (ours, last, moved)

"""The camera refiner's parts: boxes ray-cast into the views land where the cameras see them, at
their depth; held boxes move into a new pose; an untrained refiner is exactly the ego warp; the
constant-velocity layout moves boxes as the occupancy baseline paints them."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drivesim.model.baselines import constant_velocity_layouts, constant_velocity_occupancy
from drivesim.model.camera_refine import CameraRefineConfig, CameraRefiner, moved_layout, pixel_rays, render_boxes
from drivesim.model.ego_warp import EgoWarp, crop_offset


def _layout(rows):
    out = np.zeros((4, 8), np.float32)
    out[: len(rows)] = rows
    return out


@pytest.mark.slow
def test_a_box_ahead_is_drawn_in_the_front_view_at_its_depth():
    model = CameraRefiner(CameraRefineConfig(), rngs=nnx.Rngs(0))
    cfg = model.cfg
    origin, direction = pixel_rays(model.rig(), cfg.image_size, crop_offset(cfg.frame_size, cfg.image_size))
    # a car 15 m ahead (its rear face at 12.75 m), and a pedestrian 6 m to the left
    layout = _layout([[15.0, 0.0, 0.0, 4.5, 1.9, 1.6, 0, 1], [0.5, 6.0, 0.0, 0.6, 0.6, 1.8, 1, 1]])
    r = np.asarray(render_boxes(origin, direction, jnp.asarray(layout)))  # (6, h, w, 6)
    front, left = r[0], r[5]
    hit = front[..., 0] > 0
    assert hit.sum() > 10 and hit[:, :20].sum() == 0 and hit[:, 44:].sum() == 0  # in the middle only
    depth = 1.0 / front[hit, 1]
    assert np.all(depth > 11.0) and np.median(depth) < 12.0  # the rear face (12.75 m), from the camera at x = 1.7 m
    assert np.all(front[hit, 2] == 1.0)  # vehicle
    assert r[3, ..., 0].sum() == 0  # the back camera sees nothing
    ped = (left[..., 0] > 0) | (r[4, ..., 0] > 0)
    assert ped.sum() > 0 and np.all(np.concatenate([left[left[..., 0] > 0, 3], r[4][r[4][..., 0] > 0, 3]]) == 1.0)
    # an invalid slot is never drawn
    gone = layout.copy()
    gone[:, 7] = 0
    assert np.asarray(render_boxes(origin, direction, jnp.asarray(gone)))[..., 0].sum() == 0


def test_held_boxes_seen_from_a_new_pose():
    layout = _layout([[10.0, 2.0, 0.3, 4.0, 2.0, 1.5, 0, 1]])
    moved = np.asarray(moved_layout(jnp.asarray(layout), jnp.array([4.0, 0.0, np.pi / 2])))
    # the ego drove 4 m and turned left a quarter: the box 6 m ahead and 2 m left is now 2 m ahead, 6 m right
    np.testing.assert_allclose(moved[0, :3], [2.0, -6.0, 0.3 - np.pi / 2], atol=1e-5)
    np.testing.assert_allclose(moved[0, 3:], layout[0, 3:])


@pytest.mark.slow
def test_an_untrained_refiner_is_the_ego_warp():
    model = CameraRefiner(CameraRefineConfig(), rngs=nnx.Rngs(0))  # its output layer starts at zero
    cfg = model.cfg
    last = np.random.default_rng(0).integers(0, 256, (6, 32, 64, 3), dtype=np.uint8)
    motion = np.array([[2.0, 0.1, 0.05], [2.0, 0.0, 0.02]], np.float32)
    from drivesim.model.ego_warp import compose_poses

    lay = jnp.asarray(_layout([[12.0, 0.0, 0.0, 4.5, 1.9, 1.6, 0, 1]]))
    run = nnx.jit(lambda m, *a: m(*a))
    ours = np.asarray(run(model, jnp.asarray(last), compose_poses(jnp.asarray(motion)), lay, jnp.stack([lay, lay])))
    warp = EgoWarp(model.rig(), cfg.frame_size, cfg.image_size)(last[None], motion[None])[0]
    assert np.abs(ours.astype(int) - warp.astype(int)).max() <= 1


def test_constant_velocity_layouts_match_the_occupancy_baseline():
    prev = _layout([[8.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0, 1]])
    last = _layout([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0, 1]])  # 2 m per keyframe: 4 m/s
    motions = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    boxes = constant_velocity_layouts(prev, last, np.zeros(3), motions)
    np.testing.assert_allclose(boxes[:, 0, :2], [[11.0, 0.0], [12.0, 0.0]], atol=1e-5)  # 12, 14 m less the ego's 1, 2
    grids = constant_velocity_occupancy(np.zeros((80, 80), np.uint8), prev, last, np.zeros(3), motions)
    rows = np.nonzero(grids[1] == 5)[0]
    centre_x = 40 - (rows.mean() + 0.5)
    assert abs(centre_x - boxes[1, 0, 0]) < 0.6


@pytest.mark.slow
def test_the_shipped_refiner_beats_the_warp_on_unseen_scenes(tiny_dataroot, tiny_config):
    from drivesim.metrics.prediction import psnr
    from drivesim.model.config import WorldModelConfig
    from drivesim.model.ego_warp import compose_poses
    from drivesim.model.predict import model_view
    from drivesim.model.probe_file import load_camera_refiner
    from drivesim.pipelines.forecast import scene_arrays

    refiner = load_camera_refiner()
    cfg = WorldModelConfig()
    warp = EgoWarp(refiner.rig(), cfg.frame_size, cfg.image_size)
    run = nnx.jit(lambda m, last, motion, lay0, lays: m(last, compose_poses(motion), lay0, lays))
    ours, base = [], []
    for scene in ("scene-0001", "scene-0002", "scene-0003"):
        clip = scene_arrays(tiny_dataroot, tiny_config.version, scene, cfg.frame_size)
        images, _ = model_view(clip["frames"], clip["occupancy"], cfg)
        for t in range(3, len(images) - 2, 2):
            motion = clip["ego_motion"][t : t + 2]
            out = np.asarray(run(refiner, images[t], motion, clip["agents"][t], clip["agents"][t + 1 : t + 3]))
            ours.append(np.mean(psnr(out[1], images[t + 2])))
            base.append(np.mean(psnr(warp(images[t][None], motion[None])[0, 1], images[t + 2])))
    assert np.mean(ours) > np.mean(base) + 0.3, (np.mean(ours), np.mean(base))

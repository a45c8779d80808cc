"""Camera views in closed loop: the truth engine renders the world where its ego is (as the writer
renders logs), and the world-model engine draws them with the camera refiner from its anchor frame,
re-anchoring after the refiner's horizon."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drivesim.model.camera_refine import CameraRefineConfig, CameraRefiner
from drivesim.model.config import WorldModelConfig
from drivesim.model.ego_warp import crop_offset, pixel_points, warp_views
from drivesim.model.world import WorldModel
from drivesim.planners.builtin import IdmPlanner
from drivesim.sim import truth_engine as te
from drivesim.sim import wm_engine

CFG = WorldModelConfig.tiny(max_horizon=16, motion_warp=True)
T0 = 40


@pytest.fixture(scope="module")
def scene(sim_load):
    """A 12 s follow scene: its plan, 10 Hz log and slot uids, and its record."""
    from drivesim.synth.roads import generate_map
    from drivesim.synth.scenario import make_plan
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import simulate

    plan = make_plan(generate_map("boston-seaport", 2), 74, "follow", duration=12.5)
    record = simulate(plan)
    log, uids = record_log(record, sim_load, annotation_range=None)
    return plan, log, uids, record


def as_cache(frames):
    """Rendered frames (..., H, W, 3) as the truth engine's views: JPEG, resized, centre-cropped."""
    from drivesim.synth.camera_frames import jpeg_like

    cfg = te.TruthConfig()
    (w, h), (top, left) = cfg.image_size, crop_offset(cfg.frame_size, cfg.image_size)
    return jpeg_like(frames, cfg.frame_size, cfg.jpeg_quality)[..., top : top + h, left : left + w, :]


@pytest.mark.slow
def test_truth_views_are_the_recorded_scene_where_the_ego_follows_the_log(scene):
    from drivesim.synth.truth import record_frames

    plan, log, uids, record = scene
    cfg = te.TruthConfig(cameras=True)
    state = te.reset(plan, log, T0, uids, None, cfg)
    views = te.world_views(state, cfg)
    assert views.images.shape == (6, 32, 64, 3) and views.images.dtype == jnp.uint8
    np.testing.assert_allclose(np.asarray(views.xy), np.asarray(log.ego.xy[T0]), atol=1e-4)
    now = as_cache(record_frames(record, [T0 * 0.1]))[0]
    before = as_cache(record_frames(record, [(T0 - 10) * 0.1]))[0]
    err = np.abs(np.asarray(views.images, np.float32) - now).mean()
    assert err < 3.0, err
    # the check can fail: a second earlier the scene looks clearly different
    assert np.abs(np.asarray(views.images, np.float32) - before).mean() > 2 * err + 1.0
    obs = te.observe(state, cfg)
    np.testing.assert_array_equal(np.asarray(obs.cameras.images), np.asarray(views.images))
    assert te.observe(state, te.TruthConfig()).cameras is None


@pytest.mark.slow
def test_truth_rollout_gives_a_camera_planner_views_at_two_hertz(scene):
    plan, log, uids, _ = scene
    seen = []

    class Watch(IdmPlanner):
        def plan(self, params, obs, rng):
            jax.debug.callback(lambda x: seen.append(np.asarray(x).copy()), obs.cameras.xy)
            return super().plan(params, obs, rng)

    cfg = te.TruthConfig(cameras=True)
    planner = Watch()
    state = te.reset(plan, log, T0, uids, None, cfg)
    te.rollout(state, planner, planner.init(None), 12, jax.random.key(0), cfg)
    jax.effects_barrier()
    assert len(seen) == 12
    # the views' pose is renewed at steps 0, 5 and 10 only
    moved = [not np.allclose(a, b) for a, b in zip(seen[:-1], seen[1:], strict=True)]
    assert moved == [i in (4, 9) for i in range(11)]


@pytest.fixture(scope="module")
def handle():
    model = WorldModel(CFG, rngs=nnx.Rngs(0))
    refiner = CameraRefiner(CameraRefineConfig(frame_size=CFG.frame_size, image_size=CFG.image_size, horizon=3),
                            rngs=nnx.Rngs(1))  # fmt: skip
    return wm_engine.ModelHandle.of(model, refiner)


def context(log, t0=T0):
    """The log's last 4 keyframes (textured frames; blank occupancy: the cameras do not read it)."""
    w, h = CFG.frame_size
    rng = np.random.default_rng(0)
    return wm_engine.Context(
        frames=rng.integers(0, 256, (CFG.history, 6, h, w, 3), dtype=np.uint8),
        occupancy=np.zeros((CFG.history, 160, 160), np.uint8),
        motion=np.zeros((CFG.history - 1, 3), np.float32),
    )


@pytest.mark.slow
def test_untrained_refiner_in_the_loop_is_the_ego_warp_and_re_anchors(handle, sim_logs):
    log = sim_logs[0]
    ctx = context(log)
    cfg = wm_engine.WMConfig(cameras="refiner", layout=True)
    planner = IdmPlanner()
    state = wm_engine.reset(handle, log, T0, ctx, None, cfg)
    top, left = crop_offset(CFG.frame_size, CFG.image_size)
    last = ctx.frames[-1][:, top : top + 32, left : left + 64]
    np.testing.assert_array_equal(np.asarray(state.images), last)
    np.testing.assert_array_equal(np.asarray(wm_engine.observe(state, cfg).cameras.images), last)
    run = jax.jit(lambda s, k: wm_engine.rollout(handle, s, planner, None, 20, k, cfg))
    final, tr = run(state, jax.random.key(0))
    assert tr.images.shape == (5, 6, 32, 64, 3)
    # keyframe 1: the anchor (the last context frame) warped by the ego's motion since t0
    refiner = handle.camera()
    rig = refiner.rig()
    points = pixel_points(rig, CFG.image_size, (top, left))
    dx, dy = np.asarray(wm_engine.to_ego_frame(tr.key_xy[1][None], tr.key_xy[0], tr.key_yaw[0]))[0]
    pose = jnp.array([[dx, dy, float(tr.key_yaw[1] - tr.key_yaw[0])]])
    x = jnp.asarray(last, jnp.float32) / 127.5 - 1.0
    want = np.clip(np.round((np.asarray(warp_views(x, points, pose, rig, (top, left)))[0] + 1) * 127.5), 0, 255)
    assert dx > 1.0  # the ego moved: the warp is not the identity
    assert np.abs(np.asarray(tr.images[1], np.float32) - want).max() <= 1.0
    assert np.abs(np.asarray(tr.images[1], np.float32) - last).mean() > 5.0
    # horizon 3: keyframe 3's views became the anchor, and keyframe 4 is warped from them
    assert int(final.camera.age) == 1
    np.testing.assert_array_equal(np.asarray(final.camera.views), np.asarray(tr.images[3]))
    np.testing.assert_allclose(np.asarray(final.camera.xy), np.asarray(tr.key_xy[3]))


def test_refiner_settings_are_checked():
    with pytest.raises(ValueError, match="layout=True"):
        wm_engine.WMConfig(cameras="refiner", layout=False)
    with pytest.raises(ValueError, match="layout=True"):
        wm_engine.WMConfig(cameras="warp", layout=False)
    with pytest.raises(ValueError, match="cameras must be"):
        wm_engine.WMConfig(cameras="on")
    with pytest.raises(ValueError, match="needs a camera refiner"):
        wm_engine.ModelHandle(graphdef=None, params=None).camera()

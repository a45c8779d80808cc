"""Loading nuScenes-format scenes into `Log` pytrees, checked against the synthetic world's truth."""

import math

import numpy as np
import pytest
import shapely

from drivesim.data.classes import OCC_DRIVABLE, OCC_LANE_MARKING, VEHICLE
from drivesim.data.loader import LoadConfig, load_camera_frames, load_log
from drivesim.data.types import CAMERA_CHANNELS, EGO_REAR_AXLE_TO_CENTER
from drivesim.synth.dataset import load_recipes, synth_map
from drivesim.synth.map_expansion import token
from drivesim.synth.rig import nuscenes_rig


@pytest.fixture(scope="module")
def scene(tiny_nusc):
    return tiny_nusc.scene[0]


@pytest.fixture(scope="module")
def loaded(tiny_nusc, scene):
    return load_log(tiny_nusc, scene["name"])


def test_shapes_follow_the_config(loaded, tiny_config):
    log, info = loaded
    cfg = LoadConfig()
    T = int(tiny_config.seconds * 2)
    assert log.time.shape == (T,) and np.allclose(np.diff(log.time), 0.5)
    assert log.ego.xy.shape == (T, 2) and log.ego.valid.all()
    assert log.agents.xy.shape == (cfg.max_agents, T, 2)
    assert log.map.lane_xy.shape == (cfg.max_lane_segments, cfg.lane_points, 2)
    assert log.map.raster.shape == (cfg.raster_size, cfg.raster_size)
    assert log.rig.intrinsics.shape == (6, 3, 3)
    assert len(info.camera_files) == T and all(len(r) == 6 for r in info.camera_files)


def test_ego_and_agents_equal_the_world(loaded, scene, tiny_records):
    log, info = loaded
    rec = tiny_records[scene["name"]]
    steps = np.round(np.asarray(log.time) / 0.1).astype(int)
    # Ego poses are recorded with each camera reading (cameras fire 12-62 ms after the sample
    # time); between readings they are interpolated, before the first one it is held.
    err = np.hypot(*(np.asarray(log.ego.xy) - rec.ego_rear[steps]).T)
    assert err[1:].max() < 0.05 and err[0] < 0.3
    dyaw = (np.asarray(log.ego.yaw) - rec.ego_yaw[steps] + np.pi) % (2 * np.pi) - np.pi
    assert np.abs(dyaw[1:]).max() < 0.01
    # ego velocity from the 4 Hz camera poses vs the world's speed
    speed = np.hypot(*np.asarray(log.ego.velocity).T)
    assert np.abs(speed - rec.ego_speed[steps]).mean() < 0.5
    slots = {token("instance", scene["token"], s.uid): a for a, s in enumerate(rec.specs)}
    n = 0
    for i, tok in enumerate(info.agent_tokens):
        if not tok:
            assert not log.agents.valid[i].any()
            continue
        a = slots[tok]
        valid = np.asarray(log.agents.valid[i])
        assert np.allclose(np.asarray(log.agents.xy[i])[valid], rec.center[a, steps[valid]], atol=1e-3)
        assert np.allclose(log.agents.size[i], rec.specs[a].size, atol=1e-5)
        # valid exactly where the writer annotated it: present and within range of the ego
        ego_c = rec.ego_rear[steps] + EGO_REAR_AXLE_TO_CENTER * np.stack([np.cos(rec.ego_yaw[steps]), np.sin(rec.ego_yaw[steps])], 1)
        near = np.hypot(*(rec.center[a, steps] - ego_c).T) < 60.0
        assert np.array_equal(valid, rec.active[a, steps] & near)
        n += 1
    assert n > 3
    assert (np.asarray(log.agents.category)[np.asarray(log.agents.valid).any(1)] == VEHICLE).any()


def test_agents_appear_and_vanish(tiny_nusc):
    """Some agent is annotated for only part of a scene; the rest of its track is invalid."""
    partial = 0
    for s in tiny_nusc.scene:
        log, _ = load_log(tiny_nusc, s["name"])
        v = np.asarray(log.agents.valid)
        partial += int(((v.any(1)) & ~(v.all(1))).sum())
    assert partial > 0


def test_higher_rate_interpolates_between_keyframes(tiny_nusc, scene, tiny_records):
    log, info = load_log(tiny_nusc, scene["name"], LoadConfig(rate_hz=10.0, camera_source="any"))
    rec = tiny_records[scene["name"]]
    assert np.allclose(np.diff(log.time), 0.1, atol=1e-5)
    steps = np.round(np.asarray(log.time) / 0.1).astype(int)
    # ego poses come from every camera reading, so 10 Hz poses are close to the truth
    assert np.abs(np.asarray(log.ego.xy) - rec.ego_rear[steps]).max() < 0.3
    # camera files at the non-keyframe steps are sweeps where the camera rate allows
    assert any(f.startswith("sweeps/") for row in info.camera_files for f in row)


def test_map_crop_and_lanes(loaded, tiny_dataroot, scene, tiny_records):
    log, info = loaded
    rec = tiny_records[scene["name"]]
    smap = rec.plan.map
    raster = np.asarray(log.map.raster)
    res = float(log.map.raster_resolution)
    # the ego always stands on drivable ground (or a marking painted on it)
    ij = np.floor((np.asarray(log.ego.xy) - np.asarray(log.map.raster_origin)) / res).astype(int)
    assert np.isin(raster[ij[:, 1], ij[:, 0]], (OCC_DRIVABLE, OCC_LANE_MARKING, 3)).all()
    # raster vs the world's own drivable polygon, at cell centres away from its boundary
    rng = np.random.default_rng(0)
    cells = rng.integers(0, raster.shape[0], size=(4000, 2))
    centers = np.asarray(log.map.raster_origin) + (cells[:, ::-1] + 0.5) * res
    inside = shapely.contains_xy(smap.drivable, centers[:, 0], centers[:, 1])
    far = shapely.distance(smap.drivable.boundary, shapely.points(centers)) > 0.5
    painted = np.isin(raster[cells[:, 0], cells[:, 1]], (1, 3, 4))
    assert np.array_equal(painted[far], inside[far])
    # lane segments lie on lanes, and their successors start where they end
    valid = np.asarray(log.map.lane_valid)
    xy = np.asarray(log.map.lane_xy)
    pts, _ = smap.lane_points()
    tree = shapely.STRtree(shapely.points(pts))
    assert valid.sum() > 20
    for i in np.flatnonzero(valid)[:200]:
        near = pts[tree.nearest(shapely.points(xy[i]))]
        assert np.hypot(*(near - xy[i]).T).max() < 0.6
        for j in np.asarray(log.map.lane_successors[i]):
            if j >= 0:
                assert np.hypot(*(xy[j, 0] - xy[i, -1])) < 1e-3
    assert info.num_lanes_total >= valid.sum()


def test_rig_and_camera_frames(loaded, tiny_config):
    log, info = loaded
    rig = nuscenes_rig(tiny_config.image_width)
    for c, cam in enumerate(rig):
        assert cam.channel == CAMERA_CHANNELS[c]
        assert np.allclose(log.rig.intrinsics[c], cam.intrinsics, atol=1e-4)
        assert np.allclose(log.rig.rotation[c], cam.rotation, atol=1e-5)
        assert np.allclose(log.rig.translation[c], cam.translation, atol=1e-5)
    frames = load_camera_frames(info, steps=slice(0, 3))
    assert frames.shape == (3, 6, rig[0].height, rig[0].width, 3) and frames.std() > 5
    small = load_camera_frames(info, size=(32, 18), steps=[0])
    assert small.shape == (1, 6, 18, 32, 3)


def test_truncation_keeps_the_nearest_agents(tiny_nusc, scene, loaded):
    log, info = loaded
    few, finfo = load_log(tiny_nusc, scene["name"], LoadConfig(max_agents=3))
    assert few.agents.xy.shape[0] == 3 and finfo.num_agents_total == info.num_agents_total
    assert set(finfo.agent_tokens) <= set(info.agent_tokens)
    assert finfo.agent_tokens == info.agent_tokens[:3]


def test_log_is_a_pytree_that_jits(loaded):
    import jax

    log, _ = loaded
    f = jax.jit(lambda lg: lg.agents.xy.sum() + lg.ego.xy.sum())
    assert math.isfinite(float(f(log)))
    assert len(jax.tree_util.tree_leaves(log)) >= 15
    _ = load_recipes, synth_map  # re-simulation helpers are exercised in tests/synth


def test_lidar_top_is_the_pose_reference_when_present(tmp_path, tiny_dataroot, tiny_records, tiny_config):
    """Real nuScenes records ego poses with LIDAR_TOP at the sample times; the loader prefers them."""
    import json
    import shutil

    from drivesim.data.dataroot import open_nuscenes
    from drivesim.synth.map_expansion import token as tok
    from drivesim.synth.writer import yaw_quaternion

    root = tmp_path / "root"
    shutil.copytree(tiny_dataroot, root, ignore=shutil.ignore_patterns("sweeps", "samples"))
    tables = root / tiny_config.version
    load = lambda name: json.loads((tables / f"{name}.json").read_text())  # noqa: E731
    sensor, calib, sd, poses = load("sensor"), load("calibrated_sensor"), load("sample_data"), load("ego_pose")
    scenes, samples = load("scene"), {s["token"]: s for s in load("sample")}
    sensor.append({"token": tok("sensor", "LIDAR_TOP"), "channel": "LIDAR_TOP", "modality": "lidar"})
    for scene in scenes:
        rec = tiny_records[scene["name"]]
        cs = tok("calibrated_sensor", scene["token"], "LIDAR_TOP")
        calib.append({"token": cs, "sensor_token": sensor[-1]["token"], "translation": [0.94, 0.0, 1.84],
                      "rotation": [0.707, 0.0, 0.0, -0.707], "camera_intrinsic": []})  # fmt: skip
        s, chain, t0 = samples[scene["first_sample_token"]], [], samples[scene["first_sample_token"]]["timestamp"]
        while True:
            chain.append(s)
            if not s["next"]:
                break
            s = samples[s["next"]]
        toks = [tok("lidar", s["token"]) for s in chain]
        for i, s in enumerate(chain):
            x, y, yaw = rec.ego_pose_at(np.array((s["timestamp"] - t0) * 1e-6))
            poses.append({"token": toks[i] + "p", "timestamp": s["timestamp"], "rotation": yaw_quaternion(float(yaw)),
                          "translation": [float(x), float(y), 0.0]})  # fmt: skip
            sd.append({"token": toks[i], "sample_token": s["token"], "ego_pose_token": toks[i] + "p",
                       "calibrated_sensor_token": cs, "timestamp": s["timestamp"], "fileformat": "pcd",
                       "is_key_frame": True, "height": 0, "width": 0, "filename": f"samples/LIDAR_TOP/{toks[i]}.pcd.bin",
                       "prev": toks[i - 1] if i else "", "next": toks[i + 1] if i + 1 < len(chain) else ""})  # fmt: skip
    for name, rows in (("sensor", sensor), ("calibrated_sensor", calib), ("sample_data", sd), ("ego_pose", poses)):
        (tables / f"{name}.json").write_text(json.dumps(rows))
    nusc = open_nuscenes(root, tiny_config.version)
    scene = nusc.scene[0]
    log, _ = load_log(nusc, scene["name"])
    rec = tiny_records[scene["name"]]
    steps = np.round(np.asarray(log.time) / 0.1).astype(int)
    assert np.allclose(log.ego.xy, rec.ego_rear[steps], atol=1e-4)  # exact at every keyframe now

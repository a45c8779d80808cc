"""The synthetic dataroot through the unmodified nuscenes-devkit, against the world's ground truth."""

import json
import math

import numpy as np
import pytest
from nuscenes.map_expansion.map_api import NuScenesMap
from nuscenes.prediction import PredictHelper
from nuscenes.utils.geometry_utils import view_points
from pyquaternion import Quaternion

from drivesim.data.dataroot import TABLES
from drivesim.synth.dataset import load_recipes, synth_map
from drivesim.synth.map_expansion import lane_token
from drivesim.synth.rig import nuscenes_rig


def test_all_tables_and_chains(tiny_nusc, tiny_dataroot, tiny_config):
    nusc = tiny_nusc
    for t in TABLES:
        assert (tiny_dataroot / tiny_config.version / f"{t}.json").exists()
    assert len(nusc.scene) == tiny_config.scenes
    for scene in nusc.scene:
        samples = []
        tok = scene["first_sample_token"]
        while tok:
            samples.append(nusc.get("sample", tok))
            tok = samples[-1]["next"]
        assert len(samples) == scene["nbr_samples"] == int(tiny_config.seconds * 2)
        assert samples[-1]["token"] == scene["last_sample_token"]
        dt = np.diff([s["timestamp"] for s in samples])
        assert np.all(dt == 500_000)  # keyframes at 2 Hz
        for s in samples:
            assert set(s["data"]) == {c.channel for c in nuscenes_rig(tiny_config.image_width)}
    # sweeps between keyframes at the configured camera rate, chained with prev/next
    cams = [sd for sd in nusc.sample_data if sd["channel"] == "CAM_FRONT"]
    keys = [sd for sd in cams if sd["is_key_frame"]]
    sweeps = [sd for sd in cams if not sd["is_key_frame"]]
    assert len(sweeps) == len(keys) - tiny_config.scenes  # camera_hz 4: one sweep between keyframes
    for sd in sweeps:
        assert sd["filename"].startswith("sweeps/CAM_FRONT/")
        nxt = nusc.get("sample_data", sd["next"])
        assert nxt["is_key_frame"] and nxt["sample_token"] == sd["sample_token"]
    # real vocabularies
    names = {c["name"] for c in nusc.category}
    assert "vehicle.car" in names and "human.pedestrian.adult" in names and len(names) == 23
    assert {v["token"] for v in nusc.visibility} == {"1", "2", "3", "4"}
    anns = nusc.sample_annotation
    assert {nusc.get("instance", a["instance_token"])["category_token"] for a in anns}
    assert any(a["attribute_tokens"] for a in anns)


def test_camera_projection_matches_the_world(tiny_nusc, tiny_records):
    """Boxes the devkit puts in a camera frame sit where the world's own geometry puts them."""
    nusc = tiny_nusc
    checked = 0
    for scene in nusc.scene:
        rec = tiny_records[scene["name"]]
        sample = nusc.get("sample", scene["first_sample_token"])
        for _ in range(3):
            sample = nusc.get("sample", sample["next"])
        for channel in ("CAM_FRONT", "CAM_BACK_LEFT"):
            sd = nusc.get("sample_data", sample["data"][channel])
            _path, boxes, k = nusc.get_sample_data(sd["token"])
            t = (sd["timestamp"] - nusc.get("sample", scene["first_sample_token"])["timestamp"]) * 1e-6
            ex, ey, eyaw = rec.ego_pose_at(np.array(t))
            cam = {c.channel: c for c in nuscenes_rig(sd["width"])}[channel]
            for box in boxes:
                inst = nusc.get("sample_annotation", box.token)["instance_token"]
                a = _slots(scene, rec)[inst]
                # the world: the box centre at the keyframe (annotations are keyframe boxes)
                ts = (sample["timestamp"] - nusc.get("sample", scene["first_sample_token"])["timestamp"]) * 1e-6
                step = int(round(ts / 0.1))
                c = np.array([*rec.center[a, step], rec.specs[a].size[2] / 2])
                # into the camera frame by our own rig, not the devkit's records
                r_ego = np.array([[math.cos(eyaw), -math.sin(eyaw), 0], [math.sin(eyaw), math.cos(eyaw), 0], [0, 0, 1]])
                p_ego = r_ego.T @ (c - np.array([ex, ey, 0.0]))
                p_cam = cam.rotation.T @ (p_ego - cam.translation)
                assert np.allclose(box.center, p_cam, atol=1e-3)
                if p_cam[2] > 1.0:
                    ours = view_points(p_cam[:, None], cam.intrinsics, normalize=True)[:2, 0]
                    theirs = view_points(box.center[:, None], k, normalize=True)[:2, 0]
                    assert np.allclose(ours, theirs, atol=1e-2)
                checked += 1
    assert checked > 5


def _slots(scene, rec) -> dict[str, int]:
    """Instance token -> the agent's slot in the world's record (the writer derives tokens from uids)."""
    from drivesim.synth.map_expansion import token

    return {token("instance", scene["token"], spec.uid): a for a, spec in enumerate(rec.specs)}


def test_sweep_boxes_are_interpolated_near_the_truth(tiny_nusc, tiny_records):
    nusc = tiny_nusc
    scene = nusc.scene[0]
    rec = tiny_records[scene["name"]]
    start = nusc.get("sample", scene["first_sample_token"])["timestamp"]
    sweeps = [sd for sd in nusc.sample_data if not sd["is_key_frame"] and sd["channel"] == "CAM_FRONT"]
    sweeps = [sd for sd in sweeps if nusc.get("sample", sd["sample_token"])["scene_token"] == scene["token"]]
    errors = []
    for sd in sweeps[:6]:
        t = (sd["timestamp"] - start) * 1e-6
        xy, _yaw, present = rec.agents_at(t)
        for box in nusc.get_boxes(sd["token"]):
            inst = nusc.get("sample_annotation", box.token)["instance_token"]
            a = _slots(scene, rec)[inst]
            if present[a]:
                errors.append(np.hypot(*(box.center[:2] - xy[a])))
    assert errors and max(errors) < 0.5  # linear interpolation over 0.5 s vs the true motion


def test_prediction_helper_futures_match_the_world(tiny_nusc, tiny_records):
    nusc = tiny_nusc
    helper = PredictHelper(nusc)
    scene = nusc.scene[1]
    rec = tiny_records[scene["name"]]
    sample = nusc.get("sample", scene["first_sample_token"])
    sample = nusc.get("sample", sample["next"])
    start = nusc.get("sample", scene["first_sample_token"])["timestamp"]
    t0 = (sample["timestamp"] - start) * 1e-6
    n = 0
    for ann_tok in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_tok)
        future = helper.get_future_for_agent(ann["instance_token"], sample["token"], 2.0, in_agent_frame=False)
        a = _slots(scene, rec)[ann["instance_token"]]
        for j, xy in enumerate(future):
            step = int(round((t0 + 0.5 * (j + 1)) / 0.1))
            assert np.allclose(xy, rec.center[a, step], atol=1e-3)
            n += 1
    assert n > 0
    # the devkit's velocity: the displacement since the previous annotation over the time between them
    checked = 0
    for ann_tok in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_tok)
        vel = helper.get_velocity_for_agent(ann["instance_token"], sample["token"])
        if not ann["prev"]:
            assert np.isnan(vel)
            continue
        prev = nusc.get("sample_annotation", ann["prev"])
        dt = (sample["timestamp"] - nusc.get("sample", prev["sample_token"])["timestamp"]) * 1e-6
        a = _slots(scene, rec)[ann["instance_token"]]
        now, before = int(round(t0 / 0.1)), int(round((t0 - dt) / 0.1))
        want = np.hypot(*(rec.center[a, now] - rec.center[a, before])) / dt
        assert vel == pytest.approx(want, abs=1e-2)
        checked += 1
    assert checked > 0


def test_map_expansion_answers_match_the_world(tiny_dataroot):
    recipes = load_recipes(tiny_dataroot)
    loc, seed = recipes[0].location, recipes[0].map_seed
    smap = synth_map(loc, seed)
    nmap = NuScenesMap(dataroot=str(tiny_dataroot), map_name=loc)
    with open(tiny_dataroot / "maps" / "expansion" / f"{loc}.json") as f:
        assert json.load(f)["version"] == "1.3"
    rng = np.random.default_rng(0)
    lanes = [ln for ln in smap.lanes if not ln.is_connector and ln.length > 30]
    for ln in rng.choice(lanes, 8, replace=False):
        x, y, _ = ln.poses[len(ln.poses) // 2]
        tok = lane_token(smap, ln.index)
        assert nmap.layers_on_point(x, y)["lane"] == tok
        assert nmap.get_closest_lane(x, y, radius=2.0) == tok
        assert nmap.layers_on_point(x, y)["drivable_area"] != ""
        ours = ln.poses[:, :2]
        theirs = np.array(nmap.discretize_lanes([tok], 0.5)[tok])[:, :2]
        assert np.allclose(theirs[0], ours[0], atol=1e-6) and np.allclose(theirs[-1], ours[-1], atol=1e-6)
        out = nmap.get_outgoing_lane_ids(tok)
        assert sorted(out) == sorted(lane_token(smap, s) for s in ln.successors)
    # a crossing is found in a patch around it, and a building's centre is on no road layer
    c = smap.crossings[0].polygon.centroid
    patch = nmap.get_records_in_patch((c.x - 5, c.y - 5, c.x + 5, c.y + 5), ["ped_crossing", "lane"])
    assert patch["ped_crossing"] and patch["lane"]
    bx, by = smap.buildings[0, :2]
    assert all(v == "" for v in nmap.layers_on_point(bx, by).values())


def test_map_mask_covers_the_roads(tiny_nusc, tiny_dataroot):
    recipes = load_recipes(tiny_dataroot)
    smap = synth_map(recipes[0].location, recipes[0].map_seed)
    log = next(lg for lg in tiny_nusc.log if lg["location"] == recipes[0].location)
    mask = tiny_nusc.get("map", log["map_token"])["mask"]
    pts = np.concatenate([ln.poses[::10, :2] for ln in smap.lanes])
    assert mask.is_on_mask(pts[:, 0], pts[:, 1]).mean() > 0.99
    assert not mask.is_on_mask(smap.buildings[:, 0], smap.buildings[:, 1]).any()
    assert Quaternion  # pyquaternion is a devkit dependency we also rely on
    pytest.importorskip("nuscenes")

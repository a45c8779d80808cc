"""Ground truth from the world equals what the loader reads back; counterfactual truth follows edits."""

import numpy as np
import pytest

from drivesim.data.classes import OCC_PEDESTRIAN, OCC_VEHICLE
from drivesim.data.loader import load_log
from drivesim.data.occupancy import log_occupancy
from drivesim.synth.dataset import load_recipes, plan_for
from drivesim.synth.truth import record_frames, record_log, record_occupancy
from drivesim.synth.world import RemoveAgent, resimulate


@pytest.fixture(scope="module")
def scene_name(tiny_nusc):
    return tiny_nusc.scene[0]["name"]


@pytest.mark.slow
def test_record_log_equals_the_loaded_log(tiny_nusc, tiny_records, scene_name):
    loaded, info = load_log(tiny_nusc, scene_name)
    truth, uids = record_log(tiny_records[scene_name], image_width=64)
    assert np.array_equal(loaded.time, truth.time)
    assert np.abs(np.asarray(loaded.ego.xy)[1:] - np.asarray(truth.ego.xy)[1:]).max() < 0.05
    # the same agents, valid at the same steps, at the same places (slots may be ordered differently)
    rec = tiny_records[scene_name]
    by_uid = {u: j for j, u in enumerate(uids) if u >= 0}
    from drivesim.synth.map_expansion import token

    scene = next(s for s in tiny_nusc.scene if s["name"] == scene_name)
    tok2uid = {token("instance", scene["token"], s.uid): s.uid for s in rec.specs}
    for i, tok in enumerate(info.agent_tokens):
        if not tok:
            continue
        j = by_uid[tok2uid[tok]]
        assert np.array_equal(loaded.agents.valid[i], truth.agents.valid[j])
        v = np.asarray(loaded.agents.valid[i])
        assert np.allclose(np.asarray(loaded.agents.xy[i])[v], np.asarray(truth.agents.xy[j])[v], atol=1e-3)
    # the same map, read back through the map expansion file or built from the world's geometry
    agree = np.mean(np.asarray(loaded.map.raster) == np.asarray(truth.map.raster))
    assert agree > 0.999
    assert np.array_equal(loaded.map.lane_valid, truth.map.lane_valid)
    assert np.abs(np.asarray(loaded.map.lane_xy) - np.asarray(truth.map.lane_xy)).max() < 0.05
    # and therefore (nearly) the same occupancy
    same = np.mean(np.asarray(log_occupancy(loaded).grid)[1:] == np.asarray(log_occupancy(truth).grid)[1:])
    assert same > 0.995


def test_counterfactual_truth_follows_the_edit(tiny_dataroot, scene_name):
    recipe = next(r for r in load_recipes(tiny_dataroot) if r.name == scene_name)
    plan = plan_for(recipe)
    base = resimulate(plan, None, [])
    log, uids = record_log(base)
    # the agent nearest the ego at 3 s that is a vehicle or pedestrian
    k = 6
    cands = [
        j
        for j in range(len(uids))
        if uids[j] >= 0 and bool(log.agents.valid[j, k]) and int(log.agents.category[j]) in (0, 1)
    ]
    j = cands[0]
    uid = uids[j]
    occ = np.asarray(record_occupancy(base).grid)
    edited = resimulate(plan, 2.0, [RemoveAgent(uid)])
    occ_e = np.asarray(record_occupancy(edited).grid)
    log_e, uids_e = record_log(edited)
    assert uid not in [u for jj, u in enumerate(uids_e) if u >= 0 and np.asarray(log_e.agents.valid[jj, 4:]).any()]
    # before the edit the occupancy is identical; after it, the removed agent's cells are gone
    assert np.array_equal(occ[:4], occ_e[:4])
    assert not np.array_equal(occ[k], occ_e[k])
    changed = occ[k] != occ_e[k]
    assert np.isin(occ[k][changed], (OCC_VEHICLE, OCC_PEDESTRIAN)).all()


def test_record_frames_shape(tiny_records, scene_name):
    frames = record_frames(tiny_records[scene_name], [0.0, 0.5], image_width=32)
    assert frames.shape == (2, 6, 18, 32, 3) and frames.std() > 5

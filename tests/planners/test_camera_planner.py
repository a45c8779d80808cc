"""The camera-only planner: it reads the agents off the views through the shipped probe, and asks
for cameras where an engine gives none."""

import types

import jax
import numpy as np
import pytest

from drivesim.model.probe_file import DEFAULT
from drivesim.planners.camera import CameraPdm, ego_mask
from drivesim.sim import truth_engine as te

T0 = 40


def test_without_cameras_it_says_what_to_turn_on():
    planner = CameraPdm()
    obs = types.SimpleNamespace(cameras=None)  # what the kinematic engine gives: no views
    with pytest.raises(ValueError, match="--cameras"):
        planner.plan(None, obs, jax.random.key(0))


def test_the_ego_mask_covers_the_ego_only():
    m = np.asarray(ego_mask(80, 40.0))
    assert m[39, 39] and m[39, 40] and m[37, 39]  # just ahead of the rear axle, both sides
    assert not m[30, 39] and not m[39, 30] and m.sum() < 60


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT.exists(), reason="no shipped probe")
def test_on_true_views_its_boxes_are_where_the_agents_are(sim_load):
    from drivesim.synth.roads import generate_map
    from drivesim.synth.scenario import make_plan
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import simulate

    near, far, boxes = 0, 0, 0
    for seed, kind in ((75, "follow"), (76, "stop_and_go")):
        plan = make_plan(generate_map("boston-seaport", 2), seed, kind, duration=8.5)
        log, uids = record_log(simulate(plan), sim_load, annotation_range=None)
        cfg = te.TruthConfig(cameras=True)
        obs = te.observe(te.reset(plan, log, T0, uids, None, cfg), cfg)
        planner = CameraPdm()
        seen = jax.jit(planner.read)(planner.init(None), obs)
        ok = np.asarray(seen.agents.valid)
        b = np.asarray(seen.agents.xy)[ok]
        ag = np.asarray(obs.agents.xy)[np.asarray(obs.agents.valid)]
        d = np.min(np.linalg.norm(b[:, None] - ag[None], axis=-1), axis=1)
        near += int((d < 4.0).sum())
        far += int((d >= 4.0).sum())
        boxes += len(b)
        # the same views gone blank: no leader is made up in the ego's lane
        blank = obs.replace(cameras=obs.cameras.replace(images=np.full_like(np.asarray(obs.cameras.images), 128)))
        ghost = jax.jit(planner.read)(planner.init(None), blank)
        g = np.asarray(ghost.agents.xy)[np.asarray(ghost.agents.valid)] - np.asarray(obs.ego.xy)
        c, s = np.cos(float(obs.ego.yaw)), np.sin(float(obs.ego.yaw))
        ahead, side = c * g[:, 0] + s * g[:, 1], -s * g[:, 0] + c * g[:, 1]
        assert not np.any((ahead > 3.0) & (ahead < 30.0) & (np.abs(side) < 1.5)), (ahead, side)
    assert boxes >= 6
    assert near >= 2 * far, (near, far)

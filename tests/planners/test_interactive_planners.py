"""The interaction-sensitive planners (merger, assertive, tailgater): the protocol, batching in
the kinematic engine, the behaviour each claims, and scenes where log replay misjudges them.

The two scenes are built in the synthetic world with no other traffic, so that the truth engine
re-simulates them in a few seconds:

- `merge_scene`: a two-lane road, a slow car 22 m ahead of the ego in its lane and a faster car
  coming up behind in the lane to its left. The merger pulls out in front of that car: replayed, it
  drives on through the ego; in the world (and as a reactive IDM agent) it brakes.
- `crossing_scene`: the ego turns left at an intersection (signals off: right of way by arrival)
  across an oncoming car that has right of way; in the log the ego waited for it. The assertive
  planner turns in front of it: replayed, the car drives into the ego; in the world it brakes.
"""

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drivesim.data.classes import VEHICLE
from drivesim.planners.base import check_planner
from drivesim.planners.builtin import (
    BUILTIN,
    Assertive,
    IdmPlanner,
    Merger,
    Tailgater,
    adjacent_lanes,
    route_in_ego_frame,
)
from drivesim.sim import truth_engine as te
from drivesim.sim.closed_loop import evaluate, pdms_terms
from drivesim.sim.engine import SimConfig, observe, reset, rollout
from drivesim.sim.paths import project

NEW = {"merger": Merger(), "assertive": Assertive(), "tailgater": Tailgater()}
TERMS = pdms_terms()  # one object: each engine compiles it once
SCORES = ("pdms", "nc", "ttc")


def _scores(e):
    return {k: float(getattr(e, k)) for k in SCORES}


def _car(uid, lane, s, speed):
    from drivesim.synth.traffic import AgentSpec

    return AgentSpec(
        uid=uid, kind="vehicle", category="vehicle.car", size=(4.5, 1.85, 1.55), seed=uid, lane=lane, s=s,
        speed=speed, desired_speed=speed, headway=1.5, max_accel=1.8, comfort_decel=2.5, min_gap=2.0,
        random_lane_changes=False,
    )  # fmt: skip


def _ego(lane, s, speed, turns):
    from drivesim.synth.scenario import EGO_SIZE
    from drivesim.synth.traffic import AgentSpec

    return AgentSpec(
        uid=0, kind="ego", category="ego", size=EGO_SIZE, seed=0, lane=lane, s=s, speed=speed, desired_speed=speed,
        headway=1.4, max_accel=1.8, comfort_decel=2.5, min_gap=2.5, random_lane_changes=False, turns=turns,
    )  # fmt: skip


def _recorded(plan, sim_load):
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import simulate

    log, uids = record_log(simulate(plan), sim_load, annotation_range=None)
    return plan, log, uids


@pytest.fixture(scope="module")
def merge_scene(sim_load):
    """(plan, 10 Hz log, slot uids): ego at 7 m/s on the right lane of a straight two-lane road, a
    car at 3 m/s 24 m ahead of it, a car at 10 m/s in the left lane, its centre 10 m behind the ego's
    rear axle. The logged ego follows the slow car; the fast car passes it."""
    from drivesim.synth.roads import generate_map
    from drivesim.synth.traffic import ScenePlan

    smap = generate_map("boston-seaport", 3)
    lane, left = smap.lanes[33], smap.lanes[32]
    assert lane.left == left.index and not lane.is_connector and lane.length > 120
    x, y = lane.poses[int(np.argmin(np.abs(lane.s - 20.0))), :2]
    beside = float(left.s[int(np.argmin(np.hypot(left.poses[:, 0] - x, left.poses[:, 1] - y)))])
    agents = (_ego(33, 20.0, 7.0, ("straight",)), _car(1, 33, 44.0, 3.0), _car(2, 32, beside - 10.0, 10.0))
    plan = ScenePlan(map=smap, seed=5, scenario="merge", duration=8.5, warmup=0.0, entry_rate=0.0, agents=agents)
    return _recorded(plan, sim_load)


@pytest.fixture(scope="module")
def crossing_scene(sim_load):
    """(plan, 10 Hz log, slot uids): the ego, 24 m before its stop line at 8 m/s, is to turn left;
    an oncoming car 8 m before its own stop line at 9 m/s goes straight and has right of way (too
    close to stop), so the logged ego waits at the line for it and turns after it."""
    from drivesim.synth.roads import generate_map
    from drivesim.synth.traffic import ScenePlan

    smap = copy.deepcopy(generate_map("boston-seaport", 1))
    node = smap.nodes[0]
    node.signal_axis = {road: 0 for road in node.roads}  # one phase for every road ...
    node.signal_green = (1e6, 1e6)  # ... always green: right of way goes by arrival order
    ego_lane, car_lane = smap.lanes[29], smap.lanes[1]
    assert {ego_lane.road, car_lane.road} == {10, 0} and 54 in ego_lane.successors and 47 in car_lane.successors
    assert 47 in smap.lanes[54].conflicts  # our left turn crosses its straight path
    agents = (
        _ego(29, ego_lane.stop_s - 24.0 - 3.34, 8.0, ("left",)),  # 3.34 m: rear axle to front bumper
        _car(1, 1, car_lane.stop_s - 8.0 - 3.6, 9.0),
    )
    # plan seed 0: the oncoming car's own choice at the intersection is straight on
    plan = ScenePlan(map=smap, seed=0, scenario="cross", duration=16.0, warmup=0.0, entry_rate=0.0, agents=agents)
    return _recorded(plan, sim_load)


def _kinematic(planner, log, agents, horizon):
    cfg = SimConfig(agents=agents)
    state = reset(log, 0, None, cfg)
    _, trace = jax.jit(lambda s: rollout(s, planner, None, horizon, jax.random.key(0), cfg, TERMS))(state)
    return evaluate(state, trace, horizon), trace


def _truth(planner, plan, log, uids, horizon):
    cfg = te.TruthConfig()
    state = te.reset(plan, log, 0, uids, None, cfg)
    _, trace = te.rollout(state, planner, None, horizon, jax.random.key(0), cfg, TERMS)
    return evaluate(state.sim, trace, horizon), trace


# ------------------------------------------------------------------------- protocol and batching


@pytest.mark.slow
def test_registered_and_follow_the_protocol(sim_logs):
    obs = observe(reset(sim_logs[0], 20))
    assert len(BUILTIN) >= 8
    for name, planner in NEW.items():
        assert BUILTIN[name] == planner and planner.name == name
        check_planner(planner, obs)


@pytest.mark.slow  # a closed loop compiled per planner: full suite only
def test_run_under_jit_and_vmap_in_the_kinematic_engine(sim_logs):
    """Two scenarios in one compiled, vmapped closed loop per planner; the batch gives each
    scenario's own run."""
    logs = jax.tree.map(lambda a, b: jnp.stack([a, b]), sim_logs[0], sim_logs[2])
    cfg, horizon = SimConfig(agents="log"), 15

    def one(log, planner):
        state = reset(log, 20, None, cfg)
        _, trace = rollout(state, planner, planner.init(None), horizon, jax.random.key(0), cfg, TERMS)
        return evaluate(state, trace, horizon).pdms, trace.ego.xy

    for planner in NEW.values():
        pdms, xy = jax.jit(jax.vmap(lambda lg, p=planner: one(lg, p)))(logs)
        assert pdms.shape == (2,) and xy.shape == (2, horizon + 1, 2)
        assert np.all(np.isfinite(np.asarray(xy))) and np.all(np.asarray(pdms) >= 0.0)
        travelled = np.linalg.norm(np.asarray(xy[:, -1] - xy[:, 0]), axis=-1)
        assert np.all(travelled > 1.0)  # they drive
        if planner.name == "tailgater":  # the cheapest to compile twice: vmap row == a lone run
            alone, _ = jax.jit(lambda lg, p=planner: one(lg, p))(sim_logs[2])
            assert float(pdms[1]) == pytest.approx(float(alone), abs=1e-5)


# ------------------------------------------------------------------------- behaviour


def _place(obs, slot, distance, speed, heading=0.0, size=(4.5, 1.85, 1.55), category=VEHICLE):
    """The observation with only agent `slot`, `distance` m along the route ahead, heading
    `heading` rad from the route there (0: our way), at `speed`."""
    route = np.asarray(obs.route)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(route, axis=0), axis=1))])
    k = int(np.searchsorted(s, distance))
    c, sn = np.cos(float(obs.ego.yaw)), np.sin(float(obs.ego.yaw))
    local = route[k]
    xy = np.asarray(obs.ego.xy) + np.array([c * local[0] - sn * local[1], sn * local[0] + c * local[1]])
    along = float(obs.ego.yaw) + np.arctan2(route[k + 1, 1] - route[k, 1], route[k + 1, 0] - route[k, 0])
    only = jnp.zeros_like(obs.agents.valid).at[slot].set(True)
    agents = obs.agents.replace(
        xy=obs.agents.xy.at[slot].set(xy), speed=obs.agents.speed.at[slot].set(speed), valid=only,
        yaw=obs.agents.yaw.at[slot].set(along + heading),
    )  # fmt: skip
    return obs.replace(
        agents=agents,
        agent_size=obs.agent_size.at[slot].set(jnp.asarray(size)),
        agent_category=obs.agent_category.at[slot].set(category),
    )


def _plan(planner, obs):
    traj = jax.jit(lambda o: planner.plan(None, o, jax.random.key(0)))(obs)
    return np.asarray(traj.xy)


@pytest.mark.slow
def test_tailgater_closes_up_where_idm_keeps_its_distance(sim_logs):
    """A car 16 m ahead at the ego's own speed: IDM (1.5 s time gap) keeps back, the tailgater
    (0.4 s) closes up: after 4 s its bumper-to-bumper gap is metres shorter, and already inside the
    gap IDM wants at that speed."""
    obs = observe(reset(sim_logs[0], 20))
    v = float(obs.ego.speed)
    assert v > 5.0
    ahead = _place(obs, 0, 16.0, v)
    # the car's rear bumper after 4 s, less the ego's rear axle to front bumper: route metres apart
    bumper = 16.0 + 4.0 * v - 4.5 / 2 - 3.34
    gap = {p.name: bumper - float(np.linalg.norm(_plan(p, ahead)[-1])) for p in (IdmPlanner(), Tailgater())}
    idm = IdmPlanner().idm
    assert gap["tailgater"] < gap["idm"] - 3.0
    assert 0.0 < gap["tailgater"] < idm.min_gap + v * idm.headway < gap["idm"] + 1.0


@pytest.mark.slow
def test_assertive_keeps_its_speed_through_a_crossing_car(sim_logs):
    """A car crossing the route 14 m ahead: IDM brakes for it, the assertive planner keeps going
    (it expects the car to stop); a car standing across the road stops both."""
    obs = observe(reset(sim_logs[0], 20))
    v = float(obs.ego.speed)
    crossing = _place(obs, 0, 14.0, 8.0, heading=np.pi / 2)
    idm, assertive = (float(np.linalg.norm(_plan(p, crossing)[-1])) for p in (IdmPlanner(), Assertive()))
    assert assertive > 4.0 * v * 0.9 and idm < 14.0
    standing = _place(obs, 0, 14.0, 0.0, heading=np.pi / 2)
    assert float(np.linalg.norm(_plan(Assertive(), standing)[-1])) < 14.0


@pytest.mark.slow  # compile-heavy: the full suite only (keeps --fast under 3 minutes)
def test_merger_leaves_its_lane_behind_a_slow_or_stopped_car(merge_scene):
    """The lane to the left is found; behind the slow car (and behind the same car stopped) the
    merger plans into it, where IDM stays in its lane and slows or stops (the closed loop, where it
    then passes the slow car, is `test_log_replay_misjudges_the_merger`)."""
    _, log, _ = merge_scene
    obs = observe(reset(log, 0))
    route = route_in_ego_frame(obs)
    s0, _ = project(route, jnp.zeros(2))
    offsets, reach = jax.jit(adjacent_lanes)(obs, route, s0)
    assert 3.0 < float(offsets[1]) < 4.0 and float(reach[1]) >= Merger().pass_distance  # the lane on the left
    assert float(reach[2]) == 0.0  # none on the right (the kerb)
    leader = int(np.argmin(np.where(np.asarray(obs.agents.valid), np.asarray(obs.agents.speed), np.inf)))
    dist = float(np.linalg.norm(np.asarray(obs.agents.xy[leader] - obs.ego.xy)))
    for speed in (3.0, 0.0):
        blocked = _place(obs, leader, dist - 1.3, speed)  # only the car ahead
        (s_m, lat_m), (s_i, lat_i) = (
            project(route, jnp.asarray(_plan(p, blocked)[-1])) for p in (Merger(), IdmPlanner())
        )
        assert float(lat_m) > 2.0 and abs(float(lat_i)) < 0.3  # clear of the car, into the left lane; IDM in lane
    # behind the stopped car IDM plans to stop short of it (the merger brakes as hard until clear)
    assert float(s_i - s0) < dist - 2.0


# ------------------------------------------------------------------------- interaction


@pytest.mark.slow  # a closed loop compiled per planner: full suite only
def test_log_replay_misjudges_the_merger(merge_scene):
    """The merger pulls out in front of the faster car in the left lane. Replayed, that car drives
    on through the ego (an at-fault collision once its centre passes the ego's rear axle: PDMS 0);
    in the synthetic world it brakes and the merger passes the slow car without a scratch. IDM,
    which stays behind the slow car, scores the same in both."""
    plan, log, uids = merge_scene
    horizon = 60
    log_score, _ = _kinematic(Merger(), log, "log", horizon)
    truth_score, trace = _truth(Merger(), plan, log, uids, horizon)
    assert float(log_score.nc) == 0.0 and float(log_score.pdms) == 0.0
    assert float(truth_score.nc) == 1.0 and float(truth_score.pdms) > 0.9
    # it did change lane in the world: a lane width to the left of where it started, past the slow car
    start = reset(log, 0)
    c, s = np.cos(float(start.ego.yaw)), np.sin(float(start.ego.yaw))
    d = np.asarray(trace.ego.xy[-1] - start.ego.xy)
    assert -s * d[0] + c * d[1] > 2.5
    slot = list(uids).index(2)  # the car behind in the left lane braked for it
    assert float(np.min(np.asarray(trace.agents.speed[:, slot]))) < 5.0


@pytest.mark.slow
def test_reactive_agents_and_idm_judge_the_merge_scene_like_the_truth(merge_scene):
    plan, log, uids = merge_scene
    horizon = 60
    reactive, _ = _kinematic(Merger(), log, "idm", horizon)
    assert float(reactive.nc) == 1.0 and float(reactive.pdms) > 0.9
    for agents in ("log", "idm"):
        assert float(_kinematic(IdmPlanner(), log, agents, horizon)[0].nc) == 1.0
    assert float(_truth(IdmPlanner(), plan, log, uids, horizon)[0].nc) == 1.0


@pytest.mark.slow
def test_log_replay_misjudges_the_assertive_planner(crossing_scene):
    """The assertive planner turns left across the oncoming car that had right of way. Replayed,
    the car drives into it (PDMS 0); in the synthetic world the car brakes for the ego in its path
    (no collision; the close call still costs TTC), as reactive IDM agents do."""
    plan, log, uids = crossing_scene
    horizon = 60
    on_log, _ = _kinematic(Assertive(), log, "log", horizon)
    truth, trace = _truth(Assertive(), plan, log, uids, horizon)
    reactive, _ = _kinematic(Assertive(), log, "idm", horizon)
    assert float(on_log.nc) == 0.0 and float(on_log.pdms) == 0.0
    assert float(truth.nc) == 1.0 and float(truth.pdms) > 0.5
    assert float(reactive.nc) == 1.0
    slot = list(uids).index(1)
    speed = np.asarray(trace.agents.speed[:, slot])
    assert speed[0] > 8.0 and speed.min() < 3.0  # the oncoming car braked hard
    turned = abs(float(trace.ego.yaw[-1] - trace.ego.yaw[0]))
    assert turned > 0.5  # and the ego did turn in front of it


def test_the_new_planners_are_frozen_dataclasses():
    for planner in NEW.values():
        assert dataclasses.is_dataclass(planner)
        with pytest.raises(dataclasses.FrozenInstanceError):
            planner.name = "x"  # type: ignore[misc]

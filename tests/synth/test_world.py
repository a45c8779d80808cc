"""The synthetic world: determinism, exact re-simulation, edits, and plausible traffic."""

import math

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from drivesim.synth.roads import generate_map
from drivesim.synth.scenario import SCENARIOS, make_plan
from drivesim.synth.traffic import DT, MAX_DECEL
from drivesim.synth.world import (
    EgoCommand,
    EgoTrajectory,
    InsertAgent,
    MoveAgent,
    RemoveAgent,
    SetSpeed,
    resimulate,
    simulate,
)

FIELDS = ("ego_rear", "ego_yaw", "ego_speed", "center", "yaw", "speed", "active")


@pytest.fixture(scope="module")
def follow_plan():
    return make_plan(generate_map("boston-seaport", 0), 11, "follow", duration=10.0)


@pytest.fixture(scope="module")
def follow_record(follow_plan):
    return simulate(follow_plan)


def _same(a, b, upto=None):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if f in ("center", "yaw", "speed", "active"):
            n = min(x.shape[0], y.shape[0])
            x, y = x[:n, :upto], y[:n, :upto]
        else:
            x, y = x[:upto], y[:upto]
        if not np.array_equal(x, y):
            return False
    return True


def test_same_seed_same_scene_bit_for_bit(follow_plan, follow_record):
    again = simulate(follow_plan)
    assert _same(follow_record, again)
    other = simulate(make_plan(follow_plan.map, 12, "follow", duration=10.0))
    assert not np.array_equal(other.ego_rear, follow_record.ego_rear)


def test_resimulation_without_edits_reproduces_the_log(follow_plan, follow_record):
    assert _same(follow_record, resimulate(follow_plan, 4.0, []))
    assert _same(follow_record, resimulate(follow_plan, 4.0, ()))


def _interaction_closure(rec, edited: set[int], t0: int, radius: float = 40.0) -> set[int]:
    """Agents (slots; -1 = ego) that come within `radius` of an edited agent, transitively, after t0."""
    pos = {-1: rec.ego_rear[t0:]}
    for a in range(len(rec.specs)):
        pos[a] = np.where(rec.active[a, t0:, None], rec.center[a, t0:], np.nan)
    reach = set(edited)
    grew = True
    while grew:
        grew = False
        for a, p in pos.items():
            if a in reach:
                continue
            for b in list(reach):
                d = np.hypot(*(p - pos[b]).T)
                if np.nanmin(np.where(np.isnan(d), np.inf, d)) < radius:
                    reach.add(a)
                    grew = True
                    break
    return reach


def _changed(a, b, t0: int) -> set[int]:
    out = set()
    if not (np.array_equal(a.ego_rear[t0:], b.ego_rear[t0:]) and np.array_equal(a.ego_yaw[t0:], b.ego_yaw[t0:])):
        out.add(-1)
    n = min(len(a.specs), len(b.specs))
    for k in range(n):
        if not (
            np.array_equal(a.center[k, t0:], b.center[k, t0:]) and np.array_equal(a.active[k, t0:], b.active[k, t0:])
        ):
            out.add(k)
    return out


def test_removing_an_agent_changes_only_what_follows(follow_plan, follow_record):
    t0 = 40  # 4 s
    lead = 0  # slot 0 of the record is uid 1, the ego's lead vehicle in a follow scene
    assert follow_record.specs[lead].uid == 1
    edited = resimulate(follow_plan, 4.0, [RemoveAgent(1)])
    assert _same(follow_record, edited, upto=t0)  # the past is untouched
    assert not edited.active[lead, t0:].any()  # gone from the edit time on
    changed = _changed(follow_record, edited, t0)
    assert -1 in changed  # the ego, no longer held back, drives differently
    assert edited.ego_rear[-1] @ [1, 0] != follow_record.ego_rear[-1] @ [1, 0]
    # everything that changed was (transitively) within reach of the removed car
    assert changed <= _interaction_closure(follow_record, {lead}, t0)
    assert len(changed) < len(follow_record.specs)  # far-away traffic is untouched


def test_speed_move_insert_edits(follow_plan, follow_record):
    t0 = 40
    rec = resimulate(follow_plan, 4.0, [SetSpeed(1, 2.0)])
    assert rec.speed[0, t0] == pytest.approx(2.0)
    assert rec.speed[0, t0 + 20] < 4.0  # and it keeps driving slowly
    x, y = follow_record.center[0, t0] + np.array([0.0, 0.0])
    moved = resimulate(follow_plan, 4.0, [MoveAgent(1, x + 0.0, y + 0.0, None)])
    assert np.allclose(moved.center[0, t0], (x, y), atol=1e-6)
    ego = follow_record.ego_rear[t0 + 15]
    ins = resimulate(
        follow_plan, 4.0, [InsertAgent("human.pedestrian.adult", float(ego[0]), float(ego[1]), 0.0, 0.0, "static")]
    )
    new = [k for k, s in enumerate(ins.specs) if s.uid not in {t.uid for t in follow_record.specs}]
    assert len(new) == 1 and ins.specs[new[0]].category == "human.pedestrian.adult"
    assert not ins.active[new[0], :t0].any() and ins.active[new[0], t0:].all()
    assert np.allclose(ins.center[new[0], t0], ego)


def test_edits_compose(follow_plan, follow_record):
    rec = resimulate(follow_plan, 4.0, [RemoveAgent(1), EgoCommand("brake", 3.0)])
    assert not rec.active[0, 40:].any()
    assert rec.ego_speed[-1] == pytest.approx(0.0)


def test_ego_commands(follow_plan, follow_record):
    t0 = 40
    v0 = follow_record.ego_speed[t0]
    brake = resimulate(follow_plan, 4.0, [EgoCommand("brake", 4.0)])
    expected = np.maximum(v0 - 4.0 * DT * np.arange(1, 11), 0.0)
    assert np.allclose(brake.ego_speed[t0 + 1 : t0 + 11], expected, atol=1e-6)
    keep = resimulate(follow_plan, 4.0, [EgoCommand("keep")])
    assert np.allclose(keep.ego_speed[t0:], keep.ego_speed[t0], atol=1e-6)


def test_ego_trajectory_override(follow_plan, follow_record):
    t0 = 40
    x, y, yaw = follow_record.ego_rear[t0, 0], follow_record.ego_rear[t0, 1], follow_record.ego_yaw[t0]
    poses = [(x + 0.5 * k * math.cos(yaw), y + 0.5 * k * math.sin(yaw), yaw) for k in range(20)]
    rec = resimulate(follow_plan, 4.0, [EgoTrajectory(tuple(poses))])
    assert np.allclose(rec.ego_rear[t0 : t0 + 20], np.array(poses)[:, :2], atol=1e-9)
    assert np.allclose(rec.ego_speed[t0 + 1 : t0 + 20], 5.0, atol=1e-6)


def test_bad_edits_are_refused(follow_plan):
    with pytest.raises(ValueError, match="no agent with id 9999"):
        resimulate(follow_plan, 4.0, [RemoveAgent(9999)])
    with pytest.raises(ValueError, match="outside the scene"):
        resimulate(follow_plan, 99.0, [RemoveAgent(1)])
    with pytest.raises(ValueError, match="NaN"):
        resimulate(follow_plan, 4.0, [EgoTrajectory(((0.0, float("nan"), 0.0),))])


def _box(c, yaw, length, width):
    cs, sn = math.cos(yaw), math.sin(yaw)
    return Polygon(
        np.array([[length, width], [-length, width], [-length, -width], [length, -width]])
        / 2
        @ np.array([[cs, sn], [-sn, cs]])
        + c
    )


@pytest.mark.parametrize("i", range(len(SCENARIOS)))
def test_traffic_is_plausible(i):
    """No vehicle collisions, bounded accelerations, bicycle-consistent yaw rates, scenario variety."""
    loc = ("boston-seaport", "singapore-onenorth", "singapore-queenstown")[i % 3]
    rec = simulate(make_plan(generate_map(loc, i), 500 + i, SCENARIOS[i], duration=12.0))
    movers = [a for a, s in enumerate(rec.specs) if s.kind == "vehicle"]
    # kinematics
    acc = np.diff(rec.ego_speed) / DT
    assert acc.min() >= -MAX_DECEL - 1e-6 and acc.max() <= 3.0
    yaw_rate = np.abs((np.diff(rec.ego_yaw) + np.pi) % (2 * np.pi) - np.pi) / DT
    v = 0.5 * (rec.ego_speed[1:] + rec.ego_speed[:-1])
    assert np.all(yaw_rate <= v * math.tan(0.6) / 2.588 + 1e-6)
    for a in movers:
        both = rec.active[a, 1:] & rec.active[a, :-1]
        dv = np.diff(rec.speed[a]) / DT
        assert np.all(dv[both] >= -MAX_DECEL - 1e-6)
    # no overlapping vehicles (the ego included), every half second
    for k in range(0, len(rec.time), 5):
        boxes = [
            _box(
                rec.ego_rear[k] + 1.3 * np.array([math.cos(rec.ego_yaw[k]), math.sin(rec.ego_yaw[k])]),
                rec.ego_yaw[k],
                4.084,
                1.73,
            )
        ]
        boxes += [_box(rec.center[a, k], rec.yaw[a, k], *rec.specs[a].size[:2]) for a in movers if rec.active[a, k]]
        tree = shapely.STRtree(boxes)
        pairs = tree.query(boxes, predicate="intersects")
        for p, q in pairs[:, pairs[0] < pairs[1]].T:
            assert boxes[p].intersection(boxes[q]).area < 0.05, f"vehicles collide at t={rec.time[k]:.1f}"

"""Counterfactual edits: the --edit grammar, what each edit does to a log, refusals, and the true
counterfactual of a synthetic scene (to_synth_edits + resimulate)."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from drivesim.data.classes import PEDESTRIAN, VEHICLE
from drivesim.data.loader import LoadConfig, load_log
from drivesim.errors import ConfigError
from drivesim.metrics.pdms import DRIVABLE_CLASSES
from drivesim.pipelines.world_edits import synth_uid, to_synth_edits
from drivesim.sim.edits import (
    ChangeSpeed,
    EditError,
    EgoEdit,
    Insert,
    Move,
    PedestrianCrosses,
    Remove,
    apply_to_log,
    ego_poses,
    ego_to_global,
    global_to_ego,
    list_agents,
    parse_edit,
    resolve_agent,
    spec_of,
    validate,
)

LOAD = LoadConfig(rate_hz=10.0, max_agents=32, max_lane_segments=200, raster_size=800, raster_resolution=0.5)
SCENE = "scene-0001"
T0 = 20  # 2.0 s, a keyframe
H = 30


@pytest.fixture(scope="module")
def scene(tiny_nusc):
    return load_log(tiny_nusc, SCENE, LOAD)


@pytest.fixture(scope="module")
def plan(tiny_dataroot):
    from drivesim.synth.dataset import load_recipes, plan_for

    return plan_for({r.name: r for r in load_recipes(tiny_dataroot)}[SCENE])


def present(log, info=None, t0=T0):
    return [r for r in list_agents(log, info, t0) if r["valid"]]


def raster_class(log, xy):
    m = log.map
    ij = np.floor((np.asarray(xy) - np.asarray(m.raster_origin)) / float(m.raster_resolution)).astype(int)
    return int(np.asarray(m.raster)[ij[1], ij[0]])


def free_spot(log, info, y=0.0, xs=range(8, 40, 2), **kw):
    """The first ego-frame x ahead on the line y where a car may be inserted."""
    for x in xs:
        try:
            validate(log, info, T0, [Insert("vehicle.car", float(x), y, **kw)])
            return float(x)
        except EditError:
            continue
    raise AssertionError("no free spot for a car ahead of the ego")


def new_slot(before, after, t0=T0):
    slots = np.flatnonzero(np.asarray(after.agents.valid[:, t0]) & ~np.asarray(before.agents.valid).any(axis=1))
    assert len(slots) == 1, slots
    return int(slots[0])


def dist_to_polyline(points, line):
    a, b = line[:-1], line[1:]
    ab = b - a
    out = []
    for p in points:
        f = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab**2).sum(-1), 1e-12), 0, 1)
        out.append(np.hypot(*(a + f[:, None] * ab - p).T).min())
    return np.array(out)


# -------------------------------------------------------------------------- the grammar

PARSED = [
    ("ego=brake", EgoEdit("brake")),
    ("ego=brake:6", EgoEdit("brake", 6.0)),
    ("ego=accelerate:2", EgoEdit("accelerate", 2.0)),
    ("ego=keep", EgoEdit("keep")),
    ("ego=swerve_left", EgoEdit("swerve_left")),
    ("ego=swerve_right:2.5", EgoEdit("swerve_right", 2.5)),
    ("ego=waypoints:plans/left.json", EgoEdit("waypoints", path="plans/left.json")),
    ("remove=7", Remove(7)),
    ("remove=3FA2C1d0", Remove("3fa2c1d0")),
    ("remove=123456", Remove("123456")),  # six digits: a token prefix, not a slot
    ("insert=vehicle.car@15,0,0,8", Insert("vehicle.car", 15.0, 0.0, 0.0, 8.0, "lane")),
    (
        "insert=pedestrian@10,-4,90,1.2,straight",
        Insert("human.pedestrian.adult", 10, -4, math.pi / 2, 1.2, "straight"),
    ),
    ("insert=cone@20,2", Insert("movable_object.trafficcone", 20.0, 2.0)),
    ("insert=truck@-12.5,3.5,180,0,static", Insert("vehicle.truck", -12.5, 3.5, math.pi, 0.0, "static")),
    ("move=3@20,-3", Move(3, 20.0, -3.0)),
    ("move=abcdef@20,-3,45", Move("abcdef", 20.0, -3.0, math.pi / 4)),
    ("speed=2@0", ChangeSpeed(2, 0.0)),
    ("speed=abcdef12@7.5", ChangeSpeed("abcdef12", 7.5)),
    ("cross", PedestrianCrosses()),
    ("cross=20", PedestrianCrosses(ahead=20.0)),
    ("cross=20,1.8,left", PedestrianCrosses(20.0, 1.8, "left")),
]


@pytest.mark.parametrize("spec,expected", PARSED)
def test_parse_every_form(spec, expected):
    edit = parse_edit(spec)
    assert edit == expected
    assert parse_edit(spec_of(edit)) == edit  # spec_of is the inverse


BAD = [
    "",
    "fly=3",
    "ego",
    "ego=hover",
    "ego=brake:-1",
    "ego=brake:fast",
    "ego=keep:3",
    "ego=waypoints:",
    "remove=",
    "remove=ab1",
    "remove=7@2",
    "insert=car",
    "insert=spaceship@1,2",
    "insert=car@1",
    "insert=car@1,2,3,4,sideways",
    "insert=car@1,nan",
    "insert=car@1,2,0,-3",
    "insert=car@1,,2",
    "move=3@1",
    "move=3",
    "move=3@1,2,3,4",
    "speed=2@-1",
    "speed=2@1,2",
    "speed=2@fast",
    "cross=0",
    "cross=10,1,up",
    "cross=1,2,left,4",
]


@pytest.mark.parametrize("spec", BAD)
def test_bad_specs_are_refused_with_the_expected_form(spec):
    with pytest.raises(EditError) as err:
        parse_edit(spec)
    msg = str(err.value)
    assert isinstance(err.value, ConfigError)
    assert "\n" not in msg and repr(spec) in msg and "expected" in msg


# -------------------------------------------------------------------------- list, remove, move, speed


def test_list_agents_in_the_ego_frame(scene):
    log, info = scene
    rows = list_agents(log, info, T0)
    valid = np.asarray(log.agents.valid[:, T0])
    now = [r for r in rows if r["valid"]]
    assert {r["slot"] for r in now} == set(np.flatnonzero(valid).tolist()) and len(now) >= 3
    dists = [math.hypot(r["x"], r["y"]) for r in now]
    assert dists == sorted(dists) and rows[: len(now)] == now
    yaw0 = float(log.ego.yaw[T0])
    for r in now:
        a = r["slot"]
        assert info.agent_tokens[a].startswith(r["token"]) and r["category"] == info.agent_categories[a]
        # ego frame by hand: rotate the offset from the rear axle by minus the ego heading
        d = np.asarray(log.agents.xy[a, T0], np.float64) - np.asarray(log.ego.xy[T0], np.float64)
        x = d[0] * math.cos(yaw0) + d[1] * math.sin(yaw0)
        y = -d[0] * math.sin(yaw0) + d[1] * math.cos(yaw0)
        assert (r["x"], r["y"]) == pytest.approx((x, y), abs=1e-3)
        assert r["speed"] == pytest.approx(float(np.linalg.norm(log.agents.velocity[a, T0])), abs=1e-4)
        # an agent is found by its slot and by a token prefix
        assert resolve_agent(log, info, T0, a) == a == resolve_agent(log, info, T0, r["token"][:6])


def test_remove_invalidates_from_t0_only(scene):
    log, info = scene
    a = present(log)[0]["slot"]
    out = apply_to_log(log, info, T0, [Remove(a)], H)
    valid, before = np.asarray(out.agents.valid), np.asarray(log.agents.valid)
    assert not valid[a, T0:].any() and np.array_equal(valid[a, :T0], before[a, :T0])
    others = np.arange(valid.shape[0]) != a
    assert np.array_equal(valid[others], before[others])
    assert np.array_equal(np.asarray(out.agents.xy)[others], np.asarray(log.agents.xy)[others])
    # same shapes and dtypes; the input is untouched
    for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(log), strict=True):
        assert np.shape(x) == np.shape(y)
    assert out.agents.xy.dtype == np.float32 and out.agents.valid.dtype == bool
    assert np.asarray(log.agents.valid)[a, T0]


def test_move_starts_the_track_at_the_new_pose(scene):
    log, info = scene
    r = max(present(log), key=lambda r: r["speed"])  # a moving agent
    a = r["slot"]
    x, y = r["x"] - 6.0, r["y"]  # six metres further back
    out = apply_to_log(log, info, T0, [Move(a, x, y)], H)
    xy, xy0 = np.asarray(out.agents.xy[a], np.float64), np.asarray(log.agents.xy[a], np.float64)
    assert global_to_ego(log, T0, xy[T0]) == pytest.approx([x, y], abs=1e-3)
    steps = np.flatnonzero(np.asarray(log.agents.valid[a, T0:])) + T0
    assert np.allclose(xy[steps] - xy[T0], xy0[steps] - xy0[T0], atol=1e-3)  # the same motion, shifted
    assert np.allclose(xy[:T0], xy0[:T0])
    # with a heading: the motion turns with it, about the new centre
    out = apply_to_log(log, info, T0, [Move(a, x, y, math.radians(30.0))], H)
    yaw = np.asarray(out.agents.yaw[a], np.float64)
    assert (yaw[T0] - float(log.ego.yaw[T0])) == pytest.approx(math.radians(30.0), abs=1e-5)
    turn = yaw[T0] - float(log.agents.yaw[a, T0])
    c, s = math.cos(turn), math.sin(turn)
    moved = np.asarray(out.agents.xy[a], np.float64)[steps] - np.asarray(out.agents.xy[a, T0], np.float64)
    want = (xy0[steps] - xy0[T0]) @ np.array([[c, -s], [s, c]]).T
    assert np.allclose(moved, want, atol=1e-3)


def test_speed_retimes_the_logged_path(scene):
    log, info = scene
    r = max(present(log), key=lambda r: r["speed"])
    a = r["slot"]
    logged = np.asarray(log.agents.xy[a], np.float64)[np.asarray(log.agents.valid[a])]
    v = r["speed"] / 2
    out = apply_to_log(log, info, T0, [ChangeSpeed(a, v)], H)
    xy = np.asarray(out.agents.xy[a, T0:], np.float64)
    assert np.asarray(out.agents.valid[a, T0:]).all()
    step = np.hypot(*np.diff(xy, axis=0).T)
    assert np.allclose(step, v * log.dt, rtol=0.02, atol=0.01)  # constant speed
    on_path = xy[np.cumsum(np.r_[0.0, step]) < np.hypot(*np.diff(logged, axis=0).T).sum() - 1.0]
    assert len(on_path) > 10 and dist_to_polyline(on_path, logged).max() < 0.05  # along the logged path
    assert np.linalg.norm(np.asarray(out.agents.velocity[a, T0 + 5])) == pytest.approx(v, rel=0.02)
    # speed 0 stops it where it is
    out = apply_to_log(log, info, T0, [ChangeSpeed(a, 0.0)], H)
    assert np.allclose(np.asarray(out.agents.xy[a, T0:]), np.asarray(log.agents.xy[a, T0]), atol=1e-4)
    assert np.abs(np.asarray(out.agents.velocity[a, T0:])).max() < 1e-4


# -------------------------------------------------------------------------- insert, cross


@pytest.mark.parametrize("behaviour", ["lane", "straight", "static"])
def test_insert_appears_at_the_ego_frame_pose(scene, behaviour):
    log, info = scene
    x = free_spot(log, info, behaviour=behaviour)
    speed = 6.0
    out = apply_to_log(log, info, T0, [Insert("vehicle.car", x, 0.0, 0.0, speed, behaviour)], H)
    a = new_slot(log, out)
    assert global_to_ego(log, T0, np.asarray(out.agents.xy[a, T0])) == pytest.approx([x, 0.0], abs=1e-3)
    assert float(out.agents.yaw[a, T0]) == pytest.approx(float(log.ego.yaw[T0]), abs=1e-5)
    assert int(out.agents.category[a]) == VEHICLE and np.allclose(out.agents.size[a], (4.5, 1.85, 1.55))
    valid = np.asarray(out.agents.valid[a])
    assert valid[T0:].all() and not valid[:T0].any()
    xy = np.asarray(out.agents.xy[a, T0:], np.float64)
    step = np.hypot(*np.diff(xy, axis=0).T)
    if behaviour == "static":
        assert step.max() < 1e-4
        return
    assert np.allclose(step, speed * log.dt, rtol=0.03)
    if behaviour == "straight":
        local = global_to_ego(log, T0, xy)
        assert np.abs(local[:, 1]).max() < 1e-3 and np.allclose(
            local[:, 0], x + speed * log.dt * np.arange(len(xy)), atol=1e-3
        )
    else:  # on a lane centreline once it has joined it
        lanes = np.asarray(log.map.lane_xy)[np.asarray(log.map.lane_valid)].reshape(-1, 2)
        far = xy[np.cumsum(np.r_[0.0, step]) > 12.0][:30]
        d = np.hypot(*(far[:, None] - lanes[None]).transpose(2, 0, 1)).min(axis=1)
        assert len(far) > 5 and d.max() < 0.6


def test_pedestrian_crosses_the_ego_path(scene):
    log, info = scene
    for side, sign in (("right", -1.0), ("left", 1.0)):
        out = apply_to_log(log, info, T0, [PedestrianCrosses(ahead=15.0, speed=1.4, side=side)], H)
        a = new_slot(log, out)
        assert int(out.agents.category[a]) == PEDESTRIAN
        xy = np.asarray(out.agents.xy[a, T0:], np.float64)
        local = global_to_ego(log, T0, xy)
        assert raster_class(log, xy[0]) not in DRIVABLE_CLASSES  # it starts off the road ...
        assert sign * local[0, 1] > 1.0 and 13.0 < local[0, 0] < 17.0  # ... beside the path, 15 m ahead
        speed = np.hypot(*np.diff(xy, axis=0).T) / log.dt
        assert np.allclose(speed, 1.4, rtol=0.02)
        # ... and walks across the ego's path
        heading = np.asarray(out.agents.yaw[a, T0]) - float(log.ego.yaw[T0])
        assert math.sin(heading) == pytest.approx(-sign, abs=0.05)
        assert sign * local[-1, 1] < sign * local[0, 1] - 5.0
        assert np.any(np.isin([raster_class(log, p) for p in xy], DRIVABLE_CLASSES))


def test_edits_compose_in_order(scene):
    log, info = scene
    r = max(present(log), key=lambda r: r["speed"])
    a = r["slot"]
    # a car in the place of an agent: refused while the agent is there, fine once it is removed
    car = Insert("vehicle.car", r["x"], r["y"], math.radians(r["yaw"]), 3.0, "straight")
    with pytest.raises(EditError, match="overlaps agent"):
        validate(log, info, T0, [car, Remove(a)])
    out = apply_to_log(log, info, T0, [Remove(a), car], H)
    b = new_slot(log, out)
    assert b != a and not np.asarray(out.agents.valid[a, T0:]).any()
    assert global_to_ego(log, T0, np.asarray(out.agents.xy[b, T0])) == pytest.approx([r["x"], r["y"]], abs=1e-3)
    # move, then re-time the moved track: starts at the new pose, runs at the new speed
    out = apply_to_log(log, info, T0, [Move(a, r["x"] - 5.0, r["y"]), ChangeSpeed(a, 2.0)], H)
    xy = np.asarray(out.agents.xy[a, T0:], np.float64)
    assert global_to_ego(log, T0, xy[0]) == pytest.approx([r["x"] - 5.0, r["y"]], abs=1e-3)
    assert np.allclose(np.hypot(*np.diff(xy, axis=0).T), 2.0 * log.dt, rtol=0.02)
    # a removed agent cannot be edited again
    with pytest.raises(EditError, match="removed by an earlier edit"):
        validate(log, info, T0, [Remove(a), ChangeSpeed(a, 1.0)])
    # ego edits leave the log alone
    out = apply_to_log(log, info, T0, [EgoEdit("brake")], H)
    assert np.array_equal(np.asarray(out.agents.xy), np.asarray(log.agents.xy))


# -------------------------------------------------------------------------- refusals


def refused(log, info, edits, *words, horizon=H):
    with pytest.raises(EditError) as err:
        apply_to_log(log, info, T0, edits, horizon)
    msg = str(err.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_refusals(scene):
    log, info = scene
    valid = np.asarray(log.agents.valid)
    padding = int(np.flatnonzero(~valid.any(axis=1))[0])
    refused(log, info, [Remove(padding)], f"agent {padding} is not in the scene at t0 = 2.0 s", "--list-agents")
    refused(log, info, [ChangeSpeed(99, 1.0)], "agent 99 is not in the scene")
    absent = [a for a in range(valid.shape[0]) if valid[a].any() and not valid[a, T0]]
    if absent:
        refused(log, info, [Move(absent[0], 10.0, 0.0)], "is not in the scene at t0")
    unknown = next(p for p in ("ffffff", "eeeeee", "dddddd") if not any(t.startswith(p) for t in info.agent_tokens))
    refused(log, info, [Remove(unknown)], f"agent {unknown!r} is not in the scene")
    # off the map, off the road
    refused(log, info, [Insert("vehicle.car", 1000.0, 0.0)], "off the map")
    refused(log, info, [Insert("human.pedestrian.adult", 0.0, -500.0)], "off the map")
    y_off = next(
        y
        for y in np.arange(2.0, 40.0, 0.5)
        if raster_class(log, ego_to_global(log, T0, 5.0, y)[:2]) not in DRIVABLE_CLASSES
    )
    refused(log, info, [Insert("vehicle.car", 5.0, float(y_off) + 3.0, 0.0, 0.0, "static")], "off the road")
    # overlaps: with an agent, with the ego
    r = present(log)[0]
    msg = refused(log, info, [Insert("vehicle.car", r["x"] + 0.5, r["y"], 0.0, 0.0, "static")], "overlaps agent")
    assert f"agent {r['slot']}" in msg
    refused(log, info, [Insert("vehicle.car", 2.0, 0.5, 0.0, 0.0, "static")], "overlaps the ego")
    s = [q for q in present(log) if q["slot"] != r["slot"]][0]
    refused(log, info, [Move(s["slot"], r["x"], r["y"])], "overlaps agent")
    refused(log, info, [Move(s["slot"], 1.0, 0.0)], "overlaps the ego")
    # no free slot
    full = dataclasses.replace(info, agent_tokens=tuple(t or "0" * 32 for t in info.agent_tokens))
    x = free_spot(log, info, behaviour="static")
    refused(log, full, [Insert("vehicle.car", x, 0.0, 0.0, 0.0, "static")], "no free agent slot")
    # the rest
    refused(log, info, [EgoEdit("brake"), EgoEdit("keep")], "at most one")
    refused(log, info, [Remove(r["slot"])], "past the end of the log", horizon=log.num_steps)
    with pytest.raises(EditError, match="outside the log"):
        validate(log, info, log.num_steps + 3, [])


# -------------------------------------------------------------------------- the ego


def speeds_of(log, poses):
    xy = np.concatenate([np.asarray(log.ego.xy[T0], np.float64)[None], poses[:, :2]])
    return np.hypot(*np.diff(xy, axis=0).T) / log.dt


def test_ego_poses_brake_decelerates_and_stops(scene):
    log, _ = scene
    v0 = float(np.linalg.norm(log.ego.velocity[T0]))
    assert v0 > 3.0
    poses = ego_poses(EgoEdit("brake"), log, T0, 40)
    assert poses.shape == (40, 3) and poses.dtype == np.float64
    v = speeds_of(log, poses)
    assert np.all(np.diff(v) <= 1e-6) and v[-1] < 1e-6  # slows down, stops, never reverses
    stop = int(np.argmax(v < 1e-6))
    assert stop * log.dt == pytest.approx(v0 / 4.0, abs=0.15)
    assert np.allclose(np.diff(v[: stop - 1]) / log.dt, -4.0, atol=0.05)
    stopped = poses[stop:, :2]
    assert np.allclose(stopped, stopped[0], atol=1e-6)
    # along the logged path
    logged = np.asarray(log.ego.xy, np.float64)[T0:][np.asarray(log.ego.valid[T0:])]
    assert dist_to_polyline(poses[:, :2], logged).max() < 0.05
    # a harder brake stops sooner
    hard = speeds_of(log, ego_poses(EgoEdit("brake", 8.0), log, T0, 40))
    assert int(np.argmax(hard < 1e-6)) < stop


def test_ego_poses_keep_accelerate_swerve(scene, tmp_path):
    log, _ = scene
    v0 = float(np.linalg.norm(log.ego.velocity[T0]))
    keep = ego_poses(EgoEdit("keep"), log, T0, 30)
    assert np.allclose(speeds_of(log, keep), v0, rtol=0.01)
    acc = speeds_of(log, ego_poses(EgoEdit("accelerate", 1.5), log, T0, 30))
    assert np.allclose(np.diff(acc) / log.dt, 1.5, atol=0.05)
    left = ego_poses(EgoEdit("swerve_left"), log, T0, 40)
    right = ego_poses(EgoEdit("swerve_right", 2.0), log, T0, 40)
    for poses, offset in ((left, 3.5), (right, -2.0)):
        d = poses[:, :2] - keep[:, :2] if len(poses) == len(keep) else poses[:30, :2] - keep[:, :2]
        yaw = keep[: len(d), 2]
        lateral = -np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 1]
        assert lateral[29] == pytest.approx(offset, abs=0.02) and abs(lateral[4]) < abs(offset) / 2
        assert np.all(np.diff(lateral) * np.sign(offset) >= -1e-6)  # smooth, one way
    # a stopped ego cannot swerve
    still = log.replace(ego=log.ego.replace(velocity=np.zeros_like(np.asarray(log.ego.velocity))))
    with pytest.raises(EditError, match="swerve needs"):
        ego_poses(EgoEdit("swerve_left"), still, T0, 10)
    # waypoints: ego-frame poses every 0.5 s
    path = tmp_path / "wp.json"
    path.write_text(json.dumps([[3.0, 0.0], [6.0, 0.5], [9.0, 1.5]]))
    poses = ego_poses(parse_edit(f"ego=waypoints:{path}"), log, T0, 20)
    for k, want in ((4, (3.0, 0.0)), (9, (6.0, 0.5)), (14, (9.0, 1.5))):
        assert global_to_ego(log, T0, poses[k, :2]) == pytest.approx(want, abs=1e-6)
    local = global_to_ego(log, T0, poses[:, :2])
    assert np.allclose(np.diff(local[14:], axis=0), local[15] - local[14], atol=1e-6)  # straight on
    with pytest.raises(EditError, match="no such file"):
        validate(log, None, T0, [EgoEdit("waypoints", path=str(tmp_path / "missing.json"))])


# -------------------------------------------------------------------------- the true counterfactual


def test_synthetic_uids_follow_the_instance_tokens(scene, tiny_records):
    log, info = scene
    rec = tiny_records[SCENE]
    valid = np.asarray(log.agents.valid)
    for a in np.flatnonzero(valid[:, T0]):
        k = rec.uids.index(synth_uid(info, int(a)))
        # the synthetic world's frame is the log's global frame (no offset); T0 is a keyframe
        assert np.allclose(np.asarray(log.agents.xy[a, T0]), rec.center[k, T0], atol=1e-3)


def test_to_synth_edits_give_the_true_counterfactual(scene, plan):
    from drivesim.synth.world import INSERTED_UID_BASE, EgoTrajectory, resimulate

    log, info = scene
    rows = present(log, info)
    gone, moved, slowed = rows[0]["slot"], rows[1], rows[2]["slot"]
    x = free_spot(log, info, behaviour="lane")
    commanded = ego_poses(EgoEdit("brake", 3.0), log, T0, 40)
    edits = [
        Remove(gone),
        Insert("vehicle.car", x, 0.0, 0.0, 5.0, "lane"),
        Move(moved["token"], moved["x"] - 4.0, moved["y"]),
        ChangeSpeed(slowed, 1.0),
        PedestrianCrosses(ahead=15.0, speed=1.4, side="right"),
        EgoEdit("brake", 3.0),
    ]
    out = apply_to_log(log, info, T0, edits, H)
    synth = to_synth_edits(edits, log, info, T0, commanded)
    assert isinstance(synth[-1], EgoTrajectory) and len(synth[-1].poses) == 41
    uids = [synth_uid(info, a) if t else -1 for a, t in enumerate(info.agent_tokens)]
    assert to_synth_edits(edits, log, info, T0, commanded, uids=uids) == synth
    rec = resimulate(plan, float(log.time[T0]), synth)
    k = T0  # the record's step of log time t0
    slot = {u: i for i, u in enumerate(rec.uids)}
    assert not rec.active[slot[synth_uid(info, gone)], k]
    i = slot[synth_uid(info, moved["slot"])]
    assert np.allclose(rec.center[i, k], np.asarray(out.agents.xy[moved["slot"], T0]), atol=0.1)
    assert rec.speed[slot[synth_uid(info, slowed)], k] == pytest.approx(1.0)
    inserted = [i for i, u in enumerate(rec.uids) if u >= INSERTED_UID_BASE]
    new = np.flatnonzero(np.asarray(out.agents.valid[:, T0]) & ~np.asarray(log.agents.valid).any(axis=1))
    assert len(inserted) == len(new) == 2
    for i, a in zip(inserted, new, strict=True):  # in edit order, both in the world and in the log
        assert np.allclose(rec.center[i, k], np.asarray(out.agents.xy[a, T0]), atol=0.1)
        assert rec.active[i, k] and abs(rec.yaw[i, k] - float(out.agents.yaw[a, T0])) < 1e-3
    assert rec.specs[inserted[1]].kind == "pedestrian" and rec.speed[inserted[1], k] == pytest.approx(1.4)
    # the true ego follows the commanded path exactly, braking to a stop
    assert np.allclose(rec.ego_rear[T0 + 1 : T0 + 41], commanded[:, :2], atol=1e-6)
    assert rec.ego_speed[T0 + 35] < 1e-3 < rec.ego_speed[T0 + 5] < rec.ego_speed[T0]

"""The world's traffic lights as stop-line boxes and red intervals: what its vehicles see."""

import json

import numpy as np
import pytest

from drivesim.data.signals import SIGNALS_FILE, red_on_grid
from drivesim.synth.roads import generate_map
from drivesim.synth.scenario import make_plan
from drivesim.synth.signals import red_at, red_intervals, stop_line_boxes, write_signals_file
from drivesim.synth.traffic import DT, Traffic


@pytest.fixture(scope="module")
def smap():
    return generate_map("boston-seaport", 0)


@pytest.fixture(scope="module")
def plan(smap):
    # the ego turns at a signalised intersection: `Traffic.__init__` retimes the lights for it
    return make_plan(smap, 11, "turn_left", duration=10.0)


def test_boxes_are_the_stop_line_strips_of_signalised_intersections(smap):
    boxes = stop_line_boxes(smap)
    assert len(boxes) > 0
    by_lane = {s.lane: s for s in smap.stop_lines}
    for s in range(len(boxes)):
        stop = by_lane[int(boxes.lane[s])]
        node = smap.nodes[int(boxes.node[s])]
        assert node.signal_axis and int(boxes.node[s]) == smap.crossings[stop.crossing].node
        assert int(boxes.road[s]) == smap.lanes[stop.lane].road
        c = stop.polygon.centroid
        assert np.hypot(c.x - boxes.centre[s, 0], c.y - boxes.centre[s, 1]) < 0.02
        assert abs(stop.polygon.area - boxes.size[s, 0] * boxes.size[s, 1]) < 0.02 * stop.polygon.area
    assert np.allclose(boxes.size[:, 0], 0.5)
    assert np.allclose(boxes.size[:, 1], [smap.lanes[int(i)].width for i in boxes.lane])
    # every stop line before a signalised node is there
    signalised = [s for s in smap.stop_lines if smap.nodes[smap.crossings[s.crossing].node].signal_axis]
    assert len(boxes) == len(signalised)


def test_red_is_what_the_stepping_world_sees(plan):
    boxes = stop_line_boxes(plan.map)
    n = int(round(plan.duration / DT))
    times = np.arange(n) / 10
    computed = red_at(plan, boxes, times)
    from_intervals = red_on_grid(red_intervals(plan, boxes), times)

    world = Traffic(plan)
    for _ in range(int(round(plan.warmup / DT))):
        world.step()
    seen = np.zeros((n, len(boxes)), np.int8)
    for k in range(n):
        for s in range(len(boxes)):
            seen[k, s] = plan.map.nodes[int(boxes.node[s])].signal(int(boxes.road[s]), world.signal_time)
        world.step()
    assert np.array_equal(computed, seen == 2)
    assert np.array_equal(from_intervals, seen == 2)
    # the check has teeth: lights change during the scene, amber is not red, and the retimed clock
    # matters (the seed's clock alone gives other states)
    assert (np.diff(seen, axis=0) != 0).sum() > 5
    assert (seen == 1).any() and (seen == 2).any()
    naive = np.random.default_rng([plan.seed, 313]).uniform(0.0, 120.0)
    clock = np.array([world_t + naive for world_t in np.arange(n) * DT])
    naive_red = np.array(
        [[plan.map.nodes[int(nd)].signal(int(rd), u) == 2 for nd, rd in zip(boxes.node, boxes.road, strict=True)]
         for u in clock]
    )  # fmt: skip
    assert not np.array_equal(naive_red, computed)
    # between two world steps a time reads the earlier step
    assert np.array_equal(red_at(plan, boxes, times[:-1] + 0.05), computed[:-1])


def test_intervals_are_half_open_steps(plan):
    boxes = stop_line_boxes(plan.map)
    spans = red_intervals(plan, boxes)
    flat = [(a, b) for s in spans for a, b in s]
    assert flat and all(0.0 <= a < b <= plan.duration for a, b in flat)
    assert all(abs(a * 10 - round(a * 10)) < 1e-9 and abs(b * 10 - round(b * 10)) < 1e-9 for a, b in flat)


def test_signals_file_of_an_old_dataroot_equals_the_generated_one(tiny_dataroot, tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    for entry in tiny_dataroot.iterdir():
        if entry.name != SIGNALS_FILE:
            (root / entry.name).symlink_to(entry)
    path = write_signals_file(root)
    assert path == root / SIGNALS_FILE
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no temporary left
    with open(path) as f, open(tiny_dataroot / SIGNALS_FILE) as g:
        assert json.load(f) == json.load(g)

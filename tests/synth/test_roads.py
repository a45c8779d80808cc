import numpy as np
import pytest
import shapely

from drivesim.synth.roads import LOCATIONS, generate_map


@pytest.fixture(scope="module", params=[("boston-seaport", 0), ("singapore-onenorth", 1)])
def smap(request):
    return generate_map(*request.param)


def test_same_seed_same_map_other_seed_other_map():
    a, b, c = generate_map("boston-seaport", 5), generate_map("boston-seaport", 5), generate_map("boston-seaport", 6)
    assert np.array_equal(a.lane_points()[0], b.lane_points()[0])
    assert a.lane_points()[0].shape != c.lane_points()[0].shape or not np.allclose(
        a.lane_points()[0], c.lane_points()[0]
    )


def test_lane_graph_is_consistent(smap):
    for lane in smap.lanes:
        for s in lane.successors:
            nxt = smap.lanes[s]
            assert lane.index in nxt.predecessors
            # the centreline continues without a jump or a kink
            assert np.hypot(*(lane.poses[-1, :2] - nxt.poses[0, :2])) < 1e-6
            assert np.cos(lane.poses[-1, 2] - nxt.poses[0, 2]) > 1 - 1e-6
        for p in lane.predecessors:
            assert lane.index in smap.lanes[p].successors


def test_lanes_lie_on_the_drivable_area(smap):
    pts, _ = smap.lane_points()
    inside = shapely.contains_xy(smap.drivable.buffer(0.05), pts[:, 0], pts[:, 1])
    assert inside.all()
    # ... and never on a walkway
    assert not shapely.contains_xy(smap.walkway.buffer(-0.05), pts[:, 0], pts[:, 1]).any()


def test_map_has_the_features_scenes_need():
    kinds = set()
    curved = 0
    for i, loc in enumerate(LOCATIONS):
        m = generate_map(loc, i)
        kinds |= {len(n.roads) for n in m.nodes}
        curved += sum(abs(r.reference[0].curvature) > 1e-6 for r in m.roads)
        assert m.crossings and m.stop_lines and m.walkway.area > 0 and len(m.buildings) > 10
        assert any(ln.left >= 0 or ln.right >= 0 for ln in m.lanes)  # multi-lane roads
        assert {ln.turn for ln in m.lanes if ln.is_connector} >= {"left", "right", "straight"}
        # not centred at the origin, like the real maps
        assert min(n.xy.min() for n in m.nodes) > 20.0
    assert {3, 4} <= kinds
    assert curved > 0


def test_right_and_left_hand_traffic():
    boston, singapore = generate_map("boston-seaport", 0), generate_map("singapore-onenorth", 0)
    for smap, sign in ((boston, -1.0), (singapore, 1.0)):
        road = smap.roads[0]
        lane = smap.lanes[road.forward_lanes[0]]
        ref = road.reference[0]
        # the forward lane sits right (boston) or left (singapore) of the reference line
        normal = np.array([-np.sin(ref.yaw), np.cos(ref.yaw)])
        side = (lane.poses[0, :2] - np.array([ref.x, ref.y])) @ normal
        assert np.sign(side) == sign

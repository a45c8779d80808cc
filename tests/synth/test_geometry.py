import math

import numpy as np
import pytest
import shapely
from nuscenes.map_expansion.arcline_path_utils import discretize_lane

from drivesim.synth.geometry import (
    Arc,
    arcline_records,
    connector_path,
    dubins_csc,
    offset_path,
    path_length,
    reverse_path,
    sample_path,
    trim_path,
)


def test_arc_end_pose_closed_form():
    a = Arc(10.0, -5.0, 0.3, 1 / 20.0, 20.0 * math.pi / 2)  # a quarter circle of radius 20
    x, y, yaw = a.end
    # centre is 20 m to the left of the start
    cx, cy = 10.0 - 20 * math.sin(0.3), -5.0 + 20 * math.cos(0.3)
    assert math.hypot(x - cx, y - cy) == pytest.approx(20.0)
    assert yaw == pytest.approx(0.3 + math.pi / 2)


def test_offset_of_arc_is_concentric():
    a = Arc(0.0, 0.0, 0.0, 1 / 30.0, 40.0)
    b = a.offset(3.5)  # towards the centre
    assert 1 / b.curvature == pytest.approx(26.5)
    pts = b.pose_at(np.linspace(0, b.length, 20))[:, :2]
    assert np.allclose(np.hypot(pts[:, 0], pts[:, 1] - 30.0), 26.5)


def test_reverse_and_trim():
    path = [Arc(0.0, 0.0, 0.0, 0.0, 10.0), Arc(10.0, 0.0, 0.0, 0.05, 10.0)]
    rev = reverse_path(path)
    assert np.allclose(rev[0].pose_at(np.array(0.0))[:2], path[-1].end[:2])
    assert np.allclose(rev[-1].end[:2], (0.0, 0.0), atol=1e-9)
    part = trim_path(path, 5.0, 15.0)
    assert path_length(part) == pytest.approx(10.0)
    assert np.allclose(part[0].pose_at(np.array(0.0)), (5.0, 0.0, 0.0))


@pytest.mark.parametrize(
    "p1", [(20.0, 20.0, math.pi / 2), (25.0, -18.0, -math.pi / 2), (30.0, 3.5, 0.0), (40.0, 0.0, 0.0)]
)
def test_connector_reaches_target_pose_without_loops(p1):
    path = connector_path((0.0, 0.0, 0.0), p1)
    x, y, yaw = path[-1].end
    assert (x, y) == pytest.approx(p1[:2], abs=1e-6)
    assert math.cos(yaw - p1[2]) == pytest.approx(1.0, abs=1e-9)
    turning = sum(abs(p.curvature) * p.length for p in path)
    assert turning < abs(p1[2]) + 1.0 + 1e-9


def test_dubins_all_words_end_at_target():
    for path in dubins_csc((0.0, 0.0, 0.2), (30.0, 12.0, -1.0), 6.0):
        assert path[-1].end[:2] == pytest.approx((30.0, 12.0), abs=1e-6)


def test_devkit_discretisation_matches_our_sampling():
    """The map expansion's arcline records reproduce our centrelines in nuscenes-devkit."""
    path = offset_path([Arc(100.0, 50.0, 0.4, 0.0, 12.0)], 1.75)
    path = path + connector_path(path[-1].end, (140.0, 90.0, 1.6))
    ours = sample_path(path, 0.01)[0]
    theirs = np.array(discretize_lane(arcline_records(path), 0.25))
    # every devkit point lies on our curve (to within the chord error of 1 cm sampling)
    d = shapely.distance(shapely.LineString(ours[:, :2]), shapely.points(theirs[:, :2]))
    assert d.max() < 1e-3
    assert theirs[-1, :2] == pytest.approx(ours[-1, :2], abs=1e-6)

"""Ego plans: commands become the kinematics they name; waypoint files in every format agree, and
bad files are refused."""

import json

import numpy as np
import pytest

from drivesim.errors import DataError
from drivesim.model.ego_plans import BRAKE, COMMANDS, kinematic_plan, load_waypoints, motions_from_poses
from drivesim.pipelines.eval_wm import compose


def test_commands():
    keep = kinematic_plan("keep", 8.0, 6)
    np.testing.assert_allclose(keep, np.tile([4.0, 0.0, 0.0], (6, 1)), atol=1e-9)
    brake = kinematic_plan("brake", 8.0, 6)
    assert brake[:, 0].sum() == pytest.approx(8.0**2 / (2 * BRAKE))  # stops after v^2 / 2a
    assert np.all(np.diff(brake[:, 0]) <= 1e-9) and brake[-1, 0] == pytest.approx(0.0)
    assert kinematic_plan("accelerate", 8.0, 6)[:, 0].sum() > keep[:, 0].sum()
    left, right = compose(kinematic_plan("left", 6.0, 6))[-1], compose(kinematic_plan("right", 6.0, 6))[-1]
    assert left[1] > 5 and left[2] > 1.0 and right[1] == pytest.approx(-left[1]) and right[2] == pytest.approx(-left[2])
    lc = compose(kinematic_plan("lane_change_left", 8.0, 6))
    assert lc[-1, 1] == pytest.approx(3.5, abs=1e-6) and abs(lc[-1, 2]) < 1e-6
    for c in COMMANDS:
        assert np.isfinite(kinematic_plan(c, 0.0, 6)).all()
    with pytest.raises(DataError, match="unknown ego command"):
        kinematic_plan("fly", 5.0, 6)


def test_motions_compose_back_to_poses():
    poses = np.array([[0, 0, 0], [3, 0.2, 0.1], [6, 1.0, 0.3], [8, 2.5, 0.7]], np.float64)
    np.testing.assert_allclose(compose(motions_from_poses(poses)), poses[1:], atol=1e-9)


def test_waypoint_formats_agree(tmp_path):
    pts = np.array([[2.0, 0.0], [4.0, 0.5], [6.0, 1.5]])
    (tmp_path / "w.json").write_text(json.dumps({"poses": pts.tolist()}))
    np.save(tmp_path / "w.npy", pts)
    np.savetxt(tmp_path / "w.csv", pts, delimiter=",")
    np.savetxt(tmp_path / "w.txt", pts)
    plans = [load_waypoints(tmp_path / f"w.{ext}") for ext in ("json", "npy", "csv", "txt")]
    for p in plans[1:]:
        np.testing.assert_allclose(p, plans[0])
    np.testing.assert_allclose(compose(plans[0])[:, :2], pts, atol=1e-9)


def test_bad_waypoint_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_waypoints(tmp_path / "missing.json")
    (tmp_path / "nan.csv").write_text("1,0\nnan,0\n")
    with pytest.raises(DataError, match="waypoint 1 holds NaN"):
        load_waypoints(tmp_path / "nan.csv")
    (tmp_path / "shape.json").write_text("[[1, 2, 3, 4]]")
    with pytest.raises(DataError, match="shape"):
        load_waypoints(tmp_path / "shape.json")
    (tmp_path / "text.txt").write_text("forward please\n")
    with pytest.raises(DataError, match="cannot read"):
        load_waypoints(tmp_path / "text.txt")

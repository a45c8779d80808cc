"""`drivesim replay`: an animation and a still, with the six cameras and the BEV panel."""

import numpy as np
import pytest
from PIL import Image

from drivesim.cli import main
from drivesim.data.loader import load_log
from drivesim.viz.replay import box_corners, world_to_grid


@pytest.mark.slow
def test_replay_animation_and_still(tiny_dataroot, tiny_config, tmp_path, capsys):
    out = tmp_path / "replay.gif"
    assert (
        main(["replay", "--quiet", "--dataroot", str(tiny_dataroot), "--scene", "scene-0002", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed
    gif = Image.open(out)
    assert gif.n_frames == int(tiny_config.seconds * 2)
    w, h = gif.size
    assert w > 3 * h / 2  # cameras in two rows of three, the BEV panel beside them
    still = tmp_path / "frame.png"
    assert main(["replay", "--quiet", "--dataroot", str(tiny_dataroot), "--out", str(still), "--frame", "3"]) == 0
    img = np.asarray(Image.open(still).convert("RGB"))
    assert img.std() > 20 and not list(tmp_path.glob(".*"))  # no temporary files left behind


@pytest.mark.slow
def test_sweep_rate_replay(tiny_dataroot, tmp_path):
    out = tmp_path / "fast.gif"
    rc = main(["replay", "--quiet", "--dataroot", str(tiny_dataroot), "--hz", "4", "--out", str(out)])
    assert rc == 0 and Image.open(out).n_frames > 20


def test_bev_geometry_helpers(tiny_nusc):
    log, _ = load_log(tiny_nusc, tiny_nusc.scene[0]["name"])
    ego, yaw = np.asarray(log.ego.xy[0], np.float64), float(log.ego.yaw[0])
    ahead = ego + 10.0 * np.array([np.cos(yaw), np.sin(yaw)])
    left = ego + 10.0 * np.array([-np.sin(yaw), np.cos(yaw)])
    col, row = world_to_grid(ahead, ego, yaw, 40.0, 0.5)
    assert abs(col - 80) < 1e-6 and abs(row - 60) < 1e-6  # straight up from the centre
    col, row = world_to_grid(left, ego, yaw, 40.0, 0.5)
    assert abs(col - 60) < 1e-6 and abs(row - 80) < 1e-6  # to the left
    corners = box_corners(np.zeros(2), 0.0, np.array([4.0, 2.0, 1.5]))
    assert np.allclose(np.abs(corners), [2.0, 1.0])

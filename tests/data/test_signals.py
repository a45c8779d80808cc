"""Traffic lights in loaded logs: the dataroot's signals file, equal to the world's truth."""

import dataclasses

import numpy as np
import pytest

from drivesim.data.dataroot import open_nuscenes
from drivesim.data.loader import LoadConfig, load_log
from drivesim.data.signals import SIGNALS_FILE, log_signals, nearest_first, red_on_grid
from drivesim.errors import DataError
from drivesim.synth.truth import record_log

# small maps: only the signals are compared
LOAD = LoadConfig(max_agents=8, raster_size=64, raster_resolution=2.0, max_lane_segments=32, max_signals=16)
FIELDS = ("centre", "yaw", "size", "valid", "red", "known")


def _copy_without_signals(dataroot, dest):
    """A dataroot that links to every part of `dataroot` but its signals file."""
    dest.mkdir()
    for entry in dataroot.iterdir():
        if entry.name != SIGNALS_FILE:
            (dest / entry.name).symlink_to(entry)
    return dest


def test_red_on_grid_is_half_open():
    red = red_on_grid([[(0.5, 1.5)], [], [(0.0, 0.5), (1.0, 2.0)]], np.array([0.0, 0.5, 1.0, 1.5]))
    assert red.tolist() == [[False, False, True], [True, False, False], [True, False, True], [False, False, True]]


def test_nearest_kept_and_padded():
    centre = np.array([[10.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    order, dist = nearest_first(centre, np.array([[0.0, 0.0], [0.0, 1.0]]))
    assert order.tolist() == [1, 2, 0] and np.allclose(dist, [10.0, 1.0, 5.0])
    red = np.array([[True, False, True]] * 4)
    out = log_signals(centre[order], np.zeros(3), np.ones((3, 2)), red[:, order], max_signals=2)
    assert out["centre"].tolist() == [[1.0, 0.0], [5.0, 0.0]] and out["valid"].all() and out["known"]
    assert out["red"].shape == (4, 2) and not out["red"][:, 0].any() and out["red"][:, 1].all()
    out = log_signals(centre, np.zeros(3), np.ones((3, 2)), red, max_signals=5)
    assert out["valid"].tolist() == [True] * 3 + [False] * 2 and not out["red"][:, 3:].any()


@pytest.mark.parametrize("rate_hz", [2.0, 10.0])
def test_loaded_signals_equal_the_worlds(tiny_nusc, tiny_records, rate_hz):
    cfg = dataclasses.replace(LOAD, rate_hz=rate_hz, camera_source="keyframes" if rate_hz == 2.0 else "any")
    scenes = [s["name"] for s in tiny_nusc.scene]
    if rate_hz != 2.0:
        scenes = scenes[:1]
    n_red = 0
    for name in scenes:
        loaded, _ = load_log(tiny_nusc, name, cfg)
        truth, _ = record_log(tiny_records[name], cfg)
        assert bool(loaded.signals.known) and loaded.signals.red.shape == (loaded.num_steps, 16)
        for f in FIELDS:
            assert np.array_equal(np.asarray(getattr(loaded.signals, f)), np.asarray(getattr(truth.signals, f))), f
        assert np.asarray(loaded.signals.valid).any()
        n_red += int(np.asarray(loaded.signals.red).sum())
    assert n_red > 0


def test_no_file_means_unknown_lights(tiny_dataroot, tiny_config, tmp_path):
    root = _copy_without_signals(tiny_dataroot, tmp_path / "plain")
    nusc = open_nuscenes(root, tiny_config.version)
    log, _ = load_log(nusc, nusc.scene[0]["name"], LOAD)
    assert not bool(log.signals.known)
    assert log.signals.red.shape == (log.num_steps, 16) and not np.asarray(log.signals.red).any()
    assert not np.asarray(log.signals.valid).any()


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"format": 2, "scenes": {}}',
        '{"format": 1, "scenes": {}}',  # no entry for the scene
        '{"format": 1, "scenes": {"TOKEN": {"stop_lines": [{"centre": [1, 2], "yaw": 0, "depth": 0.5}]}}}',
        '{"format": 1, "scenes": {"TOKEN": {"stop_lines": [{"centre": [1, 2], "yaw": 0, "depth": 0.5, '
        '"width": 3, "red": [[2, 1]]}]}}}',
    ],
)
def test_malformed_file_is_a_data_error(tiny_dataroot, tiny_config, tmp_path, text):
    root = _copy_without_signals(tiny_dataroot, tmp_path / "bad")
    nusc = open_nuscenes(root, tiny_config.version)
    scene = nusc.scene[0]
    (root / SIGNALS_FILE).write_text(text.replace("TOKEN", scene["token"]))
    with pytest.raises(DataError, match=SIGNALS_FILE) as e:
        load_log(nusc, scene["name"], LOAD)
    assert "\n" not in str(e.value) and "regenerate" in str(e.value)

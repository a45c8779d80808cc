"""Prediction pictures: the perception probe's read drawn beside a panel."""

import numpy as np

from drivesim.data.classes import OCC_DRIVABLE, OCC_VEHICLE
from drivesim.viz.prediction import _panel, prediction_frames, probe_classes


def test_probe_classes_draw_agents_over_road():
    logits = np.full((4, 4, 2), -5.0)
    logits[0, 0] = (3.0, 3.0)  # agent on road: an agent
    logits[1, 1] = (-3.0, 3.0)  # road
    logits[2, 2] = (3.0, -3.0)  # agent off road
    c = probe_classes(logits)
    assert c[0, 0] == OCC_VEHICLE and c[1, 1] == OCC_DRIVABLE and c[2, 2] == OCC_VEHICLE and c[3, 3] == 0


def test_a_panel_with_a_read_is_wider_and_shows_it():
    views = np.zeros((6, 32, 64, 3), np.uint8)
    grid = np.zeros((80, 80), np.int32)
    read = np.full((80, 80, 2), -5.0)
    read[30:50, 30:50, 0] = 5.0
    plain, with_read = _panel(views, grid, "x", 96), _panel(views, grid, "x", 96, read)
    assert with_read.size[0] > plain.size[0] and with_read.size[1] == plain.size[1]
    extra = np.asarray(with_read)[:, plain.size[0] :]
    assert extra.std() > 1.0  # the read is drawn, not left blank
    frames = prediction_frames(
        np.zeros((2, 6, 32, 64, 3), np.uint8), np.zeros((2, 80, 80), np.int32), np.zeros((1, 1, 6, 32, 64, 3), np.uint8),
        np.zeros((1, 1, 80, 80), np.int32), reads={"context": np.stack([read] * 2), "samples": read[None, None]},
    )  # fmt: skip
    assert len(frames) == 3 and frames[0].size[0] > 2 * plain.size[0]

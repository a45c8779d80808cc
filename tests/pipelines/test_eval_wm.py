"""The evaluation's bookkeeping: clip selection, per-horizon scores, the controllability report
(effective edits only in the headline) and the targets' pass/fail logic."""

import math

import numpy as np
import pytest

from drivesim.metrics.prediction import IouAccumulator
from drivesim.model.config import WorldModelConfig
from drivesim.pipelines.eval_wm import (
    EvalConfig,
    Scores,
    _controllability_report,
    chained_motion,
    compose,
    forecast_clips,
    horizon_index,
    targets,
)


def test_horizons_and_clips():
    assert [horizon_index(s) for s in (1, 2, 3)] == [1, 3, 5]
    cfg = WorldModelConfig()
    clips = forecast_clips([40, 12, 9], cfg, stride=2, max_clips=None)
    assert clips[:2] == [(0, 0), (0, 2)] and (0, 30) in clips and (0, 32) not in clips
    assert [c for c in clips if c[0] == 1] == [(1, 0), (1, 2)] and not [c for c in clips if c[0] == 2]
    few = forecast_clips([40, 40], cfg, stride=2, max_clips=5)
    assert len(few) == 5 and few[0] == (0, 0) and few[-1] == (1, 30)


def test_scores_per_horizon():
    s = Scores()
    truth = np.zeros((2, 6, 8, 8), np.int32)
    truth[:, :, 2:4, 2:4] = 5
    pred = truth.copy()
    pred[:, 3:] = 0  # right up to 1.5 s, empty after
    images = np.full((2, 6, 6, 8, 8, 3), 100, np.uint8)
    s.add(pred, truth, images, images)
    r = s.result()
    assert r["occ_iou"]["1s"] == 1.0 and r["occ_iou"]["2s"] == 0.0 and r["occ_iou"]["3s"] == 0.0
    assert r["psnr"]["1s"] > 60 and len(r["ssim_per_view"]["3s"]) == 6
    assert Scores(images=False).result()["psnr"] == {"1s": None, "2s": None, "3s": None}


def test_compose_and_chained_motion_on_a_shifted_map():
    poses = compose(np.array([[2.0, 0.0, math.pi / 2], [2.0, 0.0, 0.0]]))
    np.testing.assert_allclose(poses[-1], [2.0, 2.0, math.pi / 2], atol=1e-9)
    world = np.zeros((120, 80), np.int32)  # rows: x forward is up (row 0 is x = +40 m)
    world[:, 30:50] = 1  # a road along x, its centre line, and two cross streets
    world[:, 39] = 2
    world[52:58, :] = 1
    world[83:86, 50:] = 4
    grid = world[40:120]
    # the ego moves 3 m forward per keyframe: the map slides 3 rows down (towards -x)
    shifted = [world[40 - 3 * (k + 1) : 120 - 3 * (k + 1)] for k in range(3)]
    xy = chained_motion(grid, shifted, 3)[:2]
    assert abs(abs(xy[0]) - 9.0) < 1.0 and abs(xy[1]) < 1.0


def _acc(iou_cells: int):
    """An accumulator whose occupied IoU is iou_cells / 10."""
    a = IouAccumulator()
    truth = np.zeros((1, 10), np.int32)
    truth[0, :10] = 1
    pred = np.zeros_like(truth)
    pred[0, :iou_cells] = 1
    a.update(pred.reshape(1, 1, 10), truth.reshape(1, 1, 10))
    return a


def test_controllability_headline_pools_only_effective_edits():
    ecfg = EvalConfig(edits=("brake", "turn_left"))
    acc = {c: {n: _acc(8) for n in ("model", "layout", "ignore_action")} for c in ("logged", "brake", "turn_left")}
    effective = {n: _acc(6) for n in ("model", "layout", "ignore_action")}

    def row(edit, effect, err):
        return {"scene": "s", "t0": 1.5, "edit": edit, "commanded_xy": [9, 0], "implied_xy": [9 + err, 0],
                "error_m": err, "estimator_error_m": 0.1, "edit_effect_m": effect, "psnr": 20.0}  # fmt: skip

    rows = [row("logged", 0.0, 0.3), row("brake", 4.0, 0.5), row("turn_left", 0.0, 7.0)]
    rows[1]["closer_to_edited"], rows[2]["closer_to_edited"] = True, False
    psnr = {c: [20.0] for c in acc}
    out = _controllability_report(acc, effective, psnr, rows, [], ecfg)
    assert out["iou_ratio"] == pytest.approx(0.6 / 0.8) and out["edited_cases"] == 1
    assert out["edited_displacement_error_3s_m"] == pytest.approx(0.5)  # turn_left did nothing: not scored
    assert out["per_edit"]["turn_left"]["effective_cases"] == 0 and out["per_edit"]["brake"]["effective_cases"] == 1
    # the action response counts the effective edits only (turn_left moved nothing)
    assert out["action_response"]["closer_to_edited_fraction"] == 1.0 and out["action_response"]["cases"] == 1
    assert out["action_response"]["ego_warp_closer_to_edited_fraction"] is None


def test_targets_pass_and_fail():
    def method(miou, psnr):
        return {"occ_miou": dict(zip(("1s", "2s", "3s"), miou, strict=True)),
                "occ_iou": dict(zip(("1s", "2s", "3s"), miou, strict=True)),
                "psnr": dict(zip(("1s", "2s", "3s"), psnr, strict=True))}  # fmt: skip

    report = {
        "model": method((0.40, 0.30, 0.25), (20, 19, 18)),
        "copy_last": method((0.20, 0.20, 0.20), (19, 18, 17)),
        "const_velocity": method((0.5, 0.29, 0.24), (None, None, None)),
        "controllability": {"iou_ratio": 0.95, "edited_displacement_error_3s_m_well_posed": 0.7},
    }
    from drivesim.pipelines.eval_wm import ratios

    report["ratios"] = ratios(report)
    met = targets(report)["met"]
    assert met == {
        "miou_vs_copy_last_1s >= 1.75": True, "miou_vs_copy_last_2s >= 1.45": True,
        "miou_vs_copy_last_3s >= 1.25": True, "miou_above_const_velocity_2s": True,
        "miou_above_const_velocity_3s": True, "psnr_above_copy_last": True,
        "controllability_iou_within_10pct": True, "displacement_error_3s_m < 1": True,
    }  # fmt: skip
    # the camera targets: above the ego warp, the probe's read against its read of the truth, the action response
    report["ego_warp"] = method((0.1, 0.1, 0.1), (21, 18, 16))
    report["model"]["probe_agent_iou"] = {"1s": 0.30, "2s": 0.2, "3s": 0.10}
    report["true_frames"] = {"probe_agent_iou": {"1s": 0.40, "2s": 0.4, "3s": 0.30}}
    report["controllability"]["action_response"] = {"closer_to_edited_fraction": 0.95}
    met = targets(report)["met"]
    assert met["probe_agent_iou_1s >= 0.7 x true frames"] and not met["probe_agent_iou_3s >= 0.5 x true frames"]
    assert not met["psnr_above_ego_warp"] and met["action_response_closer_to_edited >= 0.9"]
    report["ego_warp"]["psnr"]["1s"] = 19
    assert targets(report)["met"]["psnr_above_ego_warp"]
    for k in ("ego_warp", "true_frames"):
        del report[k]
    del report["model"]["probe_agent_iou"], report["controllability"]["action_response"]
    report["model"]["psnr"]["3s"] = 16.0
    report["model"]["occ_miou"]["2s"] = 0.28
    report["controllability"]["iou_ratio"] = 0.85
    met = targets({**report, "ratios": ratios(report)})["met"]
    assert not met["psnr_above_copy_last"] and not met["miou_vs_copy_last_2s >= 1.45"]
    assert not met["miou_above_const_velocity_2s"] and not met["controllability_iou_within_10pct"]

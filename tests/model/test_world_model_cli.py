"""End to end on the tiny config: `drivesim train` -> `drivesim eval-wm` -> `drivesim predict`, and
the CLI's clear errors for a missing checkpoint, a cache at another resolution, NaN waypoints and a
horizon beyond the config."""

import json
import textwrap

import numpy as np
import pytest

from drivesim.cli import main

pytestmark = pytest.mark.slow  # trains a model


@pytest.fixture(scope="module")
def trained(tiny_dataroot, tmp_path_factory):
    work = tmp_path_factory.mktemp("wm")
    exp = work / "wm_test.py"
    exp.write_text(
        textwrap.dedent(f'''
        from drivesim.model.config import WorldModelConfig
        from drivesim.pipelines.experiment import Experiment, TrainingData
        from drivesim.train import TrainConfig

        def get_config(quick=False):
            step = TrainConfig(steps=4, batch_size=4, learning_rate=1e-3, warmup_steps=1, log_every=2,
                               checkpoint_every=4)
            return Experiment(
                model=WorldModelConfig.tiny(occ_refine=True),
                data=TrainingData(cache="{work / "cache"}", dataroot="{tiny_dataroot}", version="v1.0-mini"),
                tokenizer=step, dynamics=step, refiner=step, refiner_clips=4,
                calibration=TrainingData(cache="{work / "cache"}", dataroot="{tiny_dataroot}", version="v1.0-mini"),
                calibration_clips=4)
    ''')
    )
    assert main(["train", "--config", str(exp), "--workdir", str(work / "run"), "--quiet"]) == 0
    return work, work / "run" / "world_model.npz"


def test_train_writes_a_model_and_curves(trained):
    work, ckpt = trained
    assert ckpt.exists() and ckpt.with_suffix(".json").exists()
    for stage in ("tokenizer", "dynamics", "refiner"):
        lines = (work / "run" / stage / "metrics.jsonl").read_text().splitlines()
        assert lines and all(np.isfinite(json.loads(x)["loss"]) for x in lines)
        assert (work / "run" / stage / "loss.png").exists()
    # stage 4: the decision bias, fitted on the (here: the same tiny) validation set, is in the model
    cal = json.loads((work / "run" / "calibration.json").read_text())
    assert cal["clips"] == 4 and cal["miou_after"] >= cal["miou_before"]
    stored = np.load(ckpt)["occ_bias"]
    np.testing.assert_allclose(stored, cal["bias"])


def test_eval_wm_writes_the_documented_report(trained, tiny_dataroot, tmp_path, capsys):
    work, ckpt = trained
    out = tmp_path / "eval.json"
    argv = ["eval-wm", "--dataroot", str(tiny_dataroot), "--checkpoint", str(ckpt), "--cache", str(work / "cache"),
            "--out", str(out), "--max-clips", "3", "--edit-scenes", "1", "--edits", "brake,accelerate", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    for method in ("model", "model_layout", "copy_last", "const_velocity"):
        for metric in ("occ_iou", "occ_miou", "psnr", "ssim"):
            assert set(report[method][metric]) == {"1s", "2s", "3s"}, (method, metric)
        for h in ("1s", "2s", "3s"):
            assert 0.0 <= report[method]["occ_iou"][h] <= 1.0 and 0.0 <= report[method]["occ_miou"][h] <= 1.0
    assert report["copy_last"]["psnr"]["1s"] > 5 and report["const_velocity"]["psnr"]["1s"] is None
    # the reconstruction is scored too, and every model / baseline ratio is reported
    assert set(report["reconstruction"]["occ_iou"]) == {"1s", "2s", "3s"}
    assert report["ratios"]["model/copy_last/occ_miou"]["1s"] == pytest.approx(
        report["model"]["occ_miou"]["1s"] / report["copy_last"]["occ_miou"]["1s"]
    )
    assert report["clips"] == 3 and len(report["model"]["psnr_per_view"]["1s"]) == 6
    ctrl = report["controllability"]
    assert set(ctrl["per_edit"]) <= {"logged", "brake", "accelerate"} and "logged" in ctrl["per_edit"]
    assert all(np.isfinite(c["commanded_xy"]).all() for c in ctrl["cases"])
    assert "met" in report["targets"] and out.with_suffix(".png").exists()
    # the camera baselines and judges: ego warp, the perception probe's reads, the action response
    assert set(report["ego_warp"]["psnr"]) == {"1s", "2s", "3s"} and report["ego_warp"]["psnr"]["1s"] > 5
    for method in ("model", "ego_warp", "true_frames", "camera_refiner", "camera_refiner_guided"):
        for metric in ("probe_agent_iou", "probe_drivable_iou"):
            assert set(report[method][metric]) == {"1s", "2s", "3s"}, (method, metric)
            assert all(0.0 <= v <= 1.0 for v in report[method][metric].values() if v == v), (method, metric)
    assert report["true_frames"]["probe_drivable_iou"]["1s"] > 0.3  # the shipped probe reads true frames
    assert set(report["camera_refiner"]["psnr"]) == {"1s", "2s", "3s"}
    if "action_response" in report:
        assert 0.0 <= report["action_response"]["closer_to_edited_fraction"] <= 1.0
    assert "psnr_above_ego_warp" in report["targets"]["met"]
    assert "forecasts on 3 clips" in capsys.readouterr().out


def test_predict_writes_samples_beside_the_truth(trained, tiny_dataroot, tmp_path, capsys):
    _, ckpt = trained
    out = tmp_path / "pred"
    argv = ["predict", "--dataroot", str(tiny_dataroot), "--checkpoint", str(ckpt), "--scene", "scene-0001",
            "--t0", "1.5", "--ego", "brake", "--samples", "2", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["truth"] == "re-simulation" and len(summary["scores_vs_truth"]) == 2
    data = np.load(out / "prediction.npz")
    assert data["bev"].shape == (2, 6, 80, 80) and data["images"].shape == (2, 6, 6, 32, 64, 3)
    assert (out / "prediction.gif").exists()
    # the logged plan, and a waypoint file, on the same scene
    assert main(argv[:9] + ["--ego", "log", "--samples", "1", "--out", str(tmp_path / "log"), "--quiet"]) == 0
    assert json.loads((tmp_path / "log" / "summary.json").read_text())["truth"] == "log"
    wp = tmp_path / "wp.csv"
    np.savetxt(wp, np.array([[2.0, 0.0], [4.0, 0.2], [6.0, 0.6], [8.0, 1.2]]), delimiter=",")
    assert main(argv[:9] + ["--ego", str(wp), "--samples", "1", "--out", str(tmp_path / "wp"), "--quiet"]) == 0
    assert np.load(tmp_path / "wp" / "prediction.npz")["bev"].shape == (1, 4, 80, 80)


def test_bad_input_gets_one_line_errors(trained, tiny_dataroot, tmp_path, capsys):
    work, ckpt = trained
    base = ["--dataroot", str(tiny_dataroot), "--checkpoint", str(ckpt)]
    pred = ["predict", *base, "--scene", "scene-0001", "--t0", "1.5", "--quiet"]

    def fails(argv, *needles):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(n in err for n in needles), err

    fails(["predict", "--checkpoint", str(tmp_path / "none.npz"), "--scene", "scene-0001", "--t0", "2"],
          "none.npz", "not found")  # fmt: skip
    assert main(["cache", "--dataroot", str(tiny_dataroot), "--out", str(tmp_path / "c32"), "--image-size", "32x18",
                 "--workers", "1", "--quiet"]) == 0  # fmt: skip
    fails(["eval-wm", *base, "--cache", str(tmp_path / "c32"), "--out", str(tmp_path / "e.json"), "--quiet"],
          "32x18", "--image-size 64x36")  # fmt: skip
    assert not (tmp_path / "e.json").exists()
    nan = tmp_path / "nan.json"
    nan.write_text("[[2.0, 0.0], [NaN, 0.0]]")
    fails([*pred, "--ego", str(nan), "--out", str(tmp_path / "p1")], "nan.json", "NaN")
    fails([*pred, "--ego", "keep", "--horizon", "30", "--out", str(tmp_path / "p2")], "max_horizon")
    fails([*pred, "--ego", "teleport", "--out", str(tmp_path / "p3")], "teleport")
    fails([*pred[:-3], "--t0", "0.5", "--out", str(tmp_path / "p4")], "context")
    assert not any((tmp_path / p).exists() for p in ("p1", "p2", "p3", "p4"))

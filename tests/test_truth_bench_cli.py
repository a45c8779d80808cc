"""`drivesim bench --engine truth` end to end on the tiny synthetic set, and its refusal of data it
cannot re-simulate."""

import json
import shutil

from drivesim.cli import main

ARGS = ["bench", "--quiet", "--engine", "truth", "--horizon", "2", "--scenarios", "3"]


def test_truth_bench_writes_results(tiny_dataroot, tmp_path, capsys):
    out = tmp_path / "truth"
    rc = main([*ARGS, "--dataroot", str(tiny_dataroot), "--out", str(out), "--planners", "expert,constant_velocity"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == 1 and res["engine"] == "truth" and res["agents"] == "world"
    assert set(res["planners"]) == {"expert", "constant_velocity"}
    n = res["config"]["scenarios"]
    assert n >= 2 and len(res["scenarios"]) == 2 * n and res["config"]["annotation_range"] == 60.0
    for p in res["planners"].values():
        for k in ("pdms", "nc", "dac", "ttc", "ep", "c", "cls"):
            assert 0.0 <= p[k] <= 1.0
    assert res["planners"]["expert"]["pdms"] > 0.9 and res["ranking"][0] == "expert"
    assert (out / "results.csv").exists() and (out / "worst_scenarios.png").exists()


def test_a_dataroot_without_a_recipe_is_refused(tiny_dataroot, tmp_path, capsys):
    from drivesim.synth.dataset import RECIPE_FILE

    plain = tmp_path / "plain"  # the same nuScenes files, without the synthetic world's recipe
    shutil.copytree(tiny_dataroot, plain, ignore=shutil.ignore_patterns(RECIPE_FILE, "samples", "sweeps"))
    rc = main([*ARGS, "--dataroot", str(plain), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert str(plain) in err and "drivesim synth" in err
    assert not (tmp_path / "o").exists()


def test_truth_agents_are_the_worlds(tiny_dataroot, tmp_path, capsys):
    rc = main([*ARGS, "--agents", "reactive", "--dataroot", str(tiny_dataroot), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--agents reactive" in err

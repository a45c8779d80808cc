"""`drivesim bench --engine truth` end to end on the tiny synthetic set, and its refusal of data it
cannot re-simulate."""

import json
import shutil

import pytest

from drivesim.cli import main

pytestmark = pytest.mark.slow  # runs drivesim bench --engine truth end to end

ARGS = ["bench", "--quiet", "--engine", "truth", "--horizon", "2", "--scenarios", "3"]


PLANNERS = ["--planners", "expert,constant_velocity"]


@pytest.fixture(scope="module")
def first_run(tiny_dataroot, tmp_path_factory):
    out = tmp_path_factory.mktemp("truth") / "b"
    assert main([*ARGS, "--dataroot", str(tiny_dataroot), "--out", str(out), *PLANNERS]) == 0
    return out


def test_truth_bench_writes_results(first_run):
    out = first_run
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


def test_same_seed_same_scores(first_run, tiny_dataroot, tmp_path):
    assert main([*ARGS, "--dataroot", str(tiny_dataroot), "--out", str(tmp_path / "again"), *PLANNERS]) == 0
    a = json.loads((first_run / "results.json").read_text())
    b = json.loads((tmp_path / "again" / "results.json").read_text())
    assert a["scenarios"] == b["scenarios"]  # every score of every scenario, bit for bit
    assert all(a["planners"][n]["pdms_ci"] == b["planners"][n]["pdms_ci"] for n in a["planners"])


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

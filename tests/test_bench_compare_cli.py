"""`drivesim bench --compare` end to end on the tiny synthetic set: the kinematic engine compared
with the truth engine, and the truth engine compared with the kinematic one; each run's compared
scores are the other run's own."""

import json

import numpy as np
import pytest

from drivesim.cli import main

pytestmark = pytest.mark.slow  # runs the kinematic and the truth engine twice each

ARGS = ["bench", "--quiet", "--horizon", "2", "--scenarios", "3", "--agents", "reactive"]
PLANNERS = ["--planners", "expert,idm,constant_velocity"]


def run(dataroot, out, *extra) -> dict:
    assert main([*ARGS, "--dataroot", str(dataroot), "--out", str(out), *PLANNERS, *extra]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def kinematic_vs_truth(tiny_dataroot, tmp_path_factory):
    return run(tiny_dataroot, tmp_path_factory.mktemp("compare") / "k", "--compare", "truth")


@pytest.fixture(scope="module")
def truth_vs_kinematic(tiny_dataroot, tmp_path_factory):
    return run(tiny_dataroot, tmp_path_factory.mktemp("compare") / "t", "--engine", "truth", "--compare", "kinematic")


def test_compare_truth_writes_the_agreement(kinematic_vs_truth):
    res = kinematic_vs_truth
    assert res["engine"] == "kinematic" and res["agents"] == "idm" and res["compare"] == "truth"
    ag = res["agreement"]
    assert ag["compare"] == "truth" and ag["compare_agents"] == "world"
    assert {"kendall_tau", "kendall_tau_ci", "spearman_rho", "spearman_rho_ci", "max_abs_gap"} <= set(ag)
    assert ag["scenarios"] == res["config"]["scenarios"] >= 2
    lo, hi = ag["kendall_tau_ci"]
    assert -1.0 <= lo <= hi <= 1.0 and -1.0 <= ag["kendall_tau"] <= 1.0 and -1.0 <= ag["spearman_rho"] <= 1.0
    for p in res["planners"].values():
        assert 0.0 <= p["pdms_reference"] <= 1.0
        assert p["pdms_gap"] == pytest.approx(p["pdms"] - p["pdms_reference"], abs=1e-6)  # float32 scores
    assert sorted(res["ranking_reference"]) == sorted(res["planners"])
    assert all("pdms_reference" in row for row in res["scenarios"])


def test_each_runs_compared_scores_are_the_others_own(kinematic_vs_truth, truth_vs_kinematic):
    k, t = kinematic_vs_truth, truth_vs_kinematic
    assert t["engine"] == "truth" and t["agents"] == "world" and t["agreement"]["compare_agents"] == "idm"
    assert [(r["planner"], r["scene"], r["t0"]) for r in k["scenarios"]] == [
        (r["planner"], r["scene"], r["t0"]) for r in t["scenarios"]
    ]  # the same scenarios, in the same order
    # the truth engine's own scores, bit for bit, are what the kinematic run reports as its reference
    np.testing.assert_array_equal([r["pdms_reference"] for r in k["scenarios"]], [r["pdms"] for r in t["scenarios"]])
    np.testing.assert_array_equal([r["pdms"] for r in k["scenarios"]], [r["pdms_reference"] for r in t["scenarios"]])
    for name in k["planners"]:
        assert k["planners"][name]["pdms_reference"] == t["planners"][name]["pdms"]
        assert t["planners"][name]["pdms_reference"] == k["planners"][name]["pdms"]
    assert k["agreement"]["kendall_tau"] == t["agreement"]["kendall_tau"]  # tau is symmetric
    assert k["ranking_reference"] == t["ranking"] and t["ranking_reference"] == k["ranking"]

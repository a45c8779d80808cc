"""`drivesim bench` end to end on the tiny synthetic set."""

import json
import textwrap

import pytest

from drivesim.cli import main

pytestmark = pytest.mark.slow  # runs drivesim bench end to end several times

ARGS = ["bench", "--quiet", "--horizon", "2", "--batch", "4"]


def bench(capsys, dataroot, out, *extra):
    rc = main([*ARGS, "--dataroot", str(dataroot), "--out", str(out), *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err.strip()


@pytest.fixture(scope="module")
def first_run(tiny_dataroot, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b"
    rc = main(
        [*ARGS, "--dataroot", str(tiny_dataroot), "--out", str(out), "--planners", "expert,idm,constant_velocity"]
    )
    assert rc == 0
    return out


def test_outputs_and_schema(first_run, tiny_config):
    res = json.loads((first_run / "results.json").read_text())
    assert res["schema"] == 1 and res["engine"] == "kinematic" and res["agents"] == "log"
    assert set(res["planners"]) == {"expert", "idm", "constant_velocity"}
    assert res["score"] == "pdms"
    for p in res["planners"].values():
        for k in ("pdms", "nc", "dac", "ttc", "ep", "c", "cls", "epdms", "ddc", "tlc", "lk", "hc", "ec"):
            assert 0.0 <= p[k] <= 1.0
        for k in ("pdms", "epdms"):
            lo, hi = p[f"{k}_ci"]
            assert lo <= p[k] + 1e-9 and p[k] <= hi + 1e-9
        assert p["tlc_scenarios"] == res["config"]["scenarios"]  # the synthetic set writes its lights
    n = res["config"]["scenarios"]
    assert n >= 4 and len(res["scenarios"]) == 3 * n
    row = res["scenarios"][0]
    assert {"planner", "scene", "t0", "tags", "status", "pdms", "ego_progress", "epdms", "tlc", "lk"} <= set(row)
    for r in res["scenarios"]:  # EPDMS's formula, from the reported (filtered) terms
        if r["dac"] == 1.0:
            weighted = (5 * r["ep"] + 5 * r["ttc"] + 2 * r["lk"] + 2 * r["hc"] + 2 * r["ec"]) / 16
            assert r["epdms"] == pytest.approx(r["nc"] * r["ddc"] * r["tlc"] * weighted, abs=1e-5)
    assert res["ranking"][0] == "expert"
    prov = res["provenance"]  # where the numbers came from: the tiny set's version and seed, no checkpoint
    assert {"commit", "dirty", "command", "checkpoint_sha256", "dataset", "machine"} <= set(prov)
    assert prov["checkpoint_sha256"] is None and prov["dataset"]["seed"] == tiny_config.seed
    assert prov["command"].startswith("drivesim bench ")  # the verb as typed, not the test runner
    assert prov["dataset"]["version"] == res["config"]["version"] and prov["machine"]["jax"]
    csv = (first_run / "results.csv").read_text().splitlines()
    assert csv[0].startswith("planner,scene,t0") and len(csv) == 1 + 3 * n + 3
    assert all(k in csv[0].split(",") for k in ("epdms", "ddc", "tlc", "lk", "hc", "ec"))
    for png in ("metrics.png", "pdms_distribution.png", "worst_scenarios.png"):
        assert (first_run / png).stat().st_size > 10_000


def test_score_epdms_ranks_by_epdms(first_run, tiny_dataroot, tmp_path, capsys):
    # two of the first run's planners (the cheapest to compile): the same scores, another headline
    rc, _, _ = bench(
        capsys, tiny_dataroot, tmp_path / "e", "--planners", "expert,constant_velocity", "--score", "epdms"
    )
    assert rc == 0
    a = json.loads((first_run / "results.json").read_text())
    b = json.loads((tmp_path / "e" / "results.json").read_text())
    assert b["score"] == "epdms"
    assert b["ranking"] == sorted(b["planners"], key=lambda k: -b["planners"][k]["epdms"])
    for name in b["planners"]:  # the same scores, only the headline differs
        assert a["planners"][name]["epdms"] == b["planners"][name]["epdms"]


def test_deterministic_for_a_seed(first_run, tiny_dataroot, tmp_path, capsys):
    rc, _, _ = bench(capsys, tiny_dataroot, tmp_path / "again", "--planners", "expert,idm,constant_velocity")
    assert rc == 0
    a = json.loads((first_run / "results.json").read_text())
    b = json.loads((tmp_path / "again" / "results.json").read_text())
    assert a["planners"].keys() == b["planners"].keys()
    for name in a["planners"]:
        for k in ("pdms", "pdms_ci", "nc", "ep", "c"):
            assert a["planners"][name][k] == b["planners"][name][k]


def test_user_planner_module(tiny_dataroot, tmp_path, capsys, monkeypatch):
    pkg = tmp_path / "my_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "creep.py").write_text(
        textwrap.dedent(
            """
            import dataclasses
            import jax.numpy as jnp
            from drivesim.data.types import Trajectory

            @dataclasses.dataclass(frozen=True)
            class Creep:
                name: str = "creep"
                def init(self, rng):
                    return None
                def plan(self, params, obs, rng):
                    t = (jnp.arange(40) + 1) * 0.1
                    return Trajectory(xy=jnp.stack([1.0 * t, 0 * t], -1), yaw=0 * t)

            def make():
                return Creep()

            def broken():
                @dataclasses.dataclass(frozen=True)
                class Bad(Creep):
                    name: str = "bad_shape"
                    def plan(self, params, obs, rng):
                        return Trajectory(xy=jnp.zeros((40, 3)), yaw=jnp.zeros(40))
                return Bad()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rc, out, err = bench(capsys, tiny_dataroot, tmp_path / "o", "--planner-module", "my_pkg.creep:make")
    assert rc == 0, err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert list(res["planners"]) == ["creep"] and res["planners"]["creep"]["ep"] < 0.5
    rc, _, err = bench(capsys, tiny_dataroot, tmp_path / "o2", "--planner-module", "my_pkg.creep:broken")
    assert rc == 2 and "bad_shape" in err and "Traceback" not in err


def test_bad_input(tiny_dataroot, tmp_path, capsys):
    rc, _, err = bench(capsys, tiny_dataroot, tmp_path / "x", "--planners", "idm,nope")
    assert rc == 2 and "unknown planner 'nope'" in err
    rc, _, err = bench(capsys, tiny_dataroot, tmp_path / "x", "--planner-module", "no_such_pkg.mod:make")
    assert rc == 2 and "failed to import" in err
    rc, _, err = bench(capsys, tiny_dataroot, tmp_path / "x", "--planners", "idm", "--horizon", "60")
    assert rc == 2 and "no log is long enough" in err
    assert not (tmp_path / "x").exists()

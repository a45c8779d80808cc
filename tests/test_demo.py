"""The main job, shrunk: `drivesim demo` replays, predicts, runs a counterfactual beside its truth,
benchmarks planners under both engines and writes index.html, whose images Chromium renders."""

import json
import re

import pytest

from drivesim import cli
from drivesim.pipelines import demo
from drivesim.viz.report import find_chromium, render_check

pytestmark = pytest.mark.slow  # the whole demo, shrunk


@pytest.mark.skipif(not demo.DEFAULT_CHECKPOINT.exists(), reason="the shipped world model is not in this checkout")
def test_demo_writes_a_report_that_renders(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        demo, "DEMO_BENCH", {**demo.DEMO_BENCH, "scenarios": 2, "horizon": 2.0, "planners": "idm,constant_velocity"}
    )
    monkeypatch.setattr(demo, "DEMO_COUNTERFACTUAL", {**demo.DEMO_COUNTERFACTUAL, "horizon": 1.0, "samples": 1})
    predict = demo.predict  # the demo's 3 futures of 3 s, shrunk to 2 of 1 s
    monkeypatch.setattr(demo, "predict", lambda *a, **kw: predict(*a, **{**kw, "samples": 2, "horizon": 1.0}))
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quiet", "--out", str(out)]) == 0
    index = out / "index.html"
    page = index.read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    for want in ("replay.gif", "predict_brake/prediction.gif", "counterfactual/counterfactual.gif", "bench/"):
        assert any(want in src for src in images), want
    res = json.loads((out / "bench" / "results.json").read_text())
    assert set(res["planners"]) == {"idm", "constant_velocity"}
    assert {"kendall_tau", "kendall_tau_ci", "spearman_rho"} <= set(res["agreement"])
    assert res["compare"] == "truth" and res["agents"] == "learned"  # free-running, judged by the truth
    assert all("pdms_reference" in p for p in res["planners"].values())
    cf = json.loads((out / "counterfactual" / "counterfactual.json").read_text())
    assert cf["truth"] and cf["fidelity"]["0.5s"]["occ_iou"] > 0.3
    assert "Kendall tau" in page and "broken down" in page
    if find_chromium() is None:
        pytest.skip("headless Chromium not installed (apt-get install -y chromium): the page was not rendered")
    check = render_check(index)
    assert check["all_loaded"], check
    assert len(check["images"]) == len(images)

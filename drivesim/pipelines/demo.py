"""`drivesim demo`: the main job on the embedded synthetic data, ending in an index.html report.

Four stages: replay a logged scene; sample futures under braking beside the true re-simulation; a
counterfactual (a broken-down car ahead) beside its truth, the other agents free-running (the
behaviour model); the built-in planners benchmarked under the free-running world-model engine and
the truth engine, with the rank agreement.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from drivesim.pipelines.bench import bench
from drivesim.pipelines.counterfactual import counterfactual
from drivesim.pipelines.datasets import replay
from drivesim.pipelines.defaults import DEFAULT_CHECKPOINT, DEFAULT_VERSION, console, default_dataroot, ensure_synthetic
from drivesim.pipelines.forecast import predict

DEMO_COUNTERFACTUAL = dict(
    scene="scene-0008", t0=4.0, edits=("insert=car@20,0,0,0,static",), ego_planner="idm", horizon=4.0, samples=2
)
"""The demo's "what if?": a car broken down 20 m ahead of the ego, which drives with the IDM planner."""
DEMO_BENCH = dict(scenarios=8, samples=1, horizon=8.0, layout="free", drivable="map", planners=None)
"""The demo's benchmark: 8 held-out scenarios of 8 s under the free-running world model (the
behaviour model's agents, rendered by the world model; DAC from the map), one sampled future each,
compared with the truth engine (the synthetic world itself, the planner driving in it)."""


def demo(out="out/demo", quiet: bool = False) -> list[Path]:
    """`drivesim demo`: the main job; returns the files written (the report last)."""
    import json

    from drivesim.viz import report as rep

    t_start = time.perf_counter()
    dataroot = default_dataroot()
    ensure_synthetic(dataroot, DEFAULT_VERSION, quiet)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = console()
    timing = {}

    def stage(name):
        con.rule(f"[bold]{name}")
        return time.perf_counter()

    tic = stage("1/4 replay a logged scene")
    written = replay(dataroot, DEFAULT_VERSION, None, out_dir / "replay.gif", quiet=quiet)
    written += replay(dataroot, DEFAULT_VERSION, None, out_dir / "replay_frame.png", frame=10, quiet=True)
    timing["replay"] = time.perf_counter() - tic
    sections = [
        rep.Section("Replay", "scene-0001 of the embedded synthetic set, replayed from its nuScenes-format files: "
                    "six cameras and the BEV occupancy.", images=("replay.gif", "replay_frame.png")),
    ]  # fmt: skip
    if not DEFAULT_CHECKPOINT.exists():
        print(f"the shipped world model {DEFAULT_CHECKPOINT} is missing: only the replay was made", file=sys.stderr)
    else:
        tic = stage("2/4 sample futures under braking")
        pred = out_dir / "predict_brake"
        predict(pred, "scene-0003", 6.0, "brake", dataroot=dataroot, version=DEFAULT_VERSION, samples=3, horizon=3.0,
                quiet=quiet)  # fmt: skip
        written.append(pred / "prediction.gif")
        timing["predict"] = time.perf_counter() - tic
        sections.append(rep.Section(
            "Three sampled futures under braking", "The shipped world model (small) generates 3 s of scene-0003 "
            "after t0 = 6 s three times from the same 2 s of history, with the ego braking; the last row is the "
            "synthetic world's true re-simulation of the same braking.", images=("predict_brake/prediction.gif",)))  # fmt: skip

        tic = stage("3/4 counterfactual: a broken-down car ahead")
        d = DEMO_COUNTERFACTUAL
        cf_dir = out_dir / "counterfactual"
        counterfactual(cf_dir, d["scene"], d["t0"], d["edits"], ego_planner=d["ego_planner"], dataroot=dataroot,
                       version=DEFAULT_VERSION, samples=d["samples"], horizon=d["horizon"], quiet=quiet)  # fmt: skip
        written += [cf_dir / "counterfactual.gif", cf_dir / "counterfactual.png"]
        timing["counterfactual"] = time.perf_counter() - tic
        cf = json.loads((cf_dir / "counterfactual.json").read_text())
        rows = []
        for name, label in (("original", "unedited, world model"), ("edited", "edited, world model")):
            for stat in ("mean", "worst"):
                rows.append(
                    (
                        f"{label} ({stat})",
                        *(cf["scores"][name][k][stat] for k in ("pdms", "nc", "dac", "ttc", "ep", "c")),
                    )
                )
        rows.append(
            (
                "edited, reference engine",
                *(cf["scores"]["edited_reference"][k] for k in ("pdms", "nc", "dac", "ttc", "ep", "c")),
            )
        )
        tables = [rep.Table(f"ego scores (world model: mean and worst of {d['samples']} sampled futures)",
                            ("run", "PDMS", "NC", "DAC", "TTC", "EP", "C"), tuple(rows))]  # fmt: skip
        if cf.get("fidelity"):
            tables.append(rep.Table("edited generation vs the true re-simulation", ("after t0", "occupancy IoU", "agent IoU", "PSNR dB"),
                                    tuple((k, v["occ_iou"], v["agent_iou"], v["psnr"]) for k, v in cf["fidelity"].items())))  # fmt: skip
        sections.append(rep.Section(
            "What if a car had broken down ahead?",
            f"{d['scene']} from t0 = {d['t0']:g} s with `{' '.join(d['edits'])}` (a stopped car 20 m ahead in the ego "
            f"frame); the ego drives with the {d['ego_planner']} planner. Left: the unedited generation; middle: the "
            "edited one (free-running world model: the behaviour model's agents react to the edit); right: the synthetic "
            "world's true re-simulation of the same edit, "
            "with the ego on the same path.", images=("counterfactual/counterfactual.gif", "counterfactual/counterfactual.png"),
            tables=tuple(tables)))  # fmt: skip

        tic = stage("4/4 benchmark the built-in planners: world model vs the truth")
        b = DEMO_BENCH
        bench_dir = out_dir / "bench"
        bench(bench_dir, dataroot=dataroot, version=DEFAULT_VERSION, planners=b["planners"], engine="world-model",
              compare="truth", samples=b["samples"], horizon=b["horizon"], scenarios=b["scenarios"], batch=8,
              layout=b["layout"], drivable=b["drivable"], quiet=quiet)  # fmt: skip
        timing["bench"] = time.perf_counter() - tic
        res = json.loads((bench_dir / "results.json").read_text())
        ag = res["agreement"]
        rows = tuple((i + 1, n, res["planners"][n]["pdms"], res["planners"][n]["pdms_reference"], res["planners"][n]["pdms_gap"],
                      res["ranking_reference"].index(n) + 1) for i, n in enumerate(res["ranking"]))  # fmt: skip
        sections.append(rep.Section(
            "Leaderboard: the world model against the truth",
            f"{res['config']['scenarios']} held-out scenarios of {b['horizon']:g} s. The world-model engine runs "
            f"free ({b['layout']}): the behaviour model's agents react to the ego and the world model renders them; "
            f"drivable area from the {b['drivable']}; {b['samples']} sampled future per scenario. The truth engine "
            "re-simulates each scene with the planner driving inside the synthetic world. Rank agreement with the "
            f"truth: Kendall tau {ag['kendall_tau']:.3f} (95% bootstrap interval "
            f"{ag['kendall_tau_ci'][0]:.3f} .. {ag['kendall_tau_ci'][1]:.3f}), Spearman rho {ag['spearman_rho']:.3f}. "
            "A small demo sample: see the README for the full validity study.",
            images=tuple(f"bench/{p.name}" for p in sorted(bench_dir.glob("*.png"))),
            tables=(rep.Table("PDMS per planner", ("rank", "planner", "PDMS world model", "PDMS truth", "gap",
                                                    "truth rank"), rows),)))  # fmt: skip
    total = time.perf_counter() - t_start
    timing["total"] = total
    sections.append(rep.Section("Run", "\n".join(f"{k}: {v:.1f} s" for k, v in timing.items())))
    index = rep.write_report(out_dir, "drivesim demo", sections)
    written.append(index)
    print(f"demo finished in {total:.1f} s; outputs:")
    for path in written:
        print(f"  {path.resolve()}")
    return written

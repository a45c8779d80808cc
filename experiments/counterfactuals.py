"""Counterfactual fidelity of the shipped world model on held-out synthetic scenes.

    .venv/bin/python experiments/counterfactuals.py [--out experiments/results/counterfactuals.json]

Runs a fixed set of counterfactuals ("what if?") on the embedded default set (never used in
training): each edit kind at least once, through the world-model engine (2 sampled futures, 4 s)
in three settings — free-running (the default: the behaviour model's agents, which react to the
edit), the same with constant-velocity agents (the learned part's stand-in), and guided (the
edited log passed through: the boxes are given) — and compares each edited generation with the
synthetic world's true re-simulation of the same edits (the ego on the same path): occupancy IoU,
agent IoU, camera PSNR and the agents' displacement from their true positions, averaged over the
keyframes. As a yardstick the same numbers are given for the unedited generation against the
unedited log (the logged future), i.e. how far a counterfactual loses against a plain forecast.
Also the ego's PDMS under the world model (mean of the futures) and under the reference engine on
the edited log, per case.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

CASES = [
    ("scene-0008", 4.0, ["insert=car@20,0,0,0,static"], "idm"),
    ("scene-0006", 4.0, ["insert=car@18,0,0,0,static"], None),
    ("scene-0004", 6.0, ["ego=brake:4"], None),
    ("scene-0008", 6.0, ["ego=accelerate:2"], None),
    ("scene-0006", 4.0, ["ego=swerve_left"], None),
    ("scene-0002", 4.0, ["cross=15,1.4,right"], "idm"),
    ("scene-0004", 6.0, ["cross=12,1.4,left", "ego=keep"], None),
]
"""(scene, t0 s, edit specs, ego planner or None: the log / the ego edit)."""

SETTINGS = {"free (learned agents)": "learned", "constant velocity": "cv", "guided (pass-through)": "log"}
"""Where the other agents come from (`run_counterfactual(agents=...)`)."""


def main(argv=None) -> int:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from drivesim.atomic import write_json
    from drivesim.model.model_file import load_world_model
    from drivesim.pipelines.counterfactual import _fidelity, run_counterfactual
    from drivesim.pipelines.defaults import DEFAULT_CHECKPOINT, DEFAULT_VERSION, default_dataroot, ensure_synthetic
    from drivesim.planners.builtin import BUILTIN
    from drivesim.provenance import machine, provenance
    from drivesim.sim.edits import parse_edit
    from drivesim.sim.wm_engine import ModelHandle

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/results/counterfactuals.json")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--horizon", type=float, default=4.0)
    args = ap.parse_args(argv)
    dataroot = default_dataroot()
    ensure_synthetic(dataroot, DEFAULT_VERSION)
    handle = ModelHandle.of(load_world_model(DEFAULT_CHECKPOINT))
    con = Console()
    rows = []
    t_all = time.perf_counter()
    from drivesim.model.behaviour_file import load_behaviour
    from drivesim.pipelines.defaults import DEFAULT_BEHAVIOUR
    from drivesim.sim.learned_agents import BehaviourHandle

    behaviour = BehaviourHandle.of(load_behaviour(DEFAULT_BEHAVIOUR))
    for scene, t0, specs, planner in CASES:
        tic = time.perf_counter()
        row = {"scene": scene, "t0": t0, "edits": specs}
        for setting, agents in SETTINGS.items():
            cf = run_counterfactual(
                handle, dataroot, DEFAULT_VERSION, scene, t0, [parse_edit(s) for s in specs], horizon=args.horizon,
                samples=args.samples, planner=BUILTIN[planner] if planner else None, agents=agents,
                behaviour=behaviour,
            )  # fmt: skip
            row["ego"] = cf.ego
            row[setting] = {
                "edited_vs_truth": cf.fidelity["mean"], "per_keyframe": cf.fidelity,
                "pdms_world_model": cf.scores["edited"]["pdms"]["mean"],
                "pdms_world_model_worst": cf.scores["edited"]["pdms"]["worst"],
                "pdms_reference": cf.scores["edited_reference"]["pdms"],
                "nc_world_model": cf.scores["edited"]["nc"]["mean"], "nc_reference": cf.scores["edited_reference"]["nc"],
            }  # fmt: skip
        # the yardstick: the unedited free-running generation against the logged future
        base = run_counterfactual(
            handle, dataroot, DEFAULT_VERSION, scene, t0, [], horizon=args.horizon, samples=args.samples,
            behaviour=behaviour,
        )  # fmt: skip
        plain = _fidelity(base.edited_bev, base.edited_images, base.truth_bev, base.truth_images)
        row["unedited_vs_log"] = plain["mean"]
        row["seconds"] = time.perf_counter() - tic
        rows.append(row)
        con.print(
            f"{scene} t0={t0:g} {' '.join(specs)}: "
            + ", ".join(f"{k} IoU {row[k]['edited_vs_truth']['occ_iou']:.3f} disp "
                        f"{row[k]['edited_vs_truth']['agent_displacement']:.2f} m" for k in SETTINGS)
            + f" ({row['seconds']:.0f} s)"
        )  # fmt: skip
    keys = ("occ_iou", "agent_iou", "psnr", "agent_displacement")
    mean = {k: {m: float(np.nanmean([r[k]["edited_vs_truth"][m] for r in rows])) for m in keys} for k in SETTINGS}
    for k in SETTINGS:
        mean[k]["pdms_world_model"] = float(np.mean([r[k]["pdms_world_model"] for r in rows]))
        mean[k]["pdms_truth_gap"] = float(
            np.mean([abs(r[k]["pdms_world_model"] - r[k]["pdms_reference"]) for r in rows])
        )
    mean["unedited_vs_log"] = {m: float(np.nanmean([r["unedited_vs_log"][m] for r in rows])) for m in keys[:3]}
    out = {
        "cases": rows, "mean": mean, "samples": args.samples, "horizon_s": args.horizon,
        "checkpoint": str(DEFAULT_CHECKPOINT), "dataroot": str(dataroot), "seconds": time.perf_counter() - t_all,
        "machine": machine(),
        "provenance": provenance(checkpoint=DEFAULT_CHECKPOINT, dataroot=dataroot, version=DEFAULT_VERSION),
    }  # fmt: skip
    write_json(Path(args.out), out)
    t = Table(title=f"counterfactual fidelity ({args.samples} futures, {args.horizon:g} s, mean over keyframes)")
    for c in ("scene", "t0", "edits", "ego", *(f"{k}: IoU / agent IoU / disp. m / PDMS" for k in SETTINGS)):
        t.add_column(c)
    for r in rows:
        cells = []
        for k in SETTINGS:
            e = r[k]["edited_vs_truth"]
            cells.append(f"{e['occ_iou']:.3f} / {e['agent_iou']:.3f} / {e['agent_displacement']:.2f} / "
                         f"{r[k]['pdms_world_model']:.3f}")  # fmt: skip
        t.add_row(r["scene"], f"{r['t0']:g}", " ".join(r["edits"]), r["ego"], *cells)
    t.add_row("mean", "", "", "", *(
        f"{mean[k]['occ_iou']:.3f} / {mean[k]['agent_iou']:.3f} / {mean[k]['agent_displacement']:.2f} / "
        f"{mean[k]['pdms_world_model']:.3f}" for k in SETTINGS))  # fmt: skip
    con.print(t)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

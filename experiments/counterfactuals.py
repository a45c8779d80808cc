"""Counterfactual fidelity of the shipped world model on held-out synthetic scenes.

    .venv/bin/python experiments/counterfactuals.py [--out experiments/results/counterfactuals.json]

Runs a fixed set of counterfactuals ("what if?") on the embedded default set (never used in
training): each edit kind at least once, through the layout-guided world-model engine (2 sampled
futures, 4 s), and compares the edited generation with the synthetic world's true re-simulation of
the same edits (the ego on the same path): occupancy IoU, agent IoU and camera PSNR, averaged over
the keyframes. As a yardstick the same numbers are given for the unedited generation against the
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
    for scene, t0, specs, planner in CASES:
        tic = time.perf_counter()
        cf = run_counterfactual(
            handle, dataroot, DEFAULT_VERSION, scene, t0, [parse_edit(s) for s in specs], horizon=args.horizon,
            samples=args.samples, planner=BUILTIN[planner] if planner else None,
        )  # fmt: skip
        # the yardstick: the unedited generation against the logged future (no edit, the log's ego)
        base = run_counterfactual(
            handle, dataroot, DEFAULT_VERSION, scene, t0, [], horizon=args.horizon, samples=args.samples
        )
        plain = _fidelity(base.edited_bev, base.edited_images, base.truth_bev, base.truth_images)
        row = {
            "scene": scene, "t0": t0, "edits": specs, "ego": cf.ego,
            "edited_vs_truth": cf.fidelity["mean"], "unedited_vs_log": plain["mean"],
            "per_keyframe": cf.fidelity,
            "pdms_world_model": cf.scores["edited"]["pdms"]["mean"], "pdms_world_model_worst": cf.scores["edited"]["pdms"]["worst"],
            "pdms_reference": cf.scores["edited_reference"]["pdms"],
            "nc_world_model": cf.scores["edited"]["nc"]["mean"], "nc_reference": cf.scores["edited_reference"]["nc"],
            "seconds": time.perf_counter() - tic,
        }  # fmt: skip
        rows.append(row)
        con.print(f"{scene} t0={t0:g} {' '.join(specs)}: IoU {row['edited_vs_truth']['occ_iou']:.3f} "
                  f"(unedited {row['unedited_vs_log']['occ_iou']:.3f}), {row['seconds']:.0f} s")  # fmt: skip
    keys = ("occ_iou", "agent_iou", "psnr")
    mean = {
        side: {k: float(np.nanmean([r[side][k] for r in rows])) for k in keys}
        for side in ("edited_vs_truth", "unedited_vs_log")
    }
    out = {
        "cases": rows, "mean": mean, "samples": args.samples, "horizon_s": args.horizon,
        "checkpoint": str(DEFAULT_CHECKPOINT), "dataroot": str(dataroot), "seconds": time.perf_counter() - t_all,
        "machine": machine(),
        "provenance": provenance(checkpoint=DEFAULT_CHECKPOINT, dataroot=dataroot, version=DEFAULT_VERSION),
    }  # fmt: skip
    write_json(Path(args.out), out)
    t = Table(title=f"counterfactual fidelity ({args.samples} futures, {args.horizon:g} s, mean over keyframes)")
    for c in ("scene", "t0", "edits", "ego", "IoU edited", "IoU unedited", "agent IoU", "PSNR", "PDMS wm", "PDMS ref"):
        t.add_column(c)
    for r in rows:
        e, u = r["edited_vs_truth"], r["unedited_vs_log"]
        t.add_row(r["scene"], f"{r['t0']:g}", " ".join(r["edits"]), r["ego"], f"{e['occ_iou']:.3f}", f"{u['occ_iou']:.3f}",
                  f"{e['agent_iou']:.3f}", f"{e['psnr']:.1f}", f"{r['pdms_world_model']:.3f}", f"{r['pdms_reference']:.3f}")  # fmt: skip
    con.print(t)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

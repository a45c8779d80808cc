"""Benchmark validity: the built-in planners under the world-model engine vs the reference engine.

    .venv/bin/python experiments/wm_validity.py [--scenarios 16] [--samples 1]

On held-out synthetic scenarios (the embedded default set; the shipped world model was trained on
another seed), every built-in planner (six, of graded quality) is scored under the reference
(kinematic) engine and under the world-model engine in four settings — free-running or
layout-guided, drivable area from the prediction and the map ("both", the default) or from the map
alone — and each setting's ranking is compared with the reference's: Kendall tau, Spearman rho
(scenario-bootstrap 95% intervals) and per-planner PDMS gaps. Writes
experiments/results/wm_validity.json and prints a table. The same numbers for one setting come from
`drivesim bench --engine world-model --compare-reference [--layout guided] [--drivable map]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

SETTINGS = {
    "free / DAC: prediction+map": dict(layout=False, drivable="both"),
    "free / DAC: map": dict(layout=False, drivable="map"),
    "guided / DAC: prediction+map": dict(layout=True, drivable="both"),
    "guided / DAC: map": dict(layout=True, drivable="map"),
}


def main(argv=None) -> int:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from drivesim.atomic import write_json
    from drivesim.metrics.agreement import agreement
    from drivesim.model.model_file import load_world_model
    from drivesim.pipelines.benchmark import BenchConfig, run_planner
    from drivesim.pipelines.defaults import DEFAULT_CHECKPOINT, DEFAULT_VERSION, default_dataroot, ensure_synthetic
    from drivesim.pipelines.scenario_set import load_contexts, load_scenario_set
    from drivesim.planners.builtin import BUILTIN
    from drivesim.provenance import machine, provenance
    from drivesim.sim import wm_engine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=int, default=16)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--settings", default=";".join(SETTINGS), help="semicolon-separated subset of the settings")
    ap.add_argument("--out", default="experiments/results/wm_validity.json")
    ap.add_argument(
        "--agents-from",
        default="refined",
        choices=("refined", "decoder"),
        help="the predicted grid the engine reads the agents off (WMConfig.agents_from)",
    )
    ap.add_argument("--checkpoint", default=None, help="a world-model file (default: the shipped one)")
    args = ap.parse_args(argv)
    con = Console()
    root = default_dataroot()
    ensure_synthetic(root, DEFAULT_VERSION)
    base = BenchConfig(scenarios=args.scenarios, batch=min(16, args.scenarios), samples=args.samples)
    sset = load_scenario_set(root, DEFAULT_VERSION, base)
    scenarios, stacked = sset.scenarios, sset.stacked
    checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    model = load_world_model(checkpoint)
    handle = wm_engine.ModelHandle.of(model)
    contexts = load_contexts(root, DEFAULT_VERSION, scenarios, model.cfg.frame_size, model.cfg.history)
    planners = list(BUILTIN)
    t_all = time.perf_counter()
    ref = {p: run_planner(BUILTIN[p], stacked, scenarios, base)["pdms"] for p in planners}
    con.print("reference: " + ", ".join(f"{p} {ref[p].mean():.3f}" for p in planners))
    out = {"scenarios": len(scenarios), "samples": args.samples, "horizon_s": base.horizon / 10,
           "reference": {p: float(ref[p].mean()) for p in planners}, "settings": {},
           "provenance": provenance(checkpoint=checkpoint, dataroot=root, version=DEFAULT_VERSION)}  # fmt: skip
    for name in args.settings.split(";"):
        s = SETTINGS[name]
        cfg = dataclasses.replace(
            base,
            wm=wm_engine.WMConfig(sim=base.sim, layout=s["layout"], agents_from=args.agents_from),
            drivable=s["drivable"],
        )
        tic = time.perf_counter()
        res = {p: run_planner(BUILTIN[p], stacked, scenarios, cfg, model=handle, contexts=contexts) for p in planners}
        agree = agreement(np.stack([res[p]["pdms"] for p in planners]), np.stack([ref[p] for p in planners]), planners)
        for p in planners:
            agree["planners"][p].update({k: float(res[p][k].mean()) for k in ("nc", "dac", "ttc", "ep", "c")})
        agree["seconds"] = time.perf_counter() - tic
        out["settings"][name] = agree
        con.print(f"{name}: tau {agree['kendall_tau']:.3f} {agree['kendall_tau_ci']}, rho {agree['spearman_rho']:.3f}, "
                  f"max |gap| {agree['max_abs_gap']:.3f} ({agree['seconds']:.0f} s)")  # fmt: skip
        write_json(Path(args.out), out)  # after every setting: a cut-off run keeps what it measured
    out.update(seconds=time.perf_counter() - t_all, machine=machine(), checkpoint=str(checkpoint),
               agents_from=args.agents_from)  # fmt: skip
    write_json(Path(args.out), out)
    t = Table(title=f"benchmark validity: {len(scenarios)} held-out scenarios, PDMS world model / reference")
    t.add_column("planner")
    for name in out["settings"]:
        t.add_column(name, justify="right")
    t.add_column("reference", justify="right")
    for p in planners:
        t.add_row(p, *(f"{v['planners'][p]['pdms']:.3f}" for v in out["settings"].values()), f"{ref[p].mean():.3f}")
    t.add_row(
        "Kendall tau",
        *(
            f"{v['kendall_tau']:.2f} [{v['kendall_tau_ci'][0]:.2f}, {v['kendall_tau_ci'][1]:.2f}]"
            for v in out["settings"].values()
        ),
        "",
    )
    t.add_row("Spearman rho", *(f"{v['spearman_rho']:.2f}" for v in out["settings"].values()), "")
    t.add_row("max |PDMS gap|", *(f"{v['max_abs_gap']:.3f}" for v in out["settings"].values()), "")
    con.print(t)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

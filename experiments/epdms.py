"""EPDMS against PDMS: what the NAVSIM v2 terms see that PDMS does not, on held-out scenes.

    .venv/bin/python experiments/epdms.py            # experiments/results/epdms.json
    .venv/bin/python experiments/epdms.py --quick    # 8 scenarios: a smoke run

Held-out data: a synthetic dataroot of world seed 31 (16 scenes of 20 s, small cameras), with the
light states the world writes beside its logs; written on first use with `drivesim synth --out
data/heldout/seed31 --scenes 16 --seconds 20 --seed 31 --image-width 64`. No model is involved.

The expert (log replay), IDM, PDM-Closed and the red-light runner (IDM that ignores traffic
lights) are benchmarked with `drivesim bench --score epdms` under the kinematic engine (log
agents) and the truth engine (the synthetic world itself, whose traffic reacts). Reported per
engine and planner: PDMS, EPDMS and every term, over all scenarios and over the scenarios tagged
`red_light` (a red light of the ego's direction ahead, no vehicle in between), with the number of
those in which the planner crossed on red (TLC 0).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATAROOT = "data/heldout/seed31"
SYNTH = ["--scenes", "16", "--seconds", "20", "--seed", "31", "--image-width", "64"]
PLANNERS = "expert,idm,pdm_closed,red_light_runner"
TERMS = ("pdms", "epdms", "nc", "dac", "ttc", "ep", "c", "ddc", "tlc", "lk", "hc", "ec")


def summary(results: dict) -> dict:
    """Per planner: the means over all scenarios and over the red-light ones."""
    import numpy as np

    out = {}
    for name, agg in results["planners"].items():
        rows = [r for r in results["scenarios"] if r["planner"] == name]
        red = [r for r in rows if "red_light" in r["tags"]]

        def mean(rs, k):
            vals = [r[k] for r in rs if r[k] is not None]
            return float(np.mean(vals)) if vals else None

        out[name] = {
            "all": {k: agg[k] for k in TERMS} | {"epdms_ci": agg["epdms_ci"], "pdms_ci": agg["pdms_ci"], "n": len(rows)},
            "red_light": {k: mean(red, k) for k in TERMS} | {"n": len(red), "crossed_on_red": sum(r["tlc"] == 0 for r in red)},
        }  # fmt: skip
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 scenarios (a smoke run)")
    ap.add_argument("--dataroot", default=DATAROOT)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "epdms.json"))
    args = ap.parse_args(argv)

    from rich.table import Table

    from drivesim.atomic import write_json
    from drivesim.pipelines.bench import bench
    from drivesim.pipelines.defaults import console
    from drivesim.provenance import provenance

    con = console()
    root = ROOT / args.dataroot
    if not root.exists():
        con.print(f"writing the held-out dataroot {root} ...")
        subprocess.run([str(ROOT / ".venv" / "bin" / "drivesim"), "synth", "--quiet", "--out", str(root), *SYNTH],
                       check=True)  # fmt: skip
    scenarios = 8 if args.quick else None
    out = {
        "dataroot": args.dataroot,
        "planners": PLANNERS.split(","),
        "horizon_s": 8.0,
        "engines": {},
        "provenance": provenance(dataroot=root, version="v1.0-mini"),
    }
    for engine in ("kinematic", "truth"):
        tic = time.perf_counter()
        res = bench(ROOT / "out" / "epdms" / engine, dataroot=root, planners=PLANNERS, engine=engine,
                    scenarios=scenarios, score="epdms", quiet=True)  # fmt: skip
        out["engines"][engine] = {"scenarios": res["config"]["scenarios"], "ranking": res["ranking"],
                                  "planners": summary(res), "seconds": time.perf_counter() - tic}  # fmt: skip
    t = Table(title="PDMS vs EPDMS on held-out scenes (all scenarios | red-light scenarios)")
    for col in ("engine", "planner", "PDMS", "EPDMS", "TLC", "C", "EC", "| red: n", "crossed", "PDMS", "EPDMS"):
        t.add_column(col, justify="right")
    for engine, e in out["engines"].items():
        for name, s in e["planners"].items():
            a, r = s["all"], s["red_light"]

            def f(v):
                return "n/a" if v is None else f"{v:.3f}"

            t.add_row(engine, name, f(a["pdms"]), f(a["epdms"]), f(a["tlc"]), f(a["c"]), f(a["ec"]), str(r["n"]),
                      str(r["crossed_on_red"]), f(r["pdms"]), f(r["epdms"]))  # fmt: skip
    con.print(t)
    con.print(f"saved {write_json(Path(args.out), out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

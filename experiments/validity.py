"""Benchmark validity: every engine setting's planner scores against the truth engine.

    .venv/bin/python experiments/validity.py                  # experiments/results/validity.json
    .venv/bin/python experiments/validity.py --quick          # 4 scenarios, 3 planners: a smoke run

Held-out data: a synthetic dataroot of world seed 7 (12 scenes of 16 s, keyframe cameras only),
written on first use with `drivesim synth --out data/heldout/seed7 --scenes 12 --seconds 16 --seed 7
--camera-hz 2`. Neither model saw it: the world model trained on seed 1 (calibrated on 2), the
behaviour model on seeds 100..169 (its settings were chosen on 180..183 and on seed 8).
Scenarios: 8 s of closed loop from every 2 s of a scene that has a lane route at its start (the
first 32).

Every built-in planner is scored by the truth engine (the synthetic world re-simulated with the
planner driving: ground truth) and by each setting below; each setting's ranking is compared with
the truth's (Kendall tau with its 95% scenario-bootstrap interval, Spearman rho) and each planner's
PDMS gap is reported.

Settings (name: engine / where the other agents come from):
- kinematic / log: log replay (non-reactive);
- kinematic / reactive IDM: the reference IDM lane followers;
- kinematic / learned: the behaviour model's agents, no world model (behaviour only);
- world model / learned (free-running, the default): the behaviour model's agents, rendered by the
  world model; NC and TTC against the predicted agents, DAC from the log's map;
- world model / constant velocity: the same with the learned agents replaced by constant velocity;
- world model / reactive IDM: the same with the reference IDM agents (which follow the lanes the
  log's future shows them taking: privileged);
- world model / log (guided): the log's agents passed through (the pass-through debugging mode).
World-model settings draw `--samples` futures per scenario (scores: their mean).
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "kinematic / log": dict(agents="log", wm=False),
    "kinematic / reactive IDM": dict(agents="idm", wm=False),
    "world model / learned (free)": dict(agents="learned", wm=True),
    "world model / constant velocity": dict(agents="cv", wm=True),
    "world model / reactive IDM": dict(agents="idm", wm=True),
    "kinematic / learned": dict(agents="learned", wm=False),
    "world model / log (guided)": dict(agents="log", wm=True),
}
DATAROOT = "data/heldout/seed7"
VERSION = "v1.0-mini"


def get_config(quick: bool = False) -> dict:
    if quick:
        return {"scenarios": 4, "samples": 1, "planners": "idm,timid_idm,constant_velocity", "batch": 4}
    return {"scenarios": 32, "samples": 2, "planners": None, "batch": 8}


def main(argv=None) -> int:
    import numpy as np
    from rich.console import Console

    from drivesim.atomic import write_json
    from drivesim.metrics.agreement import agreement
    from drivesim.model.behaviour_file import load_behaviour
    from drivesim.model.model_file import load_world_model
    from drivesim.pipelines.benchmark import BenchConfig, run_planner, run_truth
    from drivesim.pipelines.defaults import DEFAULT_BEHAVIOUR, DEFAULT_CHECKPOINT
    from drivesim.pipelines.scenario_set import load_contexts, load_scenario_set, truth_scenes
    from drivesim.planners.builtin import BUILTIN
    from drivesim.provenance import machine, provenance, set_command
    from drivesim.sim import truth_engine, wm_engine
    from drivesim.sim.engine import SimConfig
    from drivesim.sim.learned_agents import BehaviourHandle

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dataroot", default=DATAROOT)
    ap.add_argument(
        "--seed", type=int, default=7, help="world seed of the dataroot when it must be written (7: held out; "
        "choose settings on another, e.g. 8 with --dataroot data/validation/seed8)",
    )  # fmt: skip
    ap.add_argument("--temperature", type=float, default=None, help="sampling temperature of the learned agents")
    ap.add_argument("--agent-every", type=int, default=None, help="sim steps between the learned agents' decisions")
    ap.add_argument("--settings", default=";".join(SETTINGS), help="semicolon-separated subset of the settings")
    ap.add_argument("--behaviour", default=str(DEFAULT_BEHAVIOUR))
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--out", default="experiments/results/validity.json")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the settings (and the truth scores) already in --out when its scenarios and planners match; "
        "run only the settings asked for that it lacks",
    )
    args = ap.parse_args(argv)
    set_command("python experiments/validity.py " + " ".join(sys.argv[1:] if argv is None else argv))
    conf = get_config(args.quick)
    con = Console()
    root = Path(args.dataroot)
    if not (root / VERSION).exists():
        con.print(f"writing the set {root} (drivesim synth, seed {args.seed}) ...")
        subprocess.run(
            [sys.executable, "-m", "drivesim.cli", "synth", "--quiet", "--out", str(root), "--scenes", "12",
             "--seconds", "16", "--seed", str(args.seed), "--camera-hz", "2"], check=True,
        )  # fmt: skip
    base = BenchConfig(scenarios=conf["scenarios"], batch=conf["batch"], samples=conf["samples"])
    sset = load_scenario_set(root, VERSION, base, routes_first=True, count=None)
    scenarios = sset.scenarios[: conf["scenarios"]]
    stacked = sset.stacked
    names = list(BUILTIN) if not conf["planners"] else conf["planners"].split(",")
    planners = {n: BUILTIN[n] for n in names}
    behaviour = BehaviourHandle.of(load_behaviour(args.behaviour))
    model = load_world_model(args.checkpoint)
    handle = wm_engine.ModelHandle.of(model)
    out = {
        "scenarios": len(scenarios), "samples": conf["samples"], "horizon_s": base.horizon / 10, "planners": names,
        "dataroot": str(root), "settings": {},
        "provenance": provenance(checkpoint=args.behaviour, dataroot=root, version=VERSION),
        "world_model": str(args.checkpoint),
    }  # fmt: skip
    t_all = time.perf_counter()
    sampling = (
        SimConfig().temperature if args.temperature is None else args.temperature,
        SimConfig().agent_every if args.agent_every is None else args.agent_every,
    )
    old = _resumable(Path(args.out), out, sampling) if args.resume else None
    if old is not None:
        out["settings"] = old["settings"]
        out["truth"], out["truth_per_scenario"] = old["truth"], old["truth_per_scenario"]
        out["truth_seconds"] = old.get("truth_seconds")
        ref = {p: np.asarray(out["truth_per_scenario"][p]) for p in names}
        con.print(f"resuming {args.out}: {', '.join(out['settings']) or 'no setting'} kept")
    else:
        tic = time.perf_counter()
        tcfg = dataclasses.replace(base, truth=truth_engine.TruthConfig(sim=base.sim))
        truth = run_truth(planners, stacked, scenarios, tcfg, truth_scenes(sset))
        ref = {p: truth[p]["pdms"] for p in names}
        out["truth"] = {p: float(ref[p].mean()) for p in names}
        out["truth_per_scenario"] = {p: [float(x) for x in ref[p]] for p in names}
        out["truth_seconds"] = time.perf_counter() - tic
        write_json(Path(args.out), out)
    con.print("truth: " + ", ".join(f"{p} {ref[p].mean():.3f}" for p in names))
    contexts = None
    for name in args.settings.split(";"):
        if name in out["settings"]:
            continue
        s = SETTINGS[name]
        sim = SimConfig(agents=s["agents"])
        if args.temperature is not None:
            sim = dataclasses.replace(sim, temperature=args.temperature)
        if args.agent_every is not None:
            sim = dataclasses.replace(sim, agent_every=args.agent_every)
        cfg = dataclasses.replace(base, sim=sim)
        if s["wm"]:
            if contexts is None:
                contexts = load_contexts(root, VERSION, scenarios, model.cfg.frame_size, model.cfg.history)
            cfg = dataclasses.replace(cfg, wm=wm_engine.WMConfig(sim=sim, layout=True), drivable="map")
        tic = time.perf_counter()
        res = {
            p: run_planner(planners[p], stacked, scenarios, cfg, model=handle, contexts=contexts, behaviour=behaviour)
            for p in names
        }
        agree = agreement(np.stack([res[p]["pdms"] for p in names]), np.stack([ref[p] for p in names]), names)
        agree["seconds"] = time.perf_counter() - tic
        agree["per_scenario"] = {p: [float(x) for x in res[p]["pdms"]] for p in names}
        agree["behaviour_sha256"] = out["provenance"].get("checkpoint_sha256") if s["agents"] == "learned" else None
        agree["temperature"] = sim.temperature if s["agents"] == "learned" else None
        agree["agent_every"] = sim.agent_every if s["agents"] in ("learned", "cv") else None
        out["settings"][name] = agree
        con.print(
            f"{name}: tau {agree['kendall_tau']:.3f} {agree['kendall_tau_ci']}, rho {agree['spearman_rho']:.3f}, "
            f"max |gap| {agree['max_abs_gap']:.3f} ({agree['seconds']:.0f} s)"
        )
        write_json(Path(args.out), out)  # after every setting: a cut-off run keeps what it measured
    out.update(seconds=time.perf_counter() - t_all, machine=machine())
    write_json(Path(args.out), out)
    _table(con, out, names)
    print(f"written: {args.out}")
    return 0


def _resumable(path: Path, out: dict, sampling: tuple[float, int]) -> dict | None:
    """The earlier run at `path`, if it ran the same scenarios, planners, samples and data."""
    import json

    if not path.exists():
        return None
    old = json.loads(path.read_text())
    same = all(old.get(k) == out[k] for k in ("scenarios", "samples", "planners", "dataroot", "horizon_s"))
    if not same or "truth_per_scenario" not in old:
        return None
    # settings of learned agents are kept only if they ran this behaviour model
    sha = out["provenance"].get("checkpoint_sha256")

    def same(v):
        if v.get("behaviour_sha256") is None:  # no learned agents
            return True
        every = v.get("agent_every") or 5  # runs before the setting existed decided every 0.5 s
        return v["behaviour_sha256"] == sha and v.get("temperature") == sampling[0] and every == sampling[1]

    old["settings"] = {k: v for k, v in old["settings"].items() if same(v)}
    return old


def _table(con, out, names) -> None:
    from rich.table import Table

    t = Table(title=f"validity: {out['scenarios']} held-out scenarios, PDMS per setting vs the truth engine")
    t.add_column("planner")
    for name in out["settings"]:
        t.add_column(name, justify="right")
    t.add_column("truth", justify="right")
    for p in names:
        t.add_row(p, *(f"{v['planners'][p]['pdms']:.3f}" for v in out["settings"].values()), f"{out['truth'][p]:.3f}")
    t.add_row(
        "Kendall tau",
        *(f"{v['kendall_tau']:.2f} [{v['kendall_tau_ci'][0]:.2f}, {v['kendall_tau_ci'][1]:.2f}]" for v in out["settings"].values()),
        "",
    )  # fmt: skip
    t.add_row("Spearman rho", *(f"{v['spearman_rho']:.2f}" for v in out["settings"].values()), "")
    t.add_row("max |PDMS gap|", *(f"{v['max_abs_gap']:.3f}" for v in out["settings"].values()), "")
    con.print(t)


if __name__ == "__main__":
    raise SystemExit(main())

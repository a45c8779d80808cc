"""Planning with the world model (issue 5, section 4): the world-model planners scored by the
exact kinematic engine, against IDM on the same held-out scenarios, and their exploitation gap.

    .venv/bin/python experiments/wm_planners.py --scenarios 16            # the reported run
    .venv/bin/python experiments/wm_planners.py --quick                   # 2 scenarios, 4 s: smoke

writes experiments/results/wm_planners/results.json and prints the table. The scenarios are the
default synthetic mini set's (data/synthetic, v1.0-mini: held out from the world model's training
scenes), 8 s each, spread evenly over the selection as `drivesim bench --scenarios N` spreads them.

Every planner plans every 0.5 s (`replan_every=5`: one plan per world-model frame). Worlds:

- "reference": the kinematic engine (`drivesim.pipelines.benchmark.run_planner`, no model) — how
  IDM and PDM-Closed are scored; and, for the world-model planners, the reference engine with the
  model kept in sync (`drivesim.planners.world_model.reference_rollout`: `wm_engine.rollout`,
  layout-guided by the reference agents, scored with the reference engine's exact terms of
  `state.base`). The planner imagines with the model; the exact engine scores it.
- "world-model (guided)" / "world-model (free)": the world-model engine, scored from what the
  model predicts (`drivesim.sim.closed_loop.wm_pdms_terms`), as `drivesim bench --engine
  world-model` does. Its PDMS minus the reference PDMS is the planner's exploitation gap (how much
  better it looks in its own imagination than in the real world).

`get_config(quick=True)` shrinks everything for a smoke run.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from drivesim.pipelines.benchmark import SCORE_KEYS, BenchConfig, bootstrap_ci, check_routes, run_planner
from drivesim.planners.builtin import IdmPlanner, PdmClosed
from drivesim.planners.world_model import GradientPlanner, WorldModelMPC, reference_rollout
from drivesim.provenance import machine, provenance
from drivesim.sim import wm_engine
from drivesim.sim.engine import SimConfig

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "experiments" / "results" / "wm_planners"


@dataclasses.dataclass(frozen=True)
class WithoutModel:
    """The ablation of a world-model planner: its proposal without the imagination (`plan`)."""

    planner: object
    name: str = "no_model"

    def init(self, rng):
        return self.planner.init(rng)

    def plan(self, params, obs, rng):
        return self.planner.plan(params, obs, rng)


@dataclasses.dataclass(frozen=True)
class Config:
    """One run of the experiment."""

    bench: BenchConfig
    """Scenarios, horizon, sim (replan every 5 steps), the world-model engine (layout-guided)."""
    planners: tuple[tuple[str, object], ...]
    """(name, planner) in the order of the table."""
    worlds: tuple[str, ...] = ("reference", "world-model (guided)", "world-model (free)")
    """Where the world-model planners run; the others run in "reference" (and in the world-model
    worlds too when `baselines_in_model` is set)."""
    baselines_in_model: tuple[str, ...] = ("idm",)
    """Plain planners also scored under the world-model engine (their gap, for comparison)."""
    reference_every_step: tuple[str, ...] = ("idm",)
    """Plain planners also scored in the reference engine planning every 0.1 s (the usual bench)."""
    dataroot: str = str(REPO / "data" / "synthetic")
    version: str = "v1.0-mini"
    checkpoint: str = str(REPO / "data" / "world_model_small.npz")


def get_config(quick: bool = False, scenarios: int = 16) -> Config:
    sim = SimConfig(replan_every=5)
    bench = BenchConfig(
        horizon=80, scenarios=scenarios, batch=8, sim=sim, wm=wm_engine.WMConfig(sim=sim, layout=True), samples=1
    )
    planners = (
        ("idm", IdmPlanner()),
        ("pdm_closed", PdmClosed()),
        ("wm_mpc_no_model", WithoutModel(WorldModelMPC())),
        ("wm_mpc", WorldModelMPC()),
        ("wm_grad", GradientPlanner()),
    )
    cfg = Config(bench=bench, planners=planners)
    if quick:
        cfg = dataclasses.replace(cfg, bench=dataclasses.replace(bench, scenarios=2, horizon=40, batch=2))
    return cfg


# ------------------------------------------------------------------------------ data
def load(cfg: Config):
    """Stacked logs, the scenarios (with a lane route at the start), their world-model contexts and
    the model, as `drivesim bench` loads them."""
    from drivesim.model.model_file import load_world_model
    from drivesim.pipelines.scenario_set import load_contexts, load_scenario_set

    b = cfg.bench
    sset = load_scenario_set(Path(cfg.dataroot), cfg.version, b)
    ok = check_routes(sset.stacked, sset.scenarios, b)
    scenarios = [s for s, good in zip(sset.scenarios, ok, strict=True) if good]
    model = load_world_model(Path(cfg.checkpoint))
    contexts = load_contexts(Path(cfg.dataroot), cfg.version, scenarios, model.cfg.frame_size, model.cfg.history)
    return sset.stacked, scenarios, contexts, wm_engine.ModelHandle.of(model)


# ------------------------------------------------------------------------------ runs
@functools.lru_cache(maxsize=8)
def _reference_scored_fn(planner, b: BenchConfig):
    """jit(vmap) of reset -> `reference_rollout` (scores from the reference engine's own state)."""

    def one(handle, log, t0, context, key):
        params = planner.init(jax.random.key(b.seed))
        state = wm_engine.reset(handle, log, t0, context, key, b.wm)
        scores, tr = reference_rollout(handle, state, planner, params, b.horizon, key, b.wm, b.metrics)
        return scores, jnp.where(tr.plan_nan.any(), jnp.argmax(tr.plan_nan), -1)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0)))


def run_reference_scored(planner, logs, scenarios, contexts, handle, b: BenchConfig) -> dict:
    """Scores (host arrays, one per scenario) of a planner in the model-synced reference world;
    batched and keyed as `drivesim.pipelines.benchmark.run_planner`."""
    if b.wm is None or not b.wm.layout:
        raise ValueError("the reference-scored run keeps the model in sync through the layout: set wm.layout")
    fn = _reference_scored_fn(planner, b)
    out = {k: [] for k in SCORE_KEYS}
    out["nan_step"] = []
    tic = time.perf_counter()
    for start in range(0, len(scenarios), b.batch):
        chunk = scenarios[start : start + b.batch]
        rows = np.array([start + min(i, len(chunk) - 1) for i in range(b.batch)])  # padded: no recompiles
        idx = np.array([scenarios[r].log_index for r in rows])
        batch_logs = jax.tree.map(lambda a, i=idx: a[i], logs)
        t0s = jnp.array([scenarios[r].t0 for r in rows], jnp.int32)
        ctx = jax.tree.map(lambda a, r=rows: np.asarray(a)[r], contexts)
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(b.seed), i))(jnp.arange(start, start + b.batch))
        scores, nan_step = jax.block_until_ready(fn(handle, batch_logs, t0s, ctx, keys))
        for k in SCORE_KEYS:
            out[k].append(np.asarray(getattr(scores, k))[: len(chunk)])
        out["nan_step"].append(np.asarray(nan_step)[: len(chunk)])
        print(f"  {start + len(chunk)}/{len(scenarios)} scenarios, {time.perf_counter() - tic:.0f} s", flush=True)
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["seconds"] = time.perf_counter() - tic
    return res


def summary(res: dict, b: BenchConfig) -> dict:
    row = {k: float(np.mean(res[k])) for k in ("pdms", "nc", "dac", "ttc", "ep", "c")}
    row["pdms_ci"] = list(bootstrap_ci(res["pdms"], b.bootstrap, b.seed))
    row["per_scenario"] = {k: [round(float(x), 4) for x in res[k]] for k in ("pdms", "nc", "dac", "ttc", "ep", "c")}
    row["planner_nan"] = int(np.sum(np.asarray(res["nan_step"]) >= 0))
    row["seconds"] = float(res["seconds"])
    return row


def run(cfg: Config, out_dir: Path = OUT, only: tuple[str, ...] = ()) -> dict:
    b = cfg.bench
    logs, scenarios, contexts, handle = load(cfg)
    print(f"{len(scenarios)} scenarios of {b.horizon / 10:g} s, replan every {b.sim.replan_every} steps", flush=True)
    path = out_dir / "results.json"
    results = json.loads(path.read_text()) if (only and path.exists()) else {}
    # a run with --only merges into the last results: every command that wrote them is listed
    command = " ".join([".venv/bin/python", "experiments/wm_planners.py", *sys.argv[1:]])
    results["commands"] = [*results.get("commands", []), command]
    results.update(
        experiment="experiments/wm_planners.py",
        hardware=machine(),
        provenance=provenance(command=command, checkpoint=cfg.checkpoint, dataroot=cfg.dataroot, version=cfg.version),
        config={
            "scenarios": len(scenarios),
            "horizon_steps": b.horizon,
            "replan_every": b.sim.replan_every,
            "samples": b.samples,
            "seed": b.seed,
            "bootstrap": b.bootstrap,
            "dataroot": cfg.dataroot,
            "version": cfg.version,
            "checkpoint": cfg.checkpoint,
        },  # fmt: skip
        scenarios=[{"scene": s.scene, "t0": s.t0, "tags": list(s.tags)} for s in scenarios],
    )
    rows = results.setdefault("planners", {})
    guided = b
    free = dataclasses.replace(b, wm=dataclasses.replace(b.wm, layout=False))
    for name, planner in cfg.planners:
        if only and name not in only:
            continue
        wm_planner = getattr(planner, "needs_world_model", False)
        row = rows.setdefault(name, {"planner": repr(planner)})
        for world in cfg.worlds:
            if world != "reference" and not (wm_planner or name in cfg.baselines_in_model):
                continue
            print(f"{name} in {world}", flush=True)
            if world == "reference":
                if wm_planner:
                    res = run_reference_scored(planner, logs, scenarios, contexts, handle, b)
                else:
                    ref = dataclasses.replace(b, wm=None)
                    res = run_planner(planner, logs, scenarios, ref)
            else:
                wb = guided if world == "world-model (guided)" else free
                res = run_planner(planner, logs, scenarios, wb, model=handle, contexts=contexts)
            row[world] = summary(res, b)
            print(f"  PDMS {row[world]['pdms']:.3f} in {row[world]['seconds']:.0f} s", flush=True)
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1))  # after every run: a long one keeps its part
        if name in cfg.reference_every_step and "reference" in cfg.worlds:
            every = dataclasses.replace(b, wm=None, sim=dataclasses.replace(b.sim, replan_every=1))
            row["reference, replan every 0.1 s"] = summary(run_planner(planner, logs, scenarios, every), b)
        if "reference" in row:  # every world this row has, whichever run (--only, --worlds) filled it
            for world in ("world-model (guided)", "world-model (free)"):
                if world in row:
                    row[f"gap {world}"] = row[world]["pdms"] - row["reference"]["pdms"]
        path.write_text(json.dumps(results, indent=1))
    for other in ("idm", "wm_mpc_no_model"):  # paired differences over the same scenarios
        if other in rows and "wm_mpc" in rows and "reference" in rows[other] and "reference" in rows["wm_mpc"]:
            a = np.array(rows["wm_mpc"]["reference"]["per_scenario"]["pdms"])
            i = np.array(rows[other]["reference"]["per_scenario"]["pdms"])
            results[f"wm_mpc_minus_{other}_reference"] = {
                "mean": float(np.mean(a - i)), "ci": list(bootstrap_ci(a - i, b.bootstrap, b.seed)),
                "better": int(np.sum(a > i + 1e-6)), "worse": int(np.sum(a < i - 1e-6)),
            }  # fmt: skip
    path.write_text(json.dumps(results, indent=1))
    return results


def table(results: dict):
    from rich.table import Table

    worlds = ("reference", "world-model (guided)", "world-model (free)")
    t = Table(title=f"World-model planners, {results['config']['scenarios']} held-out scenarios of "
                    f"{results['config']['horizon_steps'] / 10:g} s (reference = exact kinematic engine)")  # fmt: skip
    t.add_column("planner")
    t.add_column("reference PDMS [95% CI]", justify="right")
    for k in ("NC", "DAC", "TTC", "EP", "C"):
        t.add_column(k, justify="right")
    t.add_column("WM guided", justify="right")
    t.add_column("WM free", justify="right")
    t.add_column("gap guided / free", justify="right")
    t.add_column("s (ref)", justify="right")
    for name, row in results["planners"].items():
        extra = row.get("reference, replan every 0.1 s")
        for label, ref, wm_rows in ((name, row.get("reference", {}), True), (f"{name} (replan 0.1 s)", extra, False)):
            if not ref:
                continue
            cell = lambda w, row=row, on=wm_rows: f"{row[w]['pdms']:.3f}" if on and w in row else "-"  # noqa: E731
            gaps = " / ".join(f"{row[f'gap {w}']:+.3f}" if wm_rows and f"gap {w}" in row else "-" for w in worlds[1:])
            t.add_row(
                label,
                f"{ref['pdms']:.3f} [{ref['pdms_ci'][0]:.3f}, {ref['pdms_ci'][1]:.3f}]",
                *(f"{ref[k]:.2f}" for k in ("nc", "dac", "ttc", "ep", "c")),
                cell(worlds[1]),
                cell(worlds[2]),
                gaps,
                f"{ref['seconds']:.0f}",
            )
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="2 scenarios of 4 s (smoke run)")
    ap.add_argument("--only", nargs="*", default=(), help="run these planners only (merged into results.json)")
    ap.add_argument("--worlds", nargs="*", default=None, help="reference, 'world-model (guided)', 'world-model (free)'")
    ap.add_argument("--horizon", type=float, default=None, help="seconds per scenario (default 8)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    from rich.console import Console

    cfg = get_config(quick=args.quick, scenarios=args.scenarios)
    if args.worlds:
        cfg = dataclasses.replace(cfg, worlds=tuple(args.worlds))
    if args.horizon:
        cfg = dataclasses.replace(cfg, bench=dataclasses.replace(cfg.bench, horizon=int(round(args.horizon * 10))))
    results = run(cfg, Path(args.out), tuple(args.only))
    Console(width=200).print(table(results))
    for other in ("idm", "wm_mpc_no_model"):
        if f"wm_mpc_minus_{other}_reference" in results:
            d = results[f"wm_mpc_minus_{other}_reference"]
            print(f"wm_mpc - {other} (reference PDMS, paired): {d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], "
                  f"better on {d['better']}, worse on {d['worse']} scenarios")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

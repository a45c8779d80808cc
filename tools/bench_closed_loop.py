"""Closed-loop world-model benchmark: world-model steps per second, and the ratio to the reference engine.

    .venv/bin/python tools/bench_closed_loop.py            # batches 1, 8, 32; 40 sim steps (8 frames)
    .venv/bin/python tools/bench_closed_loop.py --quick    # batches 1 and 2, 10 sim steps, 2 repeats

One world-model step = one predicted frame = 0.5 s of simulated time = `keyframe_steps` (5) sim
steps of 0.1 s, with the behaviour model's agents (`--agents learned`, the default: they choose
their next 0.5 s, then the world model renders them), each sim step with the IDM planner, the tracker and the PDMS step terms computed from the
prediction (`wm_pdms_terms`); then the model samples the next frame (flow matching) and decodes
its BEV grid, and, with cameras, its six camera views drawn by the camera refiner from the
behaviour model's layout (`WMConfig.cameras="refiner"`; with and without are both measured).
Timed: jit(vmap(reset -> rollout -> evaluate)) over a batch of scenarios (the synthetic mini set
of `drivesim bench`, repeated to fill the batch), compiled once per shape (compile time reported
apart), the median of `--repeats` runs after one warm-up run. `reset` (encoding the four context
keyframes) is also timed alone, so the per-step figure can leave it out: "s / step" = (time
of reset + rollout - time of reset alone) / frames, the wall time of one batched world-model
step. The reference engine runs the same scenarios, planner, agents, horizon and score terms
(`pdms_terms`), one compiled program likewise: with learned agents, the behaviour model with exact
boxes and no world model. The final frame's images leave the compiled program (a checksum), so XLA
cannot drop the cameras as dead code.

The machine may be shared: the load average is recorded before and after every measurement.
Prints a table and writes experiments/results/bench_closed_loop.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """Median wall time of `fn()` over `repeats` runs after one warm-up run (and all the times)."""
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - tic)
    return statistics.median(times), times


def compiled_memory(compiled) -> dict:
    """XLA's memory estimate of a compiled program (bytes), where the backend gives one."""
    try:
        mem = compiled.memory_analysis()
    except Exception:
        return {}
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "generated_code_size_in_bytes")
    out = {f.removesuffix("_size_in_bytes") + "_bytes": getattr(mem, f, None) for f in fields}
    out["peak_bytes"] = sum(out[k] or 0 for k in ("argument_bytes", "output_bytes", "temp_bytes"))
    return out


def flops_of(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost.get("flops", 0.0)) or None
    except Exception:
        return None


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict:
    """drivesim's machine description plus how busy the machine is (it may be shared)."""
    from drivesim.provenance import machine

    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        uptime = None
    return {**machine(), "uptime_at_start": uptime, "load_average_at_start": load_average()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "data" / "world_model_small.npz"), help="world model file")
    ap.add_argument("--dataroot", default=None, help="nuScenes-layout dataroot (default: the synthetic mini set)")
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument(
        "--horizon", type=int, default=None, help="sim steps per rollout, 0.1 s each (default 40; quick 10)"
    )
    ap.add_argument("--batches", default=None, help="comma-separated scenario batches (default 1,8,32; quick 1,2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 3; quick 2)")
    ap.add_argument("--agents", choices=("learned", "cv", "log", "idm"), default="learned",
                    help="the other agents of both engines: learned (the default: the behaviour model; the world "
                    "model free-running, rendering them), cv, or the guided pass-through of log / idm")  # fmt: skip
    ap.add_argument("--behaviour", default=str(ROOT / "data" / "behaviour_small.npz"), help="behaviour model file")
    ap.add_argument("--agent-every", type=int, default=None,
                    help="sim steps between the learned agents' decisions, 1 or 5 (default: the engine's, 1)")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="a smoke run: batches 1 and 2, 10 sim steps, 2 repeats")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_closed_loop.json"))
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from drivesim.atomic import write_json
    from drivesim.model.model_file import load_world_model
    from drivesim.pipelines.benchmark import BenchConfig
    from drivesim.pipelines.defaults import default_dataroot, ensure_synthetic
    from drivesim.pipelines.scenario_set import load_contexts, load_scenario_set
    from drivesim.planners.builtin import IdmPlanner
    from drivesim.provenance import provenance
    from drivesim.sim import engine, wm_engine
    from drivesim.sim.closed_loop import evaluate, pdms_terms, wm_pdms_terms

    con = Console(width=140)
    horizon = args.horizon or (10 if args.quick else 40)
    batches = tuple(int(b) for b in (args.batches or ("1,2" if args.quick else "1,8,32")).split(","))
    repeats = args.repeats or (2 if args.quick else 3)
    sim = engine.SimConfig(agents=args.agents)
    if args.agent_every is not None:
        import dataclasses

        sim = dataclasses.replace(sim, agent_every=args.agent_every)
    behaviour = None
    if args.agents == "learned":
        from drivesim.model.behaviour_file import load_behaviour
        from drivesim.sim.learned_agents import BehaviourHandle

        behaviour = BehaviourHandle.of(load_behaviour(args.behaviour))
    K = wm_engine.WMConfig.keyframe_steps
    if horizon % K:
        raise SystemExit(f"--horizon {horizon}: use a multiple of {K} sim steps (whole world-model frames)")
    frames = horizon // K
    planner = IdmPlanner()

    # the scenarios of `drivesim bench` on the synthetic mini set
    dataroot = Path(args.dataroot) if args.dataroot else default_dataroot()
    if args.dataroot is None:
        ensure_synthetic(dataroot, args.version)
    bench = BenchConfig(horizon=horizon, sim=sim)
    sset = load_scenario_set(dataroot, args.version, bench, count=max(batches), routes_first=True)
    names, stacked, scenarios = sset.names, sset.stacked, sset.scenarios
    model = load_world_model(args.checkpoint)
    from drivesim.model.probe_file import load_camera_refiner

    handle = wm_engine.ModelHandle.of(model, load_camera_refiner())
    contexts = load_contexts(dataroot, args.version, scenarios, model.cfg.frame_size, model.cfg.history)
    con.print(
        f"{Path(args.checkpoint).name} on {jax.default_backend()}: {len(scenarios)} distinct scenarios of "
        f"{len(names)} logs, {horizon} sim steps = {frames} world-model frames, IDM planner, {args.agents} agents"
    )

    def batch_of(n):
        """The first n scenarios (repeated to fill the batch): logs, t0s, contexts, keys."""
        rows = np.arange(n) % len(scenarios)
        idx = np.array([scenarios[r].log_index for r in rows])
        lg = jax.tree.map(lambda a: jnp.asarray(a[idx]), stacked)
        t0 = jnp.asarray([scenarios[r].t0 for r in rows], jnp.int32)
        ctx = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[rows]), contexts)
        keys = jax.random.split(jax.random.key(0), n)
        return lg, t0, ctx, keys

    def wm_program(cfg: wm_engine.WMConfig):
        terms_fn = wm_pdms_terms(bench.metrics, bench.drivable)

        def one(h, log, t0, ctx, key):
            params = planner.init(jax.random.key(0))
            state = wm_engine.reset(h, log, t0, ctx, key, cfg, behaviour)
            final, tr = wm_engine.rollout(h, state, planner, params, horizon, key, cfg, terms_fn)
            trace = tr.as_trace()
            scores = evaluate(state.base, trace, horizon, bench.metrics)
            # the last frame's views leave the program: the cameras cannot be dropped as dead code
            return scores.pdms, tr.ego.xy, jnp.sum(final.images, dtype=jnp.int32)

        def reset_only(h, log, t0, ctx, key):
            return wm_engine.reset(h, log, t0, ctx, key, cfg, behaviour)

        return (jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0))),
                jax.jit(jax.vmap(reset_only, in_axes=(None, 0, 0, 0, 0))))  # fmt: skip

    def reference_program():
        terms_fn = pdms_terms(bench.metrics)

        def one(log, t0, key):
            params = planner.init(jax.random.key(0))
            state = engine.reset(log, t0, key, sim, behaviour)
            _, trace = engine.rollout(state, planner, params, horizon, key, sim, terms_fn)
            return evaluate(state, trace, horizon, bench.metrics).pdms, trace.ego.xy

        return jax.jit(jax.vmap(one))

    def compile_(fn, *a):
        tic = time.perf_counter()
        compiled = fn.lower(*a).compile()
        return compiled, time.perf_counter() - tic

    results = {
        "machine": machine_info(),
        "provenance": provenance(checkpoint=args.checkpoint, dataroot=dataroot, version=args.version),
        "setup": {
            "checkpoint": Path(args.checkpoint).name,
            "dataroot": str(dataroot),
            "version": args.version,
            "distinct_scenarios": len(scenarios),
            "scenarios": [{"scene": s.scene, "t0": s.t0} for s in scenarios],
            "horizon_sim_steps": horizon,
            "sim_step_seconds": 0.1,
            "world_model_frames": frames,
            "sim_steps_per_frame": K,
            "planner": planner.name,
            "agents": args.agents,
            "agent_every": sim.agent_every,
            "metrics_in_loop": True,
            "repeats": repeats,
            "quick": args.quick,
            "cameras": model.cfg.cameras,
            "image_size": list(model.cfg.image_size),
            "sample_steps": model.cfg.sample_steps,
        },
        "reference": [],
        "world_model": [],
    }

    ref_fn = reference_program()
    for n in batches:
        lg, t0, _, keys = batch_of(n)
        load_before = load_average()
        compiled, compile_s = compile_(ref_fn, lg, t0, keys)
        sec, times = timed(lambda c=compiled, a=(lg, t0, keys): c(*a), repeats)
        row = {
            "batch": n,
            "compile_seconds": compile_s,
            "seconds_per_rollout": sec,
            "times": times,
            "seconds_per_frame_step": sec / frames,
            "scenario_frames_per_second": n * frames / sec,
            "sim_steps_per_second": n * horizon / sec,
            "memory": compiled_memory(compiled),
            "load_average": [load_before, load_average()],
            "peak_rss_bytes": peak_rss_bytes(),
        }
        results["reference"].append(row)
        con.print(f"reference    batch {n:>2}: {row['sim_steps_per_second']:>9.0f} scenario sim-steps/s "
                  f"(compile {compile_s:.1f} s)")  # fmt: skip
    ref_by_batch = {r["batch"]: r for r in results["reference"]}

    for cams in ("refiner", "off"):
        cfg = wm_engine.WMConfig(sim=sim, cameras=cams, layout=True)
        full_fn, reset_fn = wm_program(cfg)
        for n in batches:
            lg, t0, ctx, keys = batch_of(n)
            load_before = load_average()
            compiled, compile_s = compile_(full_fn, handle, lg, t0, ctx, keys)
            sec, times = timed(lambda c=compiled, a=(handle, lg, t0, ctx, keys): c(*a), repeats)
            reset_c, reset_compile_s = compile_(reset_fn, handle, lg, t0, ctx, keys)
            reset_sec, _ = timed(lambda c=reset_c, a=(handle, lg, t0, ctx, keys): c(*a), repeats)
            pdms, _, checksum = compiled(handle, lg, t0, ctx, keys)
            step_sec = max(sec - reset_sec, 0.0) / frames
            ref = ref_by_batch[n]
            row = {
                "cameras": cams,
                "batch": n,
                "compile_seconds": compile_s,
                "reset_compile_seconds": reset_compile_s,
                "seconds_per_rollout": sec,
                "times": times,
                "reset_seconds": reset_sec,
                "seconds_per_frame_step": step_sec,
                "seconds_per_frame_step_with_reset": sec / frames,
                "scenario_frames_per_second": n * frames / sec,
                "sim_steps_per_second": n * horizon / sec,
                "scenario_frames_per_second_without_reset": n / step_sec if step_sec else None,
                "slowdown_vs_reference": sec / ref["seconds_per_rollout"],
                "flops_per_rollout": flops_of(compiled),
                "memory": compiled_memory(compiled),
                "load_average": [load_before, load_average()],
                "peak_rss_bytes": peak_rss_bytes(),
                "mean_pdms": float(np.mean(np.asarray(pdms))),
                "images_checksum": int(checksum.sum()),
            }
            results["world_model"].append(row)
            con.print(
                f"world model  batch {n:>2} ({'6 views + BEV' if cams != 'off' else 'BEV only'}): {step_sec:.3f} s / step, "
                f"{row['sim_steps_per_second']:.1f} scenario sim-steps/s (compile {compile_s:.1f} s)"
            )

    results["load_average_at_end"] = load_average()
    results["process_peak_rss_bytes"] = peak_rss_bytes()
    b8 = next((r for r in results["world_model"] if r["cameras"] != "off" and r["batch"] == 8), None)
    if b8 is not None:
        results["batch8_six_views_step_under_1s"] = b8["seconds_per_frame_step"] < 1.0
        results["batch8_six_views_step_under_0.5s"] = b8["seconds_per_frame_step"] <= 0.5
        bev8 = next((r for r in results["world_model"] if r["cameras"] == "off" and r["batch"] == 8), None)
        if bev8 is not None and bev8["seconds_per_frame_step"]:
            results["batch8_bev_only_speedup"] = b8["seconds_per_frame_step"] / bev8["seconds_per_frame_step"]

    table = Table(
        title=f"closed loop, {frames} world-model frames ({horizon} sim steps), IDM planner, PDMS terms in the loop, "
        f"{jax.default_backend()}, load {results['machine']['load_average_at_start'][0]:.1f}"
    )
    cols = ("engine", "batch", "compile (s)", "s / rollout", "reset (s)", "s / step", "frames/s", "sim steps/s",
            "x reference", "XLA peak (MB)")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right")
    for r in results["reference"]:
        table.add_row(
            "reference", str(r["batch"]), f"{r['compile_seconds']:.1f}", f"{r['seconds_per_rollout']:.3f}", "",
            f"{r['seconds_per_frame_step']:.4f}", f"{r['scenario_frames_per_second']:.0f}",
            f"{r['sim_steps_per_second']:.0f}", "1", f"{r['memory'].get('peak_bytes', 0) / 1e6:.0f}",
        )  # fmt: skip
    for r in results["world_model"]:
        table.add_row(
            "WM 6 views + BEV" if r["cameras"] != "off" else "WM BEV only", str(r["batch"]),
            f"{r['compile_seconds']:.1f}", f"{r['seconds_per_rollout']:.3f}", f"{r['reset_seconds']:.3f}",
            f"{r['seconds_per_frame_step']:.3f}", f"{r['scenario_frames_per_second']:.2f}",
            f"{r['sim_steps_per_second']:.1f}", f"{r['slowdown_vs_reference']:.0f}",
            f"{r['memory'].get('peak_bytes', 0) / 1e6:.0f}",
        )  # fmt: skip
    con.print(table)
    con.print(
        "s / step: wall time of one batched world-model step (0.5 s simulated: 5 sim steps + one predicted frame), "
        "reset excluded; frames/s and sim steps/s: scenario-frames (scenario sim steps) per second, reset included; "
        "x reference: world-model rollout time / reference rollout time on the same scenarios"
    )
    if b8 is not None:
        verdict = "under" if results["batch8_six_views_step_under_1s"] else "NOT under"
        con.print(f"batch 8, six views + BEV: {b8['seconds_per_frame_step']:.3f} s per step ({verdict} 1 s)")
    con.print(f"process peak resident memory {results['process_peak_rss_bytes'] / 1e9:.2f} GB; "
              f"load average {results['machine']['load_average_at_start']} -> {results['load_average_at_end']}")  # fmt: skip
    con.print(f"saved {write_json(args.out, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

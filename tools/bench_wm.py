"""World-model benchmark: parameters, compile time, training throughput, generation latency, memory.

    .venv/bin/python tools/bench_wm.py                       # the shipped `small` model
    .venv/bin/python tools/bench_wm.py --config experiments/wm_base.py --out experiments/results/bench_wm_base.json
    .venv/bin/python tools/bench_wm.py --quick               # fewer repeats, batch 16 generation skipped

Generation = one scenario's full rollout: encode 4 context keyframes (six views + BEV), sample
`--future` keyframes with the flow-matching sampler (one `lax.scan`), decode them to six images
and a BEV grid each. Latencies are medians over repeats after compilation; "frames/s" counts
generated keyframes (each = six camera views + one BEV grid) per second. Training throughput is
the median time of the jitted update (`drivesim.train`) on random batches of the experiment's batch
size. Peak memory is XLA's estimate for the compiled rollout (arguments + temporaries + outputs)
and the process's peak resident set. On a GPU, model FLOPs utilisation = XLA's FLOP count of
the compiled function / time / the device's peak (set --peak-tflops; H100 SXM dense bf16 ~ 989).
Prints a table and writes experiments/results/bench_wm.json.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def flops_of(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost.get("flops", 0.0)) or None
    except Exception:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "experiments" / "wm_small.py"), help="experiment file")
    ap.add_argument("--checkpoint", default=None, help="a trained model file (default: random weights, same speed)")
    ap.add_argument("--future", type=int, default=6, help="keyframes to generate (6 = 3 s at 2 Hz)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (GPU only)")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_wm.json"))
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from rich.console import Console
    from rich.table import Table

    from drivesim.atomic import write_json
    from drivesim.model.model_file import load_world_model
    from drivesim.model.predict import Predictor, _rollout
    from drivesim.model.tasks import DynamicsTask, TokenizerTask
    from drivesim.model.world import WorldModel
    from drivesim.pipelines.defaults import load_experiment
    from drivesim.provenance import machine, provenance
    from drivesim.train.loop import init_train_state, make_train_step, model_graphdef
    from drivesim.train.mesh import make_mesh

    con = Console(width=120)
    exp = load_experiment(args.config, quick=False)
    cfg = exp.model
    model = load_world_model(args.checkpoint, cfg) if args.checkpoint else WorldModel(cfg, rngs=nnx.Rngs(0))
    count = lambda m: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(m, nnx.Param)))  # noqa: E731
    params = {
        "tokenizers": count(model.tokenizers),
        "dynamics": count(model.dynamics),
    }
    params["total"] = params["tokenizers"] + params["dynamics"]
    backend = jax.default_backend()
    results = {
        "machine": machine(),
        "provenance": provenance(checkpoint=args.checkpoint),
        "config": Path(args.config).name,
        "parameters": params,
        "future_keyframes": args.future,
        "generation": [],
    }
    con.print(f"{Path(args.config).name}: {params['total'] / 1e6:.2f} M parameters on {backend}")
    repeats = 3 if args.quick else 7
    H, F = cfg.history, args.future
    w, h = cfg.frame_size
    rng = np.random.default_rng(0)
    predictor = Predictor(model)

    def inputs(B):
        frames = jnp.asarray(rng.integers(0, 255, (B, H, cfg.cameras, h, w, 3), dtype=np.uint8))
        occ = jnp.asarray(rng.integers(0, 9, (B, H, 160, 160), dtype=np.uint8))
        motion = jnp.tile(jnp.asarray([4.0, 0.0, 0.0], jnp.float32), (B, H + F - 1, 1))
        agents = jnp.zeros((B, H + F, 64, 8), jnp.float32)
        return frames, occ, motion, agents, jnp.zeros((B,), bool)

    peak_flops = args.peak_tflops * 1e12 if args.peak_tflops else None
    for B in (1,) if args.quick else (1, 16):
        frames, occ, motion, agents, on = inputs(B)
        key = jax.random.key(0)
        tic = time.perf_counter()
        compiled = (
            jax.jit(lambda *a: _rollout(predictor.graphdef, *a))
            .lower(predictor.state, frames, occ, motion, agents, on, key)
            .compile()
        )
        compile_s = time.perf_counter() - tic
        sec = timed(lambda: compiled(predictor.state, frames, occ, motion, agents, on, key), repeats)  # noqa: B023
        mem = compiled.memory_analysis()
        peak = sum(
            getattr(mem, f, 0) or 0
            for f in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")  # fmt: skip
        )
        flops = flops_of(compiled)
        row = {
            "batch": B,
            "compile_seconds": compile_s,
            "seconds_per_rollout": sec,
            "seconds_per_future_step": sec / F,
            "keyframes_per_second": B * F / sec,
            "images_per_second": B * F * (cfg.cameras + 1) / sec,
            "xla_peak_bytes": peak,
            "flops_per_rollout": flops,
            "mfu": (flops / sec / peak_flops) if (flops and peak_flops and backend == "gpu") else None,
        }
        results["generation"].append(row)
        con.print(f"generation batch {B:>2}: {sec:.3f} s per {F}-keyframe rollout (compile {compile_s:.1f} s)")

    # rollout memory vs horizon: the sliding window keeps it flat
    mem_rows = []
    for f in (6, 12, 24):
        frames, occ, _, _, on = inputs(1)
        motion = jnp.zeros((1, H + f - 1, 3), jnp.float32)
        agents = jnp.zeros((1, H + f, 64, 8), jnp.float32)
        c = (
            jax.jit(lambda *a: _rollout(predictor.graphdef, *a))
            .lower(predictor.state, frames, occ, motion, agents, on, jax.random.key(0))
            .compile()
        )
        mem_rows.append({"future": f, "temp_bytes": c.memory_analysis().temp_size_in_bytes})
    results["memory_vs_horizon"] = mem_rows

    # training throughput, one jitted update of each stage on random batches
    mesh = make_mesh(jax.devices()[:1])
    train_rows = []
    for name, task, tcfg in (
        ("tokenizer", TokenizerTask("unused", cfg), exp.tokenizer),
        ("dynamics", DynamicsTask(None, cfg), exp.dynamics),
    ):
        B = tcfg.batch_size
        if name == "tokenizer":
            batch = {
                "frames": rng.integers(0, 255, (B, cfg.cameras, h, w, 3), dtype=np.uint8),
                "occupancy": rng.integers(0, 9, (B, 160, 160), dtype=np.uint8),
            }
        else:
            W = cfg.window
            r, c = cfg.cam_grid
            g = cfg.occ_latent_grid
            batch = {
                "cam": rng.normal(size=(B, W, cfg.cameras, r, c, cfg.cam_latent)).astype(np.float32),
                "occ": rng.normal(size=(B, W, g, g, cfg.occ_latent)).astype(np.float32),
                "motion": rng.normal(size=(B, W, 3)).astype(np.float32),
                "layout": rng.integers(0, 9, (B, W, cfg.occ_grid, cfg.occ_grid)).astype(np.int32),
            }
        batch = jax.tree.map(jnp.asarray, batch)
        from drivesim.train.loop import resolve_compute_dtype

        dtype = resolve_compute_dtype(tcfg.compute_dtype, backend)
        step = make_train_step(task, tcfg, model_graphdef(task), mesh, dtype)
        state = init_train_state(task, tcfg, mesh)
        tic = time.perf_counter()
        compiled = step.lower(state, batch).compile()
        compile_s = time.perf_counter() - tic
        flops = flops_of(compiled)
        holder = {"s": state}

        def one(compiled=compiled, batch=batch, holder=holder):
            holder["s"], out = compiled(holder["s"], batch)
            return out["loss"]

        sec = timed(one, max(2, repeats // 2))
        train_rows.append(
            {
                "stage": name,
                "batch": B,
                "compute_dtype": str(dtype),
                "compile_seconds": compile_s,
                "seconds_per_step": sec,
                "samples_per_second": B / sec,
                "mfu": (flops / sec / peak_flops) if (flops and peak_flops and backend == "gpu") else None,
            }
        )
        con.print(f"training {name}: {B / sec:.1f} samples/s (batch {B}, compile {compile_s:.1f} s)")
    results["training"] = train_rows
    results["process_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    table = Table(title=f"world model {Path(args.config).stem} ({params['total'] / 1e6:.2f} M params) on {backend}")
    for col in ("", "batch", "compile (s)", "s / rollout", "s / future step", "keyframes/s", "XLA peak (MB)", "MFU"):
        table.add_column(col, justify="right")
    for r in results["generation"]:
        table.add_row(
            "generate", str(r["batch"]), f"{r['compile_seconds']:.1f}", f"{r['seconds_per_rollout']:.3f}",
            f"{r['seconds_per_future_step']:.3f}", f"{r['keyframes_per_second']:.1f}",
            f"{r['xla_peak_bytes'] / 1e6:.0f}", f"{r['mfu']:.1%}" if r["mfu"] else "-",
        )  # fmt: skip
    for r in train_rows:
        table.add_row(
            f"train {r['stage']}", str(r["batch"]), f"{r['compile_seconds']:.1f}", "", "",
            f"{r['samples_per_second']:.1f} samples/s", "", f"{r['mfu']:.1%}" if r["mfu"] else "-",
        )  # fmt: skip
    con.print(table)
    for m in mem_rows:
        con.print(f"rollout of {m['future']:>2} keyframes: temporary memory {m['temp_bytes'] / 1e6:.1f} MB")
    con.print(f"process peak resident memory {results['process_peak_rss_bytes'] / 1e9:.2f} GB")
    con.print(f"saved {write_json(args.out, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Model FLOPs utilisation of a training step, ready for the day a GPU or TPU is lent.

    .venv/bin/python tools/bench_mfu.py                      # the behaviour model, batch 64, 30 steps
    .venv/bin/python tools/bench_mfu.py --batch 128 --width 256 --steps 50

Builds the shipped behaviour model's train step (`drivesim.train`: AdamW, clipping, bf16 on
GPU/TPU) on the traffic data of `experiments/behaviour_small.py --quick` (one seed, 8 scenes,
simulated on first use), compiles it, reads its FLOPs from XLA's cost analysis, and times `--steps`
updates after two warm-up ones. MFU = FLOPs per step / seconds per step / the device's peak (dense
bf16 on GPU/TPU; on a CPU no peak is known and only the achieved FLOP/s are reported). Every
device of the process takes part (the batch is split over them). Prints a table and writes
experiments/results/bench_mfu.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense bf16 peak FLOP/s by device kind (vendor data sheets), per device.
PEAK = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6": 918e12,
}  # fmt: skip


def peak_flops(kind: str) -> float | None:
    return next((v for k, v in PEAK.items() if k.lower() in kind.lower()), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="global batch (at most the examples of the data)")
    ap.add_argument("--width", type=int, default=None, help="model width (default: the shipped model's)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_mfu.json"))
    args = ap.parse_args()

    import jax
    import numpy as np
    from rich.console import Console

    from drivesim.atomic import write_json
    from drivesim.model.behaviour import BehaviourConfig
    from drivesim.model.behaviour_task import BehaviourTask
    from drivesim.pipelines.behaviour import TrafficData, traffic_scenes
    from drivesim.provenance import machine, provenance
    from drivesim.train import TrainConfig
    from drivesim.train.loop import (
        host_batches,
        init_train_state,
        make_train_step,
        model_graphdef,
        resolve_compute_dtype,
    )
    from drivesim.train.mesh import global_batch, make_mesh

    con = Console(width=120)
    cfg = BehaviourConfig() if args.width is None else dataclasses.replace(BehaviourConfig(), width=args.width)
    data = traffic_scenes(TrafficData(seeds=(100,), scenes_per_seed=8, cache=str(ROOT / "data/train/behaviour_quick")))
    task = BehaviourTask(data, cfg)
    if args.batch > len(task.items):
        raise SystemExit(f"bench_mfu: --batch {args.batch} is more than the {len(task.items)} examples of the data")
    train = TrainConfig(steps=args.steps + 2, batch_size=args.batch, warmup_steps=1)
    mesh = make_mesh()
    device = mesh.devices.flat[0]
    dtype = resolve_compute_dtype(train.compute_dtype, device.platform)
    state = init_train_state(task, train, mesh)
    stream = host_batches(task, args.batch, 0)
    batch = global_batch(next(stream), mesh, args.batch)
    tic = time.perf_counter()
    step = make_train_step(task, train, model_graphdef(task), mesh, dtype).lower(state, batch).compile()
    compile_s = time.perf_counter() - tic
    cost = step.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan")))
    batches = [global_batch(next(stream), mesh, args.batch) for _ in range(4)]
    for i in range(2):
        state, out = step(state, batches[i % 4])
    jax.block_until_ready(out)
    times = []
    for i in range(args.steps):
        tic = time.perf_counter()
        state, out = step(state, batches[i % 4])
        jax.block_until_ready(out)
        times.append(time.perf_counter() - tic)
    sec = statistics.median(times)
    peak = peak_flops(device.device_kind)
    achieved = flops / sec
    mfu = achieved / (peak * mesh.size) if peak else None
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    con.print(f"{device.device_kind} x{mesh.size} ({device.platform}, {dtype.name}): {params / 1e6:.2f} M parameters, "
              f"batch {args.batch}, compile {compile_s:.1f} s")  # fmt: skip
    con.print(f"  {flops / 1e9:.2f} GFLOP per step, {sec * 1e3:.1f} ms per step (median of {args.steps}), "
              f"{achieved / 1e12:.3f} TFLOP/s" + (f", MFU {100 * mfu:.1f}%" if mfu is not None else
                                                   " (no known peak for this device: no MFU)"))  # fmt: skip
    result = {
        "device_kind": device.device_kind, "platform": device.platform, "devices": mesh.size,
        "compute_dtype": dtype.name, "parameters": params, "batch": args.batch, "width": cfg.width,
        "flops_per_step": flops, "seconds_per_step": sec, "achieved_flops": achieved,
        "peak_flops_per_device": peak, "mfu": mfu, "compile_seconds": compile_s,
        "machine": machine(), "provenance": provenance(),
    }  # fmt: skip
    con.print(f"saved {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

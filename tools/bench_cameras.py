"""Camera-module benchmark: the ego warp, the camera refiner and the perception probe, per
closed-loop keyframe at batch 8 (six 64x32 views each), jitted, on this machine's device.

    .venv/bin/python tools/bench_cameras.py            # writes experiments/results/bench_cameras.json
    .venv/bin/python tools/bench_cameras.py --repeats 3

Each figure is the median of `--repeats` timed calls after one compile call; the ratio of the
refiner to the warp is what learning adds to the warp's cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_cameras.json"))
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from rich.console import Console
    from rich.table import Table

    from drivesim.atomic import write_json
    from drivesim.model.ego_warp import compose_poses, crop_offset, pixel_points, warp_views
    from drivesim.model.probe_file import DEFAULT, DEFAULT_CAMERA, load_camera_refiner, load_probe
    from drivesim.provenance import machine, provenance

    B = args.batch
    refiner, probe = load_camera_refiner(), load_probe()
    cfg = refiner.cfg
    rig, offset = refiner.rig(), crop_offset(cfg.frame_size, cfg.image_size)
    points = pixel_points(rig, cfg.image_size, offset, cfg.max_range)
    rng = np.random.default_rng(0)
    last = jnp.asarray(rng.integers(0, 256, (B, 6, 32, 64, 3), dtype=np.uint8))
    motion = jnp.asarray(np.tile([[[2.0, 0.05, 0.02]]], (B, 1, 1)), jnp.float32)  # one keyframe ahead
    layout = np.zeros((B, 64, 8), np.float32)
    layout[:, :12] = [12.0, 3.0, 0.0, 4.5, 1.9, 1.6, 0, 1]
    layout[:, :12, 0] += np.arange(12) * 4.0
    layout = jnp.asarray(layout)

    warp = jax.jit(
        lambda x, m: jax.vmap(lambda im, p: warp_views(im.astype(jnp.float32), points, p, rig, offset))(
            x, compose_poses(m)
        )
    )
    refine = nnx.jit(lambda r, x, m, lay: jax.vmap(lambda im, p, l0: r(im, p, l0, l0[None]))(x, compose_poses(m), lay))
    read = nnx.jit(lambda p, x: p(x))
    jobs = {
        "ego warp": lambda: warp(last, motion),
        "camera refiner (warp + layout render + U-Net)": lambda: refine(refiner, last, motion, layout),
        "perception probe": lambda: read(probe, last),
    }
    con = Console()
    results = {"machine": machine(), "batch": B, "repeats": args.repeats, "views": 6, "image_size": list(cfg.image_size),
               "provenance": provenance(checkpoint=DEFAULT_CAMERA), "probe": str(DEFAULT), "seconds": {}}  # fmt: skip
    for name, fn in jobs.items():
        jax.block_until_ready(fn())
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - t)
        results["seconds"][name] = statistics.median(times)
    sec = results["seconds"]
    results["refiner_over_warp"] = sec["camera refiner (warp + layout render + U-Net)"] / sec["ego warp"]
    table = Table(title=f"camera modules, one keyframe of {B} clips x 6 views ({jax.devices()[0].platform})")
    table.add_column("module")
    table.add_column("median s", justify="right")
    table.add_column("ms per clip", justify="right")
    for name, s in sec.items():
        table.add_row(name, f"{s:.3f}", f"{1000 * s / B:.1f}")
    con.print(table)
    con.print(f"refiner / warp: {results['refiner_over_warp']:.1f}x")
    write_json(Path(args.out), results)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

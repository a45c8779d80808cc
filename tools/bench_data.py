"""Data benchmark: synthetic generation, rendering, log loading and cache reading speeds.

    .venv/bin/python tools/bench_data.py            # full: the default 10-scene mini set
    .venv/bin/python tools/bench_data.py --quick    # 2 short scenes, for a smoke test

Prints a table and writes experiments/results/bench_data.json. Timings are medians of repeated
runs where repeating is cheap; the machine is described in the JSON.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2 short scenes instead of the default mini set")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_data.json"))
    args = ap.parse_args()

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from drivesim.atomic import write_json
    from drivesim.data.cache import CacheConfig, ClipLoader, build_cache
    from drivesim.data.dataroot import open_nuscenes
    from drivesim.data.loader import LoadConfig, load_log
    from drivesim.data.map_index import map_index
    from drivesim.provenance import machine, provenance
    from drivesim.synth import camera_frames
    from drivesim.synth.dataset import SynthConfig, generate, load_recipes, plan_for
    from drivesim.synth.rig import nuscenes_rig
    from drivesim.synth.world import simulate

    con = Console()
    cfg = SynthConfig(scenes=2, seconds=8.0) if args.quick else SynthConfig()
    work = Path(tempfile.mkdtemp(prefix="drivesim-bench-"))
    results: dict = {
        "machine": machine(),
        "config": {"quick": args.quick, "scenes": cfg.scenes, "seconds": cfg.seconds},
        "provenance": provenance(version=cfg.version, seed=cfg.seed),  # its own set, in a temporary folder
    }
    try:
        # 1. The whole synthetic set, as `drivesim synth` makes it (one cold process would add ~2 s of imports).
        con.print(f"generating {cfg.scenes} scenes x {cfg.seconds:g} s at {cfg.image_width} px, {cfg.camera_hz} Hz ...")
        report = generate(cfg, work / "synth", progress=True)
        results["synth"] = {
            "seconds": report["seconds"],
            "images": report["images"],
            "bytes_on_disk": report["bytes"],
            "images_per_second_end_to_end": report["images"] / report["seconds"],
            "stage_seconds": report["timings"],
        }

        # 2. Renderer alone, after compilation: the camera frames of one scene.
        recipe = load_recipes(work / "synth")[0]
        record = simulate(plan_for(recipe))
        rig = nuscenes_rig(cfg.image_width)
        times = [t for t in np.arange(0, cfg.seconds - 0.5, 1.0 / cfg.camera_hz) for _ in rig]
        channels = [cam.channel for _ in range(len(times) // len(rig)) for cam in rig]
        camera_frames.render_scene(record, rig, times[:12], channels[:12])  # compile
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            camera_frames.render_scene(record, rig, times, channels)
            runs.append(len(times) / (time.perf_counter() - t0))
        results["render"] = {"images": len(times), "images_per_second_median": statistics.median(runs)}
        t0 = time.perf_counter()
        simulate(plan_for(recipe))
        results["simulate_seconds_per_scene"] = time.perf_counter() - t0

        # 3. Loading logs: cold (first scene of a location builds its map index) and warm.
        t0 = time.perf_counter()
        nusc = open_nuscenes(work / "synth", cfg.version)
        results["open_tables_seconds"] = time.perf_counter() - t0
        map_index.cache_clear()
        per_scene, first = [], None
        for s in nusc.scene:
            t0 = time.perf_counter()
            load_log(nusc, s["name"], LoadConfig())
            dt = time.perf_counter() - t0
            first = dt if first is None else first
            per_scene.append(dt)
        results["load_log"] = {
            "seconds_per_scene_median": statistics.median(per_scene),
            "seconds_first_scene_cold": first,
            "scenes": len(per_scene),
        }

        # 4. Cache: build (2 workers) and read.
        ccfg = CacheConfig()
        t0 = time.perf_counter()
        crep = build_cache(work / "synth", cfg.version, work / "cache", ccfg, workers=2, progress=True)
        results["cache_build"] = {
            "seconds": time.perf_counter() - t0,
            "scenes_per_second": crep["scenes"] / (time.perf_counter() - t0),
            "clips": crep["clips"],
            "bytes": crep["bytes"],
        }
        loader = ClipLoader(work / "cache", batch_size=16, seed=0)
        rates = []
        for epoch in range(3):
            t0 = time.perf_counter()
            n = sum(len(b["ego"]) for b in loader.epoch(epoch))
            rates.append(n / (time.perf_counter() - t0))
        results["cache_read"] = {
            "clips_per_second_median": statistics.median(rates),
            "batch_size": 16,
            "batch_megabytes": loader.batch_bytes / 1e6,
            "clip_length": ccfg.clip_length,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title="drivesim data benchmark")
    table.add_column("measure")
    table.add_column("value", justify="right")
    s = results["synth"]
    table.add_row(f"synthetic set ({cfg.scenes} scenes x {cfg.seconds:g} s, 6 cams)", f"{s['seconds']:.1f} s")
    table.add_row("  camera images / size on disk", f"{s['images']} / {s['bytes_on_disk'] / 1e6:.1f} MB")
    for k, v in s["stage_seconds"].items():
        table.add_row(f"  stage: {k}", f"{v:.1f} s")
    table.add_row(
        "frames rendered per second (160x90, after compile)", f"{results['render']['images_per_second_median']:.0f}"
    )
    table.add_row("traffic simulation per 20 s scene", f"{results['simulate_seconds_per_scene']:.2f} s")
    table.add_row("open tables (NuScenes)", f"{results['open_tables_seconds']:.2f} s")
    table.add_row("log loading per scene (median)", f"{results['load_log']['seconds_per_scene_median']:.2f} s")
    table.add_row(
        "log loading, first scene (cold map index)", f"{results['load_log']['seconds_first_scene_cold']:.2f} s"
    )
    table.add_row(
        "cache build (2 workers)", f"{results['cache_build']['seconds']:.1f} s, {results['cache_build']['clips']} clips"
    )
    table.add_row("cache clips read per second (batch 16)", f"{results['cache_read']['clips_per_second_median']:.0f}")
    con.print(table)
    con.print(f"saved {write_json(args.out, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

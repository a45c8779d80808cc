"""Scaling over processes: `drivesim bench` scenario throughput and a training step, on 1 process
and on 2 processes (one device each), started with `drivesim launch`, plus a CPU-bound control that
shows what this machine itself allows.

    .venv/bin/python tools/bench_scale.py            # kinematic and truth engines, training, control
    .venv/bin/python tools/bench_scale.py --quick    # fewer scenarios and steps

- bench: the IDM planner on the scenarios of a 30-scene synthetic set written once to data/scale
  (8 s each, batch 32: all 210 under the kinematic engine, 48 under the truth engine), timed by the
  benchmark itself, after what compiles: throughput = scenarios after the first batch / time after
  it (kinematic); scenarios after each process's first / time after it (truth, which re-simulates
  on the host one scenario at a time).
- train: the shipped behaviour model's architecture on the traffic data of
  `experiments/behaviour_small.py --quick` (one seed, 8 scenes), global batch 32; the median
  seconds per step over the logged intervals after the first (compilation is outside them).
- control: a pure-Python loop of fixed total work, split over 1 or 2 processes: the ceiling the
  machine gives to two processes whatever drivesim does.
- The first rows let every process use every core (`drivesim launch --no-pin-cpus`); "1 core per
  process" holds each to its own core (`taskset` for one process; `--pin-cpus`, the launcher's
  default, for two). A single unpinned process's jitted batch already uses both cores of this
  machine in part, so that row shows how the program scales when each process has a core.

Every setting runs `--repeats` times (default 3), interleaved; the table gives medians and the
ratios of medians. Writes experiments/results/bench_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXPERIMENT = """
    import dataclasses
    from drivesim.pipelines.behaviour import BehaviourExperiment, TrafficData
    from drivesim.model.behaviour import BehaviourConfig
    from drivesim.train import TrainConfig

    def get_config(quick=False):
        return BehaviourExperiment(
            model=BehaviourConfig(),
            data=TrafficData(seeds=(100,), scenes_per_seed=8, cache={cache!r}),
            train=TrainConfig(steps={steps}, batch_size=32, learning_rate=1e-3, warmup_steps=5, log_every=5,
                              checkpoint_every=10000),
        )
"""

CONTROL = "import sys\nn = int(sys.argv[1])\ns = 0\nfor i in range(n):\n    s += i * i % 7\n"


def drivesim(argv: list[str], processes: int, pin: bool = False) -> None:
    """`drivesim argv` on `processes` processes of one device each; `pin`: one CPU core each."""
    cmd = [sys.executable, "-m", "drivesim.cli"]
    if processes > 1:
        cmd += ["launch", "--local-processes", str(processes), "--devices-per-process", "1"]
        cmd += ["--pin-cpus", "--"] if pin else ["--no-pin-cpus", "--"]
    elif pin:
        cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *cmd]
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=1"])
    p = subprocess.run(cmd + argv, env=env, capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        raise SystemExit(
            f"bench_scale: {' '.join(argv[:1])} on {processes} process(es) failed: {p.stderr.strip()[-600:]}"
        )


BATCH = 32
DATA = ROOT / "data" / "scale"  # 30 scenes of 20 s (small cameras): 210 scenarios of 8 s


def ensure_data() -> None:
    if not (DATA / "v1.0-mini" / "scene.json").exists():
        drivesim(["synth", "--quiet", "--out", str(DATA), "--scenes", "30", "--seed", "7", "--image-width", "64",
                  "--camera-hz", "4", "--workers", "2", "--overwrite"], 1)  # fmt: skip


def bench_throughput(engine: str, processes: int, scenarios: int | None, out: Path, pin: bool = False) -> float:
    """Scenarios per second of `drivesim bench --engine engine` on `processes` processes, after
    the first batch (kinematic) or the first scenario of each process (truth), which compile."""
    argv = ["bench", "--quiet", "--dataroot", str(DATA), "--planners", "idm", "--horizon", "8", "--batch",
            str(BATCH), "--engine", engine, "--out", str(out)]  # fmt: skip
    if scenarios:
        argv += ["--scenarios", str(scenarios)]
    drivesim(argv, processes, pin)
    res = json.loads((out / "results.json").read_text())
    n = res["config"]["scenarios"]
    t = res["timing"]["idm"]  # process 0's clock: it waits for every batch (kinematic) or runs its block (truth)
    if engine == "truth":
        return (n - processes) / (t["seconds"] - t["first_batch_seconds"])
    return (n - BATCH) / (t["seconds"] - t["first_batch_seconds"])


def train_step_seconds(processes: int, steps: int, workdir: Path, config: Path) -> float:
    drivesim(["train", "--quiet", "--config", str(config), "--workdir", str(workdir)], processes)
    logs = [json.loads(x) for x in (workdir / "behaviour" / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["seconds_per_step"] for r in logs[1:])


def control_seconds(processes: int, work: int) -> float:
    tic = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", CONTROL, str(work // processes)]) for _ in range(processes)]
    for p in procs:
        p.wait()
    return time.perf_counter() - tic


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="96 and 24 scenarios, 20 training steps, 2 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_scale.json"))
    args = ap.parse_args()
    repeats = args.repeats or (2 if args.quick else 3)
    scenarios = 96 if args.quick else None
    steps = 20 if args.quick else 40

    from rich.console import Console
    from rich.table import Table

    from drivesim.atomic import write_json
    from drivesim.provenance import machine, provenance

    con = Console(width=120)
    runs: dict[str, dict[int, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = tmp / "behaviour_scale.py"
        cache = str(ROOT / "data" / "train" / "behaviour_quick")
        config.write_text(textwrap.dedent(EXPERIMENT).format(cache=cache, steps=steps))
        con.print("warming up (the default data, the traffic cache, the compiled programs' imports) ...")
        ensure_data()
        train_step_seconds(1, 5, tmp / "warm_train", config)
        for r in range(repeats):
            for processes in (1, 2):
                con.print(f"repeat {r + 1}/{repeats}, {processes} process(es) ...")
                for engine, count in (("kinematic", scenarios), ("truth", 24 if args.quick else 48)):
                    out = tmp / f"{engine}_{processes}_{r}"
                    runs.setdefault(f"bench {engine} (scenarios/s)", {}).setdefault(processes, []).append(
                        bench_throughput(engine, processes, count, out)
                    )
                out = tmp / f"pinned_{processes}_{r}"
                runs.setdefault("bench kinematic, 1 core per process (scenarios/s)", {}).setdefault(
                    processes, []
                ).append(bench_throughput("kinematic", processes, scenarios, out, pin=True))
                rate = 32 / train_step_seconds(processes, steps, tmp / f"train_{processes}_{r}", config)
                runs.setdefault("train (examples/s)", {}).setdefault(processes, []).append(rate)
                secs = control_seconds(processes, 60_000_000)
                runs.setdefault("control (1/s)", {}).setdefault(processes, []).append(1.0 / secs)
    table = Table(title=f"throughput on 1 and 2 processes (1 device each), median of {repeats}")
    for col in ("workload", "1 process", "2 processes", "speed-up"):
        table.add_column(col, justify="right" if col != "workload" else "left")
    rows = {}
    for name, by in runs.items():
        one, two = statistics.median(by[1]), statistics.median(by[2])
        rows[name] = {"1": one, "2": two, "speedup": two / one, "runs": {str(k): v for k, v in by.items()}}
        table.add_row(name, f"{one:.3g}", f"{two:.3g}", f"{two / one:.2f}x")
    con.print(table)
    load = os.getloadavg()
    result = {
        "workloads": rows,
        "repeats": repeats,
        "settings": {
            "scenarios": scenarios or "all",
            "horizon_s": 4,
            "batch": 16,
            "train_steps": steps,
            "train_batch": 32,
            "devices_per_process": 1,
        },  # fmt: skip
        "load_average": list(load),
        "machine": machine(),
        "provenance": provenance(),
    }
    con.print(f"saved {write_json(args.out, result)} (load average {load[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

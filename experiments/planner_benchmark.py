"""Closed-loop benchmark of the built-in planners on the synthetic mini set (kinematic engine).

    .venv/bin/drivesim bench --agents log      --out experiments/results/bench_log
    .venv/bin/drivesim bench --agents reactive --out experiments/results/bench_reactive

(50 scenarios of 8 s from the 10 default scenes, every 2 s after 2 s of history; all ten
built-in planners; PDMS and EPDMS; bootstrap 95% intervals over scenarios.) Shrink switch for a quick local run:
`get_config(quick=True)` uses 12 scenarios and a 4 s horizon (`--scenarios 12 --horizon 4`).
"""

import dataclasses

from drivesim.pipelines.benchmark import BenchConfig
from drivesim.sim.engine import SimConfig


def get_config(agents: str = "log", quick: bool = False) -> BenchConfig:
    cfg = BenchConfig(sim=SimConfig(agents=agents))
    if quick:
        cfg = dataclasses.replace(cfg, scenarios=12, horizon=40)
    return cfg

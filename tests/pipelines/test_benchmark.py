"""The benchmark runner: bad scenarios are reported, never fatal; intervals are sane."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from drivesim.data.types import Trajectory
from drivesim.pipelines.benchmark import BenchConfig, bootstrap_ci, run_benchmark
from drivesim.pipelines.scenario_set import stack_logs
from drivesim.planners.builtin import LogReplay
from drivesim.sim.scenarios import Scenario


@dataclasses.dataclass(frozen=True)
class NanSometimes:
    """Returns NaN when the ego is fast (so some scenarios break, others do not)."""

    name: str = "nan_sometimes"

    def init(self, rng):
        return None

    def plan(self, params, obs, rng):
        t = (jnp.arange(40) + 1) * 0.1
        xy = jnp.stack([obs.ego.speed * t, 0 * t], -1)
        return Trajectory(xy=jnp.where(obs.ego.speed > 6.0, jnp.nan, xy), yaw=0 * t)


@pytest.mark.slow
def test_bad_scenarios_are_skipped_or_zeroed_with_a_reason(sim_logs):
    logs = list(sim_logs)
    # a log whose map lost its lanes: no route can be found for it
    no_lanes = logs[2].replace(map=logs[2].map.replace(lane_valid=np.zeros_like(np.asarray(logs[2].map.lane_valid))))
    logs[2] = no_lanes
    scenarios = [Scenario(i, f"s{i}", t0, 20, ()) for i in range(3) for t0 in (20, 50)]
    cfg = BenchConfig(horizon=20, batch=4, bootstrap=200)
    res = run_benchmark(stack_logs(logs), scenarios, {"expert": LogReplay(), "nan": NanSometimes()}, cfg)
    assert {(s["scene"], s["t0"]) for s in res["skipped"]} == {("s2", 20), ("s2", 50)}
    assert all("no lane route" in s["reason"] for s in res["skipped"])
    rows = [r for r in res["scenarios"] if r["planner"] == "nan"]
    assert len(rows) == 4
    broken = [r for r in rows if r["status"] == "planner_nan"]
    assert broken and all(r["pdms"] == 0.0 and "non-finite" in r["reason"] for r in broken)
    assert res["planners"]["nan"]["failures"] == len(broken)
    assert res["planners"]["expert"]["failures"] == 0 and res["ranking"][0] == "expert"


def test_bootstrap_interval_contains_the_mean_and_narrows():
    rng = np.random.default_rng(0)
    small = rng.uniform(size=10)
    big = rng.uniform(size=1000)
    lo, hi = bootstrap_ci(small, 1000, 0)
    assert lo <= small.mean() <= hi
    lo2, hi2 = bootstrap_ci(big, 1000, 0)
    assert hi2 - lo2 < hi - lo
    assert bootstrap_ci(np.ones(5), 100, 0) == (1.0, 1.0)


def test_the_compared_engine_runs_the_same_scenarios_seed_and_horizon():
    from drivesim.pipelines.benchmark import compared_config

    cfg = BenchConfig(horizon=20, seed=3)
    for other in (dataclasses.replace(cfg, seed=4), dataclasses.replace(cfg, horizon=30)):
        with pytest.raises(ValueError, match="compared_config"):  # refused before anything runs (no logs needed)
            run_benchmark(None, [], {}, cfg, compare=compared_config(other, "truth"))
    with pytest.raises(ValueError, match="itself"):
        run_benchmark(None, [], {}, cfg, compare=compared_config(cfg, "kinematic"))
    with pytest.raises(ValueError, match="TruthScenes"):
        run_benchmark(None, [], {}, cfg, compare=compared_config(cfg, "truth"))


def test_unknown_light_states_are_reported_as_not_available():
    """Real nuScenes has no light states: TLC is null, not a guessed 1, wherever they are unknown."""
    from drivesim.pipelines.benchmark import SCORE_KEYS, summarise

    n = 4
    res = {k: np.ones(n) for k in SCORE_KEYS}
    res.update(nan_step=-np.ones(n, int), seconds=1.0)
    scenarios = [Scenario(0, "s", 20 + i, 20, ()) for i in range(n)]
    cfg = BenchConfig(horizon=20, bootstrap=50)
    agg, rows = summarise("p", dict(res, tlc_known=np.zeros(n)), scenarios, cfg)
    assert agg["tlc"] is None and agg["tlc_scenarios"] == 0 and all(r["tlc"] is None for r in rows)
    assert agg["epdms"] == 1.0
    known = np.array([1.0, 1.0, 0.0, 0.0])
    agg, rows = summarise("p", dict(res, tlc_known=known, tlc=np.array([0.0, 1.0, 1.0, 1.0])), scenarios, cfg)
    assert agg["tlc"] == 0.5 and agg["tlc_scenarios"] == 2  # over the scenarios with known lights only
    assert [r["tlc"] for r in rows] == [0.0, 1.0, None, None]


def test_the_headline_score_is_checked():
    with pytest.raises(ValueError, match="score"):
        BenchConfig(score="cls")

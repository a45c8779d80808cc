"""The closed-loop planner benchmark behind `drivesim bench`.

Scenarios are selected from the logs (`drivesim.sim.scenarios`), every planner is rolled out on
every scenario in one compiled, vmapped program per planner (batches of scenarios), scored with
PDMS and the CLS aggregate, and summarised with bootstrap confidence intervals over scenarios.

`results.json` (stable schema, see `RESULTS_SCHEMA`):
    {"schema": 1, "config": {...}, "engine": "kinematic"|"world-model"|"truth", "agents": "log"|"idm"|"world",
     "score": "pdms"|"epdms"  (the headline: ranking and engine agreement),
     "planners": {NAME: {"pdms", "pdms_ci": [lo, hi], "nc", "dac", "ttc", "ep", "c",
                         "cls", "cls_ci", "epdms", "epdms_ci", "ddc", "tlc" (null where no scenario
                         had known light states), "tlc_scenarios", "lk", "hc", "ec",
                         "n", "failures", "by_tag": {TAG: {"pdms", "epdms", "n"}},
                         world-model engine only: "pdms_worst", "epdms_worst" (mean over scenarios
                         of the worst sampled future), "samples"}},
     "ranking": [NAME, ...]  (by the mean headline score, best first),
     "scenarios": [{"planner", "scene", "t0", "tags", "status", "reason",
                    "pdms", "nc", "dac", "ttc", "ep", "c", "cls", "ego_progress", "expert_progress",
                    "epdms", "ddc", "tlc" (null if unknown), "lk", "hc", "ec"}],
     "skipped": [{"scene", "t0", "reason"}], "timing": {...}}

Under the world-model engine (`BenchConfig.wm` set) every scenario is rolled out in
`BenchConfig.samples` sampled futures; a scenario's scores are their mean (and "pdms_worst" the
worst).

Comparing engines (`run_benchmark(compare=...)`, a second `BenchConfig` made by `compared_config`:
the kinematic or the truth engine on the same scenarios, seed, horizon, cadence and metrics) adds
    "compare": "kinematic"|"truth",
    "agreement": {"compare", "compare_agents", "kendall_tau", "kendall_tau_ci": [lo, hi],
                  "spearman_rho", "spearman_rho_ci", "max_abs_gap", "resamples", "scenarios"},
    "ranking_reference": [NAME, ...],
per planner "pdms_reference" (the compared engine's mean PDMS), "pdms_reference_ci", "pdms_gap"
(this engine minus the compared one) and "pdms_gap_ci", and per scenario row "pdms_reference".
The agreement ("score" in it) and the gaps are of the headline score: with "epdms" the keys are
"epdms_reference", "epdms_gap", ... (and "pdms_reference" is kept beside them).
The "reference" names are kept from when the compared engine could only be the kinematic one; the
intervals are bootstraps over scenarios (`drivesim.metrics.agreement`).

Under the truth engine (`BenchConfig.truth` set; `drivesim.sim.truth_engine`) every scenario is
re-simulated in the synthetic world from its recipe (`run_truth`, host-side, one scenario at a
time), with the same per-scenario keys and scores; its agents are the world's ("agents": "world").
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from drivesim import distributed
from drivesim.data.loader import LoadConfig
from drivesim.errors import ConfigError
from drivesim.metrics import epdms
from drivesim.metrics.pdms import MetricConfig
from drivesim.sim import truth_engine, wm_engine
from drivesim.sim.closed_loop import evaluate, pdms_terms, wm_pdms_terms
from drivesim.sim.engine import SimConfig, reset, rollout, simulates_agents
from drivesim.sim.scenarios import TAGS, Scenario

SCORE_KEYS = ("pdms", "nc", "dac", "ttc", "ep", "c", "cls", "ego_progress", "expert_progress",
              "epdms", "ddc", "tlc", "tlc_known", "lk", "hc", "ec")  # fmt: skip
EPDMS_TERMS = ("ddc", "tlc", "lk", "hc", "ec")
HEADLINES = ("pdms", "epdms")
RESULTS_SCHEMA = 1


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs."""

    horizon: int = 80
    """Closed-loop steps per scenario (0.1 s each)."""
    history: int = 20
    """Log steps required before a scenario's start."""
    stride: int = 20
    """Log steps between the starts of consecutive scenarios of a log."""
    scenarios: int | None = None
    """Use at most this many scenarios (evenly spread over the selection); None: all."""
    batch: int = 16
    """Scenarios per compiled batch."""
    seed: int = 0
    bootstrap: int = 1000
    """Bootstrap resamples for the confidence intervals."""
    sim: SimConfig = SimConfig()
    metrics: MetricConfig = MetricConfig()
    wm: wm_engine.WMConfig | None = None
    """The world-model engine's settings (its `sim` must equal `sim`); None: the reference engine."""
    samples: int = 2
    """World-model engine: sampled futures per scenario (scores: their mean and worst)."""
    drivable: str = "both"
    """World-model engine: where the drivable area comes from ("both", "prediction", "map")."""
    truth: truth_engine.TruthConfig | None = None
    """The truth engine's settings (its `sim` must equal `sim`); None: another engine."""
    load: LoadConfig = LoadConfig(rate_hz=10.0, max_agents=64, max_lane_segments=256, raster_size=1600)
    score: str = "pdms"
    """The headline score that ranks the planners and that engines are compared on: "pdms"
    (NAVSIM v1) or "epdms" (NAVSIM v2). Both are always computed."""

    def __post_init__(self):
        if self.score not in HEADLINES:
            raise ValueError(f"score must be one of {', '.join(HEADLINES)} (got {self.score!r})")
        if self.wm is not None and self.wm.sim != self.sim:
            raise ValueError("BenchConfig.wm.sim must equal BenchConfig.sim (one ego, tracker and agent model)")
        if self.truth is not None and self.truth.sim != self.sim:
            raise ValueError("BenchConfig.truth.sim must equal BenchConfig.sim (one ego, tracker and cadence)")
        if self.truth is not None and self.wm is not None:
            raise ValueError("BenchConfig: set wm (world-model engine) or truth (truth engine), not both")
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1 (got {self.samples})")

    @property
    def engine(self) -> str:
        if self.truth is not None:
            return "truth"
        return "kinematic" if self.wm is None else "world-model"


def _run_batch_fn(planner, cfg: BenchConfig):
    """jit(vmap) of reset -> rollout -> evaluate for one planner (cached: planners and configs
    are hashable, so benchmarking a planner again reuses its compiled program)."""
    terms_fn = pdms_terms(cfg.metrics)

    def one(log, t0, key_data, behaviour, human):
        key = jax.random.wrap_key_data(key_data)
        params = planner.init(jax.random.key(cfg.seed))
        state = reset(log, t0, key, cfg.sim, behaviour)
        _, trace = rollout(state, planner, params, cfg.horizon, key, cfg.sim, terms_fn)
        scores = evaluate(state, trace, cfg.horizon, cfg.metrics, human)
        nan_step = jnp.where(trace.plan_nan.any(), jnp.argmax(trace.plan_nan), -1)
        return scores, trace.ego.xy, state.route_ok, nan_step

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None, 0)))


@functools.lru_cache(maxsize=8)
def _human_fn(horizon: int, metrics: MetricConfig):
    return jax.jit(jax.vmap(lambda log, t0: epdms.human_terms(log, t0, horizon, metrics)))


def human_filter_terms(logs, scenarios: list[Scenario], cfg: BenchConfig) -> dict[str, np.ndarray] | None:
    """EPDMS's human-filter terms of every scenario (the logged ego over the horizon: its DAC, DDC,
    TLC, LK, HC; `drivesim.metrics.epdms.human_terms`), host arrays (n,) by name. They depend on
    the scenario only, so a benchmark computes them once and every planner and engine shares them.
    None when the metrics do not use the filter."""
    if not (cfg.metrics.epdms and cfg.metrics.human_filter):
        return None
    fn = _human_fn(cfg.horizon, cfg.metrics)
    parts = []
    for start in range(0, len(scenarios), cfg.batch):
        chunk = scenarios[start : start + cfg.batch]
        chunk_p = chunk + [chunk[-1]] * (cfg.batch - len(chunk))  # one batch shape: no recompiles
        idx = np.array([s.log_index for s in chunk_p])
        t0s = jnp.array([s.t0 for s in chunk_p], jnp.int32)
        out = jax.device_get(fn(jax.tree.map(lambda a, i=idx: a[i], logs), t0s))
        parts.append({k: np.asarray(v)[: len(chunk)] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _human_rows(human: dict | None, rows: np.ndarray):
    """The human-filter terms of a batch's scenario rows (ones where the filter is off)."""
    if human is None:
        return {k: np.ones((len(rows),), np.float32) for k in ("dac", "ddc", "tlc", "lk", "hc")}
    return {k: np.asarray(v)[rows] for k, v in human.items()}


def scenario_keys(seed: int, rows) -> np.ndarray:
    """(len(rows), 2) uint32: the raw PRNG key of each scenario row, `fold_in(key(seed), row)`
    (raw, so that processes can assemble them into one global array)."""
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.asarray(rows, jnp.int32))
    return np.asarray(jax.random.key_data(keys))


def context_rows(contexts, rows):
    """Rows of world-model contexts, a stacked `wm_engine.Context` of host arrays or a
    `drivesim.pipelines.scenario_set.SceneContexts` (read on demand)."""
    if hasattr(contexts, "take"):
        return contexts.take(rows)
    return jax.tree.map(lambda a: np.asarray(a)[rows], contexts)


class _Placement:
    """Where a benchmark batch lives: its scenario axis split over every device of every process
    (one mesh, `drivesim.pipelines.batch.scenario_mesh`), this process supplying rows `mine`
    ((k,) indices into the batch)."""

    def __init__(self, batch: int):
        from drivesim.pipelines.batch import scenario_mesh

        self.mesh = scenario_mesh()
        if batch % self.mesh.size:
            raise ConfigError(
                f"--batch {batch} does not split over {self.mesh.size} devices ({jax.process_count()} processes); "
                f"use a multiple of {self.mesh.size}"
            )
        distributed.process_rows(batch)  # a one-line error when the processes cannot split it
        self.batch = batch
        self._rows = NamedSharding(self.mesh, P("scenarios"))
        self._all = NamedSharding(self.mesh, P())
        # the rows this process's devices hold, in order (a block per process where the mesh
        # lists each process's devices together, as on CPU and GPU hosts)
        held = self._rows.addressable_devices_indices_map((batch,)).values()
        self.mine = np.array(sorted({r for (rows,) in held for r in range(*rows.indices(batch))}))
        self._collect = None

    def shard(self, tree):
        """This process's rows (leading axis) -> global arrays of `batch` rows."""
        return jax.tree.map(
            lambda a: jax.make_array_from_process_local_data(self._rows, np.asarray(a), (self.batch, *np.shape(a)[1:])),
            tree,
        )

    def gather(self, tree):
        """Host numpy copies of a batch's global results (leading axis: the batch), whole on every
        process. The leaves travel packed into one float32 array, in one compiled all-gather: a
        collective per leaf (`multihost_utils.process_allgather`) costs ~70 ms a batch on CPU."""
        if jax.process_count() == 1:
            return jax.tree.map(np.asarray, jax.device_get(tree))
        leaves, treedef = jax.tree.flatten(tree)
        if self._collect is None:

            def pack(xs):  # bit-exact: int32 travels bitcast, bool as 0/1
                cols = []
                for x in xs:
                    if x.dtype == jnp.bool_:
                        x = x.astype(jnp.float32)
                    elif x.dtype in (jnp.int32, jnp.uint32):
                        x = jax.lax.bitcast_convert_type(x, jnp.float32)
                    elif x.dtype != jnp.float32:
                        raise TypeError(f"cannot gather {x.dtype} results; add it to _Placement.gather")
                    cols.append(x.reshape(self.batch, -1))
                return jnp.concatenate(cols, axis=1)

            self._collect = jax.jit(pack, out_shardings=self._all)
        packed = np.asarray(self._collect(leaves).addressable_data(0))
        out, at = [], 0
        for x in leaves:
            width = int(np.prod(x.shape[1:], dtype=int))
            col = packed[:, at : at + width]
            at += width
            if x.dtype == jnp.bool_:
                col = col != 0
            elif x.dtype in (jnp.int32, jnp.uint32):
                col = np.ascontiguousarray(col).view(x.dtype)
            out.append(col.reshape(x.shape))
        return jax.tree.unflatten(treedef, out)

    def replicate(self, tree):
        """The same host values on every process -> one copy on every device."""
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(self._all, np.asarray(a)), tree)


@functools.lru_cache(maxsize=32)
def _run_wm_batch_fn(planner, cfg: BenchConfig):
    """jit(vmap) of reset -> `samples` sampled rollouts -> evaluate under the world-model engine."""
    terms_fn = wm_pdms_terms(cfg.metrics, cfg.drivable)

    def one(handle, log, t0, context, key_data, behaviour, human):
        key = jax.random.wrap_key_data(key_data)
        params = planner.init(jax.random.key(cfg.seed))
        state = wm_engine.reset(handle, log, t0, context, key, cfg.wm, behaviour)

        def future(k):
            # simulated agents: each future draws its own (from the same start)
            st = wm_engine.reset(handle, log, t0, context, k, cfg.wm, behaviour) if simulates_agents(cfg.sim) else state
            _, tr = wm_engine.rollout(handle, st, planner, params, cfg.horizon, k, cfg.wm, terms_fn)
            trace = tr.as_trace()
            scores = evaluate(state.base, trace, cfg.horizon, cfg.metrics, human)
            nan_step = jnp.where(tr.plan_nan.any(), jnp.argmax(tr.plan_nan), -1)
            return scores, tr.ego.xy, nan_step

        scores, ego_xy, nan_step = jax.vmap(future)(jax.random.split(key, cfg.samples))
        worst = (scores.pdms.min(), scores.epdms.min())
        scores = jax.tree.map(lambda a: a.mean(0), scores)
        return scores, ego_xy[0], state.base.route_ok, nan_step.max(), worst

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0, None, 0)))


@dataclasses.dataclass(frozen=True)
class TruthScenes:
    """What the truth engine needs of each log of a scenario set (`drivesim.pipelines.scenario_set.
    truth_scenes` makes it).

    Attributes:
      plans: the scene plan (`drivesim.synth.traffic.ScenePlan`) of each log.
      uids: the world uid of each agent slot of each log ((A,) int arrays, -1 for padding).
    """

    plans: list
    uids: list


@functools.lru_cache(maxsize=8)
def _evaluate_fn(horizon: int, metrics: MetricConfig):
    return jax.jit(lambda state, trace, human: evaluate(state, trace, horizon, metrics, human))


def run_truth(
    planners: dict, logs, scenarios: list[Scenario], cfg: BenchConfig, scenes: TruthScenes, progress=None, human=None
):
    """Scores of planners on scenarios under the truth engine (`cfg.truth`): {name: the dict
    `run_planner` returns}.

    Scenario i gets the key `fold_in(key(seed), i)`, as under the batched engines. Each scene's
    world is run once, up to each of its scenarios' starts in turn, and every planner starts from
    a copy of it. `progress(advance, name)` is called per scenario and planner.

    Under several processes each runs one contiguous block of the scenarios (ordered by log and
    start, so that a world is still reused) and every process gets all the scores back; the
    progress counts the lead's block times the process count (the blocks are equal to within one).
    """
    terms_fn = pdms_terms(cfg.metrics)
    score_of = _evaluate_fn(cfg.horizon, cfg.metrics)
    n = len(scenarios)
    if human is None:
        human = human_filter_terms(logs, scenarios, cfg)
    res = {
        name: {k: [None] * n for k in (*SCORE_KEYS, "ego_xy", "route_ok", "nan_step")} for name in planners
    }  # fmt: skip
    seconds = dict.fromkeys(planners, 0.0)
    first = dict.fromkeys(planners)
    params = {name: p.init(jax.random.key(cfg.seed)) for name, p in planners.items()}
    order = sorted(range(n), key=lambda i: (scenarios[i].log_index, scenarios[i].t0, i))
    processes = jax.process_count()
    if n < processes:
        raise ConfigError(f"{n} scenarios cannot keep {processes} processes busy; use fewer processes")
    block = np.array_split(np.array(order), processes)[jax.process_index()]
    mine = np.zeros(n, bool)
    mine[block] = True
    by_log: dict[int, list[int]] = {}
    for i in block:
        by_log.setdefault(scenarios[i].log_index, []).append(int(i))
    t_world = 0.0
    for li, rows in sorted(by_log.items()):
        log = jax.tree.map(lambda a, li=li: np.asarray(a[li]), logs)
        rows = sorted(rows, key=lambda i: scenarios[i].t0)
        tic = time.perf_counter()
        worlds = truth_engine.worlds_at(scenes.plans[li], [scenarios[i].t0 for i in rows])
        for i, (t0, world) in zip(rows, worlds, strict=True):
            t_world += time.perf_counter() - tic
            key = jax.random.fold_in(jax.random.key(cfg.seed), i)
            for m, (name, planner) in enumerate(planners.items()):
                tic = time.perf_counter()
                w = world if m == len(planners) - 1 else truth_engine.copy_world(world)
                state = truth_engine.reset(scenes.plans[li], log, t0, scenes.uids[li], key, cfg.truth, world=w)
                _, trace = truth_engine.rollout(state, planner, params[name], cfg.horizon, key, cfg.truth, terms_fn)
                h = None if human is None else {k: jnp.asarray(v[i]) for k, v in human.items()}
                scores = jax.device_get(score_of(state.sim, trace, h))
                out = res[name]
                for k in SCORE_KEYS:
                    out[k][i] = np.asarray(getattr(scores, k))
                out["ego_xy"][i] = np.asarray(trace.ego.xy)
                out["route_ok"][i] = np.asarray(state.sim.route_ok)
                out["nan_step"][i] = int(np.argmax(trace.plan_nan)) if bool(trace.plan_nan.any()) else -1
                dt = time.perf_counter() - tic
                seconds[name] += dt
                first[name] = dt if first[name] is None else first[name]
                if progress:
                    progress(processes, name)
            tic = time.perf_counter()
    final = {}
    for name in planners:
        filled = next(i for i in range(n) if mine[i])
        r = {k: np.stack([x if mine[i] else np.zeros_like(v[filled]) for i, x in enumerate(v)])
             for k, v in res[name].items()}  # fmt: skip
        r = distributed.share(r, mine)
        r["pdms_worst"], r["epdms_worst"] = r["pdms"], r["epdms"]
        r["seconds"] = seconds[name]
        r["first_batch_seconds"] = first[name] or 0.0
        r["world_seconds"] = t_world
        final[name] = r
    return final


def run_planner(
    planner,
    logs,
    scenarios: list[Scenario],
    cfg: BenchConfig,
    on_batch=None,
    model=None,
    contexts=None,
    truth=None,
    behaviour=None,
    human=None,
) -> dict:
    """Scores of one planner on scenarios (logs: stacked host arrays). Returns host arrays.

    The world-model engine (`cfg.wm`) also needs `model` (a `wm_engine.ModelHandle`) and
    `contexts` (a `wm_engine.Context` of stacked host arrays, one row per scenario); the truth
    engine (`cfg.truth`) needs `truth` (`TruthScenes` of the logs); learned agents
    (`cfg.sim.agents == "learned"`) need `behaviour` (a `learned_agents.BehaviourHandle`).
    `human`: the scenarios' `human_filter_terms`, if already computed (else computed here).
    """
    if human is None:
        human = human_filter_terms(logs, scenarios, cfg)
    if cfg.sim.agents == "learned" and behaviour is None and cfg.truth is None:
        raise ValueError("learned agents need the behaviour model (run_planner(..., behaviour=...))")
    if cfg.sim.agents != "learned":
        behaviour = None  # one compiled program whatever is passed
    if cfg.truth is not None:
        if truth is None:
            raise ValueError("the truth engine needs the scenes' plans and slot uids (TruthScenes)")
        name = getattr(planner, "name", "planner")
        tick = (lambda m, _name: on_batch(m)) if on_batch else None
        return run_truth({name: planner}, logs, scenarios, cfg, truth, tick, human)[name]
    if cfg.wm is not None and (model is None or contexts is None):
        raise ValueError("the world-model engine needs the model and the scenarios' contexts")
    fn = _run_batch_fn(planner, cfg) if cfg.wm is None else _run_wm_batch_fn(planner, cfg)
    place = _Placement(cfg.batch)
    behaviour = place.replicate(behaviour)
    model = place.replicate(model) if cfg.wm is not None else None
    n = len(scenarios)
    out: dict[str, list] = {k: [] for k in SCORE_KEYS}
    out.update(ego_xy=[], route_ok=[], nan_step=[], pdms_worst=[], epdms_worst=[])
    keys = scenario_keys(cfg.seed, np.arange(n))
    t_compile = None
    t0_run = time.perf_counter()
    for start in range(0, n, cfg.batch):
        chunk = scenarios[start : start + cfg.batch]
        # a fixed batch shape (no recompiles): the last scenario repeated; this process supplies
        # its block of the batch's rows, and every process gets the whole batch's scores back
        rows = np.array([start + min(i, len(chunk) - 1) for i in range(cfg.batch)])[place.mine]
        idx = np.array([scenarios[r].log_index for r in rows])
        args = {
            "log": jax.tree.map(lambda a, i=idx: np.asarray(a)[i], logs),
            "t0": np.array([scenarios[r].t0 for r in rows], np.int32),
            "key": keys[rows],
            "human": {k: np.asarray(v) for k, v in _human_rows(human, rows).items()},
        }
        if cfg.wm is not None:
            args["context"] = context_rows(contexts, rows)
        a = place.shard(args)
        tic = time.perf_counter()
        if cfg.wm is None:
            result = fn(a["log"], a["t0"], a["key"], behaviour, a["human"])
        else:
            result = fn(model, a["log"], a["t0"], a["context"], a["key"], behaviour, a["human"])
        result = place.gather(result)
        if cfg.wm is None:
            scores, ego_xy, route_ok, nan_step = result
            worst = (scores.pdms, scores.epdms)
        else:
            scores, ego_xy, route_ok, nan_step, worst = result
        if t_compile is None:
            t_compile = time.perf_counter() - tic
        m = len(chunk)
        for k in SCORE_KEYS:
            out[k].append(np.asarray(getattr(scores, k))[:m])
        out["ego_xy"].append(np.asarray(ego_xy)[:m])
        out["route_ok"].append(np.asarray(route_ok)[:m])
        out["nan_step"].append(np.asarray(nan_step)[:m])
        out["pdms_worst"].append(np.asarray(worst[0])[:m])
        out["epdms_worst"].append(np.asarray(worst[1])[:m])
        if on_batch:
            on_batch(m)
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["seconds"] = time.perf_counter() - t0_run
    res["first_batch_seconds"] = t_compile or 0.0
    return res


def bootstrap_ci(values: np.ndarray, resamples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over scenarios."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def summarise(name: str, res: dict, scenarios: list[Scenario], cfg: BenchConfig) -> tuple[dict, list[dict]]:
    """Aggregate row and per-scenario rows of one planner."""
    rows = []
    for i, sc in enumerate(scenarios):
        nan_step = int(res["nan_step"][i])
        status, reason = "ok", ""
        if nan_step >= 0:
            status, reason = "planner_nan", f"planner returned a non-finite trajectory at step {nan_step}; scored 0"
        rows.append(
            {
                "planner": name,
                "scene": sc.scene,
                "t0": sc.t0,
                "tags": list(sc.tags),
                "status": status,
                "reason": reason,
                **{k: float(res[k][i]) for k in SCORE_KEYS if k != "tlc_known"},
            }
        )
        if not res["tlc_known"][i]:
            rows[-1]["tlc"] = None  # the light states are unknown: not checked, not guessed
    agg = {k: float(np.mean(res[k])) for k in ("pdms", "nc", "dac", "ttc", "ep", "c", "cls", "epdms", *EPDMS_TERMS)}
    agg["pdms_ci"] = list(bootstrap_ci(res["pdms"], cfg.bootstrap, cfg.seed))
    agg["cls_ci"] = list(bootstrap_ci(res["cls"], cfg.bootstrap, cfg.seed + 1))
    agg["epdms_ci"] = list(bootstrap_ci(res["epdms"], cfg.bootstrap, cfg.seed + 2))
    known = np.asarray(res["tlc_known"], bool)
    agg["tlc"] = float(np.mean(res["tlc"][known])) if known.any() else None
    agg["tlc_scenarios"] = int(known.sum())
    agg["n"] = len(scenarios)
    agg["failures"] = int(sum(r["status"] != "ok" for r in rows))
    agg["by_tag"] = {}
    for tag in TAGS:
        sel = [i for i, sc in enumerate(scenarios) if tag in sc.tags]
        if sel:
            agg["by_tag"][tag] = {"pdms": float(np.mean(res["pdms"][sel])), "epdms": float(np.mean(res["epdms"][sel])),
                                  "n": len(sel)}  # fmt: skip
    if cfg.wm is not None:
        agg["pdms_worst"] = float(np.mean(res["pdms_worst"]))
        agg["epdms_worst"] = float(np.mean(res["epdms_worst"]))
        agg["samples"] = cfg.samples
        for i, r in enumerate(rows):
            r["pdms_worst"] = float(res["pdms_worst"][i])
            r["epdms_worst"] = float(res["epdms_worst"][i])
    agg["seconds"] = res["seconds"]
    return agg, rows


def check_routes(logs, scenarios: list[Scenario], cfg: BenchConfig) -> np.ndarray:
    """(n,) bool: a lane route was found near the ego at each scenario's start."""

    @jax.jit
    def ok(log, t0):
        sim = dataclasses.replace(cfg.sim, agents="log")  # the route does not depend on the agents
        return jax.vmap(lambda lg, t: reset(lg, t, None, sim).route_ok)(log, t0)

    out = []
    for start in range(0, len(scenarios), cfg.batch):
        chunk = scenarios[start : start + cfg.batch]
        idx = np.array([s.log_index for s in chunk])
        out.append(np.asarray(ok(jax.tree.map(lambda a, i=idx: a[i], logs), jnp.array([s.t0 for s in chunk]))))
    return np.concatenate(out) if out else np.zeros(0, bool)


def compared_config(cfg: BenchConfig, engine: str, annotation_range: float = 60.0) -> BenchConfig:
    """`cfg` with its engine swapped for `engine` ("kinematic" or "truth"): the same scenarios,
    seed, horizon, replan cadence, agents and metrics (what `run_benchmark(compare=...)` runs).

    annotation_range: the truth engine's (the synthetic set's `annotation_range`, in m).
    """
    if engine == "kinematic":
        return dataclasses.replace(cfg, wm=None, truth=None)
    if engine == "truth":  # the world's own traffic: the agent setting does not apply
        sim = dataclasses.replace(cfg.sim, agents="log")
        truth = truth_engine.TruthConfig(sim=sim, annotation_range=annotation_range)
        return dataclasses.replace(cfg, sim=sim, wm=None, truth=truth)
    raise ValueError(f"can compare with the kinematic or the truth engine, not {engine!r}")


def _check_compare(cfg: BenchConfig, compare: BenchConfig) -> None:
    if compare.wm is not None:
        raise ValueError("the compared engine is the kinematic or the truth engine (see compared_config)")
    if compare.engine == cfg.engine:
        raise ValueError(f"comparing the {cfg.engine} engine with itself; compare another engine")

    def same(c: BenchConfig) -> BenchConfig:
        return dataclasses.replace(c, wm=None, truth=None, sim=dataclasses.replace(c.sim, agents="log"))

    if same(compare) != same(cfg):
        raise ValueError(
            "the compared engine must run the same scenarios, seed, horizon, cadence and metrics: make its "
            "config with compared_config(cfg, engine)"
        )


def _run_engine(planners: dict, logs, kept: list[Scenario], cfg: BenchConfig, progress, label: str = "",
                model=None, contexts=None, truth=None, behaviour=None, human=None) -> dict:  # fmt: skip
    """{name: the dict `run_planner` returns} of every planner under cfg's engine; progress
    descriptions are the planner names followed by `label`."""
    if cfg.truth is not None:
        tick = (lambda m, n: progress(m, n + label)) if progress else None
        return run_truth(planners, logs, kept, cfg, truth, tick, human)
    res = {}
    for name, planner in planners.items():
        tick = (lambda m, n=name: progress(m, n + label)) if progress else None
        res[name] = run_planner(
            planner, logs, kept, cfg, on_batch=tick, model=model, contexts=contexts, behaviour=behaviour, human=human
        )
    return res


def run_benchmark(
    logs, scenarios: list[Scenario], planners: dict, cfg: BenchConfig, progress=None, model=None, contexts=None,
    compare: BenchConfig | None = None, truth: TruthScenes | None = None, compare_reference: bool = False,
    behaviour=None,
) -> dict:  # fmt: skip
    """Roll out every planner on every scenario; the results dict of the module docstring.

    logs: stacked host arrays of the logs the scenarios index. `progress(advance, description)`
    is called as batches finish. The world-model engine (`cfg.wm`) needs `model` and `contexts`
    (see `run_planner`), the truth engine (`cfg.truth`, here or in `compare`) `truth`, learned
    agents (`cfg.sim.agents == "learned"`, here or in `compare`) `behaviour`.
    `compare` (`compared_config(cfg, "kinematic" | "truth")`) also runs that engine on the same
    scenarios and adds "compare", "agreement", "ranking_reference" and, per planner,
    "pdms_reference" and "pdms_gap". `compare_reference=True` is `compare=compared_config(cfg,
    "kinematic")`, kept for old callers.
    """
    if compare_reference:
        if compare is not None and compare.engine != "kinematic":
            raise ValueError(f"compare_reference compares with the kinematic engine, but compare is {compare.engine}")
        compare = compared_config(cfg, "kinematic")
    if compare is not None:
        _check_compare(cfg, compare)
    if truth is None and (cfg.truth is not None or (compare is not None and compare.truth is not None)):
        raise ValueError("the truth engine needs the scenes' plans and slot uids (TruthScenes)")
    t_start = time.perf_counter()
    skipped = []
    ok = check_routes(logs, scenarios, cfg)
    kept = []
    for sc, good in zip(scenarios, ok, strict=True):
        if good:
            kept.append(sc)
        else:
            skipped.append({"scene": sc.scene, "t0": sc.t0, "reason": "no lane route near the ego at the start"})
    if not kept:
        raise ValueError("no scenario has a lane route near the ego at its start; nothing to benchmark")
    if contexts is not None:  # the contexts follow the kept scenarios
        rows = np.array([i for i, good in enumerate(ok) if good])
        contexts = contexts.subset(rows) if hasattr(contexts, "subset") else context_rows(contexts, rows)
    out = {
        "schema": RESULTS_SCHEMA,
        "engine": cfg.engine,
        "agents": _agents(cfg),
        "config": {
            "horizon_steps": cfg.horizon,
            "step_seconds": 0.1,
            "replan_every": cfg.sim.replan_every,
            "seed": cfg.seed,
            "bootstrap": cfg.bootstrap,
            "scenarios": len(kept),
        },
        "planners": {},
        "scenarios": [],
        "skipped": skipped,
        "timing": {},
    }
    if cfg.wm is not None:
        out["config"].update(samples=cfg.samples, layout=cfg.wm.layout, drivable=cfg.drivable)
    for c in (cfg, compare):
        if c is not None and c.truth is not None:
            out["config"].update(annotation_range=c.truth.annotation_range)
    tic = time.perf_counter()
    human = human_filter_terms(logs, kept, cfg)  # shared by every planner and the compared engine
    out["timing"]["human_filter_seconds"] = time.perf_counter() - tic
    by_planner = _run_engine(
        planners, logs, kept, cfg, progress, model=model, contexts=contexts, truth=truth, behaviour=behaviour,
        human=human,
    )  # fmt: skip
    if cfg.truth is not None:
        out["timing"]["world_seconds"] = next(iter(by_planner.values()))["world_seconds"]
    per_scenario, rows_of = {}, {}
    for name in planners:
        res = by_planner[name]
        agg, rows = summarise(name, res, kept, cfg)
        out["planners"][name] = agg
        out["scenarios"].extend(rows)
        rows_of[name] = rows
        out["timing"][name] = {"seconds": res["seconds"], "first_batch_seconds": res["first_batch_seconds"]}
        out.setdefault("_traces", {})[name] = res["ego_xy"]
        per_scenario[name] = res[cfg.score]
    head = cfg.score
    out["score"] = head
    out["ranking"] = sorted(out["planners"], key=lambda k: -out["planners"][k][head])
    if compare is not None:
        from drivesim.metrics.agreement import agreement

        by_ref = _run_engine(planners, logs, kept, compare, progress, " (reference)", truth=truth, behaviour=behaviour,
                             human=human)  # fmt: skip
        ref = {}
        for name in planners:
            res = by_ref[name]
            ref[name] = res[head]
            for k in sorted({"pdms", head}):
                out["planners"][name][f"{k}_reference"] = float(np.mean(res[k]))
                out["planners"][name][f"{k}_reference_ci"] = list(bootstrap_ci(res[k], cfg.bootstrap, cfg.seed))
                for row, value in zip(rows_of[name], res[k], strict=True):
                    row[f"{k}_reference"] = float(value)
            out["timing"][f"{name} (reference)"] = {"seconds": res["seconds"]}
        names = list(planners)
        agree = agreement(np.stack([per_scenario[k] for k in names]), np.stack([ref[k] for k in names]), names,
                          resamples=cfg.bootstrap, seed=cfg.seed)  # fmt: skip
        out["compare"] = compare.engine
        out["agreement"] = {"compare": compare.engine, "compare_agents": _agents(compare), "score": head,
                            **{k: v for k, v in agree.items() if k != "planners"}}  # fmt: skip
        for k in names:  # the agreement's gaps are of the headline score
            out["planners"][k].update({f"{head}_gap": agree["planners"][k]["pdms_gap"],
                                       f"{head}_gap_ci": agree["planners"][k]["pdms_gap_ci"]})  # fmt: skip
        out["ranking_reference"] = sorted(names, key=lambda k: -out["planners"][k][f"{head}_reference"])
    out["timing"]["total_seconds"] = time.perf_counter() - t_start
    return out


def _agents(cfg: BenchConfig) -> str:
    """Who moves the other road users: "log", "idm", or the synthetic world's own traffic ("world")."""
    return "world" if cfg.truth is not None else cfg.sim.agents

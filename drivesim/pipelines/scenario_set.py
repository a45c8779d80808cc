"""The one scenario-set loader: dataroot -> logs -> scenarios -> (optionally) world-model contexts.

`drivesim bench`, the benchmarks in `tools/` and the experiments all load their scenarios here, so
they score the same scenarios for the same arguments.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from drivesim.data.types import Log
from drivesim.errors import DataError, DrivesimError
from drivesim.progress import bar
from drivesim.sim.scenarios import Scenario, select_scenarios


@dataclasses.dataclass(frozen=True)
class ScenarioSet:
    """Scenarios of one dataroot, with the logs they index.

    Attributes:
      dataroot, version: where the logs were read.
      names: scene names, one per log.
      logs: the logs (host pytrees), padded to one length so they stack.
      stacked: `logs` stacked on a leading axis (what the engines' vmap takes).
      scenarios: the selected scenarios; `Scenario.log_index` indexes `logs`.
      longest_s: the longest scene's duration (s).
      infos: the `LogInfo` of each log (names, tokens: the truth engine finds its agents by them).
    """

    dataroot: Path
    version: str
    names: list[str]
    logs: list[Log]
    stacked: Log
    scenarios: list[Scenario]
    longest_s: float
    infos: list | None = None


def stack_logs(logs):
    """One pytree of stacked host arrays (leading axis: log) from logs of equal shapes."""
    import jax

    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *logs)


def pick_evenly(items: list, count: int | None) -> list:
    """`count` items spread evenly over `items` (all of them when count is None or larger)."""
    if not count or count >= len(items):
        return list(items)
    pick = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in pick]


def load_scenario_set(
    dataroot, version: str, cfg, count: int | None = None, routes_first: bool = False, quiet: bool = True
) -> ScenarioSet:
    """Load every scene of `dataroot` and select the scenarios a benchmark with `cfg`
    (`drivesim.pipelines.benchmark.BenchConfig`: horizon, history, stride, load) would run.

    `count` scenarios are picked evenly over the selection (default: `cfg.scenarios`). With
    `routes_first`, scenarios without a lane route at t0 are dropped before picking (otherwise the
    benchmark skips and reports them).
    """
    from drivesim.data.dataroot import open_nuscenes
    from drivesim.data.loader import load_log
    from drivesim.pipelines.benchmark import check_routes

    dataroot = Path(dataroot)
    nusc = open_nuscenes(dataroot, version)
    names = [s["name"] for s in nusc.scene]
    durations = [(s["nbr_samples"] - 1) * 0.5 for s in nusc.scene]
    steps = int(round(max(durations) * cfg.load.rate_hz)) + 1
    load_cfg = dataclasses.replace(cfg.load, max_steps=steps)
    logs, infos = [], []
    with bar(quiet, "loading logs", len(names)) as tick:
        for n in names:
            log, info = load_log(nusc, n, load_cfg)
            logs.append(log)
            infos.append(info)
            tick()
    scenarios = select_scenarios(logs, names, horizon=cfg.horizon, history=cfg.history, stride=cfg.stride)
    if not scenarios:
        raise DrivesimError(
            f"--horizon {cfg.horizon / cfg.load.rate_hz:g} s: no log is long enough (longest scene "
            f"{max(durations):.1f} s, {cfg.history / cfg.load.rate_hz:.0f} s of history needed); use a shorter horizon"
        )
    stacked = stack_logs(logs)
    if routes_first:
        scenarios = [sc for sc, ok in zip(scenarios, check_routes(stacked, scenarios, cfg), strict=True) if ok]
        if not scenarios:
            raise DrivesimError(f"no scenario of {dataroot} has a lane route at its start")
    scenarios = pick_evenly(scenarios, cfg.scenarios if count is None else count)
    return ScenarioSet(dataroot, version, names, logs, stacked, scenarios, max(durations), infos)


def require_synthetic(dataroot) -> dict:
    """The synthetic set's config, or a one-line error: the truth engine re-simulates scenes from
    the recipe that `drivesim synth` writes beside them."""
    from drivesim.pipelines.forecast import synth_settings

    settings = synth_settings(dataroot)
    if settings is None:
        raise DrivesimError(
            f"{dataroot} is not a synthetic dataroot (no recipe to re-simulate): the truth engine needs one "
            "written by `drivesim synth`"
        )
    return settings


def truth_scenes(sset: ScenarioSet):
    """The scene plan and the world uid of every agent slot of each log of a synthetic scenario
    set (`drivesim.pipelines.benchmark.TruthScenes`, what the truth engine needs)."""
    from drivesim.pipelines.benchmark import TruthScenes
    from drivesim.pipelines.world_edits import synth_uid
    from drivesim.synth.dataset import load_recipes, plan_for

    require_synthetic(sset.dataroot)
    recipes = {r.name: r for r in load_recipes(sset.dataroot)}
    missing = [n for n in sset.names if n not in recipes]
    if missing:
        raise DrivesimError(f"{sset.dataroot}: scene {missing[0]} has no recipe in its drivesim_synth.json")
    plans, uids = [], []
    for name, log, info in zip(sset.names, sset.logs, sset.infos, strict=True):
        plans.append(plan_for(recipes[name]))
        A = np.asarray(log.agents.valid).shape[0]
        uids.append(np.array([synth_uid(info, a) if info.agent_tokens[a] else -1 for a in range(A)], np.int64))
    return TruthScenes(plans=plans, uids=uids)


def load_contexts(dataroot, version: str, scenarios, frame_size: tuple[int, int], history: int, progress=None,
                  scenes: dict | None = None):  # fmt: skip
    """The world model's history of each scenario (`drivesim.sim.scenarios.Scenario`, t0 a
    keyframe step), from the dataroot's keyframes as the clip cache holds them. Returns a
    `wm_engine.Context` of stacked host arrays, one row per scenario. `progress()` is called per
    scene loaded; `scenes` (scene name -> its arrays) keeps scenes read by an earlier call."""
    from drivesim.pipelines.forecast import scene_arrays
    from drivesim.sim.wm_engine import Context, WMConfig

    K = WMConfig.keyframe_steps
    arrays, rows = ({} if scenes is None else scenes), []
    for sc in scenarios:
        if sc.t0 % K:
            raise DataError(f"{sc.scene} t0 = {sc.t0 / 10:g} s is not a keyframe (a multiple of 0.5 s)")
        if sc.scene not in arrays:
            arrays[sc.scene] = scene_arrays(dataroot, version, sc.scene, frame_size)
            if progress:
                progress()
        a = arrays[sc.scene]
        k0 = sc.t0 // K
        if k0 < history - 1 or k0 >= len(a["frames"]):
            raise DataError(f"{sc.scene} t0 = {sc.t0 / 10:g} s: the world model needs {history} keyframes up to t0")
        ctx = slice(k0 - history + 1, k0 + 1)
        rows.append((a["frames"][ctx], a["occupancy"][ctx], a["ego_motion"][k0 - history + 1 : k0]))
    return Context(*(np.stack(x) for x in zip(*rows, strict=True)))


class SceneContexts:
    """The world model's history of each scenario, read from the dataroot only for the rows asked
    for (`take`), and kept once read: under several processes, each reads only its own rows.

    The eager alternative, `load_contexts`, stacks every scenario's history up front; the engines
    take either (`drivesim.pipelines.benchmark.context_rows`).
    """

    def __init__(self, dataroot, version: str, scenarios, frame_size: tuple[int, int], history: int):
        self.dataroot, self.version, self.scenarios = dataroot, version, list(scenarios)
        self.frame_size, self.history = frame_size, history
        self._rows: dict[int, tuple] = {}
        self._scenes: dict[str, dict] = {}  # the scenes of the last rows read (consecutive rows share scenes)

    def __len__(self) -> int:
        return len(self.scenarios)

    def take(self, rows):
        """A `wm_engine.Context` of stacked host arrays, one row per index of `rows`."""
        import jax

        missing = sorted({int(r) for r in rows} - self._rows.keys())
        if missing:
            wanted = [self.scenarios[r] for r in missing]
            self._scenes = {k: v for k, v in self._scenes.items() if k in {sc.scene for sc in wanted}}
            loaded = load_contexts(self.dataroot, self.version, wanted, self.frame_size, self.history,
                                   scenes=self._scenes)  # fmt: skip
            for j, r in enumerate(missing):
                self._rows[r] = jax.tree.map(lambda a, j=j: np.asarray(a[j]), loaded)
        return jax.tree.map(lambda *xs: np.stack(xs), *(self._rows[int(r)] for r in rows))

    def subset(self, rows) -> SceneContexts:
        """The contexts of scenarios `rows` (in that order), as a new set."""
        return SceneContexts(self.dataroot, self.version, [self.scenarios[int(r)] for r in rows], self.frame_size,
                             self.history)  # fmt: skip

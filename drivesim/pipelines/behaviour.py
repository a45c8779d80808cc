"""The behaviour model's data and training: the traffic-only fast path of the synthetic world.

`traffic_scenes(TrafficData(...))` simulates scenes of the synthetic world without cameras or
files (the traffic, then its 2 Hz `Log` in memory: about 0.4 s per 12 s scene on one core) and
keeps the arrays the behaviour model trains on (`drivesim.model.behaviour_task.scene_arrays`),
cached as one .npz per recipe. Maps vary with the seed: each of `seeds` seeds gives one map per
location and `scenes_per_seed` scenes on them.

`train_behaviour(BehaviourExperiment, workdir)` makes (or loads) the data, trains with the generic
loop (`drivesim.train`), and exports `workdir/behaviour.npz` (+ .json record).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
from pathlib import Path

import numpy as np

from drivesim.data.loader import LoadConfig
from drivesim.model.behaviour import BehaviourConfig
from drivesim.progress import bar

TRAFFIC_LOAD = LoadConfig(rate_hz=2.0, max_agents=64, raster_size=384, raster_resolution=1.0, max_lane_segments=320)
"""How simulated scenes become training logs: keyframes, 64 agents, a 1 m raster over 384 m."""
TRAFFIC_KEY_SECONDS = 1.0 / TRAFFIC_LOAD.rate_hz


@dataclasses.dataclass(frozen=True)
class TrafficData:
    """Which synthetic scenes to simulate (traffic only)."""

    seeds: tuple[int, ...] = tuple(range(100, 130))
    """World seeds (each: its own maps and traffic). Never the evaluation seeds."""
    scenes_per_seed: int = 40
    seconds: float = 16.0
    cache: str = "data/train/behaviour"
    """Folder of the cached arrays (one .npz per seed)."""
    workers: int = 2
    edited_seeds: tuple[int, ...] = ()
    """World seeds whose scenes get a random ego edit (`ego_edit`): a hard brake, a stop, a lane
    change, a speed-up or holding speed, at a random time; the world's traffic reacts to it. Ordinary
    logs rarely show reactions to sudden ego manoeuvres, which the agents must learn."""
    pushed_seeds: tuple[int, ...] = ()
    """World seeds whose scenes get random speed pushes of their vehicles (`AgentPushes`): states a
    sampled model drifts into (closing fast on a car ahead, creeping up on a stopped one) with the
    world's own recovery from them as labels, in the spirit of DART's noise injection."""
    rollin_seeds: tuple[int, ...] = ()
    """World seeds whose scenes are rolled in by the behaviour model `rollin_model` and labelled by
    the world from where it took them (DAgger; `drivesim.pipelines.behaviour_rollin`)."""
    rollin_edited_seeds: tuple[int, ...] = ()
    """World seeds whose scenes are rolled in from a sudden ego edit (`ego_edit`) on."""
    rollin_model: str = ""
    """The behaviour model file that drives the roll-ins (its sha256 names the cache files)."""


def ego_edit(recipe, seconds: float):
    """(time, world edits) of the random ego edit of a scene (deterministic in its seed): a brake
    (3 to 8 m/s^2, to a stop) half the time, else a lane change (either side), a speed-up or
    holding speed; between 2 s and 4 s before the end."""
    from drivesim.synth.world import EgoCommand

    rng = np.random.default_rng([recipe.seed, 4242])
    t = float(np.round(rng.uniform(2.0, seconds - 4.0), 1))
    u = rng.uniform()
    if u < 0.5:
        cmd = EgoCommand("brake", float(np.round(rng.uniform(3.0, 8.0), 1)))
    elif u < 0.8:
        cmd = EgoCommand("lane_change_left" if rng.uniform() < 0.5 else "lane_change_right")
    elif u < 0.9:
        cmd = EgoCommand("accelerate", 2.0)
    else:
        cmd = EgoCommand("keep")
    return t, [cmd]


def edited_world(plan, recipe):
    """(edit time, the edits applied, the re-simulated record) of a scene under its random ego edit
    (`ego_edit`); where the ego has no lane to change into, it brakes at 5 m/s^2 instead."""
    from drivesim.synth.world import EgoCommand, resimulate

    t, edits = ego_edit(recipe, recipe.seconds)
    try:
        return t, edits, resimulate(plan, t, edits)
    except ValueError:  # no lane to change into here: brake instead
        edits = [EgoCommand("brake", 5.0)]
        return t, edits, resimulate(plan, t, edits)


class AgentPushes:
    """Random speed pushes of a scene's vehicles toward the car ahead, as `resimulate`'s `each_step`.

    At each keyframe after the first, with probability `rate`, each vehicle or cyclist (not the
    ego) with a leader within `gap` m is pushed with probability `share`: its speed rises by a
    draw from `dv` m/s. The world then drives on from there by its own rules: the pushed car
    brakes for its leader, a car crept up on a stopped queue stops again. These are the states a
    sampled model drifts into, with the world's recovery from them as labels, in the spirit of
    DART's noise injection. The keyframe intervals ending at a push (motion the push made, not
    the world's rules) are listed in `pushed` as (keyframe, agent uid), to be dropped from that
    agent's labels. Deterministic in `seed`.
    """

    def __init__(
        self, seed: int, rate: float = 1.0, share: float = 0.3, dv: tuple[float, float] = (1.0, 5.0), gap: float = 30.0
    ):
        self.rng = np.random.default_rng([seed, 777])
        self.rate, self.share, self.dv, self.gap = rate, share, dv, gap
        self.pushed: list[tuple[int, int]] = []

    def __call__(self, world, i: int) -> None:
        from drivesim.synth.traffic import DT, KIND_VEHICLE

        per_key = int(round(TRAFFIC_KEY_SECONDS / DT))
        if i == 0 or i % per_key or self.rng.uniform() > self.rate:
            return
        n = world.n
        movers = np.flatnonzero(world.active[:n] & (world.kind[:n] <= KIND_VEHICLE))
        gap = world.leader_gaps(movers)
        followers = movers[(gap < self.gap) & (world.kind[movers] == KIND_VEHICLE)]
        hit = followers[self.rng.uniform(size=len(followers)) < self.share]
        for k in hit:
            world.v[k] = float(world.v[k]) + float(self.rng.uniform(*self.dv))
            self.pushed.append((i // per_key, world.specs[k].uid))


def _simulate_one(args) -> dict:
    from drivesim.model.behaviour_task import scene_arrays
    from drivesim.synth.dataset import plan_for
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import resimulate, simulate

    recipe, stride, kind, *model = args  # (recipe, stride, kind[, roll-in model file])
    if kind in ("rollin", "rollin_edited"):
        from drivesim.pipelines.behaviour_rollin import rollin_scene

        return rollin_scene(recipe, stride, model[0], edited=kind == "rollin_edited")
    plan = plan_for(recipe)
    pushes = None
    if kind == "plain":
        record = simulate(plan)
    elif kind == "pushed":
        pushes = AgentPushes(recipe.seed)
        record = resimulate(plan, None, (), each_step=pushes)
    elif kind == "edited":
        _, _, record = edited_world(plan, recipe)
    else:
        raise ValueError(f"unknown kind of traffic scene {kind!r}: plain, edited, pushed, rollin or rollin_edited")
    log, uids = record_log(record, TRAFFIC_LOAD)
    arrays = scene_arrays(log, stride)
    if pushes is not None:  # the motion a push made is not the world's behaviour: not a label
        row = {uid: 1 + j for j, uid in enumerate(uids) if uid >= 0}
        for k, uid in pushes.pushed:
            if uid in row and k - 1 < arrays["target_valid"].shape[1]:
                arrays["target_valid"][row[uid], k - 1] = False
                arrays["controls"][row[uid], k - 1] = 0.0
    return arrays


def _kind(cfg: TrafficData, seed: int) -> str:
    if seed in cfg.rollin_seeds:
        return "rollin"
    if seed in cfg.rollin_edited_seeds:
        return "rollin_edited"
    return "edited" if seed in cfg.edited_seeds else "pushed" if seed in cfg.pushed_seeds else "plain"


@functools.cache
def _model_tag(path: str) -> str:
    from drivesim.provenance import sha256_file

    if not Path(path).is_file():
        raise FileNotFoundError(
            f"TrafficData.rollin_model {path!r} is not a file: name the behaviour model that rolls in"
        )
    return sha256_file(path)[:12]


def _seed_file(cfg: TrafficData, seed: int) -> Path:
    kind = _kind(cfg, seed)
    tag = {"plain": "", "edited": "_edited", "pushed": "_pushed"}.get(kind)
    if tag is None:
        tag = f"_{kind.replace('_', '')}{_model_tag(cfg.rollin_model)}"
    # "_lights": the arrays carry the traffic lights (files written before them are not read)
    return Path(cfg.cache) / f"seed{seed}_n{cfg.scenes_per_seed}_s{cfg.seconds:g}{tag}_lights.npz"


def all_seeds(cfg: TrafficData) -> tuple[int, ...]:
    extra = tuple(cfg.edited_seeds) + tuple(cfg.pushed_seeds) + tuple(cfg.rollin_seeds) + tuple(cfg.rollin_edited_seeds)
    return tuple(dict.fromkeys(tuple(cfg.seeds) + extra))


def traffic_scenes(cfg: TrafficData, stride: int = 2, progress: bool = True) -> dict[str, np.ndarray]:
    """Stacked scene arrays of every scene of `cfg` (simulated and cached on first use).

    Under several processes the missing seeds are shared out (process i simulates every P-th one)
    and every process then reads them all."""
    import jax

    from drivesim import distributed
    from drivesim.model.behaviour_task import stack_scenes
    from drivesim.synth.dataset import SynthConfig, scene_recipes

    Path(cfg.cache).mkdir(parents=True, exist_ok=True)
    every = [s for s in all_seeds(cfg) if not _seed_file(cfg, s).exists()]
    missing = every[jax.process_index() :: jax.process_count()]
    progress = progress and distributed.lead()
    if missing:
        jobs = [
            (r, stride, _kind(cfg, s), cfg.rollin_model)
            for s in missing
            for r in scene_recipes(SynthConfig(scenes=cfg.scenes_per_seed, seconds=cfg.seconds, seed=s))
        ]
        part: list[dict] = []
        done = 0
        with (
            bar(not progress, "traffic scenes", len(jobs)) as tick,
            concurrent.futures.ProcessPoolExecutor(
                cfg.workers, mp_context=multiprocessing.get_context("spawn")
            ) as pool,
        ):
            for r in pool.map(_simulate_one, jobs, chunksize=4):
                part.append(r)
                tick()
                if len(part) == cfg.scenes_per_seed:  # a seed is complete: written at once (a killed run keeps it)
                    path = _seed_file(cfg, missing[done])
                    tmp = path.with_name(f".{path.name}.tmp.npz")
                    np.savez(tmp, **stack_scenes(part))
                    tmp.replace(path)
                    part, done = [], done + 1
    if every:
        distributed.barrier("traffic scenes")
    parts = []
    for s in all_seeds(cfg):
        with np.load(_seed_file(cfg, s)) as f:
            parts.append(dict(f))
    return _concat(parts)


def _concat(parts: list[dict]) -> dict[str, np.ndarray]:
    T = max(p["valid"].shape[2] for p in parts)
    M = max(p["points"].shape[1] for p in parts)
    out = {}
    for k in parts[0]:
        arrs = []
        for p in parts:
            a = p[k]
            if k in ("xy", "yaw", "speed", "valid"):
                a = np.pad(a, [(0, 0), (0, 0), (0, T - a.shape[2])] + [(0, 0)] * (a.ndim - 3))
            elif k in ("tokens", "controls", "target_valid"):
                a = np.pad(a, [(0, 0), (0, 0), (0, T - 1 - a.shape[2])] + [(0, 0)] * (a.ndim - 3))
            elif k in ("points", "points_valid"):
                a = np.pad(a, [(0, 0), (0, M - a.shape[1])] + [(0, 0)] * (a.ndim - 2))
            elif k == "signal_state":
                a = np.pad(a, [(0, 0), (0, T - a.shape[1])] + [(0, 0)] * (a.ndim - 2))
            arrs.append(a)
        out[k] = np.concatenate(arrs)
    return out


@dataclasses.dataclass(frozen=True)
class BehaviourExperiment:
    """A behaviour-model training run."""

    model: BehaviourConfig
    data: TrafficData
    train: object
    """The `drivesim.train.TrainConfig`."""
    init_from: str = ""
    """A behaviour model file to start from (fine-tuning: the same `model` config); "" starts afresh."""


def train_behaviour(exp: BehaviourExperiment, workdir, resume: bool = False, progress: bool = True) -> Path:
    """Train the behaviour model of `exp` in `workdir`; returns the exported model file."""
    import time

    from drivesim import distributed
    from drivesim.model.behaviour_file import save_behaviour
    from drivesim.model.behaviour_task import BehaviourTask
    from drivesim.train import load_model, train

    workdir = Path(workdir)
    t0 = time.time()
    data = traffic_scenes(exp.data, exp.model.lane_stride, progress=progress)
    t_data = time.time() - t0
    task = BehaviourTask(data, exp.model, seed=exp.train.seed, init_from=exp.init_from)
    train(task, exp.train, workdir / "behaviour", resume=resume, progress=progress)
    out = workdir / "behaviour.npz"
    model = load_model(task, workdir / "behaviour")  # every process: Orbax reads collectively
    if not distributed.lead():  # several processes: process 0 exports the model
        return out
    record = {
        "training": {
            "scenes": int(data["valid"].shape[0]), "examples": int(len(task.items)),
            "data": dataclasses.asdict(exp.data), "train": dataclasses.asdict(exp.train),
            "data_seconds": round(t_data, 1), "total_seconds": round(time.time() - t0, 1),
            "init_from": task.fingerprint().get("init_from"),
        }
    }  # fmt: skip
    return save_behaviour(model, out, record)

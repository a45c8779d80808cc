"""Generate a synthetic nuScenes-format dataroot: maps, traffic, camera images, tables.

`generate(SynthConfig(...), out)` is what `drivesim synth` runs. It writes into a temporary folder
beside `out` and renames it at the end, so an interrupted run leaves no half-written dataroot.
Beside the nuScenes files it writes `drivesim_synth.json`: the recipe (config and, per scene, the
map, seed and scenario) from which any scene can be re-simulated exactly, and the provenance of
the run that wrote it (the one part of the dataroot that differs between two runs of one recipe);
and `drivesim_signals.json`: each scene's traffic-light stop lines and red intervals
(`drivesim.synth.signals`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from drivesim.data.signals import SIGNALS_FILE
from drivesim.errors import ConfigError, DataError
from drivesim.synth.roads import LOCATIONS, MapConfig, SynthMap, generate_map
from drivesim.synth.scenario import SCENARIOS, make_plan
from drivesim.synth.signals import scene_entry, signals_document
from drivesim.synth.traffic import ScenePlan
from drivesim.synth.world import SceneRecord, simulate

RECIPE_FILE = "drivesim_synth.json"
BASE_TIMESTAMP_US = 1_533_081_600_000_000  # 2018-08-01 00:00:00 UTC


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """What `drivesim synth` generates."""

    scenes: int = 10
    """Number of scenes."""
    seconds: float = 20.0
    """Length of each scene (s); keyframes at 2 Hz, so 2 * seconds samples."""
    seed: int = 0
    """Seed of everything (maps, traffic, scenarios)."""
    version: str = "v1.0-mini"
    """Table folder name (the devkit's `version`)."""
    image_width: int = 160
    """Camera image width in pixels (height keeps the nuScenes 16:9 aspect)."""
    camera_hz: int = 12
    """Camera rate; frames between keyframes are written as sweeps. A multiple of 2."""
    locations: tuple[str, ...] = LOCATIONS
    """Map locations, used in turn by consecutive scenes."""
    annotation_range: float = 60.0
    """Objects farther than this from the ego (m) are not annotated."""
    jpeg_quality: int = 90

    def validate(self) -> None:
        if self.scenes < 1:
            raise ConfigError(f"--scenes must be at least 1 (got {self.scenes})")
        if not 4.0 <= self.seconds <= 120.0:
            raise ConfigError(f"--seconds must be between 4 and 120 (got {self.seconds})")
        if self.camera_hz < 2 or self.camera_hz % 2:
            raise ConfigError(f"--camera-hz must be an even number of Hz, at least 2 (got {self.camera_hz})")
        if not 16 <= self.image_width <= 1600:
            raise ConfigError(f"--image-width must be between 16 and 1600 pixels (got {self.image_width})")
        bad = [loc for loc in self.locations if loc not in LOCATIONS]
        if bad or not self.locations:
            raise ConfigError(f"unknown location(s) {bad}; use some of {', '.join(LOCATIONS)}")


@dataclasses.dataclass(frozen=True)
class SceneRecipe:
    """How to rebuild one scene exactly."""

    name: str
    location: str
    map_seed: int
    seed: int
    scenario: str
    seconds: float
    start_us: int


def scene_recipes(cfg: SynthConfig) -> list[SceneRecipe]:
    """The scenes a config generates: locations in turn, scenarios in turn (shuffled by seed)."""
    order = np.random.default_rng([cfg.seed, 55]).permutation(len(SCENARIOS))
    out = []
    for i in range(cfg.scenes):
        out.append(
            SceneRecipe(
                name=f"scene-{i + 1:04d}",
                location=cfg.locations[i % len(cfg.locations)],
                map_seed=cfg.seed,
                seed=int(np.random.default_rng([cfg.seed, i, 99]).integers(1 << 30)),
                scenario=SCENARIOS[int(order[i % len(SCENARIOS)])],
                seconds=cfg.seconds,
                start_us=BASE_TIMESTAMP_US + cfg.seed * 86_400_000_000 + i * 3_600_000_000,
            )
        )
    return out


_MAPS: dict[tuple[str, int], SynthMap] = {}


def synth_map(location: str, seed: int) -> SynthMap:
    """The synthetic map of a location (cached; deterministic in the seed)."""
    key = (location, seed)
    if key not in _MAPS:
        for attempt in range(20):
            try:
                _MAPS[key] = generate_map(location, seed * 1000 + attempt, MapConfig())
                break
            except RuntimeError:
                continue
        else:
            raise RuntimeError(f"could not generate a map for {location} with seed {seed}")
    return _MAPS[key]


def plan_for(recipe: SceneRecipe) -> ScenePlan:
    """The scene plan of a recipe (falls back to cruising if the map lacks the scenario's road)."""
    smap = synth_map(recipe.location, recipe.map_seed)
    try:
        return make_plan(smap, recipe.seed, recipe.scenario, recipe.seconds)
    except RuntimeError:
        return make_plan(smap, recipe.seed, "cruise", recipe.seconds)


def load_recipes(dataroot: Path) -> list[SceneRecipe]:
    """The recipes stored in a synthetic dataroot."""
    path = Path(dataroot) / RECIPE_FILE
    if not path.exists():
        raise DataError(f"{path} not found: {dataroot} is not a drivesim synthetic dataroot (no recipe to re-simulate)")
    with open(path) as f:
        data = json.load(f)
    return [SceneRecipe(**s) for s in data["scenes"]]


def generate(cfg: SynthConfig, out: Path, overwrite: bool = False, progress: bool = True, workers: int = 1) -> dict:
    """Write a synthetic dataroot to `out`; returns a report (sizes, counts, timings).

    `workers` > 1 makes the scenes in that many processes (a trainval-sized set: 850 scenes); the
    dataroot is the same, file for file, as a serial run's."""
    from drivesim.provenance import provenance
    from drivesim.synth import camera_frames  # jax is imported only when rendering
    from drivesim.synth.rig import nuscenes_rig
    from drivesim.synth.writer import NuScenesWriter, directory_size

    cfg.validate()
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; choose another --out or pass --overwrite")
    tmp = out.parent / f".{out.name}.tmp-{int(time.time() * 1000)}"
    tmp.mkdir(parents=True)
    t_start = time.perf_counter()
    timings = {"simulate": 0.0, "render": 0.0, "encode": 0.0, "tables": 0.0, "maps": 0.0}
    try:
        recipes = scene_recipes(cfg)
        rig = nuscenes_rig(cfg.image_width)
        writer = NuScenesWriter(tmp, cfg.version)
        for folder in ("samples", "sweeps"):
            for cam in rig:
                (tmp / folder / cam.channel).mkdir(parents=True, exist_ok=True)
        n_images = 0
        signals: dict[str, dict] = {}  # scene token -> its traffic lights
        (tmp / "maps").mkdir()
        jobs = [(tmp, cfg, i, recipe) for i, recipe in enumerate(recipes)]
        with _progress(progress) as bar, concurrent.futures.ThreadPoolExecutor(2) as pool, _scene_pool(workers) as run:
            task = bar.add_task("synth", total=len(recipes)) if bar else None
            map_jobs = {}
            for recipe in recipes:  # written in the background while the scenes are made
                if recipe.location not in map_jobs:
                    smap = synth_map(recipe.location, recipe.map_seed)
                    map_jobs[recipe.location] = pool.submit(writer.write_map_files, smap, camera_frames.map_mask(smap))
            for recipe, scene in zip(recipes, run(_make_scene, jobs), strict=True):  # in scene order
                for name, rows in scene["tables"].items():
                    writer.tables[name].extend(rows)
                writer.map_logs.setdefault(recipe.location, []).append(scene["log_token"])
                signals[scene["scene_token"]] = scene["signals"]
                for k, v in scene["timings"].items():
                    timings[k] += v
                n_images += scene["images"]
                if bar:
                    bar.update(task, advance=1, description=f"synth {recipe.name} ({recipe.scenario})")
            t0 = time.perf_counter()
            for loc, job in sorted(map_jobs.items()):
                job.result()
                writer.add_map_record(synth_map(loc, cfg.seed))
            timings["maps"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        writer.finish()
        with open(tmp / RECIPE_FILE, "w") as f:
            json.dump(
                {
                    "config": dataclasses.asdict(cfg),
                    "scenes": [dataclasses.asdict(r) for r in recipes],
                    "provenance": provenance(dataroot=out, version=cfg.version, seed=cfg.seed),
                },
                f, indent=1,
            )  # fmt: skip
        with open(tmp / SIGNALS_FILE, "w") as f:
            json.dump(signals_document(signals), f)
        timings["tables"] += time.perf_counter() - t0
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "dataroot": str(out),
        "version": cfg.version,
        "scenes": len(recipes),
        "images": n_images,
        "bytes": directory_size(out),
        "seconds": time.perf_counter() - t_start,
        "timings": timings,
    }


_SCENE_TABLES = (
    "log",
    "scene",
    "sample",
    "sample_data",
    "ego_pose",
    "calibrated_sensor",
    "sample_annotation",
    "instance",
)  # fmt: skip (the tables whose rows belong to one scene)


def _make_scene(job) -> dict:
    """Simulate, tabulate, render and write one scene into the temporary dataroot `tmp`; returns
    its table rows (in the writer's order), tokens, traffic lights, image count and timings. Runs in
    a worker process under `generate(workers=N)`: scenes are independent and tokens deterministic,
    so the merged tables are those of a serial run."""
    from drivesim.synth import camera_frames
    from drivesim.synth.rig import nuscenes_rig
    from drivesim.synth.writer import NuScenesWriter

    tmp, cfg, i, recipe = job
    rig = nuscenes_rig(cfg.image_width)
    writer = NuScenesWriter(tmp, cfg.version)
    timings = {}
    t0 = time.perf_counter()
    record = simulate(plan_for(recipe))
    timings["simulate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = writer.add_scene(
        i, recipe.name, _describe(recipe, record), record, rig, recipe.start_us, cfg.camera_hz, cfg.annotation_range
    )
    timings["tables"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    images = camera_frames.render_scene(record, rig, [f.time for f in frames], [f.channel for f in frames])
    timings["render"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # PIL releases the GIL while encoding
        list(pool.map(lambda j: _write_jpegs(tmp, frames[j::2], images[j::2], cfg.jpeg_quality), range(2)))
    timings["encode"] = time.perf_counter() - t0
    scene = writer.tables["scene"][-1]
    return {
        "tables": {name: writer.tables[name] for name in _SCENE_TABLES},
        "log_token": scene["log_token"],
        "scene_token": scene["token"],
        "signals": scene_entry(record),
        "images": len(frames),
        "timings": timings,
    }


class _scene_pool:  # noqa: N801 (used like a function)
    """`with _scene_pool(workers) as run: run(fn, jobs)` yields fn(job) in job order: in this
    process for one worker, else in `workers` spawned processes."""

    def __init__(self, workers: int):
        self.workers, self.pool = workers, None

    def __enter__(self):
        if self.workers <= 1:
            return lambda fn, jobs: map(fn, jobs)
        import multiprocessing

        self.pool = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn")
        )
        return lambda fn, jobs: self.pool.map(fn, jobs)

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        return False


def _describe(recipe: SceneRecipe, record: SceneRecord) -> str:
    kinds = [s.kind for s in record.specs]
    return (
        f"drivesim synthetic scene, {recipe.scenario.replace('_', ' ')}; "
        f"{kinds.count('vehicle')} vehicles, {kinds.count('pedestrian')} pedestrians, seed {recipe.seed}"
    )


def _write_jpegs(root: Path, frames, images, quality: int) -> None:
    for frame, img in zip(frames, images, strict=True):
        Image.fromarray(np.asarray(img)).save(root / frame.filename, quality=quality)


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool):
    if not enabled:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())

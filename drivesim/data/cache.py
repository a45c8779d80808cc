"""A compact on-disk cache of training clips, and a batched, shuffling loader over it.

Layout of a cache folder:
  manifest.json                  the config, per finished scene its number of keyframes, provenance
  scenes/<scene>/frames.npy      (T, 6, h, w, 3) uint8 camera keyframes, CAMERA_CHANNELS order
  scenes/<scene>/occupancy.npy   (T, G, G) uint8 BEV occupancy (drivesim.data.classes ids)
  scenes/<scene>/ego.npy         (T, 4) float32 global ego pose and speed: x, y, yaw, speed
  scenes/<scene>/ego_motion.npy  (T, 3) float32 motion to the next keyframe in the ego frame:
                                 dx, dy, dyaw (zeros at the last keyframe)
  scenes/<scene>/agents.npy      (T, A, 8) float32 agent layout in the ego frame at each keyframe:
                                 x, y, yaw, length, width, height, agent class, valid
A clip is `clip_length` consecutive keyframes of one scene starting every `stride` keyframes.

Building streams scene by scene in worker processes (memory is one scene per worker), writes each
scene to a temporary folder and renames it when complete, and skips finished scenes when run
again, so an interrupted build resumes where it stopped. The loader memory-maps the arrays and
assembles batches into a fixed number of preallocated buffers, so its footprint does not grow with
the size of the cache.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import queue
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from drivesim.data.types import AgentLayout
from drivesim.errors import ConfigError, DataError

CACHE_FORMAT = 1
FIELDS = ("frames", "occupancy", "ego", "ego_motion", "agents")


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """What goes into a cache."""

    clip_length: int = 10
    """Keyframes per clip (10 at 2 Hz = 5 s)."""
    stride: int = 2
    """Keyframes between the starts of consecutive clips of a scene."""
    image_size: tuple[int, int] = (64, 36)
    """(width, height) of the stored camera frames."""
    occupancy_extent: float = 40.0
    """Half-size of the BEV grid (m)."""
    occupancy_resolution: float = 0.5
    """Metres per BEV cell."""
    max_agents: int = 64
    """Agent slots of the layout."""

    def validate(self) -> None:
        if self.clip_length < 1 or self.stride < 1:
            raise ConfigError(f"clip length ({self.clip_length}) and stride ({self.stride}) must be positive")
        if min(self.image_size) < 4:
            raise ConfigError(f"image size {self.image_size} is too small")


# ------------------------------------------------------------------------ building
def _scene_arrays(nusc, scene_name: str, cfg: CacheConfig) -> dict[str, np.ndarray]:
    from drivesim.data.loader import LoadConfig, load_camera_frames, load_log

    log, info = load_log(nusc, scene_name, LoadConfig(rate_hz=2.0, max_agents=cfg.max_agents))
    T = int(np.asarray(log.ego.valid).sum())
    frames = load_camera_frames(info, size=cfg.image_size, steps=slice(0, T))
    return log_arrays(log, frames, cfg)


def log_arrays(log, frames: np.ndarray, cfg: CacheConfig = CacheConfig()) -> dict[str, np.ndarray]:
    """The cache arrays of one keyframe `Log` and its (T, 6, h, w, 3) camera frames (T = the
    log's valid steps): what a cache scene folder holds (see the module docstring)."""
    from drivesim.data.occupancy import OccupancyConfig, log_occupancy

    valid = np.asarray(log.ego.valid)
    T = int(valid.sum())
    occ = np.asarray(
        log_occupancy(log, OccupancyConfig(extent=cfg.occupancy_extent, resolution=cfg.occupancy_resolution)).grid
    )[:T]
    xy = np.asarray(log.ego.xy, np.float64)[:T]
    yaw = np.asarray(log.ego.yaw, np.float64)[:T]
    speed = np.hypot(*np.asarray(log.ego.velocity, np.float64)[:T].T)
    ego = np.stack([xy[:, 0], xy[:, 1], yaw, speed], axis=1).astype(np.float32)
    motion = np.zeros((T, 3), np.float32)
    c, s = np.cos(yaw[:-1]), np.sin(yaw[:-1])
    d = xy[1:] - xy[:-1]
    motion[:-1, 0] = c * d[:, 0] + s * d[:, 1]
    motion[:-1, 1] = -s * d[:, 0] + c * d[:, 1]
    motion[:-1, 2] = (yaw[1:] - yaw[:-1] + np.pi) % (2 * np.pi) - np.pi
    ag = log.agents
    axy = np.asarray(ag.xy, np.float64)[:, :T] - xy[None]
    c, s = np.cos(yaw)[None], np.sin(yaw)[None]
    lx = c * axy[..., 0] + s * axy[..., 1]
    ly = -s * axy[..., 0] + c * axy[..., 1]
    lyaw = (np.asarray(ag.yaw, np.float64)[:, :T] - yaw[None] + np.pi) % (2 * np.pi) - np.pi
    size = np.broadcast_to(np.asarray(ag.size)[:, None, :], lx.shape + (3,))
    cat = np.broadcast_to(np.asarray(ag.category)[:, None], lx.shape)
    v = np.asarray(ag.valid)[:, :T]
    layout = AgentLayout(xy=np.stack([lx, ly], -1), yaw=lyaw, size=size, category=cat, valid=v)
    agents = np.where(v[..., None], layout.packed(), np.float32(0.0)).transpose(1, 0, 2).astype(np.float32)
    return {"frames": frames[:T], "occupancy": occ.astype(np.uint8), "ego": ego, "ego_motion": motion, "agents": agents}


_WORKER: dict = {}


def _pool_context():
    """Fork while this process has not started XLA (workers then share the parent's tables, which
    matters for trainval's gigabytes of tables); otherwise spawn, since a forked child of a process
    running XLA threads can deadlock, and each worker loads the tables itself."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized() or "fork" not in mp.get_all_start_methods():
        return mp.get_context("spawn"), _init_worker
    return mp.get_context("fork"), _keep_tables


def _keep_tables(dataroot, version):
    if "nusc" not in _WORKER:
        _init_worker(dataroot, version)


def _init_worker(dataroot, version):
    from drivesim.data.dataroot import open_nuscenes

    _WORKER["nusc"] = open_nuscenes(dataroot, version)


def _build_scene(args) -> tuple[str, int, float]:
    scene_name, out_dir, cfg = args
    t0 = time.perf_counter()
    arrays = _scene_arrays(_WORKER["nusc"], scene_name, cfg)
    final = Path(out_dir) / "scenes" / scene_name
    tmp = final.with_name(f".{scene_name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", arr)
    with open(tmp / "meta.json", "w") as f:
        json.dump({"scene": scene_name, "keyframes": int(len(arrays["ego"]))}, f)
    tmp.rename(final)
    return scene_name, int(len(arrays["ego"])), time.perf_counter() - t0


def build_cache(
    dataroot,
    version: str,
    out: Path,
    cfg: CacheConfig = CacheConfig(),
    workers: int = 2,
    scenes=None,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> dict:
    """Preprocess the scenes of a dataroot into a clip cache at `out` (resumable).

    `shard=(i, n)`: cache only every n-th scene from the i-th, so that n processes fill one cache
    together (each scene is written by one of them; the manifest lists what is done)."""
    from drivesim.data.dataroot import check_dataroot, open_nuscenes
    from drivesim.provenance import provenance

    cfg.validate()
    check_dataroot(dataroot, version)
    out = Path(out)
    manifest_path = out / "manifest.json"
    want = {
        "format": CACHE_FORMAT,
        "dataroot": str(Path(dataroot).resolve()),
        "version": version,
        "config": dataclasses.asdict(cfg),
    }
    have = {}
    if manifest_path.exists():
        with open(manifest_path) as f:
            have = json.load(f)
        if {k: have.get(k) for k in want} != json.loads(json.dumps(want)):
            raise ConfigError(
                f"{out} holds a cache built from another dataroot or config; choose another --out or delete it"
            )
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    nusc = open_nuscenes(dataroot, version)
    names = [s["name"] for s in nusc.scene] if scenes is None else list(scenes)
    done = {p.name for p in (out / "scenes").iterdir() if p.is_dir() and not p.name.startswith(".")}
    todo = [n for n in names[shard[0] :: shard[1]] if n not in done]
    _write_manifest(out, want, names, done)
    if todo:
        _WORKER["nusc"] = nusc
        jobs = [(n, str(out), cfg) for n in todo]
        bar = _progress(progress, "cache", len(todo))
        try:
            if workers > 1 and len(todo) > 1:
                ctx, init = _pool_context()
                with ctx.Pool(
                    min(workers, len(todo)), initializer=init, initargs=(str(dataroot), version)
                ) as pool:
                    for name, _n, _dt in pool.imap_unordered(_build_scene, jobs):
                        done.add(name)
                        _write_manifest(out, want, names, done)
                        bar.tick(name)
            else:
                for job in jobs:
                    name, _n, _dt = _build_scene(job)
                    done.add(name)
                    _write_manifest(out, want, names, done)
                    bar.tick(name)
        finally:
            bar.close()
    # readers ignore the key; a run that found the cache complete keeps the record of the one that built it
    prov = have.get("provenance") if not todo and have.get("provenance") else None
    _write_manifest(out, {**want, "provenance": prov or provenance(dataroot=dataroot, version=version)}, names, done)
    clips = sum(len(_clip_starts(_keyframes(out, n), cfg)) for n in names if n in done)
    return {
        "out": str(out),
        "scenes": len(names),
        "skipped": len(names) - len(todo),
        "clips": clips,
        "bytes": sum(f.stat().st_size for f in (out / "scenes").rglob("*.npy")),
        "seconds": time.perf_counter() - t0,
    }


def _keyframes(out: Path, scene: str) -> int:
    with open(out / "scenes" / scene / "meta.json") as f:
        return int(json.load(f)["keyframes"])


def _write_manifest(out: Path, want: dict, names, done) -> None:
    data = dict(want)
    data["scenes"] = {n: _keyframes(out, n) for n in names if n in done}
    tmp = out / f".manifest.json.tmp-{os.getpid()}"  # several processes may write it at once
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    tmp.replace(out / "manifest.json")


def _clip_starts(keyframes: int, cfg: CacheConfig) -> list[int]:
    return list(range(0, keyframes - cfg.clip_length + 1, cfg.stride))


class _progress:
    def __init__(self, enabled: bool, label: str, total: int):
        self.p = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self.p.start()
            self.task = self.p.add_task(label, total=total)

    def tick(self, name: str) -> None:
        if self.p:
            self.p.update(self.task, advance=1, description=f"cache {name}")

    def close(self) -> None:
        if self.p:
            self.p.stop()


# ------------------------------------------------------------------------ reading
class ClipLoader:
    """Shuffled batches of clips from a cache, with a fixed memory footprint.

    Each batch is a dict of arrays with a leading (batch, clip_length) shape: frames
    (B, L, 6, h, w, 3) uint8, occupancy (B, L, G, G) uint8, ego (B, L, 4), ego_motion (B, L, 3),
    agents (B, L, A, 8) float32. Batches are assembled in a background thread, up to `prefetch`
    ahead, into `prefetch + 1` preallocated buffers; a yielded batch is valid until the next one is
    requested (copy it to keep it longer). `shard` / `num_shards` split the clips between hosts.
    """

    def __init__(
        self,
        cache_dir,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        prefetch: int = 2,
        fields: tuple[str, ...] = FIELDS,
        shard: int = 0,
        num_shards: int = 1,
    ):
        self.dir = Path(cache_dir)
        path = self.dir / "manifest.json"
        if not path.exists():
            raise DataError(f"{path} not found: {self.dir} is not a drivesim cache (build one with `drivesim cache`)")
        with open(path) as f:
            self.manifest = json.load(f)
        if self.manifest.get("format") != CACHE_FORMAT:
            raise DataError(f"{path}: cache format {self.manifest.get('format')} is not {CACHE_FORMAT}; rebuild it")
        bad = [f for f in fields if f not in FIELDS]
        if bad:
            raise ConfigError(f"unknown cache fields {bad}; choose from {FIELDS}")
        self.cfg = CacheConfig(
            **{**self.manifest["config"], "image_size": tuple(self.manifest["config"]["image_size"])}
        )
        self.fields, self.batch_size, self.seed = fields, batch_size, seed
        self.shuffle, self.drop_last, self.prefetch = shuffle, drop_last, max(1, prefetch)
        self.scenes = sorted(self.manifest["scenes"])
        self.arrays = [self._open(s) for s in self.scenes]
        clips = [(i, t) for i, s in enumerate(self.scenes) for t in _clip_starts(self.manifest["scenes"][s], self.cfg)]
        self.clips = clips[shard::num_shards]
        if not self.clips:
            raise DataError(f"{self.dir} has no clips of length {self.cfg.clip_length}")
        L = self.cfg.clip_length
        first = self.arrays[0]
        self.item_shapes = {f: (L,) + first[f].shape[1:] for f in fields}
        self.item_dtypes = {f: first[f].dtype for f in fields}

    def _open(self, scene: str) -> dict[str, np.ndarray]:
        out = {}
        for f in self.fields:
            path = self.dir / "scenes" / scene / f"{f}.npy"
            try:
                out[f] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DataError(f"{path} is missing or corrupt ({e}); rebuild the cache for scene {scene}") from None
        return out

    def __len__(self) -> int:
        n = len(self.clips)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def batch_bytes(self) -> int:
        return sum(
            self.batch_size * int(np.prod(shape)) * np.dtype(self.item_dtypes[f]).itemsize
            for f, shape in self.item_shapes.items()
        )

    def epoch(self, epoch: int = 0):
        """Iterate over one epoch of batches (a different shuffle for each epoch number)."""
        order = np.arange(len(self.clips))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.clips))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches = batches[:-1]
        buffers = [
            {f: np.empty((self.batch_size,) + shape, self.item_dtypes[f]) for f, shape in self.item_shapes.items()}
            for _ in range(self.prefetch + 1)
        ]
        free: queue.Queue = queue.Queue()
        for i in range(len(buffers)):
            free.put(i)
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        L = self.cfg.clip_length

        def fill():
            try:
                for idx in batches:
                    b = free.get()
                    if stop.is_set():
                        return
                    buf = buffers[b]
                    for j, c in enumerate(idx):
                        scene, start = self.clips[c]
                        for f in self.fields:
                            buf[f][j] = self.arrays[scene][f][start : start + L]
                    ready.put((b, len(idx)))
                ready.put(None)
            except BaseException as e:  # surface errors in the consumer
                ready.put(e)

        thread = threading.Thread(target=fill, daemon=True)
        thread.start()
        held: list[int] = []
        try:
            while True:
                item = ready.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                b, n = item
                for old in held:
                    free.put(old)
                held = [b]
                yield {f: buffers[b][f][:n] for f in self.fields}
        finally:
            stop.set()
            for b in held:
                free.put(b)
            free.put(0)

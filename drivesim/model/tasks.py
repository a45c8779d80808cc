"""Training tasks of the world model, for the generic trainer (`drivesim.train.loop`).

Two stages: the tokenizers learn on single keyframes of the clip cache; then the dynamics learn
on latent clips, encoded once with the trained (frozen) tokenizers — so the expensive decoders
never run during dynamics training. Batches are a pure function of (epoch, position), so a resumed
run sees exactly the data an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from drivesim.errors import DataError
from drivesim.model.config import WorldModelConfig
from drivesim.model.dynamics import Dynamics
from drivesim.model.tokenizers import Tokenizers
from drivesim.model.world import (
    dynamics_loss,
    layout_grid,
    motion_into_frames,
    prepare_images,
    prepare_occupancy,
    tokenizer_loss,
)


class CacheScenes:
    """The scenes of a clip cache (`drivesim.data.cache`), memory-mapped."""

    def __init__(self, cache_dir, fields=("frames", "occupancy", "ego_motion", "agents")):
        self.dir = Path(cache_dir)
        manifest = self.dir / "manifest.json"
        if not manifest.exists():
            raise DataError(f"{manifest} not found: build the training cache first (`drivesim cache --out {self.dir}`)")
        self.manifest = json.loads(manifest.read_text())
        self.names = sorted(self.manifest["scenes"])
        if not self.names:
            raise DataError(f"{self.dir} holds no finished scene")
        self.arrays = [
            {f: np.load(self.dir / "scenes" / n / f"{f}.npy", mmap_mode="r") for f in fields} for n in self.names
        ]
        self.lengths = [len(a[fields[0]]) for a in self.arrays]
        size = self.manifest["config"]["image_size"]
        self.image_size = tuple(size)

    def check(self, cfg: WorldModelConfig) -> CacheScenes:
        """Refuse a cache whose frames are not the size the model reads."""
        if self.image_size != tuple(cfg.frame_size):
            w, h = cfg.frame_size
            raise DataError(
                f"cache {self.dir} was built at {self.image_size[0]}x{self.image_size[1]} but the model reads "
                f"{w}x{h} frames; rebuild it with `drivesim cache --image-size {w}x{h}`"
            )
        return self


@dataclasses.dataclass(frozen=True)
class TokenizerTask:
    """Stage 1: the camera and occupancy VAEs, on single keyframes."""

    cache_dir: str
    cfg: WorldModelConfig = WorldModelConfig()
    seed: int = 0
    name: str = "tokenizer"

    def _data(self) -> CacheScenes:
        return _scenes(self.cache_dir, ("frames", "occupancy")).check(self.cfg)

    def init_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return Tokenizers(self.cfg, rngs=rngs)

    def loss(self, model, batch, rng):
        return tokenizer_loss(model, batch, rng, self.cfg)

    def _items(self) -> np.ndarray:
        data = self._data()
        return np.array([(s, t) for s, n in enumerate(data.lengths) for t in range(n)])

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self._items()) // batch_size)

    def batches(self, epoch: int, batch_size: int, shard: int = 0, num_shards: int = 1):
        data = self._data()
        items = self._items()
        order = np.random.default_rng([self.seed, epoch]).permutation(len(items))
        local = batch_size // num_shards
        for b in range(len(items) // batch_size):
            idx = order[b * batch_size : (b + 1) * batch_size][shard * local : (shard + 1) * local]
            sel = items[idx]
            yield {
                "frames": np.stack([data.arrays[s]["frames"][t] for s, t in sel]),
                "occupancy": np.stack([data.arrays[s]["occupancy"][t] for s, t in sel]),
            }

    def fingerprint(self) -> dict:
        return {"task": self.name, "model": dataclasses.asdict(self.cfg)}


_SCENES: dict = {}


def _scenes(cache_dir, fields) -> CacheScenes:
    key = (str(cache_dir), fields)
    if key not in _SCENES:
        _SCENES[key] = CacheScenes(cache_dir, fields)
    return _SCENES[key]


class LatentClips:
    """Every keyframe of a cache encoded once with a trained tokenizer, plus motion and layouts.

    Attributes per scene: cam (T, 6, r, c, Cc) and occ (T, g, g, Co) normalised latents,
    motion (T, 3) normalised motion into each frame, layout (T, G, G) int8 agent grids.
    `stats` holds the normalisation (per-channel mean and std of the latent means).
    """

    def __init__(self, cache_dir, tokenizers: Tokenizers, cfg: WorldModelConfig, stats=None, batch: int = 32):
        data = CacheScenes(cache_dir).check(cfg)
        enc = nnx.jit(
            lambda tok, f, o: (
                tok.encode_cameras(prepare_images(f, cfg))[0],
                tok.encode_occupancy(prepare_occupancy(o, cfg))[0],
            )
        )
        lay = jax.jit(jax.vmap(lambda a: layout_grid(a, cfg)))
        cams, occs, motions, layouts = [], [], [], []
        for arr in data.arrays:
            T = len(arr["frames"])
            c_parts, o_parts = [], []
            for i in range(0, T, batch):
                c, o = enc(
                    tokenizers, jnp.asarray(arr["frames"][i : i + batch]), jnp.asarray(arr["occupancy"][i : i + batch])
                )
                c_parts.append(np.asarray(c))
                o_parts.append(np.asarray(o))
            cams.append(np.concatenate(c_parts))
            occs.append(np.concatenate(o_parts))
            motions.append(np.asarray(motion_into_frames(jnp.asarray(arr["ego_motion"]))))
            layouts.append(np.asarray(lay(jnp.asarray(arr["agents"]))).astype(np.int8))
        if stats is None:
            allc = np.concatenate([c.reshape(-1, c.shape[-1]) for c in cams])
            allo = np.concatenate([o.reshape(-1, o.shape[-1]) for o in occs])
            stats = {
                "cam_mean": allc.mean(0).tolist(), "cam_std": (allc.std(0) + 1e-6).tolist(),
                "occ_mean": allo.mean(0).tolist(), "occ_std": (allo.std(0) + 1e-6).tolist(),
            }  # fmt: skip
        self.stats = stats
        cm, cs = np.asarray(stats["cam_mean"], np.float32), np.asarray(stats["cam_std"], np.float32)
        om, os_ = np.asarray(stats["occ_mean"], np.float32), np.asarray(stats["occ_std"], np.float32)
        self.cam = [((c - cm) / cs).astype(np.float32) for c in cams]
        self.occ = [((o - om) / os_).astype(np.float32) for o in occs]
        self.motion = motions
        self.layout = layouts
        self.names = data.names


@dataclasses.dataclass(frozen=True, eq=False)
class DynamicsTask:
    """Stage 2: the dynamics transformer on latent clips of `cfg.window` keyframes (stride 1)."""

    clips: LatentClips
    cfg: WorldModelConfig = WorldModelConfig()
    seed: int = 0
    name: str = "dynamics"

    def init_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return Dynamics(self.cfg, rngs=rngs)

    def loss(self, model, batch, rng):
        return dynamics_loss(model, batch, rng, self.cfg)

    def _items(self) -> np.ndarray:
        W = self.cfg.window
        return np.array([(s, t) for s, c in enumerate(self.clips.cam) for t in range(len(c) - W + 1)])

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self._items()) // batch_size)

    def batches(self, epoch: int, batch_size: int, shard: int = 0, num_shards: int = 1):
        items = self._items()
        W = self.cfg.window
        order = np.random.default_rng([self.seed, epoch]).permutation(len(items))
        local = batch_size // num_shards
        c = self.clips
        for b in range(len(items) // batch_size):
            idx = order[b * batch_size : (b + 1) * batch_size][shard * local : (shard + 1) * local]
            sel = items[idx]
            yield {
                "cam": np.stack([c.cam[s][t : t + W] for s, t in sel]),
                "occ": np.stack([c.occ[s][t : t + W] for s, t in sel]),
                "motion": np.stack([c.motion[s][t : t + W] for s, t in sel]),
                "layout": np.stack([c.layout[s][t : t + W] for s, t in sel]).astype(np.int32),
            }

    def fingerprint(self) -> dict:
        return {"task": self.name, "model": dataclasses.asdict(self.cfg), "latent_stats": self.clips.stats}

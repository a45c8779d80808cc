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

from drivesim.data.types import AgentLayout
from drivesim.errors import DataError
from drivesim.model.baselines import compose
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

AGENT_DROPOUT = 0.15
"""Share of free-running refiner examples whose anchor comes without agent boxes."""


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
        return keyframe_batches(self._data(), self.seed, epoch, batch_size, shard, num_shards)

    def fingerprint(self) -> dict:
        return {"task": self.name, "model": self.cfg.stage_fields()}


def keyframe_batches(data: CacheScenes, seed: int, epoch: int, batch_size: int, shard: int = 0, num_shards: int = 1):
    """Batches of single keyframes of every scene, shuffled per (seed, epoch): {"frames" (B, 6, H0,
    W0, 3) uint8, "occupancy" (B, G0, G0) uint8}; this shard's share of each global batch."""
    items = np.array([(s, t) for s, n in enumerate(data.lengths) for t in range(n)])
    order = np.random.default_rng([seed, epoch]).permutation(len(items))
    local = batch_size // num_shards
    for b in range(len(items) // batch_size):
        idx = order[b * batch_size : (b + 1) * batch_size][shard * local : (shard + 1) * local]
        sel = items[idx]
        yield {
            "frames": np.stack([data.arrays[s]["frames"][t] for s, t in sel]),
            "occupancy": np.stack([data.arrays[s]["occupancy"][t] for s, t in sel]),
        }


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
            layouts.append(np.asarray(lay(AgentLayout.from_packed(jnp.asarray(arr["agents"])))).astype(np.int8))
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
        return {"task": self.name, "model": self.cfg.stage_fields(), "latent_stats": self.clips.stats}


class PredictedLatents:
    """BEV latents the trained dynamics predict for training clips: what the refiner will decode.

    Clips of `cfg.window` keyframes start every `stride` keyframes of every scene (at most
    `max_clips`, evenly spread); every other clip is layout-guided, the rest run free. From each
    clip's `cfg.history` context frames, the model samples the `cfg.future` next frames under the
    logged ego motion (one `generate` per batch, as at evaluation).

    Attributes: clips (N, 2) (scene, first keyframe); occ (N, F, g, g, Co) normalised latents.
    """

    def __init__(self, data: CacheScenes, model, cfg: WorldModelConfig, stride: int = 8, max_clips: int = 640,
                 batch: int = 16, seed: int = 0, progress=None):  # fmt: skip
        from drivesim.model.world import generate

        W, H = cfg.window, cfg.history
        clips = self.select(data, cfg, stride, max_clips)
        graphdef, state = nnx.split(model)

        @jax.jit
        def fn(state, frames, occ, motion, agents, on, key):
            m = nnx.merge(graphdef, state)
            cam, o = m.encode(frames, occ)
            lay = jax.vmap(jax.vmap(lambda a: layout_grid(a, cfg)))(AgentLayout.from_packed(agents))
            return generate(m.dynamics, cam, o, motion, key, cfg, lay, on)[1]

        out = []
        for b0 in range(0, len(clips), batch):
            group = list(clips[b0 : b0 + batch]) + [clips[0]] * max(0, batch - len(clips[b0 : b0 + batch]))

            def stack(field, lo, hi, group=group):
                return np.stack([np.asarray(data.arrays[s][field][t + lo : t + hi]) for s, t in group])

            motion = motion_into_frames(jnp.asarray(stack("ego_motion", 0, W)))
            on = np.array([self.guided(i) for i in range(b0, b0 + batch)])
            z = fn(state, stack("frames", 0, H), stack("occupancy", 0, H), motion, stack("agents", 0, W), on,
                   jax.random.fold_in(jax.random.key(seed), b0))  # fmt: skip
            out.append(np.asarray(z)[: min(batch, len(clips) - b0)])
            if progress:
                progress(min(batch, len(clips) - b0))
        self.clips = clips
        self.occ = np.concatenate(out).astype(np.float32)

    @staticmethod
    def guided(i: int) -> bool:
        """Whether clip i was predicted layout-guided (every other one)."""
        return i % 2 == 1

    @staticmethod
    def select(data: CacheScenes, cfg: WorldModelConfig, stride: int = 8, max_clips: int = 640) -> np.ndarray:
        """(N, 2) (scene, first keyframe) of the clips whose futures are predicted."""
        W = cfg.window
        clips = np.array([(s, t) for s, n in enumerate(data.lengths) for t in range(0, n - W + 1, stride)])
        if len(clips) > max_clips:
            clips = clips[np.linspace(0, len(clips) - 1, max_clips).round().astype(int)]
        return clips

    def save(self, path: Path) -> None:
        """Write clips and latents to `path` (.npz), atomically."""
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, clips=self.clips, occ=self.occ)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PredictedLatents:
        out = cls.__new__(cls)
        with np.load(path) as f:
            out.clips, out.occ = f["clips"], f["occ"]
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class RefinerTask:
    """Stage 3: the BEV refiner (`drivesim.model.refine`), the rest of the model frozen.

    Examples: every predicted frame of `predicted` (anchor: its clip's last context frame; gap
    1 .. F; the reference follows the true boxes where the clip was layout-guided). In
    `AGENT_DROPOUT` of the free-running examples the anchor has no agent boxes, so the refiner also
    works from grids alone. Only predicted latents: with encoded true ones (as good as a forecast
    gets) the refiner learns to trust the decoder's agents over the physics, which predicted
    latents do not deserve (measured: agent IoU 0.70 vs the reference's 0.88 at 1 s).
    """

    base: object  # the WorldModel whose tokenizers and dynamics are frozen
    data: CacheScenes
    predicted: PredictedLatents | None
    cfg: WorldModelConfig = WorldModelConfig()
    seed: int = 0
    name: str = "refiner"

    def init_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from drivesim.model.refine import OccRefiner

        return OccRefiner(self.cfg, rngs=rngs)

    def loss(self, model, batch, rng):
        from drivesim.model.world import refiner_loss

        return refiner_loss(model, self.base, batch, self.cfg)

    def _items(self) -> np.ndarray:
        """(N, 7) rows (scene, anchor keyframe, gap, predicted clip, its future index, guided,
        agents dropped)."""
        H, F = self.cfg.history, self.cfg.future
        rng = np.random.default_rng([self.seed, 7])
        rows = []
        for i, (s, t) in enumerate(self.predicted.clips):
            guided = PredictedLatents.guided(i)
            rows += [(s, t + H - 1, k + 1, i, k, guided, not guided and rng.random() < AGENT_DROPOUT) for k in range(F)]
        return np.array(rows, np.int64)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self._items()) // batch_size)

    def batches(self, epoch: int, batch_size: int, shard: int = 0, num_shards: int = 1):
        items = self._items()
        order = np.random.default_rng([self.seed, epoch]).permutation(len(items))
        local = batch_size // num_shards
        d = self.data.arrays

        def agents(s, t, drop):
            a = np.asarray(d[s]["agents"][t], np.float32) if t >= 0 else np.zeros_like(d[s]["agents"][0], np.float32)
            return np.zeros_like(a) if drop else a

        for b in range(len(items) // batch_size):
            sel = items[order[b * batch_size : (b + 1) * batch_size][shard * local : (shard + 1) * local]]
            yield {
                "target": np.stack([d[s]["occupancy"][t + k] for s, t, k, *_ in sel]),
                "anchor": np.stack([d[s]["occupancy"][t] for s, t, *_ in sel]),
                "pose": np.stack([compose(d[s]["ego_motion"][t : t + k])[-1] for s, t, k, *_ in sel]).astype(
                    np.float32
                ),
                "age": sel[:, 2].astype(np.int32),
                "agents_prev": np.stack([agents(s, t - 1, drop) for s, t, _, _, _, _, drop in sel]),
                "agents": np.stack([agents(s, t, drop) for s, t, _, _, _, _, drop in sel]),
                "motion_prev": np.stack(
                    [d[s]["ego_motion"][t - 1] if t >= 1 else np.zeros(3) for s, t, *_ in sel]
                ).astype(np.float32),
                "given": np.stack([agents(s, t + k, False) for s, t, k, *_ in sel]),
                "given_on": sel[:, 5].astype(bool),
                "z": np.stack([self.predicted.occ[i, f] for _, _, _, i, f, _, _ in sel]),
            }

    def fingerprint(self) -> dict:
        return {"task": self.name, "model": dataclasses.asdict(self.cfg)}

"""Training the perception probe on true rendered keyframes of a clip cache (`drivesim.train`)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from drivesim.model.config import WorldModelConfig
from drivesim.model.probe import Probe, ProbeConfig, probe_loss
from drivesim.model.tasks import _scenes, keyframe_batches
from drivesim.model.world import prepare_occupancy


def probe_view(frames, occupancy, cfg: ProbeConfig, view: WorldModelConfig):
    """Cache keyframes -> what the probe reads and is scored on: (..., 6, h, w, 3) uint8 centre
    crops and (..., G, G) pooled occupancy classes."""
    w, h = cfg.image_size
    H0, W0 = frames.shape[-3], frames.shape[-2]
    top, left = (H0 - h) // 2, (W0 - w) // 2
    return frames[..., top : top + h, left : left + w, :], prepare_occupancy(jnp.asarray(occupancy), view)


@dataclasses.dataclass(frozen=True)
class ProbeTask:
    """The probe on single true keyframes (six views and their BEV) of a cache."""

    cache_dir: str
    cfg: ProbeConfig = ProbeConfig()
    rig: tuple | None = None
    """(intrinsics, rotation, translation) of the dataroot's cameras at the cache's frame size;
    None: the nuScenes rig of the synthetic world."""
    seed: int = 0
    name: str = "probe"

    def view(self) -> WorldModelConfig:
        return WorldModelConfig(frame_size=self.cfg.frame_size, image_size=self.cfg.image_size)

    def _data(self):
        return _scenes(self.cache_dir, ("frames", "occupancy")).check(self.view())

    def init_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from drivesim.data.types import CameraRig

        rig = None if self.rig is None else CameraRig(*(np.asarray(a, np.float32) for a in self.rig))
        return Probe(self.cfg, rig, rngs=rngs)

    def loss(self, model, batch, rng):
        images, grid = probe_view(batch["frames"], batch["occupancy"], self.cfg, self.view())
        return probe_loss(model, images, grid)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, sum(self._data().lengths) // batch_size)

    def batches(self, epoch: int, batch_size: int, shard: int = 0, num_shards: int = 1):
        return keyframe_batches(self._data(), self.seed, epoch, batch_size, shard, num_shards)

    def fingerprint(self) -> dict:
        return {"task": self.name, "model": dataclasses.asdict(self.cfg), "seed": self.seed}

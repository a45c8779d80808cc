"""Training the camera refiner (`drivesim.model.camera_refine`) on true frames and true future
boxes of a clip cache (`drivesim.train`)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx

from drivesim.model.baselines import compose
from drivesim.model.camera_refine import CameraRefineConfig, CameraRefiner, camera_refine_loss
from drivesim.model.ego_warp import crop_offset
from drivesim.model.tasks import _scenes

_INPUTS: dict = {}


@dataclasses.dataclass(frozen=True)
class CameraRefineTask:
    """(last keyframe, future keyframe k = 1..horizon) pairs of every scene of a cache."""

    cache_dir: str
    cfg: CameraRefineConfig = CameraRefineConfig()
    rig: tuple | None = None
    """(intrinsics, rotation, translation) at the cache's frame size; None: the synthetic rig."""
    seed: int = 0
    name: str = "camera_refiner"

    def _data(self):
        return _scenes(self.cache_dir, ("frames", "ego_motion", "agents"))

    def init_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from drivesim.data.types import CameraRig

        rig = None if self.rig is None else CameraRig(*(np.asarray(a, np.float32) for a in self.rig))
        return CameraRefiner(self.cfg, rig, rngs=rngs)

    def loss(self, model, batch, rng):
        return camera_refine_loss(model, batch["ref"], batch["feats"], batch["target"])

    def _inputs(self):
        """The refiner's inputs of a batch, jitted apart from the training step (they depend on the
        rig, not on the parameters; in one XLA program with the step it runs about twice as slow)."""
        key = (self.cfg, None if self.rig is None else str(self.rig))
        if key not in _INPUTS:
            model = self.init_model(nnx.Rngs(0))
            _INPUTS[key] = jax.jit(jax.vmap(model.inputs))
        return _INPUTS[key]

    def training_batch(self, sel) -> dict[str, np.ndarray]:
        """What the training step reads: the refiner's inputs of `sel` and the true frames."""
        b = self.batch_of(sel)
        ref, feats = self._inputs()(
            b["last"], b["pose"], b["layout_last"], b["layout_target"], b["k"].astype(np.float32)
        )
        return {"ref": np.asarray(ref), "feats": np.asarray(feats), "target": b["target"]}

    def _items(self) -> np.ndarray:
        data = self._data()
        H = self.cfg.horizon
        return np.array(
            [(s, t, k) for s, n in enumerate(data.lengths) for t in range(n) for k in range(1, H + 1) if t + k < n]
        )

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self._items()) // batch_size)

    def batch_of(self, sel) -> dict[str, np.ndarray]:
        """The batch of (scene, last keyframe, k) rows `sel`."""
        data = self._data()
        top, left = crop_offset(self.cfg.frame_size, self.cfg.image_size)
        w, h = self.cfg.image_size

        def crop(s, t):
            return np.asarray(data.arrays[s]["frames"][t, :, top : top + h, left : left + w])

        return {
            "last": np.stack([crop(s, t) for s, t, _ in sel]),
            "target": np.stack([crop(s, t + k) for s, t, k in sel]),
            "pose": np.stack([compose(data.arrays[s]["ego_motion"][t : t + k])[-1] for s, t, k in sel]).astype(
                np.float32
            ),
            "layout_last": np.stack([data.arrays[s]["agents"][t] for s, t, _ in sel]),
            "layout_target": np.stack([data.arrays[s]["agents"][t + k] for s, t, k in sel]),
            "k": np.array([k for _, _, k in sel], np.int32),
        }

    def batches(self, epoch: int, batch_size: int, shard: int = 0, num_shards: int = 1):
        items = self._items()
        order = np.random.default_rng([self.seed, epoch]).permutation(len(items))
        local = batch_size // num_shards
        for b in range(len(items) // batch_size):
            yield self.training_batch(
                items[order[b * batch_size : (b + 1) * batch_size][shard * local : (shard + 1) * local]]
            )

    def fingerprint(self) -> dict:
        return {"task": self.name, "model": dataclasses.asdict(self.cfg), "seed": self.seed}

"""Training the perception probe (`drivesim train --config experiments/probe_small.py`).

`train_probe(ProbeExperiment, workdir)` makes (or reuses) the world model's training set and
cache (true rendered frames of the training world), trains the probe with the generic loop
(`drivesim.train`) on single keyframes, scores it on the true frames of a validation world (its
agent and drivable IoU: the probe's own accuracy, the denominator of what eval-wm reports), and
exports `workdir/probe.npz` (+ .json record).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from drivesim.model.probe import ProbeConfig, ProbeIou
from drivesim.pipelines.experiment import TrainingData


@dataclasses.dataclass(frozen=True)
class ProbeExperiment:
    """A perception-probe training run."""

    model: ProbeConfig
    data: TrainingData
    train: object
    """The `drivesim.train.TrainConfig`."""
    validation: TrainingData | None = None
    """A set of its own seed on which the trained probe is scored (true frames)."""


def probe_scores(probe, cache_dir, batch: int = 32, progress=None) -> dict:
    """The probe's agent and drivable IoU on every true keyframe of a cache (dataset-level)."""
    from drivesim.model.probe_task import probe_view
    from drivesim.model.tasks import CacheScenes

    data = CacheScenes(cache_dir, ("frames", "occupancy"))
    run = jax.jit(lambda x: probe(x))
    acc = ProbeIou()
    view = _view(probe.cfg)
    for arrays in data.arrays:
        for t in range(0, len(arrays["frames"]), batch):
            images, grid = probe_view(
                np.asarray(arrays["frames"][t : t + batch]), arrays["occupancy"][t : t + batch], probe.cfg, view
            )
            n = len(images)
            acc.update(np.asarray(run(_pad(images, batch)))[:n], grid)
        if progress:
            progress(1)
    return {**acc.result(), "keyframes": int(sum(data.lengths)), "scenes": len(data.names)}


def _view(cfg: ProbeConfig):
    from drivesim.model.config import WorldModelConfig

    return WorldModelConfig(frame_size=cfg.frame_size, image_size=cfg.image_size)


def _pad(x, n):
    x = np.asarray(x)
    return x if len(x) == n else np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)])


def train_probe(exp: ProbeExperiment, workdir, resume: bool = False, progress: bool = True) -> Path:
    """Train the probe of `exp` in `workdir`; returns the exported file."""
    import time

    from drivesim import distributed
    from drivesim.model.ego_warp import dataroot_rig
    from drivesim.model.probe_file import save_probe
    from drivesim.model.probe_task import ProbeTask
    from drivesim.pipelines.experiment import ensure_training_data
    from drivesim.progress import bar
    from drivesim.train import load_model, train

    workdir = Path(workdir)
    t0 = time.time()
    cache = ensure_training_data(exp.data, exp.model.frame_size, progress=progress)
    rig = dataroot_rig(exp.data.dataroot, exp.data.version, exp.model.frame_size)
    task = ProbeTask(str(cache), exp.model, tuple(np.asarray(a).tolist() for a in (rig.intrinsics, rig.rotation, rig.translation)),
                     seed=exp.train.seed)  # fmt: skip
    train(task, exp.train, workdir / "probe", resume=resume, progress=progress)
    out = workdir / "probe.npz"
    model = load_model(task, workdir / "probe")
    if not distributed.lead():
        return out
    record = {"training": {"data": dataclasses.asdict(exp.data), "train": dataclasses.asdict(exp.train)}}
    if exp.validation is not None:
        val = ensure_training_data(exp.validation, exp.model.frame_size, progress=progress)
        n = len(list((Path(val) / "scenes").iterdir()))
        with bar(not progress, "probe on validation frames", n) as tick:
            record["validation"] = {
                **probe_scores(model, val, progress=tick),
                "data": dataclasses.asdict(exp.validation),
            }
        print(f"probe on the validation world's true frames: agent IoU {record['validation']['agent_iou']:.3f}, "
              f"drivable IoU {record['validation']['drivable_iou']:.3f}")  # fmt: skip
    record["training"]["total_seconds"] = round(time.time() - t0, 1)
    return save_probe(model, out, record)

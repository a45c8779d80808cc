"""Training the frame modules: the perception probe (`experiments/probe_small.py`) and the camera
refiner (`experiments/camera_small.py`), each with `drivesim train --config FILE --workdir W`.

`train_frames(exp, workdir)` makes (or reuses) the world model's training set and cache (true
rendered frames of the training world), trains the module with the generic loop
(`drivesim.train`), scores it on a validation world (the probe: its agent and drivable IoU on true
frames, the denominator of what eval-wm reports; the camera refiner: its PSNR beside the ego
warp's) and exports `workdir/<name>.npz` (+ .json record).
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


@dataclasses.dataclass(frozen=True)
class CameraRefineExperiment:
    """A camera-refiner training run."""

    model: object
    """The `drivesim.model.camera_refine.CameraRefineConfig`."""
    data: TrainingData
    train: object
    validation: TrainingData | None = None
    """A set of its own seed on which the trained refiner is scored (beside the ego warp)."""


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


def camera_scores(model, cache_dir, batch: int = 8, max_items: int = 480) -> dict:
    """PSNR of the refiner's frames (true future boxes) and of the ego warp against the true
    future keyframes, over up to `max_items` evenly spread (last, future) pairs of a cache."""
    from drivesim.model.camera_refine_task import CameraRefineTask

    rig = tuple(np.asarray(a).tolist() for a in (model.rig().intrinsics, model.rig().rotation, model.rig().translation))
    task = CameraRefineTask(str(cache_dir), model.cfg, rig)
    items = task._items()
    pick = np.linspace(0, len(items) - 1, min(max_items, len(items))).round().astype(int)

    def fn(ref, feats, target):
        out = model.correct(ref, feats)
        y = target.astype(np.float32) / 127.5 - 1.0
        mse = lambda a: ((a - y) ** 2).mean(axis=(1, 2, 3, 4))  # noqa: E731
        return mse(out), mse(ref)

    run = jax.jit(fn)
    errs, refs = [], []
    for b0 in range(0, len(pick), batch):
        b = task.training_batch(items[pick[b0 : b0 + batch]])
        e, r = run(b["ref"], b["feats"], b["target"])
        errs.append(np.asarray(e))
        refs.append(np.asarray(r))

    def psnr(m):
        return float(np.mean(10 * np.log10(4.0 / np.maximum(np.concatenate(m), 1e-10))))

    return {"psnr": psnr(errs), "ego_warp_psnr": psnr(refs), "pairs": int(len(pick))}


def train_frames(exp, workdir, resume: bool = False, progress: bool = True) -> Path:
    """Train the probe or the camera refiner of `exp` in `workdir`; returns the exported file."""
    import time

    from drivesim import distributed
    from drivesim.model.camera_refine_task import CameraRefineTask
    from drivesim.model.ego_warp import dataroot_rig
    from drivesim.model.probe_file import save_frame_module
    from drivesim.model.probe_task import ProbeTask
    from drivesim.pipelines.experiment import ensure_training_data
    from drivesim.progress import bar
    from drivesim.train import load_model, train

    probe = isinstance(exp, ProbeExperiment)
    name = "probe" if probe else "camera"
    workdir = Path(workdir)
    t0 = time.time()
    cache = ensure_training_data(exp.data, exp.model.frame_size, progress=progress)
    rig = dataroot_rig(exp.data.dataroot, exp.data.version, exp.model.frame_size)
    rig = tuple(np.asarray(a).tolist() for a in (rig.intrinsics, rig.rotation, rig.translation))
    task = (ProbeTask if probe else CameraRefineTask)(str(cache), exp.model, rig, seed=exp.train.seed)
    train(task, exp.train, workdir / name, resume=resume, progress=progress)
    out = workdir / f"{name}.npz"
    model = load_model(task, workdir / name)
    if not distributed.lead():
        return out
    record = {"training": {"data": dataclasses.asdict(exp.data), "train": dataclasses.asdict(exp.train)}}
    if exp.validation is not None:
        val = ensure_training_data(exp.validation, exp.model.frame_size, progress=progress)
        if probe:
            n = len(list((Path(val) / "scenes").iterdir()))
            with bar(not progress, "probe on validation frames", n) as tick:
                scores = probe_scores(model, val, progress=tick)
            print(f"probe on the validation world's true frames: agent IoU {scores['agent_iou']:.3f}, "
                  f"drivable IoU {scores['drivable_iou']:.3f}")  # fmt: skip
        else:
            scores = camera_scores(model, val)
            print(f"camera refiner on the validation world (true boxes): PSNR {scores['psnr']:.2f} dB, "
                  f"ego warp {scores['ego_warp_psnr']:.2f} dB")  # fmt: skip
        record["validation"] = {**scores, "data": dataclasses.asdict(exp.validation)}
    record["training"]["total_seconds"] = round(time.time() - t0, 1)
    return save_frame_module(model, out, record)

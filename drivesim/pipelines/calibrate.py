"""The refined BEV's decision bias: per-class logit offsets fitted for mIoU on a validation set.

The refiner is trained with cross-entropy, which makes its class probabilities honest but its
argmax timid where it is unsure: a vehicle 3 s out that is 40 % likely in each cell of where it
might be is painted as road in all of them, while constant velocity's hard box gets half of it
right. mIoU (intersection over union per class) rewards painting an uncertain small class more
often than the argmax does. The standard remedy, threshold tuning as in semantic segmentation,
is a per-class offset on the logits chosen on held-out data for the score: here coordinate ascent
(class by class over a grid of offsets, a few sweeps, a change kept only when it raises the score)
on the mean mIoU at 1, 2 and 3 s of free-running forecasts of a validation set, a synthetic world of
its own seed: neither the training set nor the evaluation set. The offsets are stored in the model
(`WorldModel.occ_bias`) and added to the refined logits wherever the BEV is decoded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from drivesim.data.classes import NUM_OCC_CLASSES
from drivesim.metrics.prediction import IouAccumulator
from drivesim.model.predict import Predictor
from drivesim.model.world import prepare_occupancy
from drivesim.pipelines.eval_wm import HORIZONS, _pad, forecast_clips, horizon_index

OFFSETS = tuple(np.round(np.arange(-2.0, 2.01, 0.25), 2))
"""The offsets tried for each class (logits; 0.25 is a 28 % change of odds)."""


def collect(predictor: Predictor, data, max_clips: int, seed: int = 0, batch: int = 8, progress=None):
    """Free-running forecasts of a cache's clips (the context's boxes, no future layout: as
    `drivesim eval-wm` scores them), as refined logits at the scored horizons.

    Returns:
      logits (N, len(HORIZONS), G, G, C) float32 and truth (N, len(HORIZONS), G, G) int classes.
    """
    cfg = predictor.cfg
    H, F = cfg.history, cfg.future
    clips = forecast_clips(data.lengths, cfg, 2, max_clips)
    frames_at = [horizon_index(s) for s in HORIZONS]
    key = jax.random.key(seed)
    out, truth = [], []
    for b0 in range(0, len(clips), batch):
        group = clips[b0 : b0 + batch]
        n = len(group)

        def stack(field, lo, hi, group=group):
            return np.stack([np.asarray(data.arrays[s][field][t + lo : t + hi]) for s, t in group])

        frames, occ = stack("frames", 0, H), stack("occupancy", 0, H + F)
        motion, agents = stack("ego_motion", 0, H + F - 1), stack("agents", 0, H + F)
        occ_true = np.asarray(prepare_occupancy(jnp.asarray(occ[:, H:]), cfg))  # scored as eval-wm scores
        args = (_pad(frames, batch), _pad(occ[:, :H], batch), _pad(motion, batch))
        logits = predictor.bev_logits(*args, jax.random.fold_in(key, b0), _pad(agents, batch), np.zeros(batch, bool))
        out.append(np.asarray(logits[:n, frames_at], np.float32))
        truth.append(occ_true[:, frames_at])
        if progress:
            progress(n)
    return np.concatenate(out), np.concatenate(truth)


def mean_miou(logits, truth, bias) -> float:
    """Mean over horizons of the mIoU of argmax(logits + bias) (shapes as `collect` returns)."""
    scores = []
    for h in range(logits.shape[1]):
        acc = IouAccumulator()
        acc.update(np.argmax(logits[:, h] + bias, axis=-1), truth[:, h])
        scores.append(acc.result()["miou"])
    return float(np.mean(scores))


def fit_bias(logits, truth, start=None, offsets=OFFSETS, sweeps: int = 3) -> tuple[np.ndarray, float, float]:
    """Coordinate ascent on `mean_miou` over per-class offsets (class 0, free space, is the
    reference and keeps 0). Returns (bias (C,), score at `start`, score at the bias)."""
    C = logits.shape[-1]
    bias = np.zeros(C, np.float32) if start is None else np.asarray(start, np.float32).copy()
    before = best = mean_miou(logits, truth, bias)
    for _ in range(sweeps):
        changed = False
        for c in range(1, C):
            keep = bias[c]
            for o in offsets:
                if o == keep:
                    continue
                bias[c] = o
                s = mean_miou(logits, truth, bias)
                if s > best + 1e-6:
                    best, keep, changed = s, o, True
            bias[c] = keep
        if not changed:
            break
    return bias, before, best


def calibrate(model, data, max_clips: int, seed: int = 0, progress=None) -> dict:
    """Fit `model.occ_bias` on the clips of a validation cache (`CacheScenes`) and set it.

    The logits are collected without the model's current bias. Returns a report: the bias, the
    validation score (mean mIoU at 1, 2, 3 s) without and with it, and the clips used.
    """
    if model.refiner is None:
        raise ValueError("only a model with a BEV refiner (occ_refine=True) has a decision bias")
    if model.cfg.num_classes != NUM_OCC_CLASSES:
        raise ValueError(f"the model has {model.cfg.num_classes} BEV classes, expected {NUM_OCC_CLASSES}")
    model.occ_bias[...] = np.zeros(model.cfg.num_classes, np.float32)
    logits, truth = collect(Predictor(model), data, max_clips, seed, progress=progress)
    bias, before, after = fit_bias(logits, truth)
    model.occ_bias[...] = bias
    return {"bias": bias.tolist(), "miou_before": before, "miou_after": after, "clips": len(logits)}

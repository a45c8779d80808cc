"""Forecasting one scene of a dataroot under an ego plan (`drivesim predict`).

Loads the scene's keyframes as the clip cache holds them (`drivesim.data.cache.log_arrays`),
builds the ego plan (the log, a command or a waypoint file, `drivesim.model.ego_plans`), samples
K futures and, where the data has it, the truth: the logged future for `log`, and on a synthetic
dataroot the world's re-simulation of the scene under the command.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from drivesim.errors import DataError
from drivesim.model.ego_plans import COMMANDS, kinematic_plan, load_waypoints
from drivesim.model.predict import Predictor, model_view

SIM_COMMAND = {
    "keep": "keep", "brake": "brake", "accelerate": "accelerate", "left": "turn_left", "right": "turn_right",
    "lane_change_left": "lane_change_left", "lane_change_right": "lane_change_right",
}  # fmt: skip
"""`--ego` commands -> the synthetic world's EgoCommand (left/right: take that turn at the next
intersection, as the world's traffic does)."""


@dataclasses.dataclass
class Forecast:
    """What `forecast` returns. Images are the model's view (64x32 crops), BEV grids 80x80 (1 m)."""

    scene: str
    t0: float
    ego: str
    plan: np.ndarray  # (F, 3) ego motions
    context_images: np.ndarray  # (H, 6, h, w, 3)
    context_bev: np.ndarray  # (H, G, G)
    images: np.ndarray  # (K, F, 6, h, w, 3)
    bev: np.ndarray  # (K, F, G, G)
    truth_images: np.ndarray | None  # (F, 6, h, w, 3)
    truth_bev: np.ndarray | None  # (F, G, G)
    truth_source: str | None


def synth_settings(dataroot) -> dict | None:
    """The synthetic set's config (image width, JPEG quality ...), or None if `dataroot` is not one."""
    from drivesim.synth.dataset import RECIPE_FILE

    path = Path(dataroot) / RECIPE_FILE
    return json.loads(path.read_text()).get("config", {}) if path.exists() else None


def record_window(record, lo: int, hi: int, frame_size: tuple[int, int], image_width: int, quality: int) -> dict:
    """Cache-style arrays (`log_arrays`) of a simulated scene for keyframes lo .. hi - 1, with
    camera frames rendered as the dataroot's (same width, JPEG quality, resize)."""
    from drivesim.data.cache import CacheConfig, log_arrays
    from drivesim.data.loader import LoadConfig
    from drivesim.synth.camera_frames import jpeg_like
    from drivesim.synth.truth import record_frames, record_log

    log, _ = record_log(record, LoadConfig(rate_hz=2.0, max_agents=64))
    T = int(np.asarray(log.ego.valid).sum())
    if hi > T:
        raise DataError(f"the scene has {T} keyframes; keyframes up to {hi - 1} were asked for")
    w, h = frame_size
    arrays = log_arrays(log, np.zeros((T, 6, h, w, 3), np.uint8), CacheConfig(image_size=(w, h)))
    out = {k: v[lo:hi] for k, v in arrays.items()}
    out["frames"] = jpeg_like(record_frames(record, np.arange(lo, hi) * 0.5, image_width), (w, h), quality)
    return out


def scene_arrays(dataroot, version: str, scene: str, frame_size: tuple[int, int]) -> dict:
    """A dataroot scene's keyframes as cache arrays (see `drivesim.data.cache`)."""
    from drivesim.data.cache import CacheConfig, log_arrays
    from drivesim.data.dataroot import open_nuscenes
    from drivesim.data.loader import LoadConfig, load_camera_frames, load_log

    nusc = open_nuscenes(dataroot, version)
    names = [s["name"] for s in nusc.scene]
    if scene not in names:
        raise DataError(f"--scene {scene}: no such scene in {dataroot} ({version}); `drivesim scenes` lists them")
    log, info = load_log(nusc, scene, LoadConfig(rate_hz=2.0, max_agents=64))
    T = int(np.asarray(log.ego.valid).sum())
    frames = load_camera_frames(info, size=tuple(frame_size), steps=slice(0, T))
    return log_arrays(log, frames, CacheConfig(image_size=tuple(frame_size)))


def forecast(
    predictor: Predictor,
    dataroot,
    version: str,
    scene: str,
    t0: float,
    ego: str,
    samples: int = 3,
    horizon: float = 3.0,
    seed: int = 0,
) -> Forecast:
    """Sample `samples` futures of `scene` after log time `t0` under the ego plan `ego` (`log`, a
    command of `drivesim.model.ego_plans.COMMANDS`, or a waypoint file)."""
    cfg = predictor.cfg
    H = cfg.history
    k0 = int(round(2 * t0))
    if abs(k0 / 2 - t0) > 1e-6:
        raise DataError(f"--t0 {t0} is not a keyframe time; use a multiple of 0.5 s")
    if k0 < H - 1:
        raise DataError(f"--t0 {t0} leaves less than {H / 2:g} s of context; use --t0 {(H - 1) / 2:g} or later")
    if samples < 1:
        raise DataError(f"--samples must be at least 1 (got {samples})")
    F = int(round(2 * horizon))
    if F < 1:
        raise DataError(f"--horizon {horizon} s is shorter than one keyframe (0.5 s)")
    arrays = scene_arrays(dataroot, version, scene, cfg.frame_size)
    T = len(arrays["frames"])
    if k0 >= T:
        raise DataError(f"--t0 {t0} is past the end of {scene} ({(T - 1) / 2:g} s)")
    truth, source = None, None
    synth = synth_settings(dataroot)
    if ego == "log":
        if k0 + F >= T:
            raise DataError(
                f"{scene} ends at {(T - 1) / 2:g} s: --ego log needs the log up to t0 + {horizon:g} s; "
                "use an earlier --t0 or a shorter --horizon"
            )
        plan = arrays["ego_motion"][k0 : k0 + F]
        truth, source = {k: v[k0 + 1 : k0 + F + 1] for k, v in arrays.items()}, "log"
    elif ego in COMMANDS:
        if synth is not None and k0 + F < T:
            truth = _resimulated(dataroot, scene, k0, F, ego, cfg.frame_size, synth)
            plan, source = truth["ego_motion"][:F], "re-simulation"
            truth = {k: v[1:] for k, v in truth.items()}
        else:
            plan = kinematic_plan(ego, float(arrays["ego"][k0, 3]), F)
    else:
        plan = load_waypoints(ego)
        F = len(plan)
    motion = np.concatenate([arrays["ego_motion"][k0 - H + 1 : k0], plan])[None]
    ctx = slice(k0 - H + 1, k0 + 1)
    frames = np.repeat(arrays["frames"][ctx][None], samples, axis=0)
    occ = np.repeat(arrays["occupancy"][ctx][None], samples, axis=0)
    motion = np.repeat(motion, samples, axis=0)
    # the rows are the same scenario; each draws its own noise, so each is a different future
    # free-running from the context's agent boxes (the future part of the layout is not used)
    boxes = arrays["agents"][ctx]
    layout = np.concatenate([boxes, np.zeros((F,) + boxes.shape[1:], boxes.dtype)])
    layout = np.repeat(layout[None], samples, axis=0)
    out = predictor(frames, occ, motion, jax.random.key(seed), agents=layout, layout_on=np.zeros(samples, bool))
    ctx_images, ctx_bev = model_view(arrays["frames"][ctx], arrays["occupancy"][ctx], cfg)
    t_img, t_bev = (None, None) if truth is None else model_view(truth["frames"][:F], truth["occupancy"][:F], cfg)
    return Forecast(
        scene=scene, t0=t0, ego=ego, plan=np.asarray(plan),
        context_images=ctx_images, context_bev=ctx_bev,
        images=np.asarray(out.images), bev=np.asarray(out.occupancy),
        truth_images=t_img, truth_bev=t_bev, truth_source=source,
    )  # fmt: skip


def _resimulated(dataroot, scene: str, k0: int, F: int, ego: str, frame_size, synth: dict) -> dict:
    """Keyframes k0 .. k0 + F of the scene re-simulated with the ego command from t0."""
    from drivesim.synth.dataset import load_recipes, plan_for
    from drivesim.synth.world import EgoCommand, resimulate

    recipes = {r.name: r for r in load_recipes(Path(dataroot))}
    if scene not in recipes:
        raise DataError(f"{scene} has no recipe in {dataroot}; it cannot be re-simulated")
    plan = plan_for(recipes[scene])
    try:
        record = resimulate(plan, k0 / 2, [EgoCommand(SIM_COMMAND[ego])])
    except ValueError as e:
        raise DataError(f"--ego {ego} at t0 = {k0 / 2:g} s in {scene}: {e}") from None
    return record_window(
        record, k0, k0 + F + 1, frame_size, int(synth.get("image_width", 160)), int(synth.get("jpeg_quality", 90))
    )


def predict(out, scene: str, t0: float, ego: str = "log", dataroot=None, version="v1.0-mini", samples=3,
            horizon=3.0, checkpoint=None, seed=0, quiet=False) -> dict:  # fmt: skip
    """`drivesim predict`: sample futures of a scene under an ego plan beside the truth; writes
    prediction.gif, prediction.npz and summary.json under `out`, returns the summary."""
    import time

    from drivesim.atomic import strict_json, write_json
    from drivesim.metrics.prediction import IouAccumulator, psnr
    from drivesim.pipelines.defaults import load_model_file, resolve_dataroot
    from drivesim.provenance import provenance
    from drivesim.viz.prediction import prediction_frames
    from drivesim.viz.replay import save_animation

    model, ckpt = load_model_file(checkpoint)
    root = resolve_dataroot(dataroot, version, quiet)
    if samples > 8:
        raise DataError(f"--samples {samples}: at most 8 futures per call")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder")
    tic = time.perf_counter()
    fc = forecast(Predictor(model), root, version, scene, t0, ego, samples=samples, horizon=horizon, seed=seed)
    summary = {
        "scene": fc.scene, "t0": fc.t0, "ego": fc.ego, "samples": samples, "horizon_s": len(fc.plan) / 2,
        "checkpoint": str(ckpt), "dataroot": str(root), "plan": fc.plan.tolist(), "truth": fc.truth_source,
    }  # fmt: skip
    summary["provenance"] = provenance(checkpoint=ckpt, dataroot=root, version=version)
    if fc.truth_bev is not None:
        per = []
        for i in range(samples):
            row = {}
            for k in range(len(fc.plan)):
                acc = IouAccumulator()
                acc.update(fc.bev[i, k], fc.truth_bev[k])
                r = acc.result()
                row[f"{(k + 1) / 2:g}s"] = {
                    "occ_iou": r["occupied_iou"], "agent_iou": r["iou"],
                    "psnr": float(np.mean(np.asarray(psnr(fc.images[i, k], fc.truth_images[k])))),
                }  # fmt: skip
            per.append(row)
        summary["scores_vs_truth"] = per
    out.mkdir(parents=True, exist_ok=True)
    title = f"{fc.scene}  t0 = {fc.t0:g} s  ego: {Path(fc.ego).name}  ({ckpt.name})"
    from drivesim.model.probe import read_views
    from drivesim.model.probe_file import load_probe

    probe = load_probe()  # the perception probe's BEV read of every set of views, beside each panel
    reads = {"context": read_views(probe, fc.context_images), "samples": read_views(probe, fc.images),
             "truth": None if fc.truth_images is None else read_views(probe, fc.truth_images)}  # fmt: skip
    frames = prediction_frames(
        fc.context_images, fc.context_bev, fc.images, fc.bev, fc.truth_images, fc.truth_bev, title=title, reads=reads
    )
    written = save_animation(frames, out / "prediction.gif", fps=2.0)
    tmp = out / ".prediction.npz.tmp.npz"
    np.savez_compressed(tmp, images=fc.images, bev=fc.bev, plan=fc.plan, context_images=fc.context_images,
                        context_bev=fc.context_bev)  # fmt: skip
    tmp.replace(out / "prediction.npz")
    written += [out / "prediction.npz", write_json(out / "summary.json", strict_json(summary))]
    print(f"{samples} futures of {fc.scene} after t0 = {fc.t0:g} s under ego plan {fc.ego!r} "
          f"in {time.perf_counter() - tic:.1f} s" + (f"; truth: {fc.truth_source}" if fc.truth_source else ""))  # fmt: skip
    if fc.truth_bev is not None:
        last = f"{len(fc.plan) / 2:g}s"
        ious = ", ".join(f"{r[last]['occ_iou']:.3f}" for r in summary["scores_vs_truth"])
        print(f"occupancy IoU vs truth at {last}: {ious}")
    print("written: " + ", ".join(str(p) for p in written))
    return summary

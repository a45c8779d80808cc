"""Data verbs: write a synthetic dataroot, list scenes, build a clip cache, replay a scene."""

from __future__ import annotations

from pathlib import Path

from drivesim.errors import ConfigError, DrivesimError
from drivesim.pipelines.defaults import console, human_bytes, resolve_dataroot
from drivesim.progress import bar


def synth(out, scenes=10, seconds=20.0, seed=0, version="v1.0-mini", image_width=160, camera_hz=12,
          overwrite=False, quiet=False, workers=1) -> dict:  # fmt: skip
    """Write a synthetic nuScenes-format dataroot at `out`; returns the writer's report."""
    from drivesim.synth.dataset import SynthConfig, generate

    cfg = SynthConfig(scenes=scenes, seconds=seconds, seed=seed, version=version, image_width=image_width,
                      camera_hz=camera_hz)  # fmt: skip
    if workers < 1:
        raise ConfigError(f"--workers {workers}: use at least 1")
    report = generate(cfg, Path(out), overwrite=overwrite, progress=not quiet, workers=workers)
    console().print(
        f"wrote {report['scenes']} scenes, {report['images']} camera images to {report['dataroot']} "
        f"({cfg.version}): {human_bytes(report['bytes'])} on disk, in {report['seconds']:.1f} s"
    )
    return report


def scenes(dataroot, version: str, quiet: bool = False) -> list[tuple[str, str, int, str]]:
    """(name, location, samples, description) of every scene of the dataroot."""
    from drivesim.data.dataroot import open_nuscenes

    nusc = open_nuscenes(resolve_dataroot(dataroot, version, quiet), version)
    rows = []
    for s in nusc.scene:
        log = nusc.get("log", s["log_token"])
        rows.append((s["name"], log["location"], s["nbr_samples"], s["description"]))
    return rows


def cache(dataroot, version: str, out, clip_length=10, stride=2, image_size="64x36", workers=2,
          quiet=False) -> dict:  # fmt: skip
    """Build (or resume) the clip cache of a dataroot; returns its report."""
    from drivesim.data.cache import CacheConfig, build_cache

    root = resolve_dataroot(dataroot, version, quiet)
    try:
        w, h = (int(v) for v in image_size.lower().split("x"))
    except ValueError:
        raise DrivesimError(f"--image-size {image_size}: write it as WIDTHxHEIGHT, e.g. 64x36") from None
    cfg = CacheConfig(clip_length=clip_length, stride=stride, image_size=(w, h))
    report = build_cache(root, version, Path(out), cfg, workers=workers, progress=not quiet)
    print(
        f"cache at {report['out']}: {report['scenes']} scenes ({report['skipped']} already done), "
        f"{report['clips']} clips, {human_bytes(report['bytes'])}, in {report['seconds']:.1f} s"
    )
    return report


def replay(dataroot, version, scene, out: Path, frame=None, hz=2.0, quiet=False) -> list[Path]:
    """Render a scene (or one frame of it) to `out`; returns the files written."""
    import numpy as np

    from drivesim.data.dataroot import open_nuscenes, scene_names
    from drivesim.data.loader import LoadConfig, load_camera_frames, load_log
    from drivesim.data.occupancy import OccupancyConfig, log_occupancy
    from drivesim.viz.replay import render_replay, save_animation, save_still

    out = Path(out)
    dataroot = resolve_dataroot(dataroot, version, quiet)
    suffix = out.suffix.lower()
    if frame is None and suffix not in (".gif", ".mp4"):
        raise DrivesimError(f"--out {out}: an animation is written as .gif (and .mp4 beside it); use a .gif name")
    if frame is not None and suffix not in (".png", ".jpg", ".jpeg"):
        raise DrivesimError(f"--out {out}: a single --frame is written as an image; use a .png name")
    if not out.parent.exists():
        raise DrivesimError(f"--out {out}: folder {out.parent} does not exist")
    if hz <= 0 or hz > 12:
        raise DrivesimError(f"--hz {hz}: choose a rate between 0.5 and 12 frames per second")
    nusc = open_nuscenes(dataroot, version)
    if scene is None:
        scene = scene_names(nusc)[0]
    cfg = LoadConfig(rate_hz=hz, camera_source="keyframes" if hz <= 2 else "any")
    log, info = load_log(nusc, scene, cfg)
    steps = list(range(int(np.asarray(log.ego.valid).sum())))
    if frame is not None:
        if not 0 <= frame < len(steps):
            raise DrivesimError(f"--frame {frame}: scene {scene} has frames 0..{len(steps) - 1} at {hz:g} Hz")
        steps = [frame]
    occ_cfg = OccupancyConfig()
    occupancy = np.asarray(log_occupancy(log, occ_cfg).grid)
    cameras = load_camera_frames(info, steps=slice(min(steps), max(steps) + 1))
    cameras = np.concatenate([np.zeros((min(steps),) + cameras.shape[1:], np.uint8), cameras])
    with bar(quiet, f"replay {scene}", len(steps)) as tick:
        frames = render_replay(log, info, cameras, occupancy, occ_cfg.extent, occ_cfg.resolution, steps, on_frame=tick)
    if frame is not None:
        return [save_still(frames[0], out)]
    return save_animation(frames, out.with_suffix(".gif"), fps=max(hz, 1.0) * 2 if hz <= 2 else hz)

"""Replay figures: the six cameras in the nuScenes layout beside the BEV occupancy.

Frames are composed with Pillow (fast enough to animate a whole scene in seconds): the camera
images in two rows (front-left, front, front-right / back-left, back, back-right) and, to the right,
the ego-centric occupancy grid with the agents' boxes, the lanes, and the ego's past and future path.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from drivesim.data.classes import AGENT_TO_OCC, OCC_CLASS_NAMES, OCC_COLORS
from drivesim.data.types import CAMERA_CHANNELS, Log, LogInfo

LAYOUT = (
    ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
    ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"),
)
_PALETTE = np.array(OCC_COLORS, np.uint8)


def world_to_grid(xy: np.ndarray, ego_xy: np.ndarray, ego_yaw: float, extent: float, res: float) -> np.ndarray:
    """Global points (..., 2) -> (column, row) pixel coordinates of the BEV grid (float)."""
    c, s = math.cos(ego_yaw), math.sin(ego_yaw)
    d = np.asarray(xy) - ego_xy
    x = c * d[..., 0] + s * d[..., 1]
    y = -s * d[..., 0] + c * d[..., 1]
    return np.stack([(extent - y) / res, (extent - x) / res], axis=-1)


def bev_panel(log: Log, step: int, grid: np.ndarray, extent: float, res: float, size: int) -> Image.Image:
    """The occupancy grid at `step`, scaled to `size` px, with boxes, lanes and the ego path."""
    img = Image.fromarray(_PALETTE[np.asarray(grid)]).resize((size, size), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    scale = size / grid.shape[0]
    ego_xy = np.asarray(log.ego.xy[step], np.float64)
    ego_yaw = float(log.ego.yaw[step])

    def px(points):
        return world_to_grid(points, ego_xy, ego_yaw, extent, res) * scale

    lanes = np.asarray(log.map.lane_xy)[np.asarray(log.map.lane_valid)]
    for lane in lanes:
        p = px(lane)
        if np.all((p < -size) | (p > 2 * size)):
            continue
        draw.line([tuple(q) for q in p], fill=(120, 140, 200), width=1)
    valid = np.asarray(log.ego.valid)
    path = px(np.asarray(log.ego.xy)[valid])
    steps = np.flatnonzero(valid)
    past = [tuple(q) for q, k in zip(path, steps, strict=True) if k <= step]
    future = [tuple(q) for q, k in zip(path, steps, strict=True) if k >= step]
    if len(future) > 1:
        draw.line(future, fill=(0, 170, 60), width=2)
    if len(past) > 1:
        draw.line(past, fill=(120, 120, 120), width=2)
    ag = log.agents
    for a in np.flatnonzero(np.asarray(ag.valid)[:, step]):
        corners = box_corners(np.asarray(ag.xy[a, step]), float(ag.yaw[a, step]), np.asarray(ag.size[a]))
        color = tuple(int(v * 0.6) for v in OCC_COLORS[AGENT_TO_OCC[int(ag.category[a])]])
        draw.polygon([tuple(q) for q in px(corners)], outline=color)
    ego_box = box_corners(
        ego_xy + 1.3 * np.array([math.cos(ego_yaw), math.sin(ego_yaw)]), ego_yaw, np.asarray(log.ego.size)
    )
    draw.polygon([tuple(q) for q in px(ego_box)], fill=(0, 0, 0), outline=(255, 255, 255))
    return img


def box_corners(center: np.ndarray, yaw: float, size: np.ndarray) -> np.ndarray:
    """(4, 2) corners of a box (length along yaw, width across)."""
    c, s = math.cos(yaw), math.sin(yaw)
    half = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * (np.asarray(size[:2]) / 2)
    return center + half @ np.array([[c, s], [-s, c]])


def compose_frame(cameras: np.ndarray, bev: Image.Image, title: str, cam_width: int = 320) -> Image.Image:
    """One replay frame: cameras (6, H, W, 3) in the nuScenes layout, the BEV panel on the right."""
    h0, w0 = cameras.shape[1:3]
    cam_h = int(round(cam_width * h0 / w0))
    order = {ch: i for i, ch in enumerate(CAMERA_CHANNELS)}
    bev_size = 2 * cam_h
    title_h = 22
    canvas = Image.new("RGB", (3 * cam_width + bev_size, bev_size + title_h), (20, 20, 24))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(LAYOUT):
        for c, ch in enumerate(row):
            img = Image.fromarray(cameras[order[ch]]).resize((cam_width, cam_h), Image.BILINEAR)
            canvas.paste(img, (c * cam_width, title_h + r * cam_h))
            draw.text((c * cam_width + 4, title_h + r * cam_h + 2), ch.replace("CAM_", ""), fill=(255, 255, 0))
    canvas.paste(bev.resize((bev_size, bev_size), Image.NEAREST), (3 * cam_width, title_h))
    draw.text((6, 4), title, fill=(230, 230, 230))
    return canvas


def legend_text() -> str:
    return ", ".join(f"{name}" for name in OCC_CLASS_NAMES)


def render_replay(
    log: Log,
    info: LogInfo,
    cameras: np.ndarray,
    occupancy: np.ndarray,
    extent: float,
    res: float,
    steps: list[int],
    on_frame=None,
) -> list[Image.Image]:
    """Replay frames for the given steps. cameras: (T, 6, H, W, 3); occupancy: (T, G, G)."""
    frames = []
    for k in steps:
        t = float(log.time[k])
        bev = bev_panel(log, k, occupancy[k], extent, res, occupancy.shape[-1] * 2)
        title = f"{info.scene_name}  {info.location}  t = {t:5.1f} s  speed {float(np.hypot(*log.ego.velocity[k])):4.1f} m/s"
        frames.append(compose_frame(cameras[k], bev, title))
        if on_frame:
            on_frame()
    return frames


def save_animation(frames: list[Image.Image], out: Path, fps: float) -> list[Path]:
    """Write frames as a GIF at `out` (and an MP4 beside it when ffmpeg is available).

    Writes to temporary names and renames, so an interrupted run leaves no broken file.
    """
    out = Path(out)
    written = []
    tmp = out.with_name(f".{out.name}.tmp")
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(round(1000 / fps)), loop=0)
    tmp.replace(out)
    written.append(out)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        mp4 = out.with_suffix(".mp4")
        tmp4 = mp4.with_name(f".{mp4.name}.tmp.mp4")
        w, h = frames[0].size
        w2, h2 = w - w % 2, h - h % 2
        proc = subprocess.Popen(
            [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w2}x{h2}",
             "-r", str(fps), "-i", "-", "-pix_fmt", "yuv420p", str(tmp4)],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        for f in frames:
            proc.stdin.write(np.asarray(f.convert("RGB"))[:h2, :w2].tobytes())
        proc.stdin.close()
        if proc.wait() == 0:
            tmp4.replace(mp4)
            written.append(mp4)
        else:
            tmp4.unlink(missing_ok=True)
    return written


def save_still(frame: Image.Image, out: Path) -> Path:
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    frame.save(tmp)
    tmp.replace(out)
    return out

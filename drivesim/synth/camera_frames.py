"""Camera images of a recorded scene (or of a running world): who is where at each frame's time,
rendered by `render`."""

from __future__ import annotations

import io
import math

import numpy as np

from drivesim.synth.rig import Camera
from drivesim.synth.roads import SynthMap
from drivesim.synth.texture import GRASS, SURFACE_COLORS, GroundTexture, ground_texture
from drivesim.synth.world import SceneRecord

STYLE_PLAIN, STYLE_VEHICLE, STYLE_BUILDING, STYLE_PEDESTRIAN = 0, 1, 2, 3
MAX_BOXES = 32

_CAR_COLORS = np.array(
    [(0.92, 0.92, 0.92), (0.12, 0.12, 0.13), (0.62, 0.64, 0.66), (0.7, 0.1, 0.1), (0.15, 0.25, 0.6),
     (0.35, 0.37, 0.4), (0.85, 0.8, 0.7), (0.1, 0.35, 0.2)]
)  # fmt: skip
_CLOTHES = np.array([(0.2, 0.3, 0.6), (0.6, 0.15, 0.15), (0.15, 0.15, 0.15), (0.8, 0.75, 0.3), (0.3, 0.5, 0.3)])
_BUILDING_COLORS = np.array([(0.78, 0.72, 0.62), (0.6, 0.6, 0.62), (0.7, 0.55, 0.45), (0.85, 0.84, 0.8)])


def appearance(category: str, uid: int) -> tuple[tuple[float, float, float], int]:
    """Colour (RGB in [0, 1]) and render style of an agent, deterministic in its uid."""
    if category.startswith("human"):
        c = _CLOTHES[uid % len(_CLOTHES)]
        if category.endswith("construction_worker") or category.endswith("police_officer"):
            c = (0.95, 0.6, 0.1)
        return tuple(c), STYLE_PEDESTRIAN
    if category in ("vehicle.bicycle", "vehicle.motorcycle"):
        return (0.1, 0.55, 0.25), STYLE_PEDESTRIAN
    if category == "vehicle.bus.rigid":
        return ((0.8, 0.15, 0.1) if uid % 2 else (0.9, 0.75, 0.1)), STYLE_VEHICLE
    if category in ("vehicle.truck", "vehicle.construction"):
        return ((0.95, 0.95, 0.95) if uid % 2 else (0.9, 0.45, 0.1)), STYLE_VEHICLE
    if category == "vehicle.emergency.police":
        return (0.1, 0.1, 0.3), STYLE_VEHICLE
    if category.startswith("vehicle"):
        return tuple(_CAR_COLORS[(uid * 7) % len(_CAR_COLORS)]), STYLE_VEHICLE
    if category == "movable_object.trafficcone":
        return (1.0, 0.45, 0.05), STYLE_PLAIN
    if category == "movable_object.barrier":
        return (0.85, 0.2, 0.2), STYLE_PLAIN
    return (0.2, 0.3, 0.25), STYLE_PLAIN


_TEXTURES: dict[tuple[str, int], GroundTexture] = {}


def _texture(smap: SynthMap) -> GroundTexture:
    key = (smap.location, smap.seed)
    if key not in _TEXTURES:
        if len(_TEXTURES) >= 4:
            _TEXTURES.pop(next(iter(_TEXTURES)))
        _TEXTURES[key] = ground_texture(smap)
    return _TEXTURES[key]


def map_mask(smap: SynthMap) -> np.ndarray:
    """The nuScenes map table's semantic prior: 255 on drivable area and walkways, at 10 px/m."""
    return np.where(_texture(smap).surface != GRASS, 255, 0).astype(np.uint8)


def building_boxes(smap: SynthMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The map's buildings as boxes (M, 7) [x, y, z, yaw, l, w, h], colours (M, 3), styles (M,)."""
    b = smap.buildings
    boxes = np.stack([b[:, 0], b[:, 1], b[:, 5] / 2, b[:, 2], b[:, 3], b[:, 4], b[:, 5]], axis=1)
    return boxes, _BUILDING_COLORS[np.arange(len(b)) % len(_BUILDING_COLORS)], np.full(len(b), STYLE_BUILDING, np.int32)


class SceneBoxes:
    """Boxes of a recorded scene, ready to be cut per frame: what moves and what stands still."""

    def __init__(self, record: SceneRecord):
        self.record = record
        size = np.array([s.size for s in record.specs]).reshape(-1, 3)
        look = [appearance(s.category, s.uid) for s in record.specs]
        self.agent_size = size
        self.agent_color = np.array([c for c, _ in look]).reshape(-1, 3)
        self.agent_style = np.array([st for _, st in look], np.int32)
        self.static, self.static_color, self.static_style = building_boxes(record.plan.map)

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All boxes at log time t: (M, 7) [x, y, z, yaw, l, w, h], colours (M, 3), styles (M,).

        Agents present at t, then the map's buildings. The ego is not a box (the cameras are on it).
        """
        xy, yaw, present = self.record.agents_at(t)
        size = self.agent_size[present]
        moving = np.concatenate([xy[present], size[:, 2:3] / 2, yaw[present, None], size], axis=1)
        return (
            np.concatenate([moving, self.static]),
            np.concatenate([self.agent_color[present], self.static_color]),
            np.concatenate([self.agent_style[present], self.static_style]),
        )


def camera_poses(record: SceneRecord, cams: list[Camera], times) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-global rotations (N, 3, 3) and positions (N, 3) of cameras at log times."""
    return _poses_of(cams, record.ego_pose_at(np.asarray(times)))


def _poses_of(cams: list[Camera], poses) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-global rotations (N, 3, 3) and positions (N, 3) of cameras on egos at rear-axle
    poses (N, 3) [x, y, yaw]."""
    rot = np.zeros((len(cams), 3, 3))
    pos = np.zeros((len(cams), 3))
    for i, (cam, (x, y, yaw)) in enumerate(zip(cams, poses, strict=True)):
        c, s = math.cos(yaw), math.sin(yaw)
        r_ego = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        rot[i] = r_ego @ cam.rotation
        pos[i] = np.array([x, y, 0.0]) + r_ego @ cam.translation
    return rot, pos


def render_scene(record: SceneRecord, rig: tuple[Camera, ...], times: list[float], channels: list[str]) -> np.ndarray:
    """(N, H, W, 3) uint8 images of the given (time, channel) frames of a scene."""
    scene_boxes = SceneBoxes(record)
    by_channel = {cam.channel: cam for cam in rig}
    cams = [by_channel[ch] for ch in channels]
    rot, pos = camera_poses(record, cams, times)
    return _render(record.plan.map, rig, cams, rot, pos, [scene_boxes.at(t) for t in times])


def world_boxes(world) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes of a running world (`drivesim.synth.traffic.Traffic`) now, as `SceneBoxes.at`
    gives a recorded scene's: its active agents but the ego, then the map's buildings."""
    snap = world.snapshot()
    idx = np.flatnonzero(snap.active)
    idx = idx[idx > 0]  # slot 0 is the ego: the cameras are on it
    specs = [world.specs[k] for k in idx]
    size = np.array([sp.size for sp in specs], np.float64).reshape(-1, 3)
    look = [appearance(sp.category, sp.uid) for sp in specs]
    moving = np.concatenate([snap.center[idx], size[:, 2:3] / 2, snap.yaw[idx, None], size], axis=1)
    static, static_color, static_style = building_boxes(world.plan.map)
    return (
        np.concatenate([moving, static]),
        np.concatenate([np.array([c for c, _ in look]).reshape(-1, 3), static_color]),
        np.concatenate([np.array([st for _, st in look], np.int32), static_style]),
    )


def render_world(world, rig: tuple[Camera, ...], ego_pose) -> np.ndarray:
    """(6, H, W, 3) uint8 views of a running world now, from the rig on an ego at rear-axle pose
    `ego_pose` [x, y, yaw] (the truth engine's ego: the world's own ego is driven there)."""
    cams = list(rig)
    rot, pos = _poses_of(cams, np.broadcast_to(np.asarray(ego_pose, np.float64), (len(cams), 3)))
    return _render(world.plan.map, rig, cams, rot, pos, [world_boxes(world)] * len(cams))


def jpeg_like(frames: np.ndarray, size: tuple[int, int], quality: int = 90) -> np.ndarray:
    """Rendered frames (..., h0, w0, 3) as a dataroot + cache would hold them: JPEG at the writer's
    quality, decoded and resized to `size` (w, h) as `drivesim.data.loader.load_camera_frames` does."""
    from PIL import Image

    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.empty((len(flat), size[1], size[0], 3), np.uint8)
    for i, f in enumerate(flat):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=quality)
        with Image.open(buf) as img:
            out[i] = np.asarray(img.convert("RGB").resize(size, Image.BILINEAR))
    return out.reshape(*frames.shape[:-3], size[1], size[0], 3)


def _render(smap: SynthMap, rig, cams: list[Camera], rot, pos, box_sets) -> np.ndarray:
    """(N, H, W, 3) uint8: camera i (`cams[i]`, at `rot[i]`, `pos[i]`) sees the boxes
    `box_sets[i]` ((M, 7) boxes, (M, 3) colours, (M,) styles) on the map's ground."""
    import jax.numpy as jnp

    from drivesim.synth.render import horizontal_fov, render_images, select_boxes

    n = len(cams)
    boxes = np.zeros((n, MAX_BOXES, 7), np.float32)
    colors = np.zeros((n, MAX_BOXES, 3), np.float32)
    styles = np.zeros((n, MAX_BOXES), np.int32)
    valid = np.zeros((n, MAX_BOXES), bool)
    w, h = rig[0].width, rig[0].height
    # the cone each camera keeps boxes in: its field of view plus a margin
    fov = {cam.channel: float(horizontal_fov(cam.intrinsics, w)) + 10.0 for cam in rig}
    for i, (all_boxes, all_colors, all_styles) in enumerate(box_sets):
        boxes[i], colors[i], styles[i], valid[i] = select_boxes(
            pos[i], rot[i][:, 2], all_boxes, all_colors, all_styles, MAX_BOXES, fov_deg=fov[cams[i].channel]
        )
    surface = _device_surface(smap)
    intr = np.stack([c.intrinsics for c in cams]).astype(np.float32)
    return np.asarray(
        render_images(
            surface, _texture(smap).resolution, jnp.asarray(SURFACE_COLORS), intr,
            rot.astype(np.float32), pos.astype(np.float32), boxes, colors, styles, valid, width=w, height=h,
        )
    )  # fmt: skip


_DEVICE_SURFACES: dict = {}


def _device_surface(smap: SynthMap):
    """The ground texture as a device array (copied to the device once per map)."""
    import jax.numpy as jnp

    key = (smap.location, smap.seed)
    if key not in _DEVICE_SURFACES:
        _DEVICE_SURFACES.clear()
        _DEVICE_SURFACES[key] = jnp.asarray(_texture(smap).surface)
    return _DEVICE_SURFACES[key]

"""nuScenes scene -> `Log` (arrays) + `LogInfo` (names, tokens, files).

One code path for nuScenes v1.0-mini, v1.0-trainval and drivesim's synthetic sets. The log is put
on a fixed time grid (`LoadConfig.rate_hz`): 2 Hz is the keyframes; higher rates interpolate the
annotated boxes between keyframes (as nuScenes' own `get_boxes` does for sweeps) and use the ego
poses recorded with every sensor reading. Agents that appear and vanish, missing annotations and
gaps are marked invalid rather than filled in. Traffic lights come from the dataroot's
`drivesim_signals.json` (`drivesim.data.signals`); without it a log's lights are unknown.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from drivesim.data.classes import agent_class_of
from drivesim.data.dataroot import find_scene
from drivesim.data.map_index import map_index
from drivesim.data.map_raster import rasterize_map
from drivesim.data.signals import file_signals
from drivesim.data.types import (
    CAMERA_CHANNELS,
    EGO_SIZE,
    AgentTracks,
    CameraRig,
    EgoTrack,
    Log,
    LogInfo,
    MapData,
    Signals,
)
from drivesim.errors import DataError


# Lane markings are painted this wide (m) in the map raster, so that sampling the raster at the
# default 0.5 m occupancy resolution never misses a diagonal line (> 0.5 * sqrt(2)).
MARKING_WIDTH = 0.75


@dataclasses.dataclass(frozen=True)
class LoadConfig:
    """How scenes become padded `Log` arrays. Logs loaded with one config share their shapes."""

    rate_hz: float = 2.0
    """Steps per second of the log's time axis (2 = the keyframes)."""
    max_steps: int | None = None
    """Pad/cut the time axis to this many steps (None: as long as the scene)."""
    max_agents: int = 64
    """Agent slots; a scene with more objects keeps those that come closest to the ego."""
    raster_size: int = 2048
    """Cells per side of the map raster around the scene."""
    raster_resolution: float = 0.25
    """Metres per map raster cell (2048 x 0.25 m = 512 m)."""
    max_lane_segments: int = 1024
    """Lane-segment slots; the segments nearest the ego's path are kept."""
    lane_points: int = 16
    """Points per lane segment."""
    lane_segment_length: float = 15.0
    """Longest lane segment (m); lanes are cut into pieces no longer than this."""
    max_neighbours: int = 4
    """Successor / predecessor slots per lane segment."""
    camera_source: str = "keyframes"
    """Which camera frames `LogInfo.camera_files` points to: keyframes, or any (sweeps too)."""
    image_size: tuple[int, int] | None = None
    """(width, height) the rig intrinsics are scaled to; None keeps the dataset's image size."""
    max_signals: int = 16
    """Traffic-light stop-line slots; the stop lines nearest the ego's path are kept."""

    def __post_init__(self):
        if self.rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive (got {self.rate_hz})")
        if self.camera_source not in ("keyframes", "any"):
            raise ValueError(f"camera_source must be 'keyframes' or 'any' (got {self.camera_source!r})")


def yaw_of(q) -> float:
    """Heading (rotation about z) of a [w, x, y, z] quaternion."""
    w, x, y, z = q
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _interp_angle(t, times, angles):
    return (np.interp(t, times, np.unwrap(angles)) + math.pi) % (2 * math.pi) - math.pi


def _chain(nusc, first_token: str, scene_token: str) -> list[dict]:
    """Sample_data records from `first_token` following `next`, while they belong to the scene."""
    out = []
    tok = first_token
    while tok:
        sd = nusc.get("sample_data", tok)
        if nusc.get("sample", sd["sample_token"])["scene_token"] != scene_token:
            break
        out.append(sd)
        tok = sd["next"]
    return out


def _table_path(nusc, table: str) -> str:
    return str(Path(nusc.dataroot) / nusc.version / f"{table}.json")


def load_log(nusc, scene_name: str, cfg: LoadConfig = LoadConfig()) -> tuple[Log, LogInfo]:
    """Load one scene of an opened `NuScenes` (see `drivesim.data.dataroot.open_nuscenes`)."""
    scene = find_scene(nusc, scene_name)
    samples = []
    tok = scene["first_sample_token"]
    while tok:
        s = nusc.get("sample", tok)
        samples.append(s)
        tok = s["next"]
    if len(samples) < 2:
        raise DataError(f"scene {scene_name!r} has {len(samples)} sample(s); a log needs at least two")
    start_us = samples[0]["timestamp"]
    sample_t = np.array([(s["timestamp"] - start_us) * 1e-6 for s in samples])
    n_steps = int(math.floor(sample_t[-1] * cfg.rate_hz + 1e-6)) + 1
    T = cfg.max_steps or n_steps
    grid = np.arange(T) / cfg.rate_hz
    in_scene = grid <= sample_t[-1] + 1e-6

    ego = _ego_track(nusc, scene, samples, start_us, grid, in_scene)
    agents, tokens, cats, total = _agents(nusc, samples, sample_t, grid, in_scene, ego, cfg)
    log_rec = nusc.get("log", scene["log_token"])
    location = log_rec["location"]
    map_data, n_lanes = _map(nusc.dataroot, location, np.asarray(ego.xy)[np.asarray(ego.valid)], cfg)
    rig, image_size = sample_rig(nusc, samples[0], cfg)
    files = _camera_files(nusc, scene, samples, start_us, grid, in_scene, cfg)
    signals = Signals(**file_signals(nusc.dataroot, scene["token"], grid, cfg.max_signals))
    log = Log(time=grid.astype(np.float32), ego=ego, agents=agents, map=map_data, rig=rig, signals=signals)
    info = LogInfo(
        scene_name=scene_name,
        scene_token=scene["token"],
        location=location,
        dataroot=str(nusc.dataroot),
        version=nusc.version,
        start_us=int(start_us),
        image_size=image_size,
        camera_files=files,
        agent_tokens=tokens,
        agent_categories=cats,
        num_agents_total=total,
        num_lanes_total=n_lanes,
    )
    return log, info


def _ego_track(nusc, scene, samples, start_us, grid, in_scene) -> EgoTrack:
    """Ego poses from every reading of the reference sensor (LIDAR_TOP if present, else CAM_FRONT)."""
    channel = "LIDAR_TOP" if "LIDAR_TOP" in samples[0]["data"] else "CAM_FRONT"
    if channel not in samples[0]["data"]:
        raise DataError(f"scene {scene['name']!r} has neither LIDAR_TOP nor CAM_FRONT data to take ego poses from")
    records = _chain(nusc, samples[0]["data"][channel], scene["token"])
    t, xy, yaw = [], [], []
    for sd in records:
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        values = np.array(pose["translation"][:2] + pose["rotation"], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise DataError(
                f"{_table_path(nusc, 'ego_pose')}: ego_pose {pose['token']} has a non-finite pose "
                f"({pose['translation']}, {pose['rotation']}); fix or drop scene {scene['name']!r}"
            )
        t.append((pose["timestamp"] - start_us) * 1e-6)
        xy.append(pose["translation"][:2])
        yaw.append(yaw_of(pose["rotation"]))
    t, xy, yaw = np.array(t), np.array(xy), np.array(yaw)
    order = np.argsort(t, kind="stable")
    t, xy, yaw = t[order], xy[order], yaw[order]
    keep = np.concatenate([[True], np.diff(t) > 1e-6])
    t, xy, yaw = t[keep], xy[keep], yaw[keep]
    gx = np.stack([np.interp(grid, t, xy[:, 0]), np.interp(grid, t, xy[:, 1])], axis=1)
    gyaw = _interp_angle(grid, t, yaw)
    if len(t) > 1:
        vel = np.stack([np.gradient(xy[:, 0], t), np.gradient(xy[:, 1], t)], axis=1)
        gvel = np.stack([np.interp(grid, t, vel[:, 0]), np.interp(grid, t, vel[:, 1])], axis=1)
    else:
        gvel = np.zeros_like(gx)
    # Sensors fire a few tens of ms around the sample time: hold the first/last pose that long.
    valid = in_scene & (grid >= t[0] - 0.1) & (grid <= t[-1] + 0.1)
    return EgoTrack(
        xy=np.where(valid[:, None], gx, 0.0).astype(np.float32),
        yaw=np.where(valid, gyaw, 0.0).astype(np.float32),
        velocity=np.where(valid[:, None], gvel, 0.0).astype(np.float32),
        size=np.array(EGO_SIZE, np.float32),
        valid=valid,
    )


def _agents(nusc, samples, sample_t, grid, in_scene, ego: EgoTrack, cfg: LoadConfig):
    """Annotated objects, on the time grid, padded/truncated to `cfg.max_agents` slots."""
    n_s = len(samples)
    tracks: dict[str, dict] = {}
    for k, s in enumerate(samples):
        for ann_tok in s["anns"]:
            ann = nusc.get("sample_annotation", ann_tok)
            tr = tracks.setdefault(
                ann["instance_token"],
                {
                    "xyz": np.zeros((n_s, 3)),
                    "yaw": np.zeros(n_s),
                    "mask": np.zeros(n_s, bool),
                    "size": np.array(ann["size"], np.float64)[[1, 0, 2]],  # wlh -> lwh
                    "category": ann.get("category_name")
                    or nusc.get("category", nusc.get("instance", ann["instance_token"])["category_token"])["name"],
                },
            )
            values = np.array(ann["translation"] + ann["rotation"] + ann["size"], dtype=np.float64)
            if not np.all(np.isfinite(values)):
                raise DataError(
                    f"{_table_path(nusc, 'sample_annotation')}: annotation {ann_tok} has a non-finite box; "
                    "fix or drop it"
                )
            tr["xyz"][k] = ann["translation"]
            tr["yaw"][k] = yaw_of(ann["rotation"])
            tr["mask"][k] = True
    # time grid -> bracketing keyframes
    k0 = np.clip(np.searchsorted(sample_t, grid, side="right") - 1, 0, n_s - 1)
    k1 = np.minimum(k0 + 1, n_s - 1)
    span = np.maximum(sample_t[k1] - sample_t[k0], 1e-9)
    f = np.clip((grid - sample_t[k0]) / span, 0.0, 1.0)
    at_k0 = f < 1e-4
    at_k1 = f > 1 - 1e-4
    ego_xy = np.asarray(ego.xy)
    ego_z = 0.0
    rows = []
    for inst, tr in tracks.items():
        m = tr["mask"]
        valid = np.where(at_k0, m[k0], np.where(at_k1, m[k1], m[k0] & m[k1])) & in_scene
        xyz = tr["xyz"][k0] * (1 - f)[:, None] + tr["xyz"][k1] * f[:, None]
        dyaw = (tr["yaw"][k1] - tr["yaw"][k0] + math.pi) % (2 * math.pi) - math.pi
        yaw = (tr["yaw"][k0] + f * dyaw + math.pi) % (2 * math.pi) - math.pi
        # velocity per keyframe: centred differences over annotated neighbours (as the devkit does)
        vel_k = np.zeros((n_s, 2))
        idx = np.flatnonzero(m)
        if len(idx) >= 2:
            for j, k in enumerate(idx):
                a, b = idx[max(j - 1, 0)], idx[min(j + 1, len(idx) - 1)]
                dt = sample_t[b] - sample_t[a]
                if dt > 0 and dt <= 3.0:
                    vel_k[k] = (tr["xyz"][b, :2] - tr["xyz"][a, :2]) / dt
        vel = vel_k[k0] * (1 - f)[:, None] + vel_k[k1] * f[:, None]
        if not valid.any():
            continue
        dist = np.hypot(*(xyz[:, :2] - ego_xy).T)
        rows.append((float(dist[valid].min()), inst, tr, valid, xyz, yaw, vel))
    rows.sort(key=lambda r: (r[0], r[1]))
    total = len(rows)
    rows = rows[: cfg.max_agents]
    A, T = cfg.max_agents, len(grid)
    out = AgentTracks.zeros(A, T)
    tokens, cats = [""] * A, [""] * A
    for a, (_d, inst, tr, valid, xyz, yaw, vel) in enumerate(rows):
        out["xy"][a] = np.where(valid[:, None], xyz[:, :2], 0.0)
        out["z"][a] = np.where(valid, xyz[:, 2] - ego_z, 0.0)
        out["yaw"][a] = np.where(valid, yaw, 0.0)
        out["velocity"][a] = np.where(valid[:, None], vel, 0.0)
        out["size"][a] = tr["size"]
        out["category"][a] = agent_class_of(tr["category"])
        out["valid"][a] = valid
        tokens[a], cats[a] = inst, tr["category"]
    return AgentTracks(**out), tuple(tokens), tuple(cats), total


def map_bounds(ego_xy: np.ndarray, cfg: LoadConfig) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Raster origin (2,) and (xmin, ymin, xmax, ymax) of the square map crop around an ego path (N, 2)."""
    center = (ego_xy.min(axis=0) + ego_xy.max(axis=0)) / 2 if len(ego_xy) else np.zeros(2)
    half = cfg.raster_size * cfg.raster_resolution / 2
    # snapped to a 4 m grid, so that slightly different paths (e.g. poses from different sensors)
    # give the same cells
    origin = np.round((center - half) / 4.0) * 4.0
    return origin, (origin[0], origin[1], origin[0] + 2 * half, origin[1] + 2 * half)


def _map(dataroot, location: str, ego_xy: np.ndarray, cfg: LoadConfig) -> tuple[MapData, int]:
    """Lane segments and the semantic raster around the ego's path, from the map expansion."""
    index = map_index(str(dataroot), location)
    origin, bounds = map_bounds(ego_xy, cfg)
    lanes = {tok: index.lane_poses[tok][:, :2] for tok in index.lanes_in(bounds)}
    return build_map_data(index.crop(bounds), lanes, index.connectivity, index.connector, origin, ego_xy, cfg)


def build_map_data(geoms: dict, lanes: dict, connectivity: dict, connectors: set, origin, ego_xy, cfg: LoadConfig):
    """`MapData` from map geometry cropped around the ego path.

    geoms: shapely geometries per layer ("drivable_area", "walkway", "ped_crossing" polygons,
    "markings" lines); lanes: token -> (N, 2) centreline, in driving direction; connectivity:
    token -> {"incoming": [...], "outgoing": [...]}; connectors: tokens of lane connectors.
    Returns the MapData and the number of lane segments before truncation.
    """
    raster = rasterize_map(
        geoms["drivable_area"], geoms["walkway"], geoms["ped_crossing"], geoms["markings"],
        origin, cfg.raster_size, cfg.raster_resolution, marking_width=MARKING_WIDTH,
    )  # fmt: skip
    # Lane segments: cut each lane into pieces of at most lane_segment_length, resampled uniformly.
    segs, seg_of_lane = [], {}
    for tok, poses in lanes.items():
        poses = poses[np.concatenate([[True], np.hypot(*np.diff(poses, axis=0).T) > 1e-6])]
        if len(poses) < 2:
            continue
        s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(poses, axis=0).T))])
        n_pieces = max(1, int(math.ceil(s[-1] / cfg.lane_segment_length)))
        edges = np.linspace(0.0, s[-1], n_pieces + 1)
        ids = []
        for j in range(n_pieces):
            u = np.linspace(edges[j], edges[j + 1], cfg.lane_points)
            pts = np.stack([np.interp(u, s, poses[:, 0]), np.interp(u, s, poses[:, 1])], axis=1)
            ids.append(len(segs))
            segs.append((tok, j, pts))
        seg_of_lane[tok] = ids
    total = len(segs)
    if total > cfg.max_lane_segments:
        d = np.array([np.min(np.hypot(*(p[:, None, :] - ego_xy[None]).transpose(2, 0, 1))) for _, _, p in segs])
        keep = np.sort(np.argsort(d, kind="stable")[: cfg.max_lane_segments])
    else:
        keep = np.arange(total)
    new_id = {int(old): i for i, old in enumerate(keep)}
    L, P, S = cfg.max_lane_segments, cfg.lane_points, cfg.max_neighbours
    lane_xy = np.zeros((L, P, 2), np.float32)
    lane_valid = np.zeros(L, bool)
    succ = np.full((L, S), -1, np.int32)
    pred = np.full((L, S), -1, np.int32)
    is_conn = np.zeros(L, bool)

    def neighbours(tok, j, direction):
        ids = seg_of_lane[tok]
        if direction > 0:
            if j + 1 < len(ids):
                return [ids[j + 1]]
            nxt = connectivity.get(tok, {}).get("outgoing", [])
            return [seg_of_lane[n][0] for n in nxt if n in seg_of_lane]
        if j > 0:
            return [ids[j - 1]]
        prv = connectivity.get(tok, {}).get("incoming", [])
        return [seg_of_lane[n][-1] for n in prv if n in seg_of_lane]

    for old in keep:
        i = new_id[int(old)]
        tok, j, pts = segs[old]
        lane_xy[i] = pts
        lane_valid[i] = True
        is_conn[i] = tok in connectors
        for arr, direction in ((succ, 1), (pred, -1)):
            nb = [new_id[n] for n in neighbours(tok, j, direction) if n in new_id][:S]
            arr[i, : len(nb)] = nb
    return (
        MapData(
            lane_xy=lane_xy,
            lane_valid=lane_valid,
            lane_successors=succ,
            lane_predecessors=pred,
            lane_is_connector=is_conn,
            raster=raster,
            raster_origin=np.asarray(origin, np.float32),
            raster_resolution=np.float32(cfg.raster_resolution),
        ),
        total,
    )


def sample_rig(nusc, sample: dict, cfg: LoadConfig) -> tuple[CameraRig, tuple[int, int]]:
    """The six cameras of a sample, intrinsics scaled to `cfg.image_size` (or kept), and that size."""
    from pyquaternion import Quaternion

    intr, rot, trans = [], [], []
    size = None
    for ch in CAMERA_CHANNELS:
        if ch not in sample["data"]:
            raise DataError(f"sample {sample['token']} has no {ch} image; drivesim needs all six cameras")
        sd = nusc.get("sample_data", sample["data"][ch])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        k = np.array(cs["camera_intrinsic"], np.float64)
        native = (int(sd["width"]), int(sd["height"]))
        size = cfg.image_size or native
        k[0] *= size[0] / native[0]
        k[1] *= size[1] / native[1]
        intr.append(k)
        rot.append(Quaternion(cs["rotation"]).rotation_matrix)
        trans.append(cs["translation"])
    rig = CameraRig(
        intrinsics=np.array(intr, np.float32),
        rotation=np.array(rot, np.float32),
        translation=np.array(trans, np.float32),
    )
    return rig, tuple(size)


def _camera_files(nusc, scene, samples, start_us, grid, in_scene, cfg: LoadConfig) -> tuple[tuple[str, ...], ...]:
    """Per grid step and camera, the file of the nearest frame within half a step ("" if none)."""
    half_step = 0.5 / cfg.rate_hz
    cols = []
    for ch in CAMERA_CHANNELS:
        recs = _chain(nusc, samples[0]["data"][ch], scene["token"]) if ch in samples[0]["data"] else []
        if cfg.camera_source == "keyframes":
            recs = [r for r in recs if r["is_key_frame"]]
        t = np.array([(r["timestamp"] - start_us) * 1e-6 for r in recs])
        col = []
        for g, ok in zip(grid, in_scene, strict=True):
            if not ok or len(t) == 0:
                col.append("")
                continue
            i = int(np.argmin(np.abs(t - g)))
            col.append(recs[i]["filename"] if abs(t[i] - g) <= half_step + 1e-6 else "")
        cols.append(col)
    return tuple(tuple(row) for row in zip(*cols, strict=True))


def load_camera_frames(info: LogInfo, size: tuple[int, int] | None = None, steps=None) -> np.ndarray:
    """(T, 6, H, W, 3) uint8 camera frames of a loaded log (zeros where a step has no frame).

    `size` = (width, height) to resize to (default `info.image_size`); `steps` selects time steps.
    A missing or unreadable image is an error naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    w, h = size or info.image_size
    rows = (
        info.camera_files if steps is None else [info.camera_files[i] for i in np.arange(len(info.camera_files))[steps]]
    )
    out = np.zeros((len(rows), len(CAMERA_CHANNELS), h, w, 3), np.uint8)
    for i, row in enumerate(rows):
        for c, rel in enumerate(row):
            if not rel:
                continue
            path = Path(info.dataroot) / rel
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB")
                    if img.size != (w, h):
                        img = img.resize((w, h), Image.BILINEAR)
                    out[i, c] = np.asarray(img)
            except FileNotFoundError:
                raise DataError(
                    f"camera image {path} is missing; the dataroot is incomplete (re-download or regenerate it)"
                ) from None
            except (OSError, UnidentifiedImageError) as e:
                raise DataError(
                    f"camera image {path} is truncated or unreadable ({e}); re-download or regenerate it"
                ) from None
    return out

"""Ground truth straight from the synthetic world: a `Log`, its occupancy and its camera frames.

For a (re-)simulated `SceneRecord` — in particular a counterfactual one, which was never written to
disk — these give exactly what the loader would give for the written scene: the same arrays, the
same map raster, the same occupancy classes, so that a model's prediction of a counterfactual can
be scored against the truth of that counterfactual.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon, box

from drivesim.data.classes import agent_class_of
from drivesim.data.loader import LoadConfig, build_map_data, map_bounds
from drivesim.data.occupancy import OccupancyConfig, log_occupancy
from drivesim.data.types import EGO_SIZE, AgentTracks, CameraRig, EgoTrack, Log, Occupancy, Signals
from drivesim.synth.map_expansion import lane_token
from drivesim.synth.rig import nuscenes_rig
from drivesim.synth.roads import SynthMap
from drivesim.synth.signals import record_signals
from drivesim.synth.traffic import DT
from drivesim.synth.world import SceneRecord

KEYFRAME_HZ = 2.0


def _clip(geoms, bounds) -> list:
    patch = box(*bounds)
    out = []
    for g in geoms:
        c = g.intersection(patch)
        if c.is_empty:
            continue
        parts = c.geoms if hasattr(c, "geoms") else [c]
        out.extend(p for p in parts if isinstance(p, Polygon | LineString) and not p.is_empty)
    return out


def _map_geometry(smap: SynthMap, bounds) -> tuple[dict, dict, dict, set]:
    polys = lambda g: list(g.geoms) if isinstance(g, MultiPolygon) else [g]  # noqa: E731
    markings = []
    for road in smap.roads:
        markings.append(road.road_divider)
        markings.extend(road.lane_dividers)
    geoms = {
        "drivable_area": _clip(polys(smap.drivable), bounds),
        "walkway": _clip(polys(smap.walkway), bounds),
        "ped_crossing": _clip([c.polygon for c in smap.crossings], bounds),
        "markings": _clip(markings, bounds),
    }
    patch = box(*bounds)
    lanes, connectivity, connectors = {}, {}, set()
    for ln in smap.lanes:
        tok = lane_token(smap, ln.index)
        connectivity[tok] = {
            "incoming": [lane_token(smap, p) for p in ln.predecessors],
            "outgoing": [lane_token(smap, q) for q in ln.successors],
        }
        if ln.is_connector:
            connectors.add(tok)
        if shapely.intersects(LineString(ln.poses[:, :2]), patch):
            lanes[tok] = ln.poses[:, :2]
    return geoms, lanes, connectivity, connectors


def record_log(
    record: SceneRecord,
    cfg: LoadConfig = LoadConfig(),
    image_width: int = 160,
    annotation_range: float | None = 60.0,
) -> tuple[Log, tuple[int, ...]]:
    """The `Log` of a simulated scene at `cfg.rate_hz` (default the 2 Hz keyframes), and the uid of
    each agent slot (-1 for padding).

    Like the written scene, the log ends at the last keyframe (duration - 0.5 s), and agents are
    valid where they exist and (with `annotation_range`) are that close to the ego. The traffic
    lights are those of the written signals file (`drivesim.synth.signals`).
    """
    duration = record.plan.duration - 1.0 / KEYFRAME_HZ
    n = int(np.floor(duration * cfg.rate_hz + 1e-6)) + 1
    T = cfg.max_steps or n
    grid = np.arange(T) / cfg.rate_hz
    in_scene = grid <= duration + 1e-6
    pose = record.ego_pose_at(np.minimum(grid, duration))
    speed = np.interp(np.minimum(grid, duration), record.time, record.ego_speed)
    vel = speed[:, None] * np.stack([np.cos(pose[:, 2]), np.sin(pose[:, 2])], axis=1)
    ego = EgoTrack(
        xy=np.where(in_scene[:, None], pose[:, :2], 0.0).astype(np.float32),
        yaw=np.where(in_scene, pose[:, 2], 0.0).astype(np.float32),
        velocity=np.where(in_scene[:, None], vel, 0.0).astype(np.float32),
        size=np.array(EGO_SIZE, np.float32),
        valid=in_scene,
    )
    # agents: present at both neighbouring 10 Hz steps (as `SceneRecord.agents_at`), within range
    ego_center = pose[:, :2] + 1.3 * np.stack([np.cos(pose[:, 2]), np.sin(pose[:, 2])], axis=1)
    rows = []
    for a in range(len(record.specs)):
        xy = np.zeros((T, 2))
        yaw = np.zeros(T)
        valid = np.zeros(T, bool)
        for i, t in enumerate(grid):
            if not in_scene[i]:
                continue
            k = int(np.clip(np.floor(t / DT + 1e-9), 0, len(record.time) - 2))
            f = float(np.clip((t - record.time[k]) / DT, 0.0, 1.0))
            ok = record.active[a, k] if f < 1e-9 else record.active[a, k] & record.active[a, k + 1]
            if not ok:
                continue
            xy[i] = record.center[a, k] * (1 - f) + record.center[a, k + 1] * f
            dyaw = (record.yaw[a, k + 1] - record.yaw[a, k] + np.pi) % (2 * np.pi) - np.pi
            yaw[i] = (record.yaw[a, k] + f * dyaw + np.pi) % (2 * np.pi) - np.pi
            valid[i] = True
        if annotation_range is not None:
            valid &= np.hypot(*(xy - ego_center).T) < annotation_range
        if valid.any():
            steps = np.clip(np.round(grid / DT).astype(int), 0, len(record.time) - 1)
            v = record.speed[a, steps][:, None] * np.stack([np.cos(yaw), np.sin(yaw)], axis=1)
            d = np.hypot(*(xy - pose[:, :2]).T)
            rows.append((float(d[valid].min()), a, xy, yaw, v, valid))
    rows.sort(key=lambda r: (r[0], r[1]))
    rows = rows[: cfg.max_agents]
    A = cfg.max_agents
    out = AgentTracks.zeros(A, T)
    uids = [-1] * A
    for j, (_d, a, xy, yaw, v, valid) in enumerate(rows):
        spec = record.specs[a]
        out["xy"][j] = np.where(valid[:, None], xy, 0.0)
        out["z"][j] = np.where(valid, spec.size[2] / 2, 0.0)
        out["yaw"][j] = np.where(valid, yaw, 0.0)
        out["velocity"][j] = np.where(valid[:, None], v, 0.0)
        out["size"][j] = spec.size
        out["category"][j] = agent_class_of(spec.category)
        out["valid"][j] = valid
        uids[j] = spec.uid
    origin, bounds = map_bounds(pose[in_scene, :2], cfg)
    geoms, lanes, connectivity, connectors = _map_geometry(record.plan.map, bounds)
    map_data, _ = build_map_data(geoms, lanes, connectivity, connectors, origin, pose[in_scene, :2], cfg)
    rig = nuscenes_rig(image_width)
    camera_rig = CameraRig(
        intrinsics=np.stack([c.intrinsics for c in rig]).astype(np.float32),
        rotation=np.stack([c.rotation for c in rig]).astype(np.float32),
        translation=np.stack([c.translation for c in rig]).astype(np.float32),
    )
    signals = Signals(**record_signals(record, grid, cfg.max_signals))
    log = Log(
        time=grid.astype(np.float32), ego=ego, agents=AgentTracks(**out), map=map_data, rig=camera_rig, signals=signals
    )
    return log, tuple(uids)


def record_occupancy(record: SceneRecord, cfg: OccupancyConfig = OccupancyConfig(), **kw) -> Occupancy:
    """BEV occupancy (T, H, W) of a simulated scene at its keyframes (see `record_log`)."""
    log, _ = record_log(record, **kw)
    return log_occupancy(log, cfg)


def record_frames(record: SceneRecord, times, image_width: int = 160) -> np.ndarray:
    """(len(times), 6, H, W, 3) uint8 camera frames of a simulated scene at log times."""
    from drivesim.synth.camera_frames import render_scene

    rig = nuscenes_rig(image_width)
    times = list(np.asarray(times, np.float64))
    flat = render_scene(record, rig, [t for t in times for _ in rig], [c.channel for _ in times for c in rig])
    return flat.reshape(len(times), len(rig), *flat.shape[1:])

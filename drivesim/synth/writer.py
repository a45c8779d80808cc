"""Write recorded synthetic scenes as a nuScenes v1.0 dataroot.

All 13 tables, keyframes at 2 Hz with camera sweeps in between, one `ego_pose` per sensor reading,
prev/next chains, real category / attribute / visibility vocabularies, a map expansion per
location and the map table's semantic-prior mask. The unmodified nuscenes-devkit loads the result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from drivesim.data.classes import NUSCENES_ATTRIBUTES, NUSCENES_CATEGORIES
from drivesim.data.dataroot import TABLES
from drivesim.data.types import CAMERA_CHANNELS
from drivesim.synth.map_expansion import map_expansion, token
from drivesim.synth.rig import Camera
from drivesim.synth.roads import SynthMap
from drivesim.synth.world import SceneRecord

KEYFRAME_HZ = 2
# When each camera fires relative to the sample timestamp (microseconds): they sweep around the car.
CAMERA_OFFSET_US = {
    "CAM_FRONT": 12_000,
    "CAM_FRONT_RIGHT": 20_000,
    "CAM_BACK_RIGHT": 37_000,
    "CAM_BACK": 45_000,
    "CAM_BACK_LEFT": 54_000,
    "CAM_FRONT_LEFT": 62_000,
}
VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))


def yaw_quaternion(yaw: float) -> list[float]:
    """[w, x, y, z] of a rotation by `yaw` about z."""
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


@dataclasses.dataclass(frozen=True)
class Frame:
    """One camera image to be rendered: which scene, channel and log time, and its file."""

    scene: int
    channel: str
    time: float
    filename: str  # relative to the dataroot


class NuScenesWriter:
    """Accumulates tables in memory; images are written by the caller to `frame.filename`."""

    def __init__(self, root: Path, version: str):
        self.root = Path(root)
        self.version = version
        self.tables: dict[str, list[dict]] = {name: [] for name in TABLES}
        self.category_token = {name: token("category", name) for name in NUSCENES_CATEGORIES}
        self.attribute_token = {name: token("attribute", name) for name in NUSCENES_ATTRIBUTES}
        for name in NUSCENES_CATEGORIES:
            self.tables["category"].append(
                {"token": self.category_token[name], "name": name, "description": f"nuScenes category {name}"}
            )
        for name in NUSCENES_ATTRIBUTES:
            self.tables["attribute"].append(
                {"token": self.attribute_token[name], "name": name, "description": f"nuScenes attribute {name}"}
            )
        for tok, level in VISIBILITY:
            self.tables["visibility"].append(
                {"token": tok, "level": level, "description": f"visibility of whole object is {level}"}
            )
        self.sensor_token = {}
        for ch in CAMERA_CHANNELS:
            self.sensor_token[ch] = token("sensor", ch)
            self.tables["sensor"].append({"token": self.sensor_token[ch], "channel": ch, "modality": "camera"})
        self.map_logs: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ scenes
    def add_scene(
        self,
        index: int,
        name: str,
        description: str,
        record: SceneRecord,
        rig: tuple[Camera, ...],
        start_us: int,
        camera_hz: int,
        annotation_range: float,
    ) -> list[Frame]:
        """Add one scene's rows; returns the camera frames to render, in sample_data order."""
        if camera_hz % KEYFRAME_HZ:
            raise ValueError(f"camera rate {camera_hz} Hz must be a multiple of the {KEYFRAME_HZ} Hz keyframe rate")
        loc = record.plan.map.location
        logfile = f"drivesim-{record.plan.map.seed:03d}-{index:04d}"
        log_token = token("log", logfile, index)
        self.tables["log"].append(
            {
                "token": log_token,
                "logfile": logfile,
                "vehicle": "drivesim",
                "date_captured": "2018-08-01",
                "location": loc,
            }
        )
        self.map_logs.setdefault(loc, []).append(log_token)
        scene_token = token("scene", logfile, name)
        n_samples = int(round(record.plan.duration * KEYFRAME_HZ))
        times = np.arange(n_samples) / KEYFRAME_HZ
        sample_tokens = [token("sample", scene_token, k) for k in range(n_samples)]
        for k in range(n_samples):
            self.tables["sample"].append(
                {
                    "token": sample_tokens[k],
                    "timestamp": start_us + int(round(times[k] * 1e6)),
                    "prev": sample_tokens[k - 1] if k > 0 else "",
                    "next": sample_tokens[k + 1] if k + 1 < n_samples else "",
                    "scene_token": scene_token,
                }
            )
        self.tables["scene"].append(
            {
                "token": scene_token,
                "log_token": log_token,
                "nbr_samples": n_samples,
                "first_sample_token": sample_tokens[0],
                "last_sample_token": sample_tokens[-1],
                "name": name,
                "description": description,
            }
        )
        frames = self._camera_data(index, scene_token, logfile, record, rig, start_us, times, sample_tokens, camera_hz)
        self._annotations(scene_token, record, times, sample_tokens, annotation_range)
        return frames

    def _camera_data(self, index, scene_token, logfile, record, rig, start_us, times, sample_tokens, camera_hz):
        frames = []
        per_sample = camera_hz // KEYFRAME_HZ
        for cam in rig:
            cs_token = token("calibrated_sensor", scene_token, cam.channel)
            self.tables["calibrated_sensor"].append(
                {
                    "token": cs_token,
                    "sensor_token": self.sensor_token[cam.channel],
                    "translation": [float(v) for v in cam.translation],
                    "rotation": cam.quaternion,
                    "camera_intrinsic": [[float(v) for v in row] for row in cam.intrinsics],
                }
            )
            rows = []
            for k, t_k in enumerate(times):
                # the keyframe, then (until the next keyframe) the sweeps that belong to sample k + 1
                for j in range(per_sample if k + 1 < len(times) else 1):
                    ts = (
                        start_us
                        + int(round(t_k * 1e6))
                        + CAMERA_OFFSET_US[cam.channel]
                        + int(round(j * 1e6 / camera_hz))
                    )
                    key = j == 0
                    folder = "samples" if key else "sweeps"
                    filename = f"{folder}/{cam.channel}/{logfile}__{cam.channel}__{ts}.jpg"
                    rows.append((ts, key, sample_tokens[k] if key else sample_tokens[k + 1], filename))
            tokens = [token("sample_data", scene_token, cam.channel, r[0]) for r in rows]
            for i, (ts, key, sample_token, filename) in enumerate(rows):
                t_log = (ts - start_us) * 1e-6
                x, y, yaw = record.ego_pose_at(t_log)
                pose_token = token("ego_pose", scene_token, cam.channel, ts)
                self.tables["ego_pose"].append(
                    {
                        "token": pose_token,
                        "timestamp": ts,
                        "rotation": yaw_quaternion(float(yaw)),
                        "translation": [float(x), float(y), 0.0],
                    }
                )
                self.tables["sample_data"].append(
                    {
                        "token": tokens[i],
                        "sample_token": sample_token,
                        "ego_pose_token": pose_token,
                        "calibrated_sensor_token": cs_token,
                        "timestamp": ts,
                        "fileformat": "jpg",
                        "is_key_frame": key,
                        "height": cam.height,
                        "width": cam.width,
                        "filename": filename,
                        "prev": tokens[i - 1] if i > 0 else "",
                        "next": tokens[i + 1] if i + 1 < len(rows) else "",
                    }
                )
                frames.append(Frame(index, cam.channel, t_log, filename))
        return frames

    def _annotations(self, scene_token, record: SceneRecord, times, sample_tokens, annotation_range):
        """Boxes of every agent within `annotation_range` of the ego at each keyframe."""
        step = np.round(times / 0.1).astype(int)
        ego = record.ego_pose_at(times)
        ego_center = ego[:, :2] + 1.3 * np.stack([np.cos(ego[:, 2]), np.sin(ego[:, 2])], axis=1)
        for a, spec in enumerate(record.specs):
            center = record.center[a, step]
            dist = np.hypot(*(center - ego_center).T)
            shown = record.active[a, step] & (dist < annotation_range)
            ks = np.flatnonzero(shown)
            if len(ks) == 0:
                continue
            inst_token = token("instance", scene_token, spec.uid)
            ann_tokens = [token("sample_annotation", inst_token, k) for k in ks]
            length, width, height = spec.size
            for j, k in enumerate(ks):
                x, y = center[k]
                speed = record.speed[a, step[k]]
                self.tables["sample_annotation"].append(
                    {
                        "token": ann_tokens[j],
                        "sample_token": sample_tokens[k],
                        "instance_token": inst_token,
                        "visibility_token": _visibility(dist[k]),
                        "attribute_tokens": [self.attribute_token[n] for n in _attributes(spec, speed)],
                        "translation": [float(x), float(y), float(height / 2)],
                        "size": [float(width), float(length), float(height)],
                        "rotation": yaw_quaternion(float(record.yaw[a, step[k]])),
                        "prev": ann_tokens[j - 1] if j > 0 else "",
                        "next": ann_tokens[j + 1] if j + 1 < len(ks) else "",
                        "num_lidar_pts": _lidar_points(spec.size, dist[k]),
                        "num_radar_pts": 0 if spec.kind == "pedestrian" else int(dist[k] < 60),
                    }
                )
            self.tables["instance"].append(
                {
                    "token": inst_token,
                    "category_token": self.category_token[spec.category],
                    "nbr_annotations": len(ks),
                    "first_annotation_token": ann_tokens[0],
                    "last_annotation_token": ann_tokens[-1],
                }
            )

    # ------------------------------------------------------------------ maps + finish
    def write_map_files(self, smap: SynthMap, mask: np.ndarray) -> None:
        """The map expansion JSON and the semantic-prior mask (10 px/m PNG) of a location.

        Thread-safe (it only writes files), so it can run while scenes are being rendered.
        """
        exp_dir = self.root / "maps" / "expansion"
        exp_dir.mkdir(parents=True, exist_ok=True)
        with open(exp_dir / f"{smap.location}.json", "w") as f:
            json.dump(map_expansion(smap), f, separators=(",", ":"))
        # The devkit's MapMask puts image row 0 at the north edge of the map.
        Image.fromarray(mask[::-1]).save(self.root / _mask_filename(smap), optimize=False, compress_level=1)

    def add_map_record(self, smap: SynthMap) -> None:
        """The map table row of a location (after all its scenes were added)."""
        self.tables["map"].append(
            {
                "token": token("map", smap.location, smap.seed),
                "log_tokens": self.map_logs.get(smap.location, []),
                "category": "semantic_prior",
                "filename": _mask_filename(smap),
            }
        )

    def finish(self) -> None:
        """Write the tables (all 13, even if empty)."""
        table_dir = self.root / self.version
        table_dir.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            with open(table_dir / f"{name}.json", "w") as f:
                json.dump(self.tables[name], f, indent=0, separators=(",", ":"))


def _mask_filename(smap: SynthMap) -> str:
    return f"maps/{token('map', smap.location, smap.seed)}.png"


def _visibility(distance: float) -> str:
    return "4" if distance < 20 else "3" if distance < 35 else "2" if distance < 50 else "1"


def _lidar_points(size, distance: float) -> int:
    """A plausible lidar point count: grows with the box's visible area, falls with distance^2."""
    area = size[2] * max(size[0], size[1])
    return max(1, int(1200.0 * area / max(distance, 2.0) ** 2))


def _attributes(spec, speed: float) -> list[str]:
    cat = spec.category
    if cat in ("vehicle.bicycle", "vehicle.motorcycle"):
        return ["cycle.with_rider"] if spec.kind != "static" else ["cycle.without_rider"]
    if cat.startswith("vehicle."):
        if spec.kind == "static":
            return ["vehicle.parked"]
        return ["vehicle.moving"] if speed > 0.5 else ["vehicle.stopped"]
    if cat.startswith("human.pedestrian"):
        return ["pedestrian.moving"] if speed > 0.2 else ["pedestrian.standing"]
    return []


def directory_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(dirpath, name))
    return total

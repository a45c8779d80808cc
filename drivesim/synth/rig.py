"""The nuScenes camera rig: six cameras around the roof of the ego car.

Positions, headings and focal lengths follow the nuScenes calibration (a 1600x900 image, focal
length near 1260 px for the front and side cameras, about 810 px for the wider rear camera);
images are scaled to a chosen width. Cameras are level (no pitch or roll).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from drivesim.data.types import CAMERA_CHANNELS

NUSCENES_IMAGE_SIZE = (1600, 900)

# channel: (x, y, z in the ego frame, heading in degrees, focal length px, cx, cy) at 1600x900
_RIG = {
    "CAM_FRONT": (1.70, 0.016, 1.51, 0.0, 1266.4, 816.3, 491.5),
    "CAM_FRONT_RIGHT": (1.55, -0.493, 1.50, -55.0, 1260.8, 808.0, 495.3),
    "CAM_BACK_RIGHT": (1.01, -0.480, 1.56, -110.0, 1259.5, 807.3, 501.2),
    "CAM_BACK": (0.03, 0.004, 1.58, 180.0, 809.2, 829.2, 481.8),
    "CAM_BACK_LEFT": (1.04, 0.485, 1.59, 110.0, 1256.7, 817.8, 452.0),
    "CAM_FRONT_LEFT": (1.52, 0.495, 1.51, 55.0, 1272.6, 826.6, 479.8),
}


@dataclasses.dataclass(frozen=True)
class Camera:
    """One pinhole camera. Camera frame: x right, y down, z forward (as in nuScenes).

    Attributes:
      channel: e.g. "CAM_FRONT".
      width, height: image size in pixels.
      intrinsics: (3, 3) pinhole matrix for that size.
      rotation: (3, 3) camera-to-ego rotation.
      translation: (3,) camera position in the ego frame (metres).
    """

    channel: str
    width: int
    height: int
    intrinsics: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray

    @property
    def quaternion(self) -> list[float]:
        """Camera-to-ego rotation as [w, x, y, z] (pyquaternion order)."""
        return rotation_to_quaternion(self.rotation)


def camera_rotation(heading: float) -> np.ndarray:
    """Camera-to-ego rotation of a level camera looking along `heading` (radians, ego frame)."""
    c, s = math.cos(heading), math.sin(heading)
    right = [s, -c, 0.0]
    down = [0.0, 0.0, -1.0]
    forward = [c, s, 0.0]
    return np.array([right, down, forward]).T


def rotation_to_quaternion(r: np.ndarray) -> list[float]:
    """[w, x, y, z] of a rotation matrix (w >= 0)."""
    from pyquaternion import Quaternion

    q = Quaternion(matrix=np.asarray(r, dtype=np.float64), atol=1e-6)
    q = q if q.w >= 0 else -q
    return [float(v) for v in q.elements]


def nuscenes_rig(width: int = 160) -> tuple[Camera, ...]:
    """The six nuScenes cameras, in `CAMERA_CHANNELS` order, for images `width` pixels wide.

    The height keeps nuScenes' 16:9 aspect (rounded to whole pixels); intrinsics are scaled to
    match, so projecting with them gives pixel coordinates in the smaller image.
    """
    if width < 16:
        raise ValueError(f"image width {width} is too small; use at least 16 pixels")
    scale = width / NUSCENES_IMAGE_SIZE[0]
    height = int(round(NUSCENES_IMAGE_SIZE[1] * scale))
    cams = []
    for channel in CAMERA_CHANNELS:
        x, y, z, heading, f, cx, cy = _RIG[channel]
        k = np.array([[f * scale, 0.0, cx * scale], [0.0, f * scale, cy * scale], [0.0, 0.0, 1.0]])
        cams.append(Camera(channel, width, height, k, camera_rotation(math.radians(heading)), np.array([x, y, z])))
    return tuple(cams)

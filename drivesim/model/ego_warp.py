"""The ego-warp camera baseline: the last frames reprojected by the ego's motion, with no learning.

What a camera world model has to beat besides copy-last. Every pixel of a future view is given a
3-D point by a fixed depth model (no learning, nothing from the future): its ray meets the ground
(z = 0 in the ego frame) within `max_range`, else a cylinder at `max_range` around the camera (the
far scene). The point is moved into the last context keyframe's ego frame by the known ego motion
(the same motion the world model is given), projected into the six cameras of that keyframe, and
the pixel takes the colour there (bilinear) - from the same camera where it lands in view, else
from any other camera that sees it, else the same pixel of the last frame (copy-last). Objects
standing on the ground are treated as ground, so a car ahead streaks as the ego nears it: the
baseline knows the static geometry and the ego's motion, nothing of the traffic.

Image convention: cache frames (W0 x H0) are centre-cropped to the model's (w x h) view; the rig's
intrinsics are for the W0 x H0 frame, pixel (row i, col j) of the crop has its centre at
u = j + left + 0.5, v = i + top + 0.5 of the frame. Camera frame: x right, y down, z forward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from drivesim.data.types import CameraRig


def crop_offset(frame_size: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the centre crop of `image_size` (w, h) in a `frame_size` (W0, H0) frame, as
    `drivesim.model.world.prepare_images` takes it."""
    (W0, H0), (w, h) = frame_size, image_size
    return (H0 - h) // 2, (W0 - w) // 2


def pixel_points(rig: CameraRig, image_size: tuple[int, int], offset: tuple[int, int], max_range: float = 60.0):
    """(C, h, w, 3) ego-frame point of every pixel of the cropped views under the fixed depth model.

    Args:
      rig: the six cameras (intrinsics for the uncropped frame).
      image_size: (w, h) of the crop.
      offset: (top, left) of the crop in the frame.
      max_range: metres; rays that meet the ground farther than this (or never) end on a cylinder
        of this radius around the camera.
    """
    w, h = image_size
    top, left = offset
    v, u = jnp.meshgrid(jnp.arange(h) + top + 0.5, jnp.arange(w) + left + 0.5, indexing="ij")
    pix = jnp.stack([u, v, jnp.ones_like(u)], -1)  # (h, w, 3)
    k_inv = jnp.linalg.inv(jnp.asarray(rig.intrinsics, jnp.float32))  # (C, 3, 3)
    rays_cam = jnp.einsum("cij,hwj->chwi", k_inv, pix)
    rays = jnp.einsum("cij,chwj->chwi", jnp.asarray(rig.rotation, jnp.float32), rays_cam)  # ego frame
    origin = jnp.asarray(rig.translation, jnp.float32)[:, None, None, :]  # (C, 1, 1, 3)
    horizontal = jnp.maximum(jnp.linalg.norm(rays[..., :2], axis=-1), 1e-6)
    s_ground = jnp.where(rays[..., 2] < -1e-6, -origin[..., 2] / jnp.minimum(rays[..., 2], -1e-6), jnp.inf)
    s_far = max_range / horizontal
    s = jnp.minimum(s_ground, s_far)
    return origin + s[..., None] * rays


def project(points, rig: CameraRig, offset: tuple[int, int], image_size: tuple[int, int]):
    """Crop-pixel coordinates of ego-frame points in every camera.

    Args:
      points: (..., 3) ego-frame points.

    Returns:
      (row, col, visible), each (..., C): continuous crop coordinates (pixel centres at integers)
      and whether the point lies in front of the camera and inside its crop.
    """
    w, h = image_size
    top, left = offset
    rot = jnp.asarray(rig.rotation, jnp.float32)  # (C, 3, 3) camera-to-ego
    rel = points[..., None, :] - jnp.asarray(rig.translation, jnp.float32)  # (..., C, 3)
    cam = jnp.einsum("cji,...cj->...ci", rot, rel)  # ego-to-camera: R^T
    uvw = jnp.einsum("cij,...cj->...ci", jnp.asarray(rig.intrinsics, jnp.float32), cam)
    z = uvw[..., 2]
    safe = jnp.where(z > 1e-3, z, 1.0)
    col = uvw[..., 0] / safe - left - 0.5
    row = uvw[..., 1] / safe - top - 0.5
    visible = (z > 0.1) & (col >= -0.5) & (col <= w - 0.5) & (row >= -0.5) & (row <= h - 0.5)
    return row, col, visible


def _bilinear(image, row, col):
    """Sample (h, w, 3) `image` at continuous (...) coordinates, clamped to the border."""
    h, w = image.shape[:2]
    row = jnp.clip(row, 0.0, h - 1.0)
    col = jnp.clip(col, 0.0, w - 1.0)
    r0 = jnp.clip(jnp.floor(row).astype(jnp.int32), 0, h - 2 if h > 1 else 0)
    c0 = jnp.clip(jnp.floor(col).astype(jnp.int32), 0, w - 2 if w > 1 else 0)
    r1, c1 = jnp.minimum(r0 + 1, h - 1), jnp.minimum(c0 + 1, w - 1)
    fr, fc = (row - r0)[..., None], (col - c0)[..., None]
    top = image[r0, c0] * (1 - fc) + image[r0, c1] * fc
    bottom = image[r1, c0] * (1 - fc) + image[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def pose_points(points, pose):
    """(..., 3) points of a later ego frame, in the earlier frame where that ego stands at `pose`
    (x, y, yaw)."""
    c, s = jnp.cos(pose[2]), jnp.sin(pose[2])
    x = c * points[..., 0] - s * points[..., 1] + pose[0]
    y = s * points[..., 0] + c * points[..., 1] + pose[1]
    return jnp.stack([x, y, points[..., 2]], -1)


def warp_views(last, points, poses, rig: CameraRig, offset: tuple[int, int]):
    """The ego-warp forecast of one clip.

    Args:
      last: (C, h, w, 3) float, the last context keyframe's cropped views.
      points: (C, h, w, 3) `pixel_points` of the rig.
      poses: (F, 3) each future ego's pose (x, y, yaw) in the last context keyframe's ego frame.
      rig, offset: the cameras and the crop.

    Returns:
      (F, C, h, w, 3) float, the reprojected views.
    """
    C, h, w = last.shape[:3]
    same = jnp.eye(C, dtype=bool)[:, None, None, :]  # (C, 1, 1, C): the target's own camera

    def one(pose):
        src = pose_points(points, pose)  # (C, h, w, 3) in the last frame
        row, col, vis = project(src, rig, offset, (w, h))  # (C, h, w, C')
        score = jnp.where(vis, jnp.where(same, 2, 1), 0)
        pick = jnp.argmax(score, axis=-1)  # (C, h, w)
        r = jnp.take_along_axis(row, pick[..., None], -1)[..., 0]
        c = jnp.take_along_axis(col, pick[..., None], -1)[..., 0]
        sampled = jax.vmap(lambda k, rr, cc: _bilinear(last[k], rr, cc))(pick.reshape(-1), r.reshape(-1), c.reshape(-1))
        sampled = sampled.reshape(C, h, w, last.shape[-1])
        return jnp.where((score.max(-1) > 0)[..., None], sampled, last)

    return jax.vmap(one)(poses)


def compose_poses(motions):
    """(..., F, 3) per-keyframe motions (dx, dy, dyaw, each in the frame it starts from) -> (..., F, 3)
    pose of each keyframe's ego in the frame before the first: `drivesim.model.baselines.compose`
    in JAX."""

    def step(pose, m):
        c, s = jnp.cos(pose[..., 2]), jnp.sin(pose[..., 2])
        nxt = jnp.stack(
            [
                pose[..., 0] + c * m[..., 0] - s * m[..., 1],
                pose[..., 1] + s * m[..., 0] + c * m[..., 1],
                pose[..., 2] + m[..., 2],
            ],
            -1,
        )
        return nxt, nxt

    motions = jnp.moveaxis(jnp.asarray(motions, jnp.float32), -2, 0)
    _, poses = jax.lax.scan(step, jnp.zeros(motions.shape[1:], jnp.float32), motions)
    return jnp.moveaxis(poses, 0, -2)


class EgoWarp:
    """The baseline for a rig and crop, compiled once: `(last (N, C, h, w, 3) uint8, future_motion
    (N, F, 3)) -> (N, F, C, h, w, 3) uint8`. `future_motion[:, k]` is the ego motion from keyframe
    k-1 to k, row 0 from the last context keyframe (cache `ego_motion` convention)."""

    def __init__(
        self, rig: CameraRig, frame_size: tuple[int, int], image_size: tuple[int, int], max_range: float = 60.0
    ):
        self.rig = CameraRig(*(np.asarray(a, np.float32) for a in (rig.intrinsics, rig.rotation, rig.translation)))
        if self.rig.intrinsics.shape[-3:] != (6, 3, 3) and self.rig.intrinsics.ndim != 3:
            raise ValueError(f"EgoWarp needs one rig of (C, 3, 3) intrinsics, got {self.rig.intrinsics.shape}")
        self.offset = crop_offset(frame_size, image_size)
        points = pixel_points(self.rig, image_size, self.offset, max_range)
        rig_, offset = self.rig, self.offset

        def fn(last, motion):
            poses = compose_poses(motion)
            x = last.astype(jnp.float32)
            out = jax.vmap(lambda im, p: warp_views(im, points, p, rig_, offset))(x, poses)
            return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)

        self._fn = jax.jit(fn)

    def __call__(self, last, future_motion) -> np.ndarray:
        return np.asarray(self._fn(jnp.asarray(last), jnp.asarray(future_motion, jnp.float32)))


def dataroot_rig(dataroot, version: str, image_size: tuple[int, int]) -> CameraRig:
    """The camera rig of a dataroot's first scene, intrinsics scaled to `image_size` (W0, H0) - the
    cache frames' size. (nuScenes rigs barely differ between scenes of one car.)"""
    from drivesim.data.dataroot import open_nuscenes
    from drivesim.data.loader import LoadConfig, sample_rig

    nusc = open_nuscenes(dataroot, version)
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    rig, _ = sample_rig(nusc, sample, LoadConfig(image_size=tuple(image_size)))
    return rig

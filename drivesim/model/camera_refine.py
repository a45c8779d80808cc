"""Camera frames of the predicted world: the ego-warped last frame, corrected by a network that
sees the predicted agent layout rendered into each view.

The ego-warp baseline (`drivesim.model.ego_warp`) already moves the static scene by the ego's
motion; what it cannot do is move the traffic: a car that drove on is left smeared where it was, a
car that came closer is not drawn. The camera refiner is given, per view and future keyframe:
- the warped last frame and where the warp found a source;
- the predicted layout of that keyframe rendered into the view (`render_boxes`: per pixel, whether
  a ray meets an agent box, its inverse depth and the agent's class) - where agents must be drawn;
- the last keyframe's boxes, held where they were and seen from the new pose - where the warp
  painted agents that have since moved (to be filled with background);
- the horizon and which camera it is;
and predicts the frame as a correction of the warp (a small U-Net shared by the six views). It is
trained on true frames and true future boxes; it runs on whatever layout it is given: the
behaviour model's agents in closed loop, constant-velocity boxes or the true boxes in eval-wm.

Shapes: views (..., 6, h, w, 3) uint8 crops; layouts (..., A, 8) packed rows in the target
keyframe's ego frame; poses (..., 3) of the target ego in the last keyframe's frame.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from drivesim.data.types import AgentLayout, CameraRig
from drivesim.model.ego_warp import crop_offset, pixel_points, pose_points, project, warp_views

CLASSES = 4
"""Agent classes rendered as one-hot channels (vehicle, pedestrian, cyclist, obstacle)."""


@dataclasses.dataclass(frozen=True)
class CameraRefineConfig:
    frame_size: tuple[int, int] = (64, 36)
    image_size: tuple[int, int] = (64, 32)
    width: int = 16
    """Channels at full resolution (x2, x4 at the coarser levels)."""
    max_range: float = 60.0
    """The ego warp's far-scene distance (m)."""
    horizon: int = 6
    """Keyframes it is trained to reach (the input's horizon channel is k / horizon)."""
    layout: bool = True
    """Whether it sees the layout (False: the ablation, a learned correction of the warp alone)."""


def pixel_rays(rig: CameraRig, image_size, offset):
    """(origin (C, 1, 1, 3), direction (C, h, w, 3)) of every crop pixel's ray in the ego frame
    (directions scaled so that the ray reaches the far cylinder at 1: any positive scale works)."""
    far = pixel_points(rig, image_size, offset, max_range=1e6)
    origin = jnp.asarray(rig.translation, jnp.float32)[:, None, None, :]
    d = far - origin
    return origin, d / jnp.linalg.norm(d, axis=-1, keepdims=True)


def render_boxes(origin, direction, layout):
    """Ray-cast agent boxes (standing on z = 0) into the views.

    Args:
      origin: (C, 1, 1, 3), direction: (C, h, w, 3) unit rays in the ego frame.
      layout: (A, 8) packed rows in the same ego frame.

    Returns:
      (C, h, w, 2 + CLASSES) float32: hit, inverse depth (1/m) of the nearest box, its class
      one-hot.
    """
    lay = AgentLayout.from_packed(layout)
    c, s = jnp.cos(lay.yaw), jnp.sin(lay.yaw)  # (A,)
    half = 0.5 * lay.size  # (A, 3)
    centre = jnp.concatenate([lay.xy, half[:, 2:3]], -1)  # (A, 3): boxes stand on the ground
    o = origin[..., None, :] - centre  # (C, 1, 1, A, 3)
    d = direction[..., None, :]  # (C, h, w, 1, 3)

    def to_box(v):
        along = c * v[..., 0] + s * v[..., 1]
        return jnp.stack([along, -s * v[..., 0] + c * v[..., 1], jnp.broadcast_to(v[..., 2], along.shape)], -1)

    ob, db = to_box(o), to_box(d)
    safe = jnp.where(jnp.abs(db) < 1e-6, 1e-6, db)
    t1, t2 = (-half - ob) / safe, (half - ob) / safe
    near = jnp.max(jnp.minimum(t1, t2), -1)
    far = jnp.min(jnp.maximum(t1, t2), -1)
    hit = lay.valid & (near <= far) & (near > 0.5)  # (C, h, w, A)
    depth = jnp.where(hit, near, jnp.inf)
    nearest = jnp.argmin(depth, -1)
    best = jnp.min(depth, -1)
    any_hit = jnp.isfinite(best)
    cls = jax.nn.one_hot(jnp.clip(lay.category[nearest], 0, CLASSES - 1), CLASSES) * any_hit[..., None]
    inv = jnp.where(any_hit, 1.0 / jnp.maximum(best, 1.0), 0.0)
    return jnp.concatenate([any_hit[..., None].astype(jnp.float32), inv[..., None], cls], -1)


def moved_layout(layout, pose):
    """(A, 8) boxes of an earlier ego frame, held in place and given in the frame of an ego at
    `pose` (x, y, yaw) of that earlier frame."""
    lay = AgentLayout.from_packed(layout)
    c, s = jnp.cos(pose[2]), jnp.sin(pose[2])
    rx, ry = lay.xy[..., 0] - pose[0], lay.xy[..., 1] - pose[1]
    xy = jnp.stack([c * rx + s * ry, -s * rx + c * ry], -1)
    return AgentLayout(xy=xy, yaw=lay.yaw - pose[2], size=lay.size, category=lay.category, valid=lay.valid).packed()


class _Block(nnx.Module):
    def __init__(self, cin, cout, *, rngs):
        self.a = nnx.Conv(cin, cout, (3, 3), padding="SAME", rngs=rngs)
        self.b = nnx.Conv(cout, cout, (3, 3), padding="SAME", rngs=rngs)
        self.na = nnx.GroupNorm(cout, num_groups=8, rngs=rngs)
        self.nb = nnx.GroupNorm(cout, num_groups=8, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.gelu(self.na(self.a(x)))
        return jax.nn.gelu(self.nb(self.b(x)))


class CameraRefiner(nnx.Module):
    """The layout-conditioned correction of the ego warp (see the module docstring)."""

    def __init__(self, cfg: CameraRefineConfig, rig: CameraRig | None = None, *, rngs: nnx.Rngs):
        self.cfg = cfg
        W = cfg.width
        cin = 3 + 1 + 1 + 6 + (2 + CLASSES + 2 if cfg.layout else 0)
        self.down0 = _Block(cin, W, rngs=rngs)
        self.down1 = _Block(W, 2 * W, rngs=rngs)
        self.mid = _Block(2 * W, 4 * W, rngs=rngs)
        self.up1 = _Block(4 * W + 2 * W, 2 * W, rngs=rngs)
        self.up0 = _Block(2 * W + W, W, rngs=rngs)
        self.out = nnx.Conv(W, 3, (3, 3), padding="SAME", rngs=rngs, kernel_init=nnx.initializers.zeros)
        if rig is None:
            from drivesim.synth.rig import nuscenes_rig

            cams = nuscenes_rig(cfg.frame_size[0])
            rig = CameraRig(
                *(np.stack([getattr(c, f) for c in cams]) for f in ("intrinsics", "rotation", "translation"))
            )
        self.rig_intrinsics = nnx.Variable(jnp.asarray(rig.intrinsics, jnp.float32))
        self.rig_rotation = nnx.Variable(jnp.asarray(rig.rotation, jnp.float32))
        self.rig_translation = nnx.Variable(jnp.asarray(rig.translation, jnp.float32))

    def rig(self) -> CameraRig:
        return CameraRig(self.rig_intrinsics[...], self.rig_rotation[...], self.rig_translation[...])

    def inputs(self, last, pose, layout_last, layout_target, k):
        """One clip, one future keyframe -> (reference (C, h, w, 3) in [-1, 1], features (C, h, w, cin)).

        last (C, h, w, 3) uint8; pose (3,); layouts (A, 8); k, the keyframe's index from 1."""
        cfg = self.cfg
        rig = self.rig()
        offset = crop_offset(cfg.frame_size, cfg.image_size)
        points = pixel_points(rig, cfg.image_size, offset, cfg.max_range)
        x = last.astype(jnp.float32) / 127.5 - 1.0
        ref = warp_views(x, points, pose[None], rig, offset)[0]
        w, h = cfg.image_size
        _, _, vis = project(pose_points(points, pose), rig, offset, (w, h))
        found = vis.any(-1).astype(jnp.float32)[..., None]
        C = x.shape[0]
        feats = [ref, found, jnp.full(found.shape, k / cfg.horizon, jnp.float32),
                 jnp.broadcast_to(jnp.eye(C)[:, None, None, :], found.shape[:3] + (C,))]  # fmt: skip
        if cfg.layout:
            origin, direction = pixel_rays(rig, cfg.image_size, offset)
            feats.append(render_boxes(origin, direction, layout_target))
            feats.append(render_boxes(origin, direction, moved_layout(layout_last, pose))[..., :2])
        return ref, jnp.concatenate(feats, -1)

    def correct(self, ref, feats):
        """(..., h, w, 3) reference, (..., h, w, cin) features -> (..., h, w, 3) frame in [-1, 1]."""
        lead = ref.shape[:-3]
        x = feats.reshape((-1,) + feats.shape[-3:])
        d0 = self.down0(x)
        d1 = self.down1(nnx.avg_pool(d0, (2, 2), (2, 2)))
        m = self.mid(nnx.avg_pool(d1, (2, 2), (2, 2)))
        u1 = self.up1(jnp.concatenate([jax.image.resize(m, d1.shape[:3] + (m.shape[-1],), "nearest"), d1], -1))
        u0 = self.up0(jnp.concatenate([jax.image.resize(u1, d0.shape[:3] + (u1.shape[-1],), "nearest"), d0], -1))
        out = ref.reshape((-1,) + ref.shape[-3:]) + self.out(u0)
        return jnp.clip(out, -1.0, 1.0).reshape(lead + out.shape[1:])

    def __call__(self, last, poses, layout_last, layouts):
        """The frames of a clip's future keyframes.

        Args:
          last: (C, h, w, 3) uint8, the last context keyframe's views.
          poses: (F, 3) each future ego's pose in the last keyframe's frame.
          layout_last: (A, 8) the last keyframe's boxes; layouts: (F, A, 8) each future keyframe's.

        Returns:
          (F, C, h, w, 3) uint8.
        """
        ks = jnp.arange(1, poses.shape[0] + 1, dtype=jnp.float32)
        ref, feats = jax.vmap(lambda p, lay, k: self.inputs(last, p, layout_last, lay, k))(poses, layouts, ks)
        out = self.correct(ref, feats)
        return jnp.clip(jnp.round((out + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def camera_refine_loss(model: CameraRefiner, ref, feats, target):
    """L1 of the refined frame against the true one, beside the warp's own scores, on a batch of
    single future keyframes: ref (B, C, h, w, 3) and feats (B, C, h, w, cin) from
    `CameraRefiner.inputs`, target (B, C, h, w, 3) uint8."""
    out = model.correct(ref, feats)
    y = target.astype(jnp.float32) / 127.5 - 1.0
    loss = jnp.abs(out - y).mean()
    mse = jnp.mean((out - y) ** 2)
    mse_ref = jnp.mean((ref - y) ** 2)
    psnr = lambda m: 10 * jnp.log10(4.0 / jnp.maximum(m, 1e-10))  # noqa: E731  (range 2: [-1, 1])
    return loss, {"loss": loss, "warp_l1": jnp.abs(ref - y).mean(), "psnr": psnr(mse), "warp_psnr": psnr(mse_ref)}

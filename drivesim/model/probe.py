"""The perception probe: six camera views -> BEV agents and drivable area, to judge generated frames.

MagicDrive and DriveArena judge generated views by what a perception network reads from them. The
probe is drivesim's: a small network trained on true rendered frames only, then frozen and shipped
(`data/probe_small.npz`); `drivesim eval-wm` runs it on generated frames, on the ego-warp
baseline's, and on the true frames, and scores each read against the true BEV.

Architecture (Simple-BEV's parameter-free lift: no depth prediction):
- a convolutional encoder shared by the six views: (h, w) crops -> features at half resolution;
- the lift: every cell of a coarse BEV grid (`lift_cells` square, `2 * extent / lift_cells` m)
  at each of `heights` is projected into the six cameras of the probe's rig (fixed buffers: the
  geometry it was trained with); the features there are sampled (bilinear) and averaged over the
  cameras that see the point, with the number of cameras as an extra channel;
- a BEV network on the stacked heights (plus the cells' coordinates), upsampled to the scoring grid
  (`bev_size` cells of 1 m, the world model's), with two logits per cell: agent (occupancy classes
  5..8) and drivable area (classes 1, 3, 4: road, crossing, lane marking; a cell under an agent is
  an agent).

Shapes: images (..., 6, h, w, 3) uint8 (the model's centre crops) -> logits (..., G, G, 2).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from drivesim.data.classes import OCC_CROSSING, OCC_DRIVABLE, OCC_LANE_MARKING, OCC_OBSTACLE, OCC_VEHICLE
from drivesim.data.types import CameraRig
from drivesim.model.ego_warp import crop_offset, project

AGENT, DRIVABLE = 0, 1
"""Channels of the probe's output."""


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """The probe's shape and the view geometry it reads."""

    frame_size: tuple[int, int] = (64, 36)
    """(W0, H0) of the cache frames the rig's intrinsics are for."""
    image_size: tuple[int, int] = (64, 32)
    """(w, h) of the centre crops it reads (the world model's views)."""
    bev_size: int = 80
    """Output cells per side (1 m each: the world model's scoring grid)."""
    extent: float = 40.0
    """Half-size of the BEV (m)."""
    lift_cells: int = 40
    """Cells per side of the grid the features are lifted onto."""
    heights: tuple[float, ...] = (0.2, 0.9, 1.6)
    """Heights (m above the ground) sampled above each lifted cell."""
    width: int = 32
    """Feature channels of the encoder."""
    bev_width: int = 32
    """Channels of the BEV network."""
    agent_weight: float = 4.0
    """Weight of agent cells in the agent loss (they are a few percent of the grid)."""

    def validate(self) -> ProbeConfig:
        if self.bev_size % self.lift_cells:
            raise ValueError(f"bev_size {self.bev_size} must be a multiple of lift_cells {self.lift_cells}")
        return self


def targets(grid):
    """(..., G, G) occupancy classes -> (..., G, G, 2) float32 agent / drivable labels."""
    agent = (grid >= OCC_VEHICLE) & (grid <= OCC_OBSTACLE)
    drivable = (grid == OCC_DRIVABLE) | (grid == OCC_CROSSING) | (grid == OCC_LANE_MARKING)
    return jnp.stack([agent, drivable], -1).astype(jnp.float32)


def lift_cell_centres(cfg: ProbeConfig) -> np.ndarray:
    """(L, L, 2) ego-frame (x, y) of the lift grid's cells: row 0 is forward, column 0 left (the
    occupancy grid convention)."""
    step = 2 * cfg.extent / cfg.lift_cells
    c = cfg.extent - (np.arange(cfg.lift_cells) + 0.5) * step
    x, y = np.meshgrid(c, c, indexing="ij")
    return np.stack([x, y], -1).astype(np.float32)


class _Conv(nnx.Module):
    def __init__(self, cin, cout, stride=1, kernel=3, *, rngs):
        self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding="SAME", rngs=rngs)
        self.norm = nnx.GroupNorm(cout, num_groups=8, rngs=rngs)

    def __call__(self, x):
        return jax.nn.gelu(self.norm(self.conv(x)))


class Probe(nnx.Module):
    """The perception probe (see the module docstring)."""

    def __init__(self, cfg: ProbeConfig, rig: CameraRig | None = None, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        C = cfg.width
        self.enc = nnx.List([_Conv(3, C, 2, rngs=rngs), _Conv(C, C, rngs=rngs),
                             _Conv(C, 2 * C, 2, rngs=rngs), _Conv(2 * C, 2 * C, rngs=rngs)])  # fmt: skip
        self.fuse = _Conv(3 * C, C, kernel=1, rngs=rngs)
        nh = len(cfg.heights)
        B = cfg.bev_width
        self.bev_in = _Conv(nh * (C + 1) + 2, B, rngs=rngs)
        self.bev = nnx.List([_Conv(B, B, rngs=rngs) for _ in range(3)])
        self.up = _Conv(B, B // 2, rngs=rngs)
        self.head = nnx.Conv(B // 2, 2, (3, 3), padding="SAME", rngs=rngs)
        if rig is None:
            from drivesim.synth.rig import nuscenes_rig

            cams = nuscenes_rig(cfg.frame_size[0])
            rig = CameraRig(
                np.stack([c.intrinsics for c in cams]), np.stack([c.rotation for c in cams]),
                np.stack([c.translation for c in cams]),
            )  # fmt: skip
        self.rig_intrinsics = nnx.Variable(jnp.asarray(rig.intrinsics, jnp.float32))
        self.rig_rotation = nnx.Variable(jnp.asarray(rig.rotation, jnp.float32))
        self.rig_translation = nnx.Variable(jnp.asarray(rig.translation, jnp.float32))

    def rig(self) -> CameraRig:
        return CameraRig(self.rig_intrinsics[...], self.rig_rotation[...], self.rig_translation[...])

    def encode(self, images):
        """(N, C, h, w, 3) uint8 -> (N, C, h/2, w/2, width) features."""
        x = images.astype(jnp.float32) / 127.5 - 1.0
        lead = x.shape[:2]
        x = x.reshape((-1,) + x.shape[2:])
        half = self.enc[1](self.enc[0](x))
        quarter = self.enc[3](self.enc[2](half))
        up = jax.image.resize(quarter, half.shape[:3] + (quarter.shape[-1],), "bilinear")
        f = self.fuse(jnp.concatenate([half, up], -1))
        return f.reshape(lead + f.shape[1:])

    def lift(self, feats):
        """(N, C, h', w', F) -> (N, L, L, heights * (F + 1)) features on the lift grid."""
        cfg = self.cfg
        w, h = cfg.image_size
        hf, wf = feats.shape[2:4]
        centres = jnp.asarray(lift_cell_centres(cfg))
        outs = []
        for z in cfg.heights:
            pts = jnp.concatenate([centres, jnp.full(centres.shape[:2] + (1,), z, jnp.float32)], -1)  # (L, L, 3)
            row, col, vis = project(pts, self.rig(), crop_offset(cfg.frame_size, cfg.image_size), (w, h))  # (L, L, C)
            # crop pixel -> feature cell (features at half resolution: centre of cell k at pixel 2k + 0.5)
            fr = jnp.clip((row - 0.5) * hf / h, 0, hf - 1)
            fc = jnp.clip((col - 0.5) * wf / w, 0, wf - 1)
            r0 = jnp.clip(jnp.floor(fr).astype(jnp.int32), 0, hf - 2)
            c0 = jnp.clip(jnp.floor(fc).astype(jnp.int32), 0, wf - 2)
            ar, ac = (fr - r0)[..., None], (fc - c0)[..., None]
            cam = jnp.arange(feats.shape[1])[None, None, :]

            def at(rr, cc, cam=cam):
                return feats[:, cam, rr, cc]  # (N, L, L, C, F)

            s = (at(r0, c0) * (1 - ac) + at(r0, c0 + 1) * ac) * (1 - ar) + (
                at(r0 + 1, c0) * (1 - ac) + at(r0 + 1, c0 + 1) * ac
            ) * ar
            m = vis.astype(jnp.float32)[None, ..., None]  # (1, L, L, C, 1)
            n = m.sum(-2)
            mean = (s * m).sum(-2) / jnp.maximum(n, 1.0)
            outs += [mean, jnp.broadcast_to(n / 2.0, mean.shape[:-1] + (1,))]
        return jnp.concatenate(outs, -1)

    def __call__(self, images):
        """(..., 6, h, w, 3) uint8 views -> (..., G, G, 2) logits (agent, drivable)."""
        cfg = self.cfg
        lead = images.shape[:-4]
        x = images.reshape((-1,) + images.shape[-4:])
        b = self.lift(self.encode(x))
        coords = jnp.broadcast_to(jnp.asarray(lift_cell_centres(cfg)) / cfg.extent, b.shape[:3] + (2,))
        b = self.bev_in(jnp.concatenate([b, coords], -1))
        for i, layer in enumerate(self.bev):
            b = b + layer(b) if i else layer(b)
        G = cfg.bev_size
        b = jax.image.resize(b, (b.shape[0], G, G, b.shape[-1]), "bilinear")
        out = self.head(self.up(b))
        return out.reshape(lead + out.shape[1:])


@functools.lru_cache(maxsize=4)
def _reader(graphdef):
    """The probe of this graph, jitted over a chunk of six-view sets (compiled once per shape)."""
    return jax.jit(lambda w, x: nnx.merge(graphdef, w)(x))


def read_views(model: Probe, images, chunk: int = 8) -> np.ndarray:
    """The probe's logits (..., G, G, 2) of any stack of six-view sets (..., 6, h, w, 3) uint8,
    jitted, `chunk` sets at a time (for pictures and reports; host arrays out). One compile per
    image size and chunk, kept across calls."""
    images = np.asarray(images)
    lead = images.shape[:-4]
    flat = images.reshape((-1,) + images.shape[-4:])
    n = len(flat)
    pad = (-n) % chunk
    flat = np.concatenate([flat, np.zeros((pad,) + flat.shape[1:], flat.dtype)])
    g, w = nnx.split(model)
    run = _reader(g)
    out = np.concatenate([np.asarray(run(w, flat[i : i + chunk])) for i in range(0, len(flat), chunk)])
    return out[:n].reshape(lead + out.shape[1:])


def probe_loss(model: Probe, images, grid):
    """Weighted binary cross-entropy of both channels, and their IoUs at 0.5.

    images (N, 6, h, w, 3) uint8; grid (N, G, G) occupancy classes (the pooled 1 m grid)."""
    logits = model(images)
    y = targets(grid)
    bce = optax.sigmoid_binary_cross_entropy(logits, y)
    w = jnp.stack([1.0 + (model.cfg.agent_weight - 1.0) * y[..., AGENT], jnp.ones_like(y[..., AGENT])], -1)
    loss = (bce * w).mean()
    pred = logits > 0
    metrics = {"loss": loss}
    for name, ch in (("agent_iou", AGENT), ("drivable_iou", DRIVABLE)):
        t = y[..., ch] > 0.5
        inter = (pred[..., ch] & t).sum()
        union = (pred[..., ch] | t).sum()
        metrics[name] = inter / jnp.maximum(union, 1)
    return loss, metrics


class ProbeIou:
    """Dataset-level IoU of the probe's reads against the true grids, per channel (intersections and
    unions summed over everything added)."""

    def __init__(self):
        self.inter = np.zeros(2)
        self.union = np.zeros(2)

    def update(self, logits, grid) -> None:
        """logits (..., G, G, 2); grid (..., G, G) occupancy classes."""
        pred = np.asarray(logits) > 0
        t = np.asarray(targets(jnp.asarray(grid))) > 0.5
        self.inter += (pred & t).reshape(-1, 2).sum(0)
        self.union += (pred | t).reshape(-1, 2).sum(0)

    def result(self) -> dict:
        iou = np.where(self.union > 0, self.inter / np.maximum(self.union, 1), np.nan)
        return {"agent_iou": float(iou[AGENT]), "drivable_iou": float(iou[DRIVABLE])}

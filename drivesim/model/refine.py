"""Sharp BEV from coarse latents: the occupancy decoder, refined by the last known grid.

The BEV latents are 8x coarser than the 1 m grid, so the tokenizer alone cannot keep thin lane
markings, crossings or 1-2 cell pedestrians and obstacles (its reconstruction mIoU is ~0.47),
however well the dynamics predict. But most of the next grid is already known: the map and the
agents of the last grid, moved by the ego motion the model is told anyway. The refiner is a small
U-Net that sees both, at full resolution:

- the decoder's class probabilities of the predicted latents (what the dynamics say changed:
  where the agents went, what came into view);
- the reference: the one-hot grid of an anchor frame (the last context frame; in long rollouts
  the model's own grid, re-anchored every `cfg.refine_gap` keyframes), resampled bilinearly into
  the decoded frame by the ego's pose relative to the anchor (`warp_bev`; zeros where the anchor
  did not see).

It outputs a correction added to the decoder's logits (zero at initialisation: an untrained
refiner is the plain decoder). Trained (stage 3 of `drivesim train`) on latents the trained
dynamics predicted for training clips, and on encoded true latents, against the true grids; the
tokenizers and the dynamics stay frozen. As FIERY-style BEV forecasters warp past features by the
ego motion, this is the ego-motion compensation done at the grid's resolution rather than the
latents' (`motion_warp` does it in the dynamics at 8 m cells).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from drivesim.model.config import WorldModelConfig
from drivesim.model.dynamics import warp_bev
from drivesim.model.tokenizers import Down, Up


def compose_pose(pose, motion):
    """Pose (3,) (x, y, yaw) of frame j in an anchor frame, and the motion (3,) from frame j to
    j + 1 (in frame j) -> the pose (3,) of frame j + 1 in the anchor frame. Batched over leading axes."""
    x, y, yaw = pose[..., 0], pose[..., 1], pose[..., 2]
    dx, dy, dyaw = motion[..., 0], motion[..., 1], motion[..., 2]
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    return jnp.stack([x + c * dx - s * dy, y + s * dx + c * dy, yaw + dyaw], axis=-1)


def reference(grid, pose, cfg: WorldModelConfig):
    """The anchor's grid seen from a later frame.

    Args:
      grid: (..., G, G) int class ids of the anchor frame (1 m cells, `prepare_occupancy`).
      pose: (..., 3) the later frame's ego pose (x, y m, yaw rad) in the anchor's ego frame.
    Returns:
      (..., G, G, classes) float: the anchor's one-hot classes at the later frame's cells
      (bilinear; all zero where the anchor did not see).
    """
    onehot = jax.nn.one_hot(grid, cfg.num_classes)
    lead = grid.shape[:-2]
    flat = jax.vmap(warp_bev)(onehot.reshape((-1,) + onehot.shape[-3:]), pose.reshape(-1, 3))
    return flat.reshape(lead + flat.shape[1:])


class OccRefiner(nnx.Module):
    """A U-Net: decoder logits (N, G, G, C) + reference (N, G, G, C) -> refined logits (N, G, G, C)."""

    def __init__(self, cfg: WorldModelConfig, *, rngs: nnx.Rngs):
        w = cfg.refine_channels
        C = cfg.num_classes
        self.stem = nnx.Conv(2 * C, w[0], (3, 3), padding="SAME", rngs=rngs)
        self.down = nnx.List([Down(w[i], w[i + 1], rngs=rngs) for i in range(len(w) - 1)])
        self.mid = nnx.Conv(w[-1], w[-1], (3, 3), padding="SAME", rngs=rngs)
        self.up = nnx.List([Up(w[i + 1], w[i], rngs=rngs) for i in reversed(range(len(w) - 1))])
        self.skip = nnx.List([nnx.Conv(2 * w[i], w[i], (1, 1), rngs=rngs) for i in reversed(range(len(w) - 1))])
        self.head = nnx.Conv(w[0], C, (3, 3), padding="SAME", kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, logits, ref):
        x = nnx.silu(self.stem(jnp.concatenate([jax.nn.softmax(logits, axis=-1), ref], axis=-1)))
        skips = []
        for layer in self.down:
            skips.append(x)
            x = layer(x)
        x = x + self.mid(nnx.silu(x))
        for up, skip, s in zip(self.up, self.skip, reversed(skips), strict=True):
            x = skip(jnp.concatenate([up(x), s], axis=-1))
        return logits + self.head(nnx.silu(x))


class Anchor(NamedTuple):
    """The reference of a rollout: the anchor grid, the current frame's pose in the anchor's frame
    and the keyframes since the anchor (batch by leading axes).

    grid: (..., G, G) int32; pose: (..., 3) float32; age: (...) int32.
    """

    grid: jax.Array
    pose: jax.Array
    age: jax.Array

    @staticmethod
    def at(grid) -> Anchor:
        """An anchor at the current frame (the last context keyframe)."""
        lead = grid.shape[:-2]
        return Anchor(jnp.asarray(grid, jnp.int32), jnp.zeros(lead + (3,), jnp.float32), jnp.zeros(lead, jnp.int32))

    def moved(self, motion) -> Anchor:
        """The anchor after the ego moves by raw `motion` (..., 3) into the next keyframe."""
        return Anchor(self.grid, compose_pose(self.pose, motion), self.age + 1)

    def renewed(self, grid, cfg: WorldModelConfig) -> Anchor:
        """After decoding `grid` at the current frame: re-anchor on it once the anchor is
        `cfg.refine_gap` keyframes old (the refiner was trained on gaps up to that)."""
        old = self.age >= cfg.refine_gap
        fresh = Anchor.at(grid)
        pick = lambda a, b: jnp.where(old.reshape(old.shape + (1,) * (a.ndim - old.ndim)), b, a)  # noqa: E731
        return Anchor(pick(self.grid, fresh.grid), pick(self.pose, fresh.pose), pick(self.age, fresh.age))


def decode_rollout(model, occ, last_grid, motions):
    """Decode a rollout's BEV frame by frame (one `lax.scan`), each refined with the anchor.

    Args:
      model: the `WorldModel` (without a refiner: the plain decoder).
      occ: (B, F, g, g, Co) normalised latents of the generated frames.
      last_grid: (B, G, G) int the last context grid (the first anchor).
      motions: (B, F, 3) raw ego motion into each generated frame (dx, dy m, dyaw rad).
    Returns:
      (B, F, G, G) int32 class ids.
    """
    cfg = model.cfg

    def one(anchor, x):
        z, m = x
        anchor = anchor.moved(m)
        grid = model.decode_occupancy(z, anchor)
        return anchor.renewed(grid, cfg), grid

    _, grids = jax.lax.scan(one, Anchor.at(last_grid), (jnp.swapaxes(occ, 0, 1), jnp.swapaxes(motions, 0, 1)))
    return jnp.swapaxes(grids, 0, 1)

"""Sharp BEV from coarse latents: the occupancy decoder, refined with a physical reference.

The BEV latents are 8x coarser than the 1 m grid, so the tokenizer alone cannot keep thin lane
markings, crossings or 1-2 cell pedestrians and obstacles (its reconstruction mIoU is ~0.47),
however well the dynamics predict. But most of the next grid follows from what is known: the map
of the last grid, moved by the ego motion the model is told anyway, and the agents of the last
keyframes, moved on at their last velocity. The refiner is a small U-Net that sees, at full
resolution:

- the decoder's class probabilities of the predicted latents (what the dynamics say: where the
  agents went, what came into view);
- the reference (`reference`): the constant-velocity forecast of this frame, as the physics
  baseline (`drivesim.model.baselines.constant_velocity_occupancy`) makes it — the anchor's map
  classes (its agent cells unknown) resampled by the ego's pose since the anchor (nearest cell,
  at the cache's 0.5 m, then pooled as the truth is), with the anchor's agent boxes painted where
  their last velocity takes them; or, layout-guided, the given boxes of this frame; all-zero where
  the anchor did not see;
- the reference's age (keyframes since the anchor, over `cfg.refine_gap`): how far to trust it.

The anchor (`Anchor`) is the last context keyframe with its agents' boxes and velocities (from the
last two context keyframes); in long rollouts it is re-anchored on the model's own grid every
`cfg.refine_gap` keyframes, its agents carried on at constant velocity. The refiner outputs a
correction (zero at initialisation) to a prior: the log of the reference and the decoder's
probabilities mixed (`cfg.refine_prior` the reference's weight), so an untrained refiner follows
the reference where it knows a class and the decoder elsewhere. Trained (stage 3 of `drivesim train`) on latents the trained dynamics
predicted for training clips (free-running and layout-guided) against the true grids; the
tokenizers and the dynamics stay frozen. So the model forecasts as a learned correction
of physics: it can keep what constant velocity gets right (the map in view, agents that keep
going) and fix what it gets wrong (agents that brake, turn or yield, what comes into view).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from drivesim.data.classes import OCC_CROSSING
from drivesim.data.occupancy import OccupancyConfig, paint_boxes
from drivesim.data.types import AgentLayout
from drivesim.model.config import OCC_EXTENT, WorldModelConfig
from drivesim.model.tokenizers import Down, Up

KEYFRAME_DT = 0.5
"""Seconds between keyframes (2 Hz)."""
AGENT_SLOTS = 64
"""Agent rows of an anchor without agents (the clip cache's slots)."""
FIRST_AGENT_CLASS = 5
"""Occupancy classes from this one on are agents (`drivesim.data.classes`)."""
FINE = OccupancyConfig(extent=OCC_EXTENT, resolution=0.5)
"""The cache's grid (160 x 160 at 0.5 m), where the reference is made before pooling."""


def compose_pose(pose, motion):
    """Pose (3,) (x, y, yaw) of frame j in an anchor frame, and the motion (3,) from frame j to
    j + 1 (in frame j) -> the pose (3,) of frame j + 1 in the anchor frame. Batched over leading axes."""
    x, y, yaw = pose[..., 0], pose[..., 1], pose[..., 2]
    dx, dy, dyaw = motion[..., 0], motion[..., 1], motion[..., 2]
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    return jnp.stack([x + c * dx - s * dy, y + s * dx + c * dy, yaw + dyaw], axis=-1)


def into_frame(xy, pose):
    """(..., N, 2) points of an earlier frame, in the frame at `pose` (..., 3) (given in the earlier
    frame): R(-yaw) (p - (x, y))."""
    c, s = jnp.cos(pose[..., 2])[..., None], jnp.sin(pose[..., 2])[..., None]
    rx, ry = xy[..., 0] - pose[..., 0, None], xy[..., 1] - pose[..., 1, None]
    return jnp.stack([c * rx + s * ry, -s * rx + c * ry], axis=-1)


def agent_velocity(prev: AgentLayout, last: AgentLayout, motion_prev, dt: float = KEYFRAME_DT):
    """Constant-velocity agents from the last two context keyframes (as the physics baseline).

    Args:
      prev, last: agent layouts (..., A) at the previous and the last keyframe, each in its own
        ego frame (the same slot is the same agent).
      motion_prev: (..., 3) ego motion from the previous keyframe to the last one.
    Returns:
      (..., A, 2) velocity (m/s) in the last keyframe's ego frame; zero for agents not valid in both.
    """
    prev, last = AgentLayout.from_packed(prev), AgentLayout.from_packed(last)
    p = into_frame(prev.xy, motion_prev)
    moving = prev.valid & last.valid
    return jnp.where(moving[..., None], (last.xy - p) / dt, 0.0)


def pool(grid, cfg: WorldModelConfig):
    """(..., 160, 160) class ids (-1: unknown) -> (..., G, G) by max: class ids are ordered by
    priority, so agents win over markings over road (the truth is pooled so, through
    `drivesim.model.world.prepare_occupancy`)."""
    f = cfg.occ_downsample
    *lead, n, m = grid.shape
    return grid.reshape(*lead, n // f, f, m // f, f).max(axis=(-3, -1))


def fill_under_agents(grid, steps: int = 6):
    """(H, W) int map classes with -1 under agents -> the unknown cells within `steps` cells of a
    free / drivable / walkway / crossing cell take the class of one of the nearest (grown one cell
    per step, as the physics baseline fills them from the nearest such cell; lane markings are thin
    lines and do not grow)."""
    n = grid.shape[-1]

    def shift(g, di, dj):
        padded = jnp.pad(g, 1, constant_values=-1)
        return padded[1 + di : 1 + di + n, 1 + dj : 1 + dj + n]

    def grow(g, _):
        out = g
        for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            c = shift(g, di, dj)
            out = jnp.where((out < 0) & (c >= 0) & (c <= OCC_CROSSING), c, out)
        return out, None

    return jax.lax.scan(grow, grid, None, length=steps)[0]


def warp_nearest(grid, pose, fill: int = -1):
    """(H, W) int grid of an anchor frame (at `FINE`'s cells) seen from a frame at `pose` (3,) in
    the anchor's frame: the anchor cell under each cell centre, `fill` outside."""
    n = grid.shape[-1]
    r = 2 * OCC_EXTENT / n
    c = OCC_EXTENT - (jnp.arange(n) + 0.5) * r
    x, y = jnp.meshgrid(c, c, indexing="ij")
    cs, sn = jnp.cos(pose[2]), jnp.sin(pose[2])
    row = jnp.floor((OCC_EXTENT - (cs * x - sn * y + pose[0])) / r).astype(jnp.int32)
    col = jnp.floor((OCC_EXTENT - (sn * x + cs * y + pose[1])) / r).astype(jnp.int32)
    inside = (row >= 0) & (row < n) & (col >= 0) & (col < n)
    return jnp.where(inside, grid[jnp.clip(row, 0, n - 1), jnp.clip(col, 0, n - 1)], fill)


class OccRefiner(nnx.Module):
    """A U-Net: decoder logits (N, G, G, C) + reference (N, G, G, C + 1) (`reference`) -> refined
    logits (N, G, G, C)."""

    def __init__(self, cfg: WorldModelConfig, *, rngs: nnx.Rngs):
        w = cfg.refine_channels
        C = cfg.num_classes
        self.stem = nnx.Conv(2 * C + 1, w[0], (3, 3), padding="SAME", rngs=rngs)
        self.down = nnx.List([Down(w[i], w[i + 1], rngs=rngs) for i in range(len(w) - 1)])
        self.mid = nnx.Conv(w[-1], w[-1], (3, 3), padding="SAME", rngs=rngs)
        self.up = nnx.List([Up(w[i + 1], w[i], rngs=rngs) for i in reversed(range(len(w) - 1))])
        self.skip = nnx.List([nnx.Conv(2 * w[i], w[i], (1, 1), rngs=rngs) for i in reversed(range(len(w) - 1))])
        self.head = nnx.Conv(w[0], C, (3, 3), padding="SAME", kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.ref_weight = cfg.refine_prior

    def __call__(self, logits, ref):
        probs = jax.nn.softmax(logits, axis=-1)
        x = nnx.silu(self.stem(jnp.concatenate([probs, ref], axis=-1)))
        skips = []
        for layer in self.down:
            skips.append(x)
            x = layer(x)
        x = x + self.mid(nnx.silu(x))
        for up, skip, s in zip(self.up, self.skip, reversed(skips), strict=True):
            x = skip(jnp.concatenate([up(x), s], axis=-1))
        # the prior: the decoder and the reference averaged (the reference decides where it knows
        # a class, the decoder elsewhere); the U-Net learns the correction to it
        r = self.ref_weight
        prior = jnp.log(r * ref[..., : probs.shape[-1]] + (1 - r) * probs + 1e-4)
        return prior + self.head(nnx.silu(x))


class Anchor(NamedTuple):
    """The reference of a rollout (batch by leading axes):

    grid: (..., 160, 160) int32 the anchor frame's classes at the cache's 0.5 m cells;
    pose: (..., 3) float32 the current frame's pose in the anchor's frame;
    age: (...) int32 keyframes since the anchor;
    agents: `AgentLayout` (..., A) the anchor's agents in its frame (`agent_velocity`'s);
    velocity: (..., A, 2) float32 their velocities (m/s) in the anchor's frame;
    fine: (...) bool whether the grid is a 0.5 m one (a context grid, resampled at 0.5 m and
      pooled as the truth is) or a model grid at 1 m, upsampled (re-anchored: resampled at its own
      1 m cells, since pooling it again would grow every class over its lower neighbours by a
      cell at each re-anchoring).
    """

    grid: jax.Array
    pose: jax.Array
    age: jax.Array
    agents: AgentLayout
    velocity: jax.Array
    fine: jax.Array

    @staticmethod
    def at(grid, agents=None, velocity=None) -> Anchor:
        """An anchor at the current frame (the last context keyframe): `grid` (..., 160, 160) (a
        coarser (..., G, G) one is upsampled), an optional `AgentLayout` (..., A) and velocities
        (..., A, 2) (none: `AGENT_SLOTS` empty slots; no velocity: standing still)."""
        grid = jnp.asarray(grid, jnp.int32)
        fine = grid.shape[-1] == FINE.size
        if not fine:
            f = FINE.size // grid.shape[-1]
            grid = jnp.repeat(jnp.repeat(grid, f, axis=-2), f, axis=-1)
        lead = grid.shape[:-2]
        agents = AgentLayout.empty(lead, AGENT_SLOTS) if agents is None else AgentLayout.from_packed(agents)
        agents = jax.tree.map(jnp.asarray, agents)
        if velocity is None:
            velocity = jnp.zeros(agents.valid.shape + (2,), jnp.float32)
        zero = jnp.zeros(lead, jnp.int32)
        velocity = jnp.asarray(velocity, jnp.float32)
        return Anchor(grid, jnp.zeros(lead + (3,), jnp.float32), zero, agents, velocity, jnp.full(lead, fine))

    def moved(self, motion) -> Anchor:
        """The anchor after the ego moves by raw `motion` (..., 3) into the next keyframe."""
        return self._replace(pose=compose_pose(self.pose, motion), age=self.age + 1)

    def boxes_now(self) -> tuple[jax.Array, jax.Array]:
        """The anchor's agents moved on at their velocity for `age` keyframes, in the current
        frame: an `AgentLayout` (..., A) and velocities (..., A, 2)."""
        t = (self.age.astype(jnp.float32) * KEYFRAME_DT)[..., None, None]
        xy = into_frame(self.agents.xy + t * self.velocity, self.pose)
        yaw = self.agents.yaw - self.pose[..., 2, None]
        c, s = jnp.cos(self.pose[..., 2, None]), jnp.sin(self.pose[..., 2, None])
        vx, vy = self.velocity[..., 0], self.velocity[..., 1]
        vel = jnp.stack([c * vx + s * vy, -s * vx + c * vy], axis=-1)
        return self.agents.replace(xy=xy, yaw=yaw), vel

    def renewed(self, grid, cfg: WorldModelConfig) -> Anchor:
        """After decoding `grid` (..., G, G) at the current frame: re-anchor on it once the anchor
        is `cfg.refine_gap` keyframes old (the refiner was trained on gaps up to that), the agents
        carried on at constant velocity."""
        old = self.age >= cfg.refine_gap
        fresh = Anchor.at(grid, *self.boxes_now())

        def pick(a, b):
            return jnp.where(old.reshape(old.shape + (1,) * (a.ndim - old.ndim)), b, a)

        return jax.tree.map(pick, self, fresh)


def reference(anchor: Anchor, cfg: WorldModelConfig, given=None, given_on=None):
    """The constant-velocity forecast of the current frame from the anchor (see the module docstring).

    Args:
      anchor: an `Anchor` (leading axes ...).
      given: an optional `AgentLayout` (..., A') of the current frame in its ego frame (layout
        guidance), used instead of the anchor's agents where given_on (...) is true.
    Returns:
      (..., G, G, C + 1) float32: one-hot classes at the model's grid (all zero where unknown: out
      of the anchor's view, or under its agents), and the age channel (age / refine_gap).
    """
    lead = anchor.grid.shape[:-2]
    flat = lambda a, k: a.reshape((-1,) + a.shape[a.ndim - k :])  # noqa: E731
    flat_lead = lambda tree: jax.tree.map(lambda a: a.reshape((-1,) + a.shape[len(lead) :]), tree)  # noqa: E731
    boxes, _ = anchor.boxes_now()
    paint = jax.vmap(lambda b: paint_boxes(b, FINE).astype(jnp.int32))
    agents = paint(flat_lead(boxes))
    if given is not None:
        on = jnp.broadcast_to(jnp.asarray(given_on, bool), lead).reshape(-1)
        agents = jnp.where(on[:, None, None], paint(flat_lead(AgentLayout.from_packed(given))), agents)
    grid = flat(anchor.grid, 2)
    static = jnp.where(grid >= FIRST_AGENT_CLASS, -1, grid)
    # with boxes, the ground under the anchor's agents is known from around them (their boxes say
    # where they went); without, those cells stay unknown (the decoder decides)
    has_boxes = jnp.any(flat_lead(anchor.agents).valid, axis=-1)
    static = jnp.where(has_boxes[:, None, None], jax.vmap(fill_under_agents)(static), static)
    pose = flat(anchor.pose, 1)
    fine = pool(jax.vmap(warp_nearest)(static, pose), cfg)
    f = cfg.occ_downsample
    coarse = jax.vmap(warp_nearest)(static[:, ::f, ::f], pose)  # a re-anchored model grid
    moved = jnp.where(flat(anchor.fine, 0)[:, None, None], fine, coarse)
    painted = pool(agents, cfg)
    classes = jnp.where(painted > 0, painted, moved)
    onehot = jax.nn.one_hot(classes, cfg.num_classes)  # -1 (unknown) -> all zero
    age = (flat(anchor.age, 0).astype(jnp.float32) / cfg.refine_gap)[:, None, None, None]
    out = jnp.concatenate([onehot, jnp.broadcast_to(age, onehot.shape[:-1] + (1,))], axis=-1)
    return out.reshape(lead + out.shape[1:])


def decode_rollout(model, occ, anchor: Anchor, motions, given=None, given_on=None, logits: bool = False):
    """Decode a rollout's BEV frame by frame (one `lax.scan`), each refined with the anchor.

    Args:
      model: the `WorldModel` (without a refiner: the plain decoder).
      occ: (B, F, g, g, Co) normalised latents of the generated frames.
      anchor: the first `Anchor` (batch B): the last context keyframe.
      motions: (B, F, 3) raw ego motion into each generated frame (dx, dy m, dyaw rad).
      given: an optional `AgentLayout` (B, F, A) of each generated frame (its ego frame), used by
        the scenarios where given_on (B,) is true (layout guidance).
      logits: return the refined logits (B, F, G, G, C) instead of the class ids.
    Returns:
      (B, F, G, G) int32 class ids.
    """
    cfg = model.cfg
    B, F = occ.shape[:2]
    if given is None:
        given = AgentLayout.empty((B, F), 1)
        given_on = jnp.zeros((B,), bool)
    given = AgentLayout.from_packed(given)

    def one(anchor, x):
        z, m, g = x
        anchor = anchor.moved(m)
        out = model.occupancy_logits(z, anchor, g, given_on)
        grid = jnp.argmax(out, axis=-1).astype(jnp.int32)
        return anchor.renewed(grid, cfg), (out if logits else grid)

    xs = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), (occ, motions, given))
    _, grids = jax.lax.scan(one, anchor, xs)
    return jnp.swapaxes(grids, 0, 1)

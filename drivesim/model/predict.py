"""Running a trained world model: context keyframes + an ego plan -> future cameras and BEV.

`Predictor(model)` compiles one function (encode the context, sample the future latents in one
`lax.scan`, decode) per input shape; free-running and layout-guided rollouts share it (the layout
is masked, not absent), so switching between them does not recompile. Inputs are checked on the
host first: wrong shapes, a frame size the model was not trained on, NaN in the ego motion or a
horizon beyond `cfg.max_horizon` raise a one-line `DataError`/`ConfigError`.

Conventions (those of the clip cache, `drivesim.data.cache`): frames (B, H, 6, h, w, 3) uint8,
occupancy (B, H, 160, 160) class ids, ego motion (B, H + F - 1, 3): the motion from each keyframe
to the next in the earlier keyframe's ego frame (dx, dy metres, dyaw radians), agents an
`AgentLayout` (B, H + F, A) in each keyframe's ego frame (the layout, for guided rollouts; the
cache's packed (B, H + F, A, 8) rows are accepted too).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from drivesim.data.types import AgentLayout
from drivesim.errors import ConfigError, DataError
from drivesim.model.refine import Anchor, agent_velocity, decode_rollout
from drivesim.model.world import WorldModel, generate, layout_grid, motion_into_frames, prepare_images
from drivesim.model.world import prepare_occupancy as pool_occupancy


class Future(NamedTuple):
    """A generated future: images (B, F, 6, h, w, 3) uint8, occupancy (B, F, G, G) class ids."""

    images: jax.Array
    occupancy: jax.Array


def _rollout(graphdef, state, frames, occupancy, motion, agents, layout_on, rng, logits=False):
    """The generated future; with `logits`, only the BEV, as refined logits (B, F, G, G, C)."""
    model: WorldModel = nnx.merge(graphdef, state)
    cfg = model.cfg
    cam, occ = model.encode(frames, occupancy)
    steps = jnp.concatenate([motion, jnp.zeros_like(motion[:, :1])], axis=1)  # (B, H + F, 3)
    # frame by frame (lax.map), not vmapped: temporaries stay flat in the horizon
    by_frame = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), agents)
    lay = jax.lax.map(jax.vmap(lambda a: layout_grid(a, cfg)), by_frame)
    zc, zo = generate(model.dynamics, cam, occ, motion_into_frames(steps), rng, cfg, jnp.swapaxes(lay, 0, 1), layout_on)
    images = None if logits else jnp.swapaxes(jax.lax.map(model.decode_cameras, jnp.swapaxes(zc, 0, 1)), 0, 1)
    # the BEV frame by frame, each refined with the constant-velocity forecast from the last
    # context keyframe (its map moved by the ego motion, its agents by their last velocity)
    H = cfg.history
    before = max(H - 2, 0)
    at = lambda index: jax.tree.map(lambda a: a[:, index], agents)  # noqa: E731
    velocity = agent_velocity(at(before), at(H - 1), motion[:, before] * (H >= 2))
    anchor = Anchor.at(occupancy[:, -1], at(H - 1), velocity)
    classes = decode_rollout(model, zo, anchor, motion[:, H - 1 :], at(slice(H, None)), layout_on, logits=logits)
    return Future(images, classes)


class Predictor:
    """A compiled rollout of one world model (see the module docstring)."""

    def __init__(self, model: WorldModel):
        self.model = model
        self.cfg = model.cfg
        self.graphdef, self.state = nnx.split(model)
        self._fn = jax.jit(functools.partial(_rollout, self.graphdef))
        self._logits = jax.jit(functools.partial(_rollout, self.graphdef, logits=True))

    def check(self, frames, occupancy, motion, agents=None) -> int:
        """Validate input shapes and values; returns F, the number of keyframes to generate."""
        cfg = self.cfg
        H = cfg.history
        w, h = cfg.frame_size
        if frames.ndim != 6 or frames.shape[1:] != (H, cfg.cameras, h, w, 3):
            raise DataError(
                f"context frames have shape {tuple(frames.shape)}; the model expects (batch, {H}, {cfg.cameras}, {h}, "
                f"{w}, 3) — {H} keyframes of {w}x{h} images (rebuild the cache with --image-size {w}x{h})"
            )
        B = frames.shape[0]
        if occupancy.shape != (B, H, 160, 160):
            raise DataError(f"context occupancy has shape {tuple(occupancy.shape)}; expected ({B}, {H}, 160, 160)")
        if motion.ndim != 3 or motion.shape[0] != B or motion.shape[2] != 3 or motion.shape[1] < H:
            raise DataError(f"ego motion has shape {tuple(motion.shape)}; expected ({B}, {H} + future - 1, 3)")
        F = motion.shape[1] - H + 1
        if not 1 <= F <= cfg.max_horizon:
            raise ConfigError(
                f"a horizon of {F} keyframes ({F / 2:g} s) is beyond what this model allows (1 .. {cfg.max_horizon} "
                "keyframes, `max_horizon` in its config); roll out in pieces or shorten the plan"
            )
        m = np.asarray(motion)
        if not np.all(np.isfinite(m)):
            bad = np.argwhere(~np.isfinite(m))[0]
            raise DataError(f"the ego motion has NaN or infinity (scenario {bad[0]}, step {bad[1]}); fix the ego plan")
        if agents is not None:
            shape = agents.valid.shape if isinstance(agents, AgentLayout) else tuple(np.shape(agents))
            packed = not isinstance(agents, AgentLayout)
            if len(shape) != (4 if packed else 3) or shape[:2] != (B, H + F) or (packed and shape[3] != 8):
                want = f"({B}, {H + F}, A, 8) packed rows" if packed else f"({B}, {H + F}, A) agents"
                raise DataError(f"agent layout has shape {shape}; expected {want}")
            layout = AgentLayout.from_packed(np.asarray(agents) if packed else agents)
            if not all(np.all(np.isfinite(np.asarray(a))) for a in (layout.xy, layout.yaw, layout.size)):
                raise DataError("the agent layout has NaN or infinity")
        return F

    @staticmethod
    def _layout(agents) -> AgentLayout:
        """The layout as the compiled rollout takes it (packed rows converted; fixed dtypes)."""
        lay = AgentLayout.from_packed(agents if isinstance(agents, AgentLayout) else jnp.asarray(agents, jnp.float32))
        return AgentLayout(
            xy=jnp.asarray(lay.xy, jnp.float32), yaw=jnp.asarray(lay.yaw, jnp.float32),
            size=jnp.asarray(lay.size, jnp.float32), category=jnp.asarray(lay.category, jnp.int32),
            valid=jnp.asarray(lay.valid, bool),
        )  # fmt: skip

    def __call__(self, frames, occupancy, motion, rng, agents=None, layout_on=None) -> Future:
        """Generate the future keyframes after the context (shapes in the module docstring).

        Args:
          rng: a PRNG key; different keys give different futures (the model is stochastic).
          agents: an optional `AgentLayout` of every keyframe; layout_on (B,) bool picks the
            scenarios that follow them in the future (layout guidance; default: all, when agents
            are given). The others run free: the model forecasts the agents itself, from the
            context (its refiner starts from the context boxes moved at constant velocity; without
            agents, from the context grids alone).
        """
        F = self.check(frames, occupancy, motion, agents)
        B = frames.shape[0]
        H = self.cfg.history
        if agents is None:
            agents = AgentLayout.empty((B, H + F), 64)  # the cache's slots: shares the compile
            layout_on = jnp.zeros((B,), bool)
        elif layout_on is None:
            layout_on = jnp.ones((B,), bool)
        return self._fn(
            self.state,
            jnp.asarray(frames),
            jnp.asarray(occupancy),
            jnp.asarray(motion, jnp.float32),
            self._layout(agents),
            jnp.asarray(layout_on, bool),
            rng,
        )

    def bev_logits(self, frames, occupancy, motion, rng, agents, layout_on):
        """The refined BEV logits (B, F, G, G, C) of the future `__call__` would generate (no cameras)."""
        self.check(frames, occupancy, motion, agents)
        args = (frames, occupancy, jnp.asarray(motion, jnp.float32), self._layout(agents))
        return self._logits(self.state, *args, jnp.asarray(layout_on, bool), rng).occupancy

    def compiled_count(self) -> int:
        """How many input signatures have been compiled so far (to check for recompiles)."""
        return self._fn._cache_size()


def model_view(frames, occupancy, cfg) -> tuple[np.ndarray, np.ndarray]:
    """What the model sees of cache keyframes: images (..., 6, h, w, 3) uint8 (centre crop) and
    BEV classes (..., G, G) (max-pooled): the resolution at which predictions are scored."""
    images = np.asarray(jnp.clip(jnp.round((prepare_images(jnp.asarray(frames), cfg) + 1) * 127.5), 0, 255))
    return images.astype(np.uint8), np.asarray(pool_occupancy(jnp.asarray(occupancy), cfg))

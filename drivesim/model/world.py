"""The world model: tokenizers + dynamics + latent statistics, its losses and its sampler.

Data conventions (the cache's, `drivesim.data.cache`): camera frames (..., 6, 36, 64, 3) uint8 are
centre-cropped to the model's image size and scaled to [-1, 1]; the BEV grid (..., 160, 160) of
occupancy classes is max-pooled to (..., 80, 80) (class ids are ordered by priority); the ego
motion into each frame (dx, dy, dyaw over 0.5 s, in the previous frame's ego frame) conditions it;
agent layouts are rasterised into the same 80x80 grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from drivesim.data.classes import AGENT_TO_OCC
from drivesim.data.types import AgentLayout
from drivesim.model.config import MOTION_SCALE, OCC_EXTENT, WorldModelConfig
from drivesim.model.dynamics import Dynamics
from drivesim.model.refine import Anchor, OccRefiner, agent_velocity, pool, reference
from drivesim.model.tokenizers import Tokenizers, kl


# ------------------------------------------------------------------ preprocessing
def prepare_images(frames, cfg: WorldModelConfig):
    """(..., 6, H0, W0, 3) uint8 -> (..., 6, H, W, 3) float32 in [-1, 1] (centre crop)."""
    w, h = cfg.image_size
    H0, W0 = frames.shape[-3], frames.shape[-2]
    top, left = (H0 - h) // 2, (W0 - w) // 2
    x = frames[..., top : top + h, left : left + w, :]
    return x.astype(jnp.float32) / 127.5 - 1.0


def images_to_uint8(x):
    return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def prepare_occupancy(grid, cfg: WorldModelConfig):
    """(..., 160, 160) class ids -> (..., G, G) int32 by max-pooling (priority-preserving)."""
    return pool(grid, cfg).astype(jnp.int32)


def motion_into_frames(ego_motion):
    """Cache `ego_motion` (..., T, 3) (from each frame to the next) -> motion into each frame,
    normalised (the first frame gets zeros)."""
    m = jnp.concatenate([jnp.zeros_like(ego_motion[..., :1, :]), ego_motion[..., :-1, :]], axis=-2)
    return m / MOTION_SCALE


def layout_grid(agents: AgentLayout, cfg: WorldModelConfig):
    """Agent layout (A agents, or packed (A, 8) rows) in the ego frame -> (G, G) grid of
    the agents' occupancy classes (0 elsewhere), cell (i, j) centred at x = E - (i + .5) r,
    y = E - (j + .5) r as `drivesim.data.types.Occupancy`."""
    G = cfg.occ_grid
    r = 2 * OCC_EXTENT / G
    c = OCC_EXTENT - (jnp.arange(G) + 0.5) * r
    cx, cy = jnp.meshgrid(c, c, indexing="ij")  # (G, G)
    agents = AgentLayout.from_packed(agents)
    x, y, yaw = agents.xy[:, 0], agents.xy[:, 1], agents.yaw
    length, width = agents.size[:, 0], agents.size[:, 1]
    cls = jnp.asarray(agents.category, jnp.int32)
    valid = agents.valid
    dx, dy = cx[None] - x[:, None, None], cy[None] - y[:, None, None]
    cs, sn = jnp.cos(yaw)[:, None, None], jnp.sin(yaw)[:, None, None]
    lon, lat = cs * dx + sn * dy, -sn * dx + cs * dy
    inside = (
        (jnp.abs(lon) < length[:, None, None] / 2) & (jnp.abs(lat) < width[:, None, None] / 2) & valid[:, None, None]
    )
    occ_cls = jnp.asarray(AGENT_TO_OCC)[jnp.clip(cls, 0, 3)]
    return jnp.max(jnp.where(inside, occ_cls[:, None, None], 0), axis=0).astype(jnp.int32)


# ------------------------------------------------------------------ the model
class LatentStats(nnx.Variable):
    """Normalisation statistics of the latents (not trained)."""


class DecisionBias(nnx.Variable):
    """Per-class offsets added to the refined BEV logits before the argmax (not trained by
    gradient: fitted on a validation set, `drivesim.pipelines.calibrate`)."""


class WorldModel(nnx.Module):
    """Tokenizers, dynamics, the latents' per-channel mean and std, and (with a refiner) the BEV's
    decision bias."""

    def __init__(self, cfg: WorldModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.tokenizers = Tokenizers(cfg, rngs=rngs)
        self.dynamics = Dynamics(cfg, rngs=rngs)
        self.refiner = OccRefiner(cfg, rngs=rngs) if cfg.occ_refine else None
        self.cam_mean = LatentStats(jnp.zeros((cfg.cam_latent,)))
        self.cam_std = LatentStats(jnp.ones((cfg.cam_latent,)))
        self.occ_mean = LatentStats(jnp.zeros((cfg.occ_latent,)))
        self.occ_std = LatentStats(jnp.ones((cfg.occ_latent,)))
        self.occ_bias = DecisionBias(jnp.zeros((cfg.num_classes,)))

    def encode(self, frames, occupancy):
        """Normalised latent means of raw cache frames (..., 6, 36, 64, 3) and grids (..., 160, 160)."""
        cfg = self.cfg
        cam, _ = self.tokenizers.encode_cameras(prepare_images(frames, cfg))
        return (cam - self.cam_mean[...]) / self.cam_std[...], self.encode_occupancy(occupancy)

    def encode_occupancy(self, occupancy):
        """Normalised BEV latent means (..., g, g, Co) of cache grids (..., 160, 160)."""
        occ, _ = self.tokenizers.encode_occupancy(prepare_occupancy(occupancy, self.cfg))
        return (occ - self.occ_mean[...]) / self.occ_std[...]

    def decode(self, cam, occ, anchor=None, given=None, given_on=None):
        """Normalised latents -> images (..., 6, H, W, 3) uint8 and BEV classes (..., G, G)."""
        return self.decode_cameras(cam), self.decode_occupancy(occ, anchor, given, given_on)

    def decode_cameras(self, cam):
        """Normalised camera latents -> images (..., 6, H, W, 3) uint8."""
        return images_to_uint8(self.tokenizers.decode_cameras(cam * self.cam_std[...] + self.cam_mean[...]))

    def decode_occupancy(self, occ, anchor=None, given=None, given_on=None):
        """Normalised BEV latents (..., g, g, C) -> class ids (..., G, G) int32 (see `occupancy_logits`)."""
        return jnp.argmax(self.occupancy_logits(occ, anchor, given, given_on), axis=-1).astype(jnp.int32)

    def occupancy_logits(self, occ, anchor=None, given=None, given_on=None):
        """Normalised BEV latents (..., g, g, C) -> class logits (..., G, G, classes).

        With a refiner (`cfg.occ_refine`) and an `anchor` (`drivesim.model.refine.Anchor`, leading
        axes as `occ`'s), the decoder's logits are refined with the anchor's constant-velocity
        forecast of this frame (or, where given_on, the given agents (an `AgentLayout`, (..., A)) of this
        frame); without either, the tokenizer's decoder alone.
        """
        logits = self.tokenizers.decode_occupancy(occ * self.occ_std[...] + self.occ_mean[...])
        return self.refine(logits, anchor, given, given_on)

    def refine(self, logits, anchor=None, given=None, given_on=None):
        """The decoder's logits (..., G, G, classes) refined with the anchor, plus the decision bias
        (unchanged without a refiner or an anchor)."""
        if self.refiner is None or anchor is None:
            return logits
        ref = reference(anchor, self.cfg, given, given_on)
        lead = logits.shape[:-3]
        out = self.refiner(logits.reshape((-1,) + logits.shape[-3:]), ref.reshape((-1,) + ref.shape[-3:]))
        return out.reshape(lead + out.shape[1:]) + self.occ_bias[...]


# ------------------------------------------------------------------ losses
def class_weights(cfg: WorldModelConfig):
    """Cross-entropy weights: rare classes (agents, markings) count more than free space and road."""
    w = np.ones(cfg.num_classes, np.float32)
    w[[0, 1, 2]] = 1.0
    w[[3, 4]] = 3.0
    w[5:] = 6.0
    return jnp.asarray(w)


def tokenizer_loss(tok: Tokenizers, batch, rng, cfg: WorldModelConfig):
    """VAE losses on single keyframes: batch["frames"] (B, 6, 36, 64, 3), batch["occupancy"] (B, 160, 160)."""
    k1, k2 = jax.random.split(rng)
    images = prepare_images(batch["frames"], cfg)
    mean, logvar = tok.encode_cameras(images)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k1, mean.shape)
    rec = tok.decode_cameras(z)
    cam_l1 = jnp.mean(jnp.abs(rec - images))
    classes = prepare_occupancy(batch["occupancy"], cfg)
    omean, ologvar = tok.encode_occupancy(classes)
    oz = omean + jnp.exp(0.5 * ologvar) * jax.random.normal(k2, omean.shape)
    logits = tok.decode_occupancy(oz)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, classes[..., None], axis=-1)[..., 0]
    w = class_weights(cfg)[classes]
    occ_ce = jnp.sum(w * nll) / jnp.sum(w)
    kl_cam, kl_occ = kl(mean, logvar), kl(omean, ologvar)
    loss = cam_l1 + occ_ce + cfg.kl_weight * (kl_cam + kl_occ)
    acc = jnp.mean(jnp.argmax(logits, -1) == classes)
    return loss, {"cam_l1": cam_l1, "occ_ce": occ_ce, "occ_acc": acc, "kl_cam": kl_cam, "kl_occ": kl_occ}


def dynamics_loss(dyn: Dynamics, batch, rng, cfg: WorldModelConfig):
    """Flow-matching loss on latent clips.

    batch: cam (B, T, 6, r, c, Cc) and occ (B, T, g, g, Co) normalised latents, motion (B, T, 3)
    normalised motion into each frame, layout (B, T, G, G) agent grids.
    Context frames are clean; every future frame gets its own flow time (Diffusion Forcing).
    """
    cam, occ = batch["cam"], batch["occ"]
    B, T = cam.shape[:2]
    H = cfg.history
    k_t, k_c, k_o, k_l = jax.random.split(rng, 4)
    tau = jax.random.uniform(k_t, (B, T))
    tau = jnp.where(jnp.arange(T)[None] < H, 1.0, tau)
    eps_c, eps_o = jax.random.normal(k_c, cam.shape), jax.random.normal(k_o, occ.shape)
    tc = tau.reshape(B, T, 1, 1, 1, 1)
    to = tau.reshape(B, T, 1, 1, 1)
    x_cam, x_occ = tc * cam + (1 - tc) * eps_c, to * occ + (1 - to) * eps_o
    on = jax.random.uniform(k_l, (B, 1)) >= cfg.layout_dropout
    layout_on = jnp.broadcast_to(on, (B, T))
    v_cam, v_occ = dyn(x_cam, x_occ, tau, batch["motion"], batch["layout"], layout_on)
    fut = (jnp.arange(T) >= H).astype(jnp.float32)
    err_c = jnp.mean((v_cam - (cam - eps_c)) ** 2, axis=(2, 3, 4, 5))
    err_o = jnp.mean((v_occ - (occ - eps_o)) ** 2, axis=(2, 3, 4))
    denom = jnp.sum(fut) * B
    loss_c = jnp.sum(err_c * fut) / denom
    loss_o = jnp.sum(err_o * fut) / denom
    loss = loss_c + cfg.bev_weight * loss_o
    return loss, {"flow_cam": loss_c, "flow_occ": loss_o}


def refiner_loss(refiner, base: WorldModel, batch, cfg: WorldModelConfig):
    """Cross-entropy of the refined BEV (stage 3; the tokenizers and dynamics of `base` frozen).

    batch: target (B, 160, 160) true grid of the decoded frame; anchor (B, 160, 160) the grid of
    an earlier frame, pose (B, 3) the decoded frame's pose in its ego frame and age (B,) the
    keyframes between them; agents_prev, agents (B, A, 8) the packed boxes (as the cache stores
    them) at the keyframe before the anchor and at the anchor, motion_prev (B, 3) the ego motion
    between those two; given (B, A, 8) the decoded frame's true boxes, used where given_on (B,) (layout guidance); z (B, g, g, Co)
    normalised latents the dynamics predicted for the target frame.
    """
    target = prepare_occupancy(batch["target"], cfg)
    base_logits = jax.lax.stop_gradient(base.occupancy_logits(batch["z"]))
    prev, agents, given = (AgentLayout.from_packed(batch[k]) for k in ("agents_prev", "agents", "given"))
    velocity = agent_velocity(prev, agents, batch["motion_prev"])
    anchor = Anchor.at(batch["anchor"], agents, velocity)._replace(pose=batch["pose"], age=batch["age"])
    ref = reference(anchor, cfg, given, batch["given_on"])
    logits = refiner(base_logits, ref).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
    w = class_weights(cfg)[target]
    ce = jnp.sum(w * nll) / jnp.sum(w)
    pred = jnp.argmax(logits, -1)
    agents = target >= 5
    metrics = {
        "occ_ce": ce,
        "occ_acc": jnp.mean(pred == target),
        "agent_recall": jnp.sum((pred == target) & agents) / jnp.maximum(jnp.sum(agents), 1),
        "decoder_acc": jnp.mean(jnp.argmax(base_logits, -1) == target),
    }
    return ce, metrics


# ------------------------------------------------------------------ sampling
def generate(dyn: Dynamics, cam_ctx, occ_ctx, motion, rng, cfg: WorldModelConfig, layout=None, layout_on=None):
    """Sample the future latents autoregressively, frame by frame, in one `lax.scan`.

    Args:
      cam_ctx: (B, H, 6, r, c, Cc), occ_ctx: (B, H, g, g, Co): normalised context latents.
      motion: (B, H + F, 3) normalised ego motion into every frame (context and future): F,
        the number of frames to generate, may exceed the trained horizon (a sliding window of
        `cfg.window` frames is kept; memory does not grow with F).
      layout: optional (B, H + F, G, G) agent grids and layout_on (B,) bool: layout guidance.
    Returns:
      cam (B, F, 6, r, c, Cc), occ (B, F, g, g, Co): the generated latents.
    """
    B, H = cam_ctx.shape[:2]
    F = motion.shape[1] - H
    W = cfg.window
    if H != cfg.history:
        raise ValueError(f"the model was trained with {cfg.history} context frames, not {H}")
    pad = W - H
    buf_cam = jnp.concatenate([cam_ctx, jnp.zeros((B, pad) + cam_ctx.shape[2:], cam_ctx.dtype)], axis=1)
    buf_occ = jnp.concatenate([occ_ctx, jnp.zeros((B, pad) + occ_ctx.shape[2:], occ_ctx.dtype)], axis=1)
    G = cfg.occ_grid
    lay = layout if layout is not None else jnp.zeros((B, H + F, G, G), jnp.int32)
    lay_on = jnp.broadcast_to((layout_on if layout_on is not None else jnp.zeros(B, bool))[:, None], (B, W))

    def frame_step(carry, k):
        bc, bo = carry
        full = H + k >= W  # the window is full: slide it by one frame
        bc = jnp.where(full, jnp.roll(bc, -1, axis=1), bc)
        bo = jnp.where(full, jnp.roll(bo, -1, axis=1), bo)
        p = jnp.minimum(H + k, W - 1)  # where the new frame goes
        first = H + k - p  # absolute index of window position 0
        sel = jnp.clip(first + jnp.arange(W), 0, H + F - 1)
        m_w = motion[:, sel]
        l_w = lay[:, sel] if layout is not None else None
        xc, xo = sample_frame(
            dyn, bc, bo, m_w, l_w, lay_on if layout is not None else None, p, jax.random.fold_in(rng, k), cfg
        )
        bc = bc.at[:, p].set(xc)
        bo = bo.at[:, p].set(xo)
        return (bc, bo), (xc, xo)

    _, (cam, occ) = jax.lax.scan(frame_step, (buf_cam, buf_occ), jnp.arange(F))
    return jnp.swapaxes(cam, 0, 1), jnp.swapaxes(occ, 0, 1)


def sample_frame(dyn: Dynamics, bc, bo, motion, layout, layout_on, p, key, cfg: WorldModelConfig):
    """Sample the latents of window position `p` given the clean frames before it.

    Args:
      bc: (B, W, 6, r, c, Cc), bo: (B, W, g, g, Co): the window's latents (positions < p clean;
        the others are ignored: attention over time is causal).
      motion: (B, W, 3) normalised ego motion into each window frame; layout: optional
        (B, W, G, G) agent grids with layout_on (B, W) bool.
      p: () int position to generate; key: PRNG key (the noise of this frame).
    Returns:
      (B, 6, r, c, Cc), (B, g, g, Co): the sampled latents of frame p (few Euler steps of the flow).
    """
    kc, ko = jax.random.split(key)
    xc = jax.random.normal(kc, bc.shape[:1] + (1,) + bc.shape[2:])
    xo = jax.random.normal(ko, bo.shape[:1] + (1,) + bo.shape[2:])
    dt = 1.0 / cfg.sample_steps
    # the frames before p are clean and do not depend on frame p (causal attention over time): their
    # keys and values are computed once, and each Euler step runs frame p alone
    kv, prev = dyn.context(bc, bo, motion, layout, layout_on, p)

    def euler(s, xs):
        xc, xo = xs
        vc, vo = dyn.frame_velocity(kv, prev, xc, xo, s * dt, motion, layout, layout_on, p)
        return (xc + dt * vc, xo + dt * vo)

    xc, xo = jax.lax.fori_loop(0, cfg.sample_steps, euler, (xc, xo))
    return xc[:, 0], xo[:, 0]

"""The dynamics model: a spatio-temporal transformer over the six views and the BEV at once.

Each frame is a set of tokens — 2x2 patches of the six camera latent grids (with a learned
position per view and patch) and the BEV latent cells — so spatial attention runs across views and
BEV together (the cameras and the occupancy can agree). Temporal attention runs per token position
over the frames, causally. Every frame is conditioned (adaLN-zero) on its flow-matching noise level
and on the ego motion that led to it; an optional agent layout (the boxes of the agents in that
frame, rasterised into the BEV) is added to its BEV tokens, or a learned "no layout" embedding is.

The network predicts the flow-matching velocity of every frame's latents (Diffusion-Forcing style:
each frame carries its own noise level, clean for the context).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from drivesim.model.config import MOTION_SCALE, OCC_EXTENT, WorldModelConfig

LAYOUT_CLASSES = 4  # vehicle, pedestrian, cyclist, obstacle (occupancy classes 5..8)


def fourier(t, dim: int):
    """(...,) -> (..., dim) sinusoidal features of a scalar in [0, 1]."""
    freqs = jnp.exp(jnp.linspace(0.0, math.log(1000.0), dim // 2))
    ang = t[..., None] * freqs
    return jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)


class Attention(nnx.Module):
    def __init__(self, d: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
        self.out = nnx.Linear(d, d, rngs=rngs)

    def project(self, x):
        """x (..., L, d) -> q, k, v, each (..., L, heads, d / heads)."""
        *lead, L, d = x.shape
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        return tuple(a.reshape(*lead, L, self.heads, d // self.heads) for a in (q, k, v))

    def attend(self, q, k, v, mask=None):
        """q (..., Lq, h, c), k and v (..., Lk, h, c), mask (Lq, Lk) bool or None -> (..., Lq, d)."""
        logits = jnp.einsum("...qhc,...khc->...hqk", q, k) / math.sqrt(q.shape[-1])
        if mask is not None:
            logits = jnp.where(mask, logits, -1e9)
        w = jax.nn.softmax(logits, axis=-1)
        y = jnp.einsum("...hqk,...khc->...qhc", w, v)
        return self.out(y.reshape(*y.shape[:-2], -1))

    def __call__(self, x, causal: bool = False, return_kv: bool = False):
        """x (..., L, d) -> (..., L, d), attention over L (and its keys and values, with return_kv)."""
        L = x.shape[-2]
        q, k, v = self.project(x)
        y = self.attend(q, k, v, jnp.tril(jnp.ones((L, L), bool)) if causal else None)
        return (y, (k, v)) if return_kv else y


class Block(nnx.Module):
    """Spatial attention (within a frame), causal temporal attention (per token), MLP; adaLN-zero."""

    def __init__(self, d: int, heads: int, mlp_ratio: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(d, use_scale=False, use_bias=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d, use_scale=False, use_bias=False, rngs=rngs)
        self.norm3 = nnx.LayerNorm(d, use_scale=False, use_bias=False, rngs=rngs)
        self.spatial = Attention(d, heads, rngs=rngs)
        self.temporal = Attention(d, heads, rngs=rngs)
        self.fc1 = nnx.Linear(d, mlp_ratio * d, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_ratio * d, d, rngs=rngs)
        self.mod = nnx.Linear(d, 9 * d, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x, c, return_kv: bool = False):
        """x (B, T, N, d), c (B, T, d) per-frame conditioning (-> x, and with return_kv the temporal
        attention's keys and values, each (B, N, T, heads, d / heads))."""
        m = self.mod(nnx.silu(c))[:, :, None, :]  # (B, T, 1, 9d)
        s1, b1, g1, s2, b2, g2, s3, b3, g3 = jnp.split(m, 9, axis=-1)
        x = x + g1 * self.spatial(self.norm1(x) * (1 + s1) + b1)
        h = (self.norm2(x) * (1 + s2) + b2).swapaxes(1, 2)  # (B, N, T, d): attend over time
        y, kv = self.temporal(h, causal=True, return_kv=True)
        x = x + g2 * y.swapaxes(1, 2)
        h = self.norm3(x) * (1 + s3) + b3
        x = x + g3 * self.fc2(nnx.gelu(self.fc1(h)))
        return (x, kv) if return_kv else x

    def one_frame(self, x, c, kv, p):
        """Frame p alone: x (B, 1, N, d), c (B, 1, d), kv the keys and values of every frame of the
        window (from `__call__` with return_kv; only frames before p are read). Equal to frame p
        of `__call__` on the whole window: temporal attention is causal, so frame p sees the
        frames before it and itself, and the frames before it do not depend on it."""
        m = self.mod(nnx.silu(c))[:, :, None, :]
        s1, b1, g1, s2, b2, g2, s3, b3, g3 = jnp.split(m, 9, axis=-1)
        x = x + g1 * self.spatial(self.norm1(x) * (1 + s1) + b1)
        h = (self.norm2(x) * (1 + s2) + b2).swapaxes(1, 2)  # (B, N, 1, d)
        q, k_p, v_p = self.temporal.project(h)
        k = jax.lax.dynamic_update_slice_in_dim(kv[0], k_p, p, axis=2)
        v = jax.lax.dynamic_update_slice_in_dim(kv[1], v_p, p, axis=2)
        mask = (jnp.arange(k.shape[2]) <= p)[None, :]
        x = x + g2 * self.temporal.attend(q, k, v, mask).swapaxes(1, 2)
        h = self.norm3(x) * (1 + s3) + b3
        return x + g3 * self.fc2(nnx.gelu(self.fc1(h)))


def warp_bev(grid, motion):
    """Resample a BEV latent grid into the next frame's ego frame.

    Args:
      grid: (g, g, C) latents of frame t-1, cell (i, j) centred at x = E - (i + .5) s,
        y = E - (j + .5) s (forward up, left to the left; E = 40 m, s = 2E / g).
      motion: (3,) raw ego motion into frame t (dx, dy m, dyaw rad, in frame t-1's ego frame).
    Returns:
      (g, g, C): frame t-1's latents at the places of frame t's cells (bilinear; 0 outside).
    """
    g = grid.shape[0]
    s = 2 * OCC_EXTENT / g
    c = OCC_EXTENT - (jnp.arange(g) + 0.5) * s
    x, y = jnp.meshgrid(c, c, indexing="ij")
    dx, dy, dyaw = motion[0], motion[1], motion[2]
    xp = jnp.cos(dyaw) * x - jnp.sin(dyaw) * y + dx  # frame t's cell centres in frame t-1
    yp = jnp.sin(dyaw) * x + jnp.cos(dyaw) * y + dy
    fi, fj = (OCC_EXTENT - xp) / s - 0.5, (OCC_EXTENT - yp) / s - 0.5
    i0, j0 = jnp.floor(fi), jnp.floor(fj)
    out = jnp.zeros_like(grid)
    for di in (0, 1):
        for dj in (0, 1):
            ii, jj = i0 + di, j0 + dj
            w = (1 - jnp.abs(fi - ii)) * (1 - jnp.abs(fj - jj))
            ok = (ii >= 0) & (ii < g) & (jj >= 0) & (jj < g)
            v = grid[jnp.clip(ii, 0, g - 1).astype(jnp.int32), jnp.clip(jj, 0, g - 1).astype(jnp.int32)]
            out = out + jnp.where(ok, w, 0.0)[..., None] * v
    return out


class LayoutEncoder(nnx.Module):
    """Agent boxes rasterised in the BEV grid (G, G) -> one feature per BEV latent cell."""

    def __init__(self, cfg: WorldModelConfig, *, rngs: nnx.Rngs):
        stages = len(cfg.occ_channels) + int(round(math.log2(cfg.occ_patch)))
        widths = [16 * 2 ** min(i, 2) for i in range(stages)]
        chans = [LAYOUT_CLASSES + 1, *widths]
        self.convs = nnx.List(
            [nnx.Conv(chans[i], chans[i + 1], (4, 4), strides=2, padding="SAME", rngs=rngs) for i in range(stages)]
        )
        self.proj = nnx.Linear(widths[-1], cfg.d_model, rngs=rngs)

    def __call__(self, layout):
        """layout (..., G, G) occupancy class ids (agents painted, 0 elsewhere) -> (..., tokens, d)."""
        lead = layout.shape[:-2]
        agent = jnp.clip(layout.reshape((-1,) + layout.shape[-2:]) - 4, 0, LAYOUT_CLASSES)
        h = jax.nn.one_hot(agent, LAYOUT_CLASSES + 1)
        for conv in self.convs:
            h = nnx.silu(conv(h))
        h = self.proj(h)
        return h.reshape(lead + (-1, h.shape[-1]))


class Dynamics(nnx.Module):
    """Flow-matching velocity of camera and BEV latents, frame by frame (see the module docstring)."""

    def __init__(self, cfg: WorldModelConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        d = cfg.d_model
        self.cam_in = nnx.Linear(4 * cfg.cam_latent, d, rngs=rngs)
        self.occ_in = nnx.Linear(cfg.occ_patch**2 * cfg.occ_latent, d, rngs=rngs)
        n = cfg.cam_tokens + cfg.occ_tokens
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (n, d)))
        self.frame = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.window, d)))
        self.t_mlp = nnx.Sequential(nnx.Linear(64, d, rngs=rngs), nnx.silu, nnx.Linear(d, d, rngs=rngs))
        self.m_mlp = nnx.Sequential(nnx.Linear(3, d, rngs=rngs), nnx.silu, nnx.Linear(d, d, rngs=rngs))
        self.layout = LayoutEncoder(cfg, rngs=rngs)
        if cfg.motion_warp:
            self.warp_in = nnx.Linear(cfg.occ_patch**2 * cfg.occ_latent, d, rngs=rngs)
        self.no_layout = nnx.Param(jnp.zeros((d,)))
        self.blocks = nnx.List([Block(d, cfg.heads, cfg.mlp_ratio, rngs=rngs) for _ in range(cfg.layers)])
        self.norm = nnx.LayerNorm(d, use_scale=False, use_bias=False, rngs=rngs)
        self.final_mod = nnx.Linear(d, 2 * d, kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.cam_out = nnx.Linear(d, 4 * cfg.cam_latent, kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.occ_out = nnx.Linear(d, cfg.occ_patch**2 * cfg.occ_latent, kernel_init=nnx.initializers.zeros, rngs=rngs)

    @staticmethod
    def _patch(x, p: int):
        """(B, T, V, r, c, C) -> (B, T, V * r/p * c/p, p*p*C)."""
        B, T, V, r, c, C = x.shape
        x = x.reshape(B, T, V, r // p, p, c // p, p, C).transpose(0, 1, 2, 3, 5, 4, 6, 7)
        return x.reshape(B, T, V * (r // p) * (c // p), p * p * C)

    @staticmethod
    def _unpatch(x, shape, p: int):
        B, T, V, r, c, C = shape
        x = x.reshape(B, T, V, r // p, c // p, p, p, C).transpose(0, 1, 2, 3, 5, 4, 6, 7)
        return x.reshape(shape)

    def __call__(self, cam, occ, tau, motion, layout=None, layout_on=None):
        """Velocities of the latents.

        Args:
          cam: (B, T, 6, r, c, Cc) camera latents (normalised; noisy where tau < 1).
          occ: (B, T, g, g, Co) BEV latents.
          tau: (B, T) flow time of each frame: 0 pure noise, 1 clean.
          motion: (B, T, 3) ego motion into each frame (normalised dx, dy, dyaw).
          layout: optional (B, T, G, G) agent classes per frame; layout_on (B, T) bool.
        Returns:
          (cam velocity like cam, occ velocity like occ).
        """
        prev = self._warped_previous(occ, motion)
        x, c = self._tokens(cam, occ, prev, tau, motion, layout, layout_on, self.frame[...][: tau.shape[1]])
        for block in self.blocks:
            x = block(x, c)
        return self._velocities(x, c, cam.shape, occ.shape)

    def _warped_previous(self, occ, motion):
        """(B, T, g, g, Co) each frame's previous BEV moved by the ego motion into it (zeros for the
        first frame), or None without `motion_warp`."""
        if not self.cfg.motion_warp:
            return None
        raw = motion * jnp.asarray(MOTION_SCALE)
        prev = jax.vmap(jax.vmap(warp_bev))(occ[:, :-1], raw[:, 1:])
        return jnp.concatenate([jnp.zeros_like(occ[:, :1]), prev], axis=1)

    def _tokens(self, cam, occ, prev, tau, motion, layout, layout_on, frame_emb):
        """Input tokens (B, T, N, d) and per-frame conditioning (B, T, d) of T frames.

        prev: (B, T, g, g, Co) each frame's warped previous BEV (with `motion_warp`, else None);
        frame_emb: (T, d) the frames' window-position embeddings."""
        cfg = self.cfg
        cam_tok = self.cam_in(self._patch(cam, 2))
        occ_tok = self.occ_in(self._patch(occ[:, :, None], cfg.occ_patch))
        if cfg.motion_warp:
            occ_tok = occ_tok + self.warp_in(self._patch(prev[:, :, None], cfg.occ_patch))
        if layout is not None:
            lay = self.layout(layout)  # (B, T, tokens, d)
            on = layout_on[..., None, None]
            occ_tok = occ_tok + jnp.where(on, lay, self.no_layout[...])
        else:
            occ_tok = occ_tok + self.no_layout[...]
        x = jnp.concatenate([cam_tok, occ_tok], axis=2) + self.pos[...] + frame_emb[:, None, :]
        c = self.t_mlp(fourier(tau, 64)) + self.m_mlp(motion)
        return x, c

    def _velocities(self, x, c, cam_shape, occ_shape):
        shift, scale = jnp.split(self.final_mod(nnx.silu(c))[:, :, None, :], 2, axis=-1)
        x = self.norm(x) * (1 + scale) + shift
        nc = self.cfg.cam_tokens
        v_cam = self._unpatch(self.cam_out(x[:, :, :nc]), cam_shape, 2)
        occ5 = occ_shape[:2] + (1,) + occ_shape[2:]
        v_occ = self._unpatch(self.occ_out(x[:, :, nc:]), occ5, self.cfg.occ_patch).reshape(occ_shape)
        return v_cam, v_occ

    def context(self, cam, occ, motion, layout=None, layout_on=None, p=0):
        """What frame p of a window needs of the frames before it: every block's temporal keys and
        values (run once per generated frame; `frame_velocity` then runs frame p alone).

        Args: as `__call__` (the whole window, frames before p clean; the others are ignored).
        Returns:
          (kv, prev): kv a list over blocks of (keys, values), each (B, N, W, heads, d / heads);
          prev (B, 1, g, g, Co) frame p - 1's BEV warped into frame p (with `motion_warp`, else None).
        """
        B, W = cam.shape[:2]
        tau = jnp.broadcast_to(jnp.where(jnp.arange(W) < p, 1.0, 0.0), (B, W))
        prev_all = self._warped_previous(occ, motion)
        prev = None if prev_all is None else jax.lax.dynamic_slice_in_dim(prev_all, p, 1, axis=1)
        x, c = self._tokens(cam, occ, prev_all, tau, motion, layout, layout_on, self.frame[...][:W])
        kv = []
        for block in self.blocks:
            x, kv_b = block(x, c, return_kv=True)
            kv.append(kv_b)
        return kv, prev

    def frame_velocity(self, kv, prev, cam_p, occ_p, t, motion, layout, layout_on, p):
        """Velocities of frame p alone, equal to frame p of `__call__` on the whole window.

        Args:
          kv, prev: from `context`; cam_p (B, 1, 6, r, c, Cc), occ_p (B, 1, g, g, Co): frame p's
            (noisy) latents at flow time t (); motion (B, W, 3), layout (B, W, G, G) or None,
            layout_on (B, W): the window's (frame p's are read).
        """
        B = cam_p.shape[0]
        pick = lambda a: None if a is None else jax.lax.dynamic_slice_in_dim(a, p, 1, axis=1)  # noqa: E731
        tau = jnp.full((B, 1), t, jnp.float32)
        frame_emb = jax.lax.dynamic_slice_in_dim(self.frame[...], p, 1, axis=0)
        x, c = self._tokens(cam_p, occ_p, prev, tau, pick(motion), pick(layout), pick(layout_on), frame_emb)
        for block, kv_b in zip(self.blocks, kv, strict=True):
            x = block.one_frame(x, c, kv_b, p)
        return self._velocities(x, c, cam_p.shape, occ_p.shape)

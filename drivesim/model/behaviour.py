"""The behaviour model: every agent's next 0.5 s of motion, from the scene around it.

Inputs (one scene, `BehaviourInput`): the last `history` keyframes (2 Hz) of all N agents, the ego
among them (row 0, flagged), their sizes and classes, and the log's map: lane centreline points
with their direction and whether they lie in an intersection (lane connectors), and the semantic
raster (drivable area, walkways, crossings). Nothing else: no routes, no goals, no future.

Per agent, in its own frame (x forward):
- its own history (positions, headings, speeds);
- its `neighbours` nearest agents now (the ego included): relative pose and velocity, size, class;
- the `map_points` lane points nearest a point ahead of it (farther ahead the faster it goes);
- the map classes on a grid of points around it (crossings, walkways, the road's edge);
- with `BehaviourConfig.signals` > 0, the `signals` stop lines of traffic lights nearest it: their
  pose, and whether each light is red or amber now (`light_states`). Real nuScenes has no light
  states (`Signals.known` False): every light then reads neither.
Neighbours, lane points and stop lines are pooled by attention from the agent's own embedding, then an MLP
predicts the distribution of its motion over the next step. Agents are conditionally independent
given the present (as one step of SMART / Trajeglish): jointness comes from sampling step by step,
each step conditioned on what everyone, the ego included, did in the last.

Two heads (`BehaviourConfig.head`, compared in docs/behaviour.md):
- "tokens": a categorical over the motion tokens of `drivesim.model.motion_tokens`;
- "mixture": a mixture of `mixture` diagonal Gaussians over the continuous (accel, yaw rate).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx, struct

from drivesim.data.classes import OCC_CROSSING, OCC_DRIVABLE, OCC_LANE_MARKING
from drivesim.data.signals import AMBER_SECONDS
from drivesim.data.types import MapData, Signals
from drivesim.model import motion_tokens

NUM_CLASSES = 4  # agent classes: vehicle, pedestrian, cyclist, obstacle
MAP_CLASSES = 4  # raster classes the model sees: free, drivable (lane markings included), walkway, crossing
ACCEL_SCALE, YAW_RATE_SCALE = 3.0, 0.5  # the mixture head's units


@dataclasses.dataclass(frozen=True)
class BehaviourConfig:
    """The behaviour model's architecture."""

    head: str = "tokens"
    """"tokens" (categorical over motion tokens) or "mixture" (Gaussian mixture over controls)."""
    history: int = 5
    """Keyframes of history (0.5 s apart; the last is now)."""
    width: int = 128
    """Width of an agent's embedding."""
    point_width: int = 64
    """Width of a neighbour's or a lane point's embedding."""
    neighbours: int = 12
    """Nearest agents each agent sees."""
    neighbour_range: float = 60.0
    """Agents farther than this (m) are not seen."""
    map_points: int = 32
    """Lane points each agent sees."""
    lane_stride: int = 2
    """Keep every n-th point of a lane segment (segments have 16 points over at most 15 m)."""
    mixture: int = 6
    """Components of the mixture head."""
    raster_x: tuple[float, ...] = (-6.0, -2.0, 2.0, 6.0, 10.0, 15.0, 20.0, 28.0)
    """Longitudinal offsets (m, agent frame) of the map-class grid."""
    raster_y: tuple[float, ...] = (-9.0, -5.0, -2.5, 0.0, 2.5, 5.0, 9.0)
    """Lateral offsets (m) of the map-class grid."""
    signals: int = 0
    """Stop lines of traffic lights each agent sees, with their state now (0: none, as models
    trained before the world wrote its lights)."""
    signal_range: float = 80.0
    """Stop lines farther than this (m) are not seen."""
    past_dropout: float = 0.0
    """Training only: the probability that an agent's own past (its states before now) is hidden
    from it in an example. At 2 Hz an agent's own last 0.5 s already shows its reaction to the car
    ahead, so a model that sees it can copy it (the copycat shortcut) and never learn to read the
    car ahead, which is what closed-loop reaction needs."""
    own_past: bool = True
    """Whether the agent sees its own past at inference (False: only its state now, as in the
    examples whose past was dropped). Neighbours are always seen as they are now."""

    def validate(self) -> None:
        if self.head not in ("tokens", "mixture"):
            raise ValueError(f"BehaviourConfig.head must be 'tokens' or 'mixture' (got {self.head!r})")
        if self.history < 2:
            raise ValueError(f"BehaviourConfig.history must be at least 2 (got {self.history})")
        if not 0.0 <= self.past_dropout < 1.0:
            raise ValueError(f"BehaviourConfig.past_dropout must be in [0, 1) (got {self.past_dropout})")


@struct.dataclass
class BehaviourInput:
    """One scene as the behaviour model sees it (N agents, row 0 the ego; M lane points).

    Attributes:
      xy: (N, H, 2) box centres at the last H keyframes (global frame; the last is now).
      yaw: (N, H) headings.
      speed: (N, H) m/s.
      valid: (N, H) bool.
      size: (N, 3) length, width, height.
      category: (N,) int32 agent class (`drivesim.data.classes`).
      is_ego: (N,) bool.
      points: (M, 5) lane points [x, y, cos, sin of the lane direction, in an intersection].
      points_valid: (M,) bool.
      raster: (R, R) uint8 map classes; raster_origin (2,) and raster_resolution () as `MapData`.
      signals: (S, 6) stop lines of traffic lights [x, y, cos, sin of the lane direction, red now,
        amber now] (`light_states`), or None (a model with `signals` = 0 reads none).
      signals_valid: (S,) bool, or None.
    """

    xy: jnp.ndarray
    yaw: jnp.ndarray
    speed: jnp.ndarray
    valid: jnp.ndarray
    size: jnp.ndarray
    category: jnp.ndarray
    is_ego: jnp.ndarray
    points: jnp.ndarray
    points_valid: jnp.ndarray
    raster: jnp.ndarray
    raster_origin: jnp.ndarray
    raster_resolution: jnp.ndarray
    signals: jnp.ndarray | None = None
    signals_valid: jnp.ndarray | None = None


def light_states(red, t, steps_per_second: float):
    """(S, 2) float32 [red, amber] of every light at step t of its red schedule `red` (T, S) bool.

    The logs carry when each light is red (`Signals.red`), not its amber. In the synthetic world
    amber always comes just before red and lasts `AMBER_SECONDS`, so a light is amber now iff it
    is not red now and turns red within `AMBER_SECONDS`: the light's present state, which the
    world's drivers see (they stop at amber when they can). Past the log's end nothing is red.
    """
    ahead = int(round(AMBER_SECONDS * steps_per_second))
    T, S = red.shape[-2:]
    now = red[jnp.clip(t, 0, T - 1)]
    padded = jnp.concatenate([red, jnp.zeros((ahead + 1, S), bool)])
    soon = jnp.any(jax.lax.dynamic_slice_in_dim(padded, jnp.clip(t, 0, T - 1) + 1, ahead), axis=0)
    return jnp.stack([now, ~now & soon], -1).astype(jnp.float32)


def signal_lines(signals: Signals) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(S, 4) stop lines [x, y, cos, sin of the lane direction] and (S,) validity of a log's lights
    (none where the light states are unknown)."""
    yaw = jnp.asarray(signals.yaw, jnp.float32)
    lines = jnp.concatenate([jnp.asarray(signals.centre, jnp.float32), jnp.stack([jnp.cos(yaw), jnp.sin(yaw)], -1)], -1)
    return lines, jnp.asarray(signals.valid) & jnp.asarray(signals.known)


def lane_points(map: MapData, stride: int = 2) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(M, 5) lane points [x, y, cos, sin, connector] and (M,) validity from a map's segments."""
    xy = jnp.asarray(map.lane_xy, jnp.float32)
    d = jnp.diff(xy, axis=-2)
    d = jnp.concatenate([d, d[..., -1:, :]], axis=-2)
    heading = jnp.arctan2(d[..., 1], d[..., 0])
    L, P = xy.shape[:2]
    conn = jnp.broadcast_to(jnp.asarray(map.lane_is_connector, jnp.float32)[:, None], (L, P))
    pts = jnp.concatenate([xy, jnp.cos(heading)[..., None], jnp.sin(heading)[..., None], conn[..., None]], -1)
    pts = pts[:, ::stride].reshape(-1, 5)
    valid = jnp.broadcast_to(jnp.asarray(map.lane_valid)[:, None], (L, P))[:, ::stride].reshape(-1)
    return pts, valid


def _rotate(v, yaw):
    """Rotate vectors v (..., 2) by -yaw (...): global to a frame with heading yaw."""
    c, s = jnp.cos(yaw)[..., None], jnp.sin(yaw)[..., None]
    return jnp.concatenate([c * v[..., :1] + s * v[..., 1:], -s * v[..., :1] + c * v[..., 1:]], axis=-1)


def _masked_top_k(cost, k: int):
    """Indices (.., k) of the k smallest costs and whether each is finite."""
    neg, idx = jax.lax.top_k(-cost, k)
    return idx, jnp.isfinite(neg)


@jax.named_scope("behaviour_features")
def features(inp: BehaviourInput, cfg: BehaviourConfig, hide_past: jnp.ndarray | None = None) -> dict:
    """Per-agent inputs of the network, each agent in its own frame (one scene; vmap for batches).

    hide_past: (N,) bool, the agents whose own past (their states before now) is hidden from them
    (training's `past_dropout`); None: hidden from all iff `cfg.own_past` is False.

    Returns a dict of: self (N, H * 6 + 9); neighbours (N, K, 16) with neighbours_mask (N, K);
    points (N, Km, 6) with points_mask (N, Km); raster (N, G * MAP_CLASSES); with `cfg.signals`,
    signals (N, Ks, 7) with signals_mask (N, Ks).
    """
    N, H = inp.valid.shape
    now_xy, now_yaw, now_v = inp.xy[:, -1], inp.yaw[:, -1], inp.speed[:, -1]
    valid_now = inp.valid[:, -1]
    # own history
    if hide_past is None and not cfg.own_past:
        hide_past = jnp.ones((N,), bool)
    seen = inp.valid
    if hide_past is not None:
        seen = seen & ((jnp.arange(H) == H - 1)[None] | ~hide_past[:, None])
    rel = _rotate(inp.xy - now_xy[:, None], now_yaw[:, None])
    dyaw = inp.yaw - now_yaw[:, None]
    hist = jnp.concatenate(
        [rel / 10.0, jnp.cos(dyaw)[..., None], jnp.sin(dyaw)[..., None], inp.speed[..., None] / 10.0,
         seen[..., None].astype(jnp.float32)], axis=-1,
    ) * seen[..., None]  # fmt: skip
    cat = jax.nn.one_hot(inp.category, NUM_CLASSES)
    ego = inp.is_ego[:, None].astype(jnp.float32)
    own = jnp.concatenate([hist.reshape(N, H * 6), inp.size / 5.0, cat, ego, now_v[:, None] / 10.0], axis=-1)
    # neighbours: the K nearest valid others
    d_ij = now_xy[None, :] - now_xy[:, None]  # (N, N, 2): j relative to i, global
    dist = jnp.linalg.norm(d_ij, axis=-1)
    seen = valid_now[None, :] & valid_now[:, None] & ~jnp.eye(N, dtype=bool) & (dist < cfg.neighbour_range)
    K = min(cfg.neighbours, N - 1)
    idx, ok = _masked_top_k(jnp.where(seen, dist, jnp.inf), K)  # (N, K)
    take = lambda a: jnp.take_along_axis(a, idx.reshape(N, K, *([1] * (a.ndim - 2))), axis=1)  # noqa: E731
    pos = _rotate(take(d_ij), now_yaw[:, None])
    vel_g = now_v[:, None] * jnp.stack([jnp.cos(now_yaw), jnp.sin(now_yaw)], -1)  # (N, 2)
    rel_vel = _rotate(vel_g[idx] - vel_g[:, None], now_yaw[:, None])
    ryaw = now_yaw[idx] - now_yaw[:, None]
    prev_v = inp.speed[:, -2]
    accel = jnp.where(inp.valid[:, -2], (now_v - prev_v) / 0.5, 0.0)
    nb = jnp.concatenate(
        [pos / 20.0, rel_vel / 10.0, jnp.cos(ryaw)[..., None], jnp.sin(ryaw)[..., None],
         inp.size[idx][..., :2] / 5.0, jax.nn.one_hot(inp.category[idx], NUM_CLASSES),
         inp.is_ego[idx][..., None].astype(jnp.float32), take(dist[..., None]) / 20.0,
         now_v[idx][..., None] / 10.0, accel[idx][..., None] / 4.0, jnp.ones((N, K, 1))], axis=-1,
    )  # fmt: skip
    nb = nb * ok[..., None]
    # lane points nearest a point ahead
    heading = jnp.stack([jnp.cos(now_yaw), jnp.sin(now_yaw)], -1)
    ahead = now_xy + jnp.clip(1.5 * now_v, 3.0, 20.0)[:, None] * heading
    pd = jnp.linalg.norm(inp.points[None, :, :2] - ahead[:, None], axis=-1)  # (N, M)
    Km = min(cfg.map_points, inp.points.shape[0])
    pidx, pok = _masked_top_k(jnp.where(inp.points_valid[None], pd, jnp.inf), Km)
    pts = inp.points[pidx]  # (N, Km, 5)
    prel = _rotate(pts[..., :2] - now_xy[:, None], now_yaw[:, None])
    pdir = _rotate(pts[..., 2:4], now_yaw[:, None])
    pfeat = jnp.concatenate([prel / 20.0, pdir, pts[..., 4:5], jnp.ones((N, Km, 1))], axis=-1) * pok[..., None]
    # map classes around
    gx, gy = jnp.meshgrid(jnp.asarray(cfg.raster_x), jnp.asarray(cfg.raster_y), indexing="ij")
    local = jnp.stack([gx.ravel(), gy.ravel()], -1)  # (G, 2)
    c, s = jnp.cos(now_yaw)[:, None], jnp.sin(now_yaw)[:, None]
    gxy = now_xy[:, None] + jnp.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1]], -1)
    R = inp.raster.shape[-1]
    cell = jnp.floor((gxy - inp.raster_origin) / inp.raster_resolution).astype(jnp.int32)
    inside = jnp.all((cell >= 0) & (cell < R), axis=-1)
    cls = inp.raster[jnp.clip(cell[..., 1], 0, R - 1), jnp.clip(cell[..., 0], 0, R - 1)].astype(jnp.int32)
    cls = jnp.where(cls == OCC_LANE_MARKING, OCC_DRIVABLE, cls)
    cls = jnp.where(inside & (cls <= OCC_CROSSING), cls, 0)
    raster = jax.nn.one_hot(cls, MAP_CLASSES).reshape(N, -1)
    out = {
        "self": own, "neighbours": nb, "neighbours_mask": ok, "points": pfeat, "points_mask": pok,
        "raster": raster,
    }  # fmt: skip
    if cfg.signals:
        if inp.signals is None:
            raise ValueError("this behaviour model reads traffic lights: BehaviourInput.signals is None")
        sd = jnp.linalg.norm(inp.signals[None, :, :2] - now_xy[:, None], axis=-1)  # (N, S)
        Ks = min(cfg.signals, inp.signals.shape[0])
        sidx, sok = _masked_top_k(jnp.where(inp.signals_valid[None] & (sd < cfg.signal_range), sd, jnp.inf), Ks)
        sig = inp.signals[sidx]  # (N, Ks, 6)
        srel = _rotate(sig[..., :2] - now_xy[:, None], now_yaw[:, None])
        sdir = _rotate(sig[..., 2:4], now_yaw[:, None])
        out["signals"] = jnp.concatenate([srel / 20.0, sdir, sig[..., 4:6], jnp.ones((N, Ks, 1))], -1) * sok[..., None]
        out["signals_mask"] = sok
    return out


class _Pool(nnx.Module):
    """Attention pooling of a set of embeddings by a query, plus their max."""

    def __init__(self, din: int, width: int, query: int, *, rngs: nnx.Rngs):
        self.embed1 = nnx.Linear(din, width, rngs=rngs)
        self.embed2 = nnx.Linear(width, width, rngs=rngs)
        self.query = nnx.Linear(query, width, rngs=rngs)

    def __call__(self, x_nkd, mask_nk, q_nd):
        h = self.embed2(jax.nn.gelu(self.embed1(x_nkd)))
        logits = jnp.einsum("...kd,...d->...k", h, self.query(q_nd)) / jnp.sqrt(h.shape[-1])
        logits = jnp.where(mask_nk, logits, -1e9)
        w = jax.nn.softmax(logits, axis=-1) * mask_nk
        att = jnp.einsum("...k,...kd->...d", w, h)
        mx = jnp.max(jnp.where(mask_nk[..., None], h, -1e9), axis=-2)
        mx = jnp.where(jnp.any(mask_nk, axis=-1, keepdims=True), mx, 0.0)
        return jnp.concatenate([att, mx], axis=-1)


class BehaviourModel(nnx.Module):
    """features -> per-agent distribution over the next step's motion (see the module docstring)."""

    def __init__(self, cfg: BehaviourConfig = BehaviourConfig(), *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        W, P = cfg.width, cfg.point_width
        n_self = cfg.history * 6 + 3 + NUM_CLASSES + 2
        self.self1 = nnx.Linear(n_self, W, rngs=rngs)
        self.self2 = nnx.Linear(W, W, rngs=rngs)
        self.neighbours = _Pool(17, P, W, rngs=rngs)
        self.points = _Pool(6, P, W, rngs=rngs)
        n_grid = len(cfg.raster_x) * len(cfg.raster_y) * MAP_CLASSES
        self.raster = nnx.Linear(n_grid, P, rngs=rngs)
        self.signals = _Pool(7, P, W, rngs=rngs) if cfg.signals else None
        self.fuse = nnx.Linear(W + 4 * P + P + (2 * P if cfg.signals else 0), W, rngs=rngs)
        self.norm = nnx.LayerNorm(W, rngs=rngs)
        self.mlp1 = nnx.Linear(W, 2 * W, rngs=rngs)
        self.mlp2 = nnx.Linear(2 * W, W, rngs=rngs)
        n_out = motion_tokens.NUM_TOKENS if cfg.head == "tokens" else cfg.mixture * 5
        self.head = nnx.Linear(W, n_out, rngs=rngs)

    def __call__(self, f: dict) -> jnp.ndarray:
        """Head outputs (..., N, n_out) from `features(...)` (any leading batch axes)."""
        h_self = self.self2(jax.nn.gelu(self.self1(f["self"])))
        nb = self.neighbours(f["neighbours"], f["neighbours_mask"], h_self)
        pt = self.points(f["points"], f["points_mask"], h_self)
        rs = jax.nn.gelu(self.raster(f["raster"]))
        parts = [h_self, nb, pt, rs]
        if self.signals is not None:
            parts.append(self.signals(f["signals"], f["signals_mask"], h_self))
        h = self.fuse(jnp.concatenate(parts, axis=-1))
        h = h + self.mlp2(jax.nn.gelu(self.mlp1(jax.nn.gelu(self.norm(h)))))
        return self.head(jax.nn.gelu(h))


def _mixture(out, cfg: BehaviourConfig):
    K = cfg.mixture
    logits = out[..., :K]
    mean = out[..., K : 3 * K].reshape(*out.shape[:-1], K, 2)
    log_std = jnp.clip(out[..., 3 * K :].reshape(*out.shape[:-1], K, 2), -4.0, 2.0)
    return logits, mean, log_std


def _scaled(controls):
    return controls / jnp.asarray([ACCEL_SCALE, YAW_RATE_SCALE])


def log_likelihood(out, tokens, controls, cfg: BehaviourConfig):
    """Per-agent log-likelihood (..., N) of the logged next step under the head's output.

    tokens: (..., N) int32 fitted tokens (the token head's target); controls: (..., N, 2) the
    logged [accel, yaw rate] (the mixture head's target).
    """
    if cfg.head == "tokens":
        logp = jax.nn.log_softmax(out.astype(jnp.float32), axis=-1)
        return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    logits, mean, log_std = _mixture(out.astype(jnp.float32), cfg)
    x = _scaled(controls)[..., None, :]
    comp = -0.5 * jnp.sum(((x - mean) / jnp.exp(log_std)) ** 2 + 2 * log_std + jnp.log(2 * jnp.pi), axis=-1)
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + comp, axis=-1)


def sample_controls(out, key, cfg: BehaviourConfig, temperature: float = 1.0):
    """(..., N, 2) sampled [accel, yaw rate] from the head's output."""
    if cfg.head == "tokens":
        tok = jax.random.categorical(key, out / temperature, axis=-1)
        return jnp.asarray(motion_tokens.controls())[tok]
    logits, mean, log_std = _mixture(out, cfg)
    k1, k2 = jax.random.split(key)
    comp = jax.random.categorical(k1, logits / temperature, axis=-1)
    m = jnp.take_along_axis(mean, comp[..., None, None], axis=-2)[..., 0, :]
    s = jnp.exp(jnp.take_along_axis(log_std, comp[..., None, None], axis=-2)[..., 0, :])
    x = m + s * jnp.sqrt(temperature) * jax.random.normal(k2, m.shape)
    return x * jnp.asarray([ACCEL_SCALE, YAW_RATE_SCALE])


@jax.named_scope("behaviour_step")
def predict_controls(model: BehaviourModel, inp: BehaviourInput, key, temperature: float = 1.0):
    """Sampled controls (N, 2) [accel, yaw rate] of every agent for the next 0.5 s (one scene)."""
    out = model(features(inp, model.cfg))
    return sample_controls(out, key, model.cfg, temperature)


def push_history(inp: BehaviourInput, xy, yaw, speed, valid) -> BehaviourInput:
    """Drop the oldest keyframe and append (xy (N, 2), yaw, speed, valid (N,))."""

    def shift(h, new):
        return jnp.concatenate([h[:, 1:], new[:, None]], axis=1)

    return inp.replace(
        xy=shift(inp.xy, xy), yaw=shift(inp.yaw, yaw), speed=shift(inp.speed, speed), valid=shift(inp.valid, valid)
    )


@jax.named_scope("behaviour_rollout")
def rollout(model: BehaviourModel, inp: BehaviourInput, ego_future, key, temperature: float = 1.0):
    """Open-loop rollout at 2 Hz: the agents move by sampled controls, the ego as given.

    Args:
      inp: the scene now (one scene).
      ego_future: (F, 4) the ego's box centre [x, y, yaw, speed] at the next F keyframes.
    Returns:
      xy (N, F, 2), yaw (N, F), speed (N, F) of every agent (row 0 = the given ego); agents not
      present now stay absent, agents present now stay present.
    """
    valid = inp.valid[:, -1]

    def body(carry, xs):
        cur, k = carry
        ego, step_key = xs
        ctrl = predict_controls(model, cur, step_key, temperature)
        xy, yaw, speed = motion_tokens.rollout_token(cur.xy[:, -1], cur.yaw[:, -1], cur.speed[:, -1], *ctrl.T)
        xy = xy.at[0].set(ego[:2])
        yaw = yaw.at[0].set(ego[2])
        speed = speed.at[0].set(ego[3])
        xy, yaw, speed = (jnp.where(valid[:, None], xy, 0.0), jnp.where(valid, yaw, 0.0), jnp.where(valid, speed, 0.0))
        nxt = push_history(cur, xy, yaw, speed, valid)
        return (nxt, k), (xy, yaw, speed)

    keys = jax.random.split(key, ego_future.shape[0])
    _, (xy, yaw, speed) = jax.lax.scan(body, (inp, 0), (ego_future, keys))
    return jnp.swapaxes(xy, 0, 1), yaw.T, speed.T

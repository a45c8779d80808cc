"""Training the behaviour model: scenes as 2 Hz arrays, examples as (scene, keyframe) pairs.

`scene_arrays(log)` turns one `Log` (keyframes, host numpy) into the arrays a `BehaviourTask`
trains on: every agent's states with the ego as row 0 (its box centre), the map's lane points and
raster, and the logged motion of each agent from each keyframe to the next, as a fitted token and
as continuous controls. An example is one scene at one keyframe t: the history up to t and every
agent's motion from t to t + 1; the loss is the mean negative log-likelihood over agents present
at both.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from drivesim.data.classes import VEHICLE
from drivesim.data.types import EGO_REAR_AXLE_TO_CENTER, EGO_SIZE, Log
from drivesim.model import motion_tokens
from drivesim.model.behaviour import (
    BehaviourConfig,
    BehaviourInput,
    BehaviourModel,
    features,
    lane_points,
    light_states,
    log_likelihood,
    signal_lines,
)

SCENE_KEYS = (
    "xy", "yaw", "speed", "valid", "size", "category", "is_ego", "points", "points_valid", "raster",
    "raster_origin", "raster_resolution", "tokens", "controls", "target_valid", "signal_lines", "signal_valid",
    "signal_state",
)  # fmt: skip


def scene_arrays(log: Log, stride: int = 2) -> dict[str, np.ndarray]:
    """The training arrays of one 2 Hz log (N = 1 + its agent slots; T keyframes).

    Returns xy (N, T, 2), yaw / speed / valid (N, T), size (N, 3), category / is_ego (N,),
    points (M, 5) / points_valid (M,), raster (R, R) with its origin and resolution, the
    traffic lights: signal_lines (S, 4) / signal_valid (S,) (`signal_lines`) and signal_state
    (T, S, 2) [red, amber] at every keyframe (`light_states`), and the motion from each keyframe
    to the next: tokens (N, T - 1), controls (N, T - 1, 2) [accel, yaw rate], target_valid (N, T - 1).
    """
    ego, ag = log.ego, log.agents
    eyaw = np.asarray(ego.yaw, np.float32)
    ecenter = np.asarray(ego.xy) + EGO_REAR_AXLE_TO_CENTER * np.stack([np.cos(eyaw), np.sin(eyaw)], -1)
    xy = np.concatenate([ecenter[None], np.asarray(ag.xy)]).astype(np.float32)
    yaw = np.concatenate([eyaw[None], np.asarray(ag.yaw)]).astype(np.float32)
    speed = np.concatenate([np.linalg.norm(ego.velocity, axis=-1)[None], np.linalg.norm(ag.velocity, axis=-1)]).astype(
        np.float32
    )
    valid = np.concatenate([np.asarray(ego.valid)[None], np.asarray(ag.valid)]).astype(bool)
    N, T = valid.shape
    dt = float(np.median(np.diff(np.asarray(log.time)))) if T > 1 else motion_tokens.STEP
    if abs(dt - motion_tokens.STEP) > 1e-3:
        raise ValueError(f"the behaviour model trains on 2 Hz keyframes; this log has steps of {dt:.3f} s")
    pair = valid[:, :-1] & valid[:, 1:]
    tokens = np.zeros((N, T - 1), np.int32)
    if pair.any():
        a, t = np.nonzero(pair)
        tokens[a, t] = motion_tokens.fit_tokens(
            xy[a, t], yaw[a, t], speed[a, t], xy[a, t + 1], yaw[a, t + 1], speed[a, t + 1]
        )
    dyaw = (yaw[:, 1:] - yaw[:, :-1] + np.pi) % (2 * np.pi) - np.pi
    controls = np.stack([(speed[:, 1:] - speed[:, :-1]) / dt, dyaw / dt], -1).astype(np.float32)
    points, points_valid = lane_points(log.map, stride)
    lines, lines_valid = signal_lines(log.signals)
    red = jnp.asarray(log.signals.red)
    state = jax.vmap(lambda t: light_states(red, t, 1.0 / dt))(jnp.arange(T))
    return {
        "xy": np.where(valid[..., None], xy, 0.0), "yaw": np.where(valid, yaw, 0.0),
        "speed": np.where(valid, speed, 0.0), "valid": valid,
        "size": np.concatenate([np.asarray(EGO_SIZE, np.float32)[None], np.asarray(ag.size)]).astype(np.float32),
        "category": np.concatenate([[VEHICLE], np.asarray(ag.category)]).astype(np.int32),
        "is_ego": np.arange(N) == 0,
        "points": np.asarray(points, np.float32), "points_valid": np.asarray(points_valid, bool),
        "raster": np.asarray(log.map.raster, np.uint8),
        "raster_origin": np.asarray(log.map.raster_origin, np.float32),
        "raster_resolution": np.asarray(log.map.raster_resolution, np.float32),
        "tokens": tokens, "controls": np.where(pair[..., None], controls, 0.0), "target_valid": pair,
        "signal_lines": np.asarray(lines, np.float32), "signal_valid": np.asarray(lines_valid, bool),
        "signal_state": np.asarray(state, np.uint8),
    }  # fmt: skip


def stack_scenes(scenes: list[dict]) -> dict[str, np.ndarray]:
    """Stack scene arrays (same N, R; T and M padded to the longest)."""
    T = max(s["valid"].shape[1] for s in scenes)
    M = max(s["points"].shape[0] for s in scenes)

    def pad(a, axis, n):
        w = [(0, 0)] * a.ndim
        w[axis] = (0, n - a.shape[axis])
        return np.pad(a, w)

    out = {}
    for k in SCENE_KEYS:
        arrs = [s[k] for s in scenes]
        if k in ("xy", "yaw", "speed", "valid"):
            arrs = [pad(a, 1, T) for a in arrs]
        elif k in ("tokens", "controls", "target_valid"):
            arrs = [pad(a, 1, T - 1) for a in arrs]
        elif k in ("points", "points_valid"):
            arrs = [pad(a, 0, M) for a in arrs]
        elif k == "signal_state":
            arrs = [pad(a, 0, T) for a in arrs]
        out[k] = np.stack(arrs)
    return out


def example_input(data: dict, s: np.ndarray, t: np.ndarray, history: int) -> dict[str, np.ndarray]:
    """Host batch of examples (scene s[b], keyframe t[b]): the history window and the targets."""
    H = history
    steps = t[:, None] + np.arange(-H + 1, 1)[None]  # (B, H)
    ok = steps >= 0
    st = np.maximum(steps, 0)
    sb = s[:, None]

    def hist(a):
        x = a[sb, :, st]  # (B, H, N, ...)
        x = np.moveaxis(x, 1, 2)  # (B, N, H, ...)
        mask = ok[:, None, :].reshape(ok.shape[0], 1, H, *([1] * (x.ndim - 3)))
        return np.where(mask, x, np.zeros((), x.dtype))

    return {
        "xy": hist(data["xy"]), "yaw": hist(data["yaw"]), "speed": hist(data["speed"]),
        "valid": hist(data["valid"]), "size": data["size"][s], "category": data["category"][s],
        "is_ego": data["is_ego"][s], "points": data["points"][s], "points_valid": data["points_valid"][s],
        "raster": data["raster"][s], "raster_origin": data["raster_origin"][s],
        "raster_resolution": data["raster_resolution"][s],
        "tokens": data["tokens"][s, :, t], "controls": data["controls"][s, :, t],
        "target_valid": data["target_valid"][s, :, t],
        "signals": np.concatenate([data["signal_lines"][s], data["signal_state"][s, t].astype(np.float32)], -1),
        "signals_valid": data["signal_valid"][s],
    }  # fmt: skip


def batch_input(batch: dict) -> BehaviourInput:
    """The `BehaviourInput` part of a batch (leading axis B)."""
    names = [f.name for f in dataclasses.fields(BehaviourInput)]
    return BehaviourInput(**{k: batch[k] for k in names})


def behaviour_loss(model: BehaviourModel, batch: dict, rng, cfg: BehaviourConfig):
    """Mean negative log-likelihood of the logged next step over present agents (and metrics)."""
    inp = batch_input(batch)
    # each agent of each example loses its own past with probability past_dropout (none at 0)
    hide = jax.random.bernoulli(rng, cfg.past_dropout, inp.valid.shape[:2])
    f = jax.vmap(lambda x, h: features(x, cfg, h))(inp, hide)
    out = model(f)
    ll = log_likelihood(out, batch["tokens"], batch["controls"], cfg)
    m = batch["target_valid"].astype(jnp.float32)
    n = jnp.maximum(m.sum(), 1.0)
    nll = -(ll * m).sum() / n
    metrics = {"nll": nll}
    if cfg.head == "tokens":
        top1 = (jnp.argmax(out, -1) == batch["tokens"]).astype(jnp.float32)
        metrics["top1"] = (top1 * m).sum() / n
    return nll, metrics


@dataclasses.dataclass
class BehaviourTask:
    """The `drivesim.train` Task of the behaviour model on stacked scene arrays.

    Examples are every (scene, keyframe t) with t + 1 inside the scene and at least one agent
    moving from t to t + 1; t starts at 1 (a one-keyframe history: agents that just appeared).
    """

    data: dict
    cfg: BehaviourConfig = BehaviourConfig()
    seed: int = 0
    name: str = "behaviour"
    init_from: str = ""
    """A behaviour model file whose parameters start the training (fine-tuning); "" starts afresh."""

    def __post_init__(self):
        tv = self.data["target_valid"]  # (S, N, T - 1)
        s, t = np.nonzero(tv.any(axis=1))
        keep = t >= 1
        self.items = np.stack([s[keep], t[keep]], -1)
        if self.init_from:
            import jax
            from flax import nnx

            from drivesim.model.behaviour_file import load_behaviour

            start = load_behaviour(self.init_from)
            if dataclasses.replace(start.cfg, own_past=self.cfg.own_past) != self.cfg:
                raise ValueError(
                    f"{self.init_from} was trained with another BehaviourConfig than this run's: "
                    "fine-tune with the config it was trained with"
                )
            self._start = jax.tree.map(np.asarray, nnx.state(start, nnx.Param))

    def init_model(self, rngs):
        model = BehaviourModel(self.cfg, rngs=rngs)
        if self.init_from:  # the starting parameters, read on the host in __post_init__
            from flax import nnx

            nnx.update(model, self._start)
        return model

    def loss(self, model, batch, rng):
        return behaviour_loss(model, batch, rng, self.cfg)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self.items) // batch_size)

    def batches(self, epoch: int, batch_size: int, shard: int = 0, num_shards: int = 1):
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.items))
        local = batch_size // num_shards
        for b in range(len(self.items) // batch_size):
            idx = order[b * batch_size : (b + 1) * batch_size][shard * local : (shard + 1) * local]
            sel = self.items[idx]
            yield example_input(self.data, sel[:, 0], sel[:, 1], self.cfg.history)

    def fingerprint(self) -> dict:
        out = {"model": dataclasses.asdict(self.cfg), "seed": self.seed, "examples": int(len(self.items))}
        if self.init_from:
            from drivesim.provenance import sha256_file

            out["init_from"] = {"path": self.init_from, "sha256": sha256_file(self.init_from)}
        return out

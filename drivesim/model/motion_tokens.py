"""Motion tokens: an agent's motion over one 0.5 s step as one of a fixed set of controls.

A token is a pair (longitudinal acceleration a, yaw rate w), held for the whole step; the agent
moves as a unicycle (speed never negative). The vocabulary is the grid `ACCELS` x `YAW_RATES`,
finer near zero where most driving happens, wide enough for a hard brake (-8 m/s^2) and a
pedestrian turning on the spot. As in SMART and Trajeglish, the behaviour model predicts a
categorical distribution over tokens, so multi-modal futures (turn or go straight, yield or go)
come from sampling, not from averaging.

Tokens of logged motion are fitted by rollout, not by finite differences: the token whose
unicycle motion from the logged state ends closest to the next logged state (position, heading
and speed), so the quantisation error does not grow along a tokenised log.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

ACCELS = (-8.0, -5.0, -3.5, -2.5, -1.75, -1.0, -0.5, -0.2, 0.0, 0.2, 0.5, 1.0, 1.5, 2.5)
"""Longitudinal accelerations of the vocabulary (m/s^2)."""
YAW_RATES = (
    -2.4, -1.5, -1.0, -0.7, -0.5, -0.35, -0.25, -0.17, -0.1, -0.05, -0.02,
    0.0, 0.02, 0.05, 0.1, 0.17, 0.25, 0.35, 0.5, 0.7, 1.0, 1.5, 2.4,
)  # fmt: skip
"""Yaw rates of the vocabulary (rad/s, left positive)."""
NUM_TOKENS = len(ACCELS) * len(YAW_RATES)
STEP = 0.5
"""Seconds one token lasts (the keyframe interval)."""


def controls() -> np.ndarray:
    """(NUM_TOKENS, 2) float32 [a, w] of every token; token k = i * len(YAW_RATES) + j."""
    a, w = np.meshgrid(np.asarray(ACCELS), np.asarray(YAW_RATES), indexing="ij")
    return np.stack([a.ravel(), w.ravel()], axis=-1).astype(np.float32)


def advance(xy, yaw, speed, accel, yaw_rate, dt: float, xp=jnp):
    """Move unicycles for `dt` seconds under constant (accel, yaw_rate).

    Args:
      xy: (..., 2); yaw, speed, accel, yaw_rate: (...).
      xp: the array module (jax.numpy; numpy for host-side fitting).
    Returns:
      (xy, yaw, speed) after dt, speed clipped at 0 (the agent stops, it does not reverse).
    """
    new_speed = xp.maximum(speed + accel * dt, 0.0)
    mid_yaw = yaw + 0.5 * yaw_rate * dt
    dist = 0.5 * (speed + new_speed) * dt
    new_xy = xy + dist[..., None] * xp.stack([xp.cos(mid_yaw), xp.sin(mid_yaw)], axis=-1)
    new_yaw = (yaw + yaw_rate * dt + np.pi) % (2 * np.pi) - np.pi
    return new_xy, new_yaw, new_speed


def rollout_token(xy, yaw, speed, accel, yaw_rate, substeps: int = 5):
    """`advance` over one token's `STEP` in `substeps` equal parts (as the 10 Hz simulator does)."""

    shape = jnp.broadcast_shapes(yaw.shape, speed.shape, accel.shape, yaw_rate.shape)
    state = (jnp.broadcast_to(xy, (*shape, 2)), jnp.broadcast_to(yaw, shape), jnp.broadcast_to(speed, shape))

    def body(_, s):
        return advance(*s, accel, yaw_rate, STEP / substeps)

    return jax.lax.fori_loop(0, substeps, body, state)


def fit_tokens(xy0, yaw0, v0, xy1, yaw1, v1) -> np.ndarray:
    """Tokens of logged motion (host numpy): the token whose 0.5 s motion from state 0 ends closest
    to state 1.

    Args:
      xy0, xy1: (N, 2) positions; yaw0, yaw1, v0, v1: (N,).
    Returns:
      (N,) int32 token ids. The error counts metres of position, 2 m per radian of heading and
      0.5 m per m/s of speed; of equally good tokens the one with the smallest controls wins.
    """
    ctrl = controls().astype(np.float64)
    a, w = ctrl[None, :, 0], ctrl[None, :, 1]
    n = len(yaw0)
    xy = np.broadcast_to(np.asarray(xy0, np.float64)[:, None], (n, NUM_TOKENS, 2))
    yaw = np.broadcast_to(np.asarray(yaw0, np.float64)[:, None], (n, NUM_TOKENS))
    speed = np.broadcast_to(np.asarray(v0, np.float64)[:, None], (n, NUM_TOKENS))
    for _ in range(5):  # as `rollout_token`, in numpy (runs in data worker processes)
        xy, yaw, speed = advance(xy, yaw, speed, a, w, STEP / 5, xp=np)
    dyaw = (np.asarray(yaw) - np.asarray(yaw1)[:, None] + np.pi) % (2 * np.pi) - np.pi
    err = (
        np.linalg.norm(np.asarray(xy) - np.asarray(xy1)[:, None], axis=-1)
        + 2.0 * np.abs(dyaw)
        + 0.5 * np.abs(np.asarray(speed) - np.asarray(v1)[:, None])
        + 1e-3 * (np.abs(a) + np.abs(w))  # ties (a standing agent) go to the gentlest control
    )
    return np.argmin(err, axis=1).astype(np.int32)

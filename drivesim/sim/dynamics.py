"""Ego dynamics: a kinematic bicycle about the rear axle, its inverse, and a trajectory tracker.

Forward model (one step of length dt, controls held constant over it): the speed changes linearly,
v' = v + a dt, and the car moves along the chord of its turn at the mid-step speed and heading,

    v_mid = v + a dt / 2,  w = v_mid tan(steer) / L,
    xy'   = xy + v_mid dt (cos(yaw + w dt / 2), sin(yaw + w dt / 2)),  yaw' = yaw + w dt,

which is second-order accurate and exactly invertible: from two consecutive poses the inverse
recovers v_mid (chord length / dt) and w (heading change / dt), hence the controls.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from drivesim.data.types import EGO_WHEELBASE, SIM_DT, EgoState


@dataclasses.dataclass(frozen=True)
class VehicleParams:
    """Limits of the ego vehicle (a nuScenes Renault Zoe)."""

    wheelbase: float = EGO_WHEELBASE
    """Rear to front axle (m)."""
    max_steer: float = 0.6
    """Largest front-wheel angle (rad)."""
    max_steer_rate: float = 1.2
    """Fastest steering change (rad/s)."""
    max_accel: float = 3.0
    """Strongest acceleration (m/s^2)."""
    max_decel: float = 9.0
    """Strongest braking (m/s^2)."""
    max_speed: float = 30.0
    """Top speed (m/s)."""


def wrap(a):
    return (a + jnp.pi) % (2 * jnp.pi) - jnp.pi


@jax.named_scope("bicycle_step")
def bicycle_step(ego: EgoState, accel, steer, params: VehicleParams = VehicleParams(), dt: float = SIM_DT) -> EgoState:
    """Advance the ego by one step under controls (accel (), steer ()), clipped to the limits."""
    steer = jnp.clip(steer, ego.steer - params.max_steer_rate * dt, ego.steer + params.max_steer_rate * dt)
    steer = jnp.clip(steer, -params.max_steer, params.max_steer)
    accel = jnp.clip(accel, -params.max_decel, params.max_accel)
    # never reverse: braking stops at zero speed
    v_next = jnp.clip(ego.speed + accel * dt, 0.0, params.max_speed)
    accel = (v_next - ego.speed) / dt
    v_mid = 0.5 * (ego.speed + v_next)
    w = v_mid * jnp.tan(steer) / params.wheelbase
    heading = ego.yaw + 0.5 * w * dt
    xy = ego.xy + v_mid * dt * jnp.stack([jnp.cos(heading), jnp.sin(heading)], axis=-1)
    return EgoState(xy=xy, yaw=wrap(ego.yaw + w * dt), speed=v_next, accel=accel, steer=steer)


@jax.named_scope("inverse_dynamics")
def inverse_dynamics(xy, yaw, v0, params: VehicleParams = VehicleParams(), dt: float = SIM_DT):
    """Controls that drive the bicycle through logged poses.

    Args:
      xy: (T, 2) rear-axle positions; yaw: (T,) headings, at steps of dt.
      v0: () speed at the first pose.
    Returns:
      accel (T-1,), steer (T-1,): controls for each step (unclipped, so that a log outside the
      vehicle's limits shows up as out-of-range controls rather than silently changing).
    """
    d = jnp.linalg.norm(jnp.diff(xy, axis=0), axis=-1)
    v_mid = d / dt
    w = wrap(jnp.diff(yaw)) / dt

    # speeds at the poses: v_{t+1} = 2 v_mid_t - v_t makes the mid-step speeds exact
    def body(v, vm):
        v_next = jnp.maximum(2.0 * vm - v, 0.0)
        return v_next, v_next

    _, v_next = jax.lax.scan(body, jnp.asarray(v0, jnp.float32), v_mid.astype(jnp.float32))
    v = jnp.concatenate([jnp.asarray(v0, jnp.float32)[None], v_next[:-1]])
    accel = (v_next - v) / dt
    steer = jnp.arctan2(w * params.wheelbase, jnp.maximum(v_mid, 1e-3))
    steer = jnp.where(v_mid < 1e-3, 0.0, steer)
    return accel, steer


def rollout_controls(ego: EgoState, accel, steer, params: VehicleParams = VehicleParams(), dt: float = SIM_DT):
    """Forward-simulate controls (T,) from `ego`; returns the EgoState at each of the T+1 steps.

    Steering-rate limits are lifted here so that inverse-then-forward is an exact round trip.
    """
    free = dataclasses.replace(params, max_steer_rate=1e6, max_steer=1.5, max_accel=1e6, max_decel=1e6, max_speed=1e6)

    def body(state, u):
        nxt = bicycle_step(state, u[0], u[1], free, dt)
        return nxt, nxt

    _, states = jax.lax.scan(body, ego, jnp.stack([accel, steer], axis=-1))
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), ego, states)


@dataclasses.dataclass(frozen=True)
class TrackerParams:
    """The trajectory tracker: pure pursuit for steering, progress matching for speed."""

    preview: float = 0.5
    """Seconds ahead whose planned progress the speed controller aims to reach."""
    lookahead_min: float = 3.0
    """Shortest pure-pursuit lookahead (m)."""
    lookahead_time: float = 0.8
    """Lookahead grows with speed: this many seconds of travel (m = s * speed)."""


def _polyline_point(xy, s):
    """Point at arc length s (clipped, extended straight past the end) of a polyline (K, 2)."""
    seg = jnp.diff(xy, axis=0)
    length = jnp.linalg.norm(seg, axis=-1)
    cum = jnp.concatenate([jnp.zeros(1), jnp.cumsum(length)])
    i = jnp.clip(jnp.searchsorted(cum, s, side="right") - 1, 0, xy.shape[0] - 2)
    f = (s - cum[i]) / jnp.maximum(length[i], 1e-6)
    return xy[i] + seg[i] * f  # f > 1 past the end: continue along the last segment


@jax.named_scope("track")
def track(
    ego: EgoState,
    path,
    dt: float,
    elapsed=0.0,
    vehicle: VehicleParams = VehicleParams(),
    cfg: TrackerParams = TrackerParams(),
):
    """(accel, steer) that follow a planned path.

    Args:
      ego: the current ego state.
      path: (K + 1, 2) the planned rear-axle positions in the CURRENT ego frame: where the ego was
        when the plan was made, then the K waypoints, dt seconds apart.
      dt: seconds between path points.
      elapsed: seconds since the plan was made.
    """
    times = jnp.arange(path.shape[0]) * dt
    seg = jnp.linalg.norm(jnp.diff(path, axis=0), axis=-1)
    cum = jnp.concatenate([jnp.zeros(1), jnp.cumsum(seg)])
    # speed: reach the planned progress `preview` seconds ahead with constant acceleration
    t_target = elapsed + cfg.preview
    tail_speed = seg[-1] / dt
    s_target = jnp.interp(t_target, times, cum, right=cum[-1] + (t_target - times[-1]) * tail_speed)
    s_now = jnp.interp(elapsed, times, cum)
    tau = cfg.preview
    accel = 2.0 * (s_target - s_now - ego.speed * tau) / (tau * tau)
    # steering: pure pursuit on the planned path, from where the plan says we are now
    lookahead = jnp.maximum(cfg.lookahead_min, cfg.lookahead_time * ego.speed)
    target = _polyline_point(path, s_now + lookahead)
    ld2 = jnp.maximum(jnp.sum(target**2), 1e-6)
    steer = jnp.arctan(2.0 * vehicle.wheelbase * target[1] / ld2)
    # a plan that stays put: brake, keep the wheels
    still = cum[-1] - s_now < 0.05
    return jnp.where(still, -vehicle.max_decel, accel), jnp.where(still, ego.steer, steer)


def to_ego_frame(points, ego_xy, ego_yaw):
    """Global points (..., 2) into the frame of an ego at (ego_xy (2,), ego_yaw ())."""
    c, s = jnp.cos(ego_yaw), jnp.sin(ego_yaw)
    d = points - ego_xy
    return jnp.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


def to_global(points, ego_xy, ego_yaw):
    """Ego-frame points (..., 2) of an ego at (ego_xy, ego_yaw) into the global frame."""
    c, s = jnp.cos(ego_yaw), jnp.sin(ego_yaw)
    x, y = points[..., 0], points[..., 1]
    return jnp.stack([ego_xy[0] + c * x - s * y, ego_xy[1] + s * x + c * y], axis=-1)

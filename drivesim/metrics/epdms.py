"""EPDMS, NAVSIM v2's extended PDM score: the terms that need more than one step's geometry.

`drivesim.metrics.pdms.score` already gives the per-rollout terms that its step terms decide:
driving-direction compliance (DDC), traffic-light compliance (TLC), lane keeping (LK). This module
adds what needs the log or the planner's outputs, and combines them (`extend`):

- History comfort (HC): nuPlan's comfort bounds (`pdms.comfort`) checked over the logged ego's
  last `MetricConfig.history_seconds` before the start followed by the rollout, so that a plan
  that jars against the motion so far is uncomfortable. Windows wholly in the history are not
  checked: they are the log's, the same for every planner.
- Extended comfort (EC): each plan against the one before it over the time both cover. The
  acceleration magnitude, jerk, yaw rate and yaw acceleration of each plan (Savitzky-Golay
  derivatives of its poses, as `pdms.comfort`'s) are compared; a pair is comfortable iff the RMS
  of every difference is within NAVSIM's thresholds (0.7 m/s^2, 0.5 m/s^3, 0.1 rad/s,
  0.1 rad/s^2). NAVSIM scores one pair of frames per scene (0 or 1); a closed-loop rollout makes
  a plan at every replanning step, so EC is the fraction of comfortable consecutive pairs (1 with
  fewer than two plans).
- The human filter: a term that the logged ego (the human) itself fails over the same horizon
  is not held against the planner: it counts 1, as NAVSIM v2 does. It applies to the terms that
  depend on the ego and the map only: DAC, DDC, TLC, LK and HC. NC and TTC are not filtered (the
  logged ego would have to be re-simulated against each engine's agents), EP is already relative
  to the human, and the log has no plans for EC.
- EPDMS = NC * DAC * DDC * TLC * (5 EP + 5 TTC + 2 LK + 2 HC + 2 EC) / 16.

Written for one scenario; `vmap` for batches. Logs are at the simulator's rate (`SIM_DT`).
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp

from drivesim.data.types import SIM_DT, EgoState, Log
from drivesim.metrics.pdms import (
    MetricConfig,
    Scores,
    _filter,
    _savgol_coeffs,
    comfort,
    driving_direction_compliance,
    lane_keeping,
    map_terms,
)


def _trace(speed: jnp.ndarray, yaw: jnp.ndarray) -> EgoState:
    z = jnp.zeros_like(speed)
    return EgoState(xy=jnp.zeros(speed.shape + (2,), speed.dtype), yaw=yaw, speed=speed, accel=z, steer=z)


def _history(log: Log, t0, cfg: MetricConfig):
    """The logged ego's speed, heading and validity over the `history_seconds` before t0: (H,) each."""
    n = max(1, round(cfg.history_seconds / SIM_DT))
    T = log.time.shape[-1]
    idx = t0 - n + jnp.arange(n)
    k = jnp.clip(idx, 0, T - 1)
    ok = (idx >= 0) & log.ego.valid[k]
    return log.ego.speed[k], log.ego.yaw[k], ok


def history_comfort(
    log: Log,
    t0,
    ego_trace: EgoState,
    valid: jnp.ndarray,
    cfg: MetricConfig = MetricConfig(),  # noqa: B008 (frozen, hence immutable)
) -> jnp.ndarray:
    """HC: () 1.0 if the logged history before log step t0 followed by the rollout (`ego_trace`
    speed (T,), yaw (T,), its first step at t0; `valid` (T,)) stays within the comfort bounds.

    Only windows that reach past t0 are checked: a window wholly in the history is the same for
    every planner (the log's own jolts, which the human filter would forgive anyway)."""
    speed_h, yaw_h, ok_h = _history(log, t0, cfg)
    speed = jnp.concatenate([speed_h.astype(jnp.float32), jnp.asarray(ego_trace.speed, jnp.float32)])
    yaw = jnp.concatenate([yaw_h.astype(jnp.float32), jnp.asarray(ego_trace.yaw, jnp.float32)])
    valid = jnp.asarray(valid, bool)
    ours = jnp.concatenate([jnp.zeros_like(ok_h), jnp.ones_like(valid).at[0].set(False)])  # after t0
    return comfort(_trace(speed, yaw), SIM_DT, cfg, jnp.concatenate([ok_h, valid]), ours)


def plan_features(xy: jnp.ndarray, yaw: jnp.ndarray, dt: float, cfg: MetricConfig = MetricConfig()):  # noqa: B008
    """What extended comfort compares of one plan.

    Args:
      xy: (K, 2) poses (k + 1) * dt from now, in the frame of the ego when planned; yaw: (K,).
      dt: seconds between poses (static).

    Returns:
      dict name -> (values (N,), times (N,) seconds since the plan was made): "accel" (magnitude
      of the acceleration vector, m/s^2), "jerk" (its rate, m/s^3), "yaw_rate", "yaw_accel".
    """
    xy = jnp.concatenate([jnp.zeros((1, 2), jnp.float32), jnp.asarray(xy, jnp.float32)])
    heading = jnp.unwrap(jnp.concatenate([jnp.zeros((1,), jnp.float32), jnp.asarray(yaw, jnp.float32)]))
    w = cfg.comfort_window
    h = w // 2
    d1, d2 = _savgol_coeffs(w, 2, 1, dt), _savgol_coeffs(w, 2, 2, dt)
    ones = jnp.ones(xy.shape[0], bool)
    ax, _ = _filter(xy[:, 0], ones, d2)
    ay, _ = _filter(xy[:, 1], ones, d2)
    accel = jnp.hypot(ax, ay)
    jerk, _ = _filter(accel, jnp.ones(accel.shape[0], bool), d1)
    yaw_rate, _ = _filter(heading, ones, d1)
    yaw_accel, _ = _filter(heading, ones, d2)

    def times(v, lag):
        return (lag + jnp.arange(v.shape[0])) * dt

    return {
        "accel": (accel, times(accel, h)),
        "jerk": (jerk, times(jerk, 2 * h)),
        "yaw_rate": (yaw_rate, times(yaw_rate, h)),
        "yaw_accel": (yaw_accel, times(yaw_accel, h)),
    }


def consistent_plans(prev_xy, prev_yaw, xy, yaw, shift, dt: float, cfg: MetricConfig = MetricConfig()):  # noqa: B008
    """() bool: a plan and the one made `shift` seconds before it agree (EC's test of one pair).

    Each feature of the earlier plan is read at the later plan's sample times (on the later
    plan's clock: earlier-plan time minus `shift`), where both cover them; the pair agrees iff
    the RMS difference of every feature is within its threshold. No overlap: they agree.
    """
    a, b = plan_features(prev_xy, prev_yaw, dt, cfg), plan_features(xy, yaw, dt, cfg)
    limits = {"accel": cfg.ec_accel, "jerk": cfg.ec_jerk, "yaw_rate": cfg.ec_yaw_rate, "yaw_accel": cfg.ec_yaw_accel}
    ok = jnp.ones((), bool)
    for name, limit in limits.items():
        (va, ta), (vb, tb) = a[name], b[name]
        ta = ta - shift
        inside = (tb >= ta[0] - 1e-4) & (tb <= ta[-1] + 1e-4)
        diff = jnp.where(inside, jnp.interp(tb, ta, va) - vb, 0.0)
        rms = jnp.sqrt(jnp.sum(diff * diff) / jnp.maximum(jnp.sum(inside), 1))
        ok = ok & (rms <= limit)
    return ok


def extended_comfort(
    plan_xy: jnp.ndarray,
    plan_yaw: jnp.ndarray,
    plan_age: jnp.ndarray,
    valid: jnp.ndarray,
    dt: float,
    cfg: MetricConfig = MetricConfig(),  # noqa: B008 (frozen, hence immutable)
) -> jnp.ndarray:
    """EC: () float32 fraction of consecutive plans that agree (`consistent_plans`), 1 if none.

    Args:
      plan_xy: (T, K, 2) the plan the ego followed at each step of the trace (in the frame of the
        ego when it was made), plan_yaw: (T, K);
      plan_age: (T,) int32 steps since that plan was made (0: made at this step; < 0: no plan);
      valid: (T,) bool steps that count; dt: seconds between plan poses (static).
    """
    age = jnp.asarray(plan_age)
    new = (age == 0) & jnp.asarray(valid, bool)
    has_prev = jnp.concatenate([jnp.zeros((1,), bool), age[:-1] >= 0])
    pair = new & has_prev
    prev_age = jnp.concatenate([jnp.zeros((1,), age.dtype), age[:-1]])
    shift = (prev_age + 1).astype(jnp.float32) * SIM_DT
    prev_xy = jnp.concatenate([plan_xy[:1], plan_xy[:-1]])
    prev_yaw = jnp.concatenate([plan_yaw[:1], plan_yaw[:-1]])
    ok = jax.vmap(lambda pa, pb, a, b, s: consistent_plans(pa, pb, a, b, s, dt, cfg))(
        prev_xy, prev_yaw, plan_xy, plan_yaw, shift
    )
    n = jnp.sum(pair)
    return jnp.where(n > 0, jnp.sum(pair & ok) / jnp.maximum(n, 1), 1.0).astype(jnp.float32)


def human_terms(
    log: Log,
    t0,
    horizon: int,
    cfg: MetricConfig = MetricConfig(),  # noqa: B008 (frozen, hence immutable)
) -> dict[str, jnp.ndarray]:
    """The filtered terms for the logged ego over log steps t0 .. t0 + horizon (the human filter).

    Returns:
      dict of () float32: "dac", "ddc", "tlc", "lk", "hc" of the logged ego, as the planner's are
      scored (steps past the log's end do not count).
    """
    T = log.time.shape[-1]
    idx = t0 + jnp.arange(horizon + 1)
    k = jnp.clip(idx, 0, T - 1)
    valid = (idx < T) & log.ego.valid[k]
    xy, yaw = log.ego.xy[k], log.ego.yaw[k]
    disp = jnp.concatenate([jnp.zeros((1, 2), xy.dtype), xy[1:] - xy[:-1]]).astype(jnp.float32)
    red = jax.vmap(log.signals.now)(k).red

    def one(p, y, d, r):
        return map_terms(log.map, log.signals.replace(red=r), p, y, d, cfg)

    # step by step (a scan), not vmapped: the vmapped lane search over every step at once is
    # memory-bound and cost more than the whole rollout's step terms
    terms = jax.lax.map(lambda a: one(*a), (xy, yaw, disp, red))
    f32 = jnp.float32
    _, ddc = driving_direction_compliance(terms["wrong_way"], valid, cfg)
    return {
        "dac": jnp.all(terms["drivable"] | ~valid).astype(f32),
        "ddc": ddc,
        "tlc": jnp.all(~terms["red_light"] | ~valid).astype(f32),
        "lk": lane_keeping(types.SimpleNamespace(**terms), valid, cfg),
        "hc": history_comfort(log, t0, _trace(log.ego.speed[k], yaw), valid, cfg),
    }


def extend(
    scores: Scores,
    hc: jnp.ndarray,
    ec: jnp.ndarray,
    human: dict[str, jnp.ndarray] | None = None,
) -> Scores:
    """`scores` (from `pdms.score`) with history comfort `hc`, extended comfort `ec`, the human
    filter (`human_terms`; None: no filter) and EPDMS recomputed from them. The reported ddc,
    tlc, lk and hc are the filtered ones; dac stays PDMS's (unfiltered), while EPDMS uses the
    filtered one."""

    def filtered(name, value):
        return value if human is None else jnp.where(human[name] == 0.0, 1.0, value)

    dac = filtered("dac", scores.dac)
    ddc = filtered("ddc", scores.ddc)
    tlc = filtered("tlc", scores.tlc)
    lk = filtered("lk", scores.lk)
    hc = filtered("hc", jnp.asarray(hc, jnp.float32))
    ec = jnp.asarray(ec, jnp.float32)
    weighted = (5.0 * scores.ep + 5.0 * scores.ttc + 2.0 * lk + 2.0 * hc + 2.0 * ec) / 16.0
    epdms = scores.nc * dac * ddc * tlc * weighted
    return scores.replace(ddc=ddc, tlc=tlc, lk=lk, hc=hc, ec=ec, epdms=epdms.astype(jnp.float32))

"""Closed-loop planner scores: NAVSIM v1's PDMS and a nuPlan CLS-style aggregate.

Two stages, so that the expensive geometry runs inside the simulator's `lax.scan`:

1. `step_terms(ego, agents, ...)` -> `StepTerms`, per 10 Hz step: at-fault collision, drivable
   area, time to collision, route progress, wrong-way distance, speed.
2. `score(terms, ego_trace, expert_progress, valid)` -> `Scores` over the whole rollout
   (`terms` and `ego_trace` stacked along a leading T axis), with `comfort` from the ego trace.

Both are written for one scenario; `vmap` them for batches.

Rules (NAVSIM v1 / nuPlan, adapted to nuScenes boxes):

- Collision: the ego box (`EGO_SIZE`, centred `EGO_REAR_AXLE_TO_CENTER` ahead of the rear axle)
  overlaps a valid agent box. Not at fault, hence ignored: the ego is stopped
  (speed < `stopped_speed`), or the agent's centre lies behind the ego's rear-axle line (in the
  ego frame), i.e. the agent hit the ego from behind. An at-fault collision with a static object
  (class OBSTACLE, or a non-pedestrian agent slower than `stopped_speed`) scores 0.5, any other
  at-fault collision 0 (lateral contacts included: stricter than nuPlan, which forgives a side
  contact while the ego stays in its lane). NC is the minimum over valid steps.
- Drivable area: every ego box corner lies on a raster cell of class OCC_DRIVABLE, OCC_CROSSING
  or OCC_LANE_MARKING (walkway, free and anything outside the raster are not drivable). Only the
  four corners are sampled. DAC = 1 iff this holds at every valid step.
- TTC: while the ego moves, the ego (constant speed and heading) and the agents (constant
  velocity along their heading) are projected every `ttc_dt` up to `ttc_horizon`; the step's
  time to collision is the first sample at which the projected ego box overlaps an agent that it
  does not already overlap, in a way that would be at fault by the rules above (static objects
  included). The step is ok iff that time is not below `ttc_threshold`. TTC = 1 iff every valid
  step is ok.
- EP: route progress of the ego rear axle over the rollout (last valid minus first valid step)
  relative to `expert_progress`, clipped to [0, 1]; 1 when `expert_progress < min_progress`.
- C: `comfort` (nuPlan's bounds on Savitzky-Golay derivatives of speed and heading).
- PDMS = NC * DAC * (5 TTC + 5 EP + 2 C) / 12.
- CLS = NC * DAC * making_progress * driving_direction * (5 EP + 5 TTC + 4 speed_limit + 2 C) / 16,
  with making_progress = 1 iff ego progress >= `making_progress_ratio` * expert progress (or the
  expert moved less than `min_progress`), driving_direction = 1, 0.5 or 0 as the largest distance
  driven against the lane direction within any `wrong_way_window` stays below
  `wrong_way_warn`, below `wrong_way_fail`, or not, and speed_limit = 1 - mean over valid steps
  of max(0, speed - limit) / limit, clipped to [0, 1] (one limit for all roads: nuScenes maps carry
  none).

Geometry is computed from positions relative to the ego before any rotation, so that float32
keeps millimetre accuracy at nuScenes map coordinates.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from drivesim.data.classes import OBSTACLE, OCC_CROSSING, OCC_DRIVABLE, OCC_LANE_MARKING, PEDESTRIAN
from drivesim.data.geometry import box_corners, overlap_in_frame
from drivesim.data.types import EGO_REAR_AXLE_TO_CENTER, EGO_SIZE, SIM_DT, AgentState, EgoState, MapData, Route, Signals

DRIVABLE_CLASSES = (OCC_DRIVABLE, OCC_CROSSING, OCC_LANE_MARKING)
"""Map raster classes the ego footprint may stand on."""


@dataclasses.dataclass(frozen=True)
class MetricConfig:
    """Thresholds of the planner scores (hashable: pass it as a static argument)."""

    ttc_horizon: float = 1.0
    """How far ahead (s) the ego and the agents are projected for time to collision."""
    ttc_threshold: float = 0.95
    """A projected at-fault collision sooner than this (s) violates TTC."""
    ttc_dt: float = 0.1
    """Seconds between projected samples (the first sample is at `ttc_dt`)."""

    min_lon_accel: float = -4.05
    """Strongest comfortable braking (m/s^2)."""
    max_lon_accel: float = 2.40
    """Strongest comfortable longitudinal acceleration (m/s^2)."""
    max_lat_accel: float = 4.89
    """Largest comfortable |lateral acceleration| (m/s^2)."""
    max_jerk: float = 8.37
    """Largest comfortable |d/dt of the acceleration magnitude| (m/s^3)."""
    max_lon_jerk: float = 4.13
    """Largest comfortable |longitudinal jerk| (m/s^3)."""
    max_yaw_accel: float = 1.93
    """Largest comfortable |yaw acceleration| (rad/s^2)."""
    max_yaw_rate: float = 0.95
    """Largest comfortable |yaw rate| (rad/s)."""
    comfort_window: int = 5
    """Savitzky-Golay window (steps, odd) of the comfort derivatives, as nuPlan's (polynomial
    order 2)."""

    min_progress: float = 5.0
    """Below this expert progress (m) EP counts as 1 and the ego counts as making progress."""
    stopped_speed: float = 0.05
    """Below this speed (m/s) the ego is stopped (never at fault) and an agent is static."""
    speed_limit: float = 13.9
    """Speed limit (m/s) of the CLS speed-limit term (nuScenes maps carry no limits)."""
    making_progress_ratio: float = 0.2
    """CLS making-progress multiplier: ego progress must reach this fraction of the expert's."""

    wrong_way_window: float = 1.0
    """Window (s) over which the distance driven against the lane direction is summed."""
    wrong_way_warn: float = 2.0
    """From this distance (m) within one window the driving-direction multiplier is 0.5."""
    wrong_way_fail: float = 6.0
    """From this distance (m) within one window the driving-direction multiplier is 0."""
    lane_search_radius: float = 3.0
    """Farther than this (m) from every (non-connector) lane centreline point the ego has no lane
    direction and cannot drive the wrong way."""

    epdms: bool = True
    """Compute the terms only EPDMS needs (lane keeping, traffic lights; `drivesim.metrics.epdms`).
    False skips them (they read compliant) and keeps PDMS's cost: for speed comparisons."""
    lane_keeping_limit: float = 0.5
    """EPDMS lane keeping: farther than this (m) from the lane centreline counts as drifting."""
    lane_keeping_window: float = 2.0
    """EPDMS lane keeping fails after drifting this long (s) without a break (steps in
    intersections neither count nor break the run), as NAVSIM v2."""
    human_filter: bool = True
    """EPDMS's human filter (NAVSIM v2's `human_penalty_filter`): a term the logged ego fails too is
    not held against the planner (`drivesim.metrics.epdms`)."""
    history_seconds: float = 1.5
    """EPDMS history comfort: seconds of the logged ego before the start that the comfort bounds
    are checked over together with the rollout (NAVSIM's 1.5 s of agent history)."""
    ec_accel: float = 0.7
    """EPDMS extended comfort: largest RMS difference (m/s^2) of the acceleration magnitude between
    consecutive plans over the time they overlap (NAVSIM v2's thresholds, this and below)."""
    ec_jerk: float = 0.5
    """... of the jerk (m/s^3)."""
    ec_yaw_rate: float = 0.1
    """... of the yaw rate (rad/s)."""
    ec_yaw_accel: float = 0.1
    """... of the yaw acceleration (rad/s^2)."""

    def __post_init__(self):
        if not (self.ttc_dt > 0 and self.ttc_horizon >= self.ttc_dt):
            raise ValueError(f"MetricConfig needs 0 < ttc_dt <= ttc_horizon, got {self}")
        if self.comfort_window < 3 or self.comfort_window % 2 == 0:
            raise ValueError(f"MetricConfig.comfort_window must be odd and >= 3, got {self.comfort_window}")
        if not (0 < self.wrong_way_warn <= self.wrong_way_fail):
            raise ValueError(f"MetricConfig needs 0 < wrong_way_warn <= wrong_way_fail, got {self}")
        if self.speed_limit <= 0:
            raise ValueError(f"MetricConfig needs speed_limit > 0, got {self}")

    @property
    def ttc_times(self) -> np.ndarray:
        """(K,) float32 projection times ttc_dt, 2 ttc_dt, ... <= ttc_horizon."""
        k = math.floor(self.ttc_horizon / self.ttc_dt + 1e-6)
        return (np.arange(1, k + 1) * self.ttc_dt).astype(np.float32)


@struct.dataclass
class StepTerms:
    """Per-step score terms of one scenario (stack them along a leading T axis for `score`).

    Attributes:
      collision: (...) float32: 1 no at-fault collision, 0.5 at-fault contact only with static
        objects, 0 at-fault collision with a moving object or any pedestrian.
      drivable: (...) bool: all four ego box corners on drivable raster cells.
      ttc: (...) float32 seconds to the first projected at-fault collision (inf if none within
        the horizon, or the ego is stopped).
      ttc_ok: (...) bool: `ttc >= ttc_threshold`.
      progress: (...) float32 arc length (m) of the rear axle's projection on the route.
      wrong_way: (...) float32 metres driven against the nearest lane's direction in this step.
      speed: (...) float32 ego speed (m/s).
      lane_deviation: (...) float32 distance (m) from the ego box centre to the nearest lane
        centreline (lane connectors excluded; inf with no lane); 0 when `MetricConfig.epdms` is off.
      in_intersection: (...) bool: the nearest centreline of all is a lane connector's.
      red_light: (...) bool: the ego box overlaps the stop line of a red light that controls its
        direction of travel (False when the states are unknown or `MetricConfig.epdms` is off).
    """

    collision: jnp.ndarray
    drivable: jnp.ndarray
    ttc: jnp.ndarray
    ttc_ok: jnp.ndarray
    progress: jnp.ndarray
    wrong_way: jnp.ndarray
    speed: jnp.ndarray
    lane_deviation: jnp.ndarray
    in_intersection: jnp.ndarray
    red_light: jnp.ndarray


@struct.dataclass
class Scores:
    """Scores of one rollout; every field is (...) float32 (leading dims are batch dims).

    Attributes:
      nc: no at-fault collision (1, 0.5 static object, 0).
      dac: drivable area compliance (1 or 0).
      ttc: time-to-collision compliance (1 or 0).
      ep: ego progress relative to the expert, in [0, 1].
      c: comfort (1 or 0).
      pdms: NAVSIM v1 PDMS = nc * dac * (5 ttc + 5 ep + 2 c) / 12.
      making_progress: CLS multiplier (1 or 0).
      driving_direction: CLS multiplier (1, 0.5 or 0).
      speed_limit: CLS speed-limit compliance in [0, 1].
      cls: nc * dac * making_progress * driving_direction * (5 ep + 5 ttc + 4 speed_limit + 2 c) / 16.
      ego_progress: route progress of the ego (m).
      expert_progress: the reference progress it was compared with (m).
      max_wrong_way: largest distance (m) driven against the lane direction within one window.
      first_collision_time: seconds from the first valid step to the first at-fault collision
        (NaN if none).
      first_offroad_time: seconds to the first step off the drivable area (NaN if none).
      first_ttc_violation_time: seconds to the first TTC violation (NaN if none).
      ddc: EPDMS driving-direction compliance (1, 0.5 or 0; the CLS multiplier's rule).
      tlc: EPDMS traffic-light compliance (1 or 0; 1 where the light states are unknown).
      tlc_known: 1 if the light states were known (TLC was checked), else 0.
      lk: EPDMS lane keeping (1 or 0).
      hc: EPDMS history comfort (1 or 0): `score` checks the rollout alone (= c);
        `drivesim.metrics.epdms.extend` prepends the logged history.
      ec: EPDMS extended comfort in [0, 1]: `score` gives 1; `extend` compares consecutive plans.
      epdms: nc * dac * ddc * tlc * (5 ep + 5 ttc + 2 lk + 2 hc + 2 ec) / 16 (NAVSIM v2; after
        `extend`, with its human filter).
    """

    nc: jnp.ndarray
    dac: jnp.ndarray
    ttc: jnp.ndarray
    ep: jnp.ndarray
    c: jnp.ndarray
    pdms: jnp.ndarray
    making_progress: jnp.ndarray
    driving_direction: jnp.ndarray
    speed_limit: jnp.ndarray
    cls: jnp.ndarray
    ego_progress: jnp.ndarray
    expert_progress: jnp.ndarray
    max_wrong_way: jnp.ndarray
    first_collision_time: jnp.ndarray
    first_offroad_time: jnp.ndarray
    first_ttc_violation_time: jnp.ndarray
    ddc: jnp.ndarray
    tlc: jnp.ndarray
    tlc_known: jnp.ndarray
    lk: jnp.ndarray
    hc: jnp.ndarray
    ec: jnp.ndarray
    epdms: jnp.ndarray


# --------------------------------------------------------------------------------------------
# Per step


def step_terms(
    ego: EgoState,
    agents: AgentState,
    agent_size: jnp.ndarray,
    agent_category: jnp.ndarray,
    map: MapData,
    route: Route,
    cfg: MetricConfig = MetricConfig(),  # noqa: B008 (frozen, hence immutable)
    prev_ego: EgoState | None = None,
    signals: Signals | None = None,
) -> StepTerms:
    """The score terms of one scenario at one step (the rules are in the module docstring).

    Args:
      ego: the ego now: xy (2,), yaw (), speed ().
      agents: the agents now: xy (A, 2) box centres, yaw (A,), speed (A,), valid (A,).
      agent_size: (A, 3) or (A, 2) `(length, width[, height])`.
      agent_category: (A,) int agent classes (`drivesim.data.classes`).
      map: the scenario's map: raster (R, R) for the drivable area, lane_xy (L, P, 2) with
        lane_valid (L,) and lane_is_connector (L,) for the driving direction.
      route: xy (N, 2), valid (N,), s (N,): the polyline that progress is measured along.
      cfg: thresholds (static).
      prev_ego: the ego one step earlier, for the distance driven in this step; None uses
        `speed * SIM_DT` along the heading.
      signals: the traffic lights now (`Signals.now`), or None (no lights: TLC holds).

    Returns:
      `StepTerms` of () scalars.
    """
    with jax.named_scope("step_terms"):
        ego_xy = jnp.asarray(ego.xy, jnp.float32)
        cos, sin = jnp.cos(ego.yaw), jnp.sin(ego.yaw)
        heading = jnp.stack([cos, sin])
        center = ego_xy + EGO_REAR_AXLE_TO_CENTER * heading
        ego_half = 0.5 * jnp.asarray(EGO_SIZE[:2], jnp.float32)
        moving = ego.speed >= cfg.stopped_speed

        # Agents in the frame of the ego box (x forward from the box centre).
        d = jnp.asarray(agents.xy, jnp.float32) - center
        d_ego = jnp.stack([d[:, 0] * cos + d[:, 1] * sin, d[:, 1] * cos - d[:, 0] * sin], axis=-1)
        rel_yaw = agents.yaw - ego.yaw
        agent_half = 0.5 * jnp.asarray(agent_size, jnp.float32)[:, :2]
        overlap_fn = jax.vmap(overlap_in_frame, in_axes=(0, 0, None, 0))
        overlaps = agents.valid & overlap_fn(d_ego, rel_yaw, ego_half, agent_half)
        static = (agent_category == OBSTACLE) | ((agents.speed < cfg.stopped_speed) & (agent_category != PEDESTRIAN))
        at_fault = overlaps & moving & ~_behind_rear_axle(d_ego[:, 0])
        collision = jnp.where(jnp.any(at_fault & static), 0.5, 1.0)
        collision = jnp.where(jnp.any(at_fault & ~static), 0.0, collision).astype(jnp.float32)

        ttc = _time_to_collision(ego, d_ego, rel_yaw, agents, agent_half, ego_half, overlaps, moving, cfg)
        disp = jnp.asarray(ego.xy - prev_ego.xy, jnp.float32) if prev_ego is not None else ego.speed * SIM_DT * heading
        lanes = map_terms(map, signals, ego_xy, ego.yaw, disp, cfg)
        return StepTerms(
            collision=collision,
            drivable=lanes["drivable"],
            ttc=ttc,
            ttc_ok=ttc >= cfg.ttc_threshold,
            progress=route_progress(route, ego_xy),
            wrong_way=lanes["wrong_way"],
            speed=jnp.asarray(ego.speed, jnp.float32),
            lane_deviation=lanes["lane_deviation"],
            in_intersection=lanes["in_intersection"],
            red_light=lanes["red_light"],
        )


def map_terms(
    map: MapData,
    signals: Signals | None,
    ego_xy: jnp.ndarray,
    ego_yaw: jnp.ndarray,
    disp: jnp.ndarray,
    cfg: MetricConfig = MetricConfig(),  # noqa: B008 (frozen, hence immutable)
) -> dict[str, jnp.ndarray]:
    """The terms of one ego pose that need only the map and the lights, not the other agents (so
    that they can be computed for the logged ego too: EPDMS's human filter).

    Args:
      map: the map; signals: the lights now (`red` (S,)) or None.
      ego_xy: (2,) rear axle; ego_yaw: (); disp: (2,) metres moved in this step.

    Returns:
      dict of () arrays: drivable, wrong_way, lane_deviation, in_intersection, red_light (see
      `StepTerms`).
    """
    ego_xy = jnp.asarray(ego_xy, jnp.float32)
    heading = jnp.stack([jnp.cos(ego_yaw), jnp.sin(ego_yaw)])
    center = ego_xy + EGO_REAR_AXLE_TO_CENTER * heading
    wrong_way, deviation, in_intersection = _lane_terms(map, center, disp, cfg)
    if not cfg.epdms:
        deviation, in_intersection = jnp.zeros((), jnp.float32), jnp.zeros((), bool)
    red = _on_red_stop_line(signals, center, ego_yaw) if (cfg.epdms and signals is not None) else jnp.zeros((), bool)
    return {
        "drivable": _on_drivable(map, ego_xy, ego_yaw),
        "wrong_way": wrong_way,
        "lane_deviation": deviation,
        "in_intersection": in_intersection,
        "red_light": red,
    }


def _on_red_stop_line(signals: Signals, center: jnp.ndarray, ego_yaw: jnp.ndarray) -> jnp.ndarray:
    """() bool: the ego box (centre (2,), heading) overlaps a red light's stop line whose lane runs
    within 90 degrees of the ego's heading (a stop line of the other direction does not apply)."""
    cos, sin = jnp.cos(ego_yaw), jnp.sin(ego_yaw)
    d = jnp.asarray(signals.centre, jnp.float32) - center
    d_ego = jnp.stack([d[:, 0] * cos + d[:, 1] * sin, d[:, 1] * cos - d[:, 0] * sin], axis=-1)
    rel_yaw = signals.yaw - ego_yaw
    ego_half = 0.5 * jnp.asarray(EGO_SIZE[:2], jnp.float32)
    half = 0.5 * jnp.asarray(signals.size, jnp.float32)
    hit = jax.vmap(overlap_in_frame, in_axes=(0, 0, None, 0))(d_ego, rel_yaw, ego_half, half)
    facing = jnp.cos(rel_yaw) > 0.0
    return jnp.any(hit & facing & signals.valid & signals.red & signals.known)


def _behind_rear_axle(x_from_center: jnp.ndarray) -> jnp.ndarray:
    """Agents whose centre (x in the ego-box frame) is behind the ego's rear-axle line."""
    return x_from_center < -EGO_REAR_AXLE_TO_CENTER


def _time_to_collision(ego, d_ego, rel_yaw, agents, agent_half, ego_half, overlaps, moving, cfg) -> jnp.ndarray:
    """() seconds to the first projected at-fault collision with an agent not already hit."""
    times = jnp.asarray(cfg.ttc_times)  # (K,)
    # Relative velocity (agent minus ego) in the ego frame; headings stay constant, so the boxes'
    # relative orientation is fixed and only the offset moves.
    agent_vel = agents.speed[:, None] * jnp.stack([jnp.cos(rel_yaw), jnp.sin(rel_yaw)], axis=-1)
    rel_vel = agent_vel - jnp.stack([ego.speed, jnp.zeros_like(ego.speed)])
    offsets = d_ego[:, None, :] + rel_vel[:, None, :] * times[None, :, None]  # (A, K, 2)
    hit_fn = jax.vmap(jax.vmap(overlap_in_frame, in_axes=(0, None, None, None)), in_axes=(0, 0, None, 0))
    hits = hit_fn(offsets, rel_yaw, ego_half, agent_half)  # (A, K)
    candidate = agents.valid & ~overlaps & moving
    hits = hits & candidate[:, None] & ~_behind_rear_axle(offsets[..., 0])
    return jnp.min(jnp.where(hits, times[None, :], jnp.inf))


def _on_drivable(map: MapData, ego_xy: jnp.ndarray, ego_yaw: jnp.ndarray) -> jnp.ndarray:
    """() bool: all four ego box corners on drivable raster cells."""
    origin = jnp.asarray(map.raster_origin, jnp.float32)
    # Corners relative to the raster origin, offset first for float32 accuracy.
    local = box_corners(
        EGO_REAR_AXLE_TO_CENTER * jnp.stack([jnp.cos(ego_yaw), jnp.sin(ego_yaw)]), ego_yaw, jnp.asarray(EGO_SIZE)
    )
    cells = ((ego_xy - origin) + local) / map.raster_resolution  # (4, 2) (column, row)
    size_r, size_c = map.raster.shape
    col = jnp.floor(cells[:, 0]).astype(jnp.int32)
    row = jnp.floor(cells[:, 1]).astype(jnp.int32)
    inside = (col >= 0) & (col < size_c) & (row >= 0) & (row < size_r)
    flat = jnp.clip(row, 0, size_r - 1) * size_c + jnp.clip(col, 0, size_c - 1)
    cls = jnp.take(map.raster.reshape(-1), flat, mode="clip")
    ok = jnp.zeros_like(inside)
    for c in DRIVABLE_CLASSES:
        ok = ok | (cls == c)
    return jnp.all(inside & ok)


@jax.named_scope("route_progress")
def route_progress(route: Route, xy: jnp.ndarray) -> jnp.ndarray:
    """Arc length along the route of a point's projection on the route polyline.

    The point is projected on the nearest segment between two consecutive valid route points
    (the straight continuation past the last valid point does not count); the result is
    continuous in `xy` except where the nearest segment jumps between distant parts of the route.

    Args:
      route: xy (N, 2), valid (N,), s (N,) arc length of each point.
      xy: (2,) global point (the ego rear axle).

    Returns:
      () float32 `route.s` interpolated at the projection (0 if the route has no valid segment).
    """
    # Relative to the point for float32 accuracy; x and y apart, as XLA:CPU vectorises (N,)
    # arrays far better than reductions over a trailing axis of 2.
    xy = jnp.asarray(xy, jnp.float32)
    px = jnp.asarray(route.xy[:, 0], jnp.float32) - xy[0]
    py = jnp.asarray(route.xy[:, 1], jnp.float32) - xy[1]
    ax, ay = px[:-1], py[:-1]
    abx, aby = px[1:] - ax, py[1:] - ay
    seg_valid = route.valid[:-1] & route.valid[1:]
    t = jnp.clip(-(ax * abx + ay * aby) / jnp.maximum(abx * abx + aby * aby, 1e-12), 0.0, 1.0)
    fx, fy = ax + t * abx, ay + t * aby
    i = _argmin(jnp.where(seg_valid, fx * fx + fy * fy, jnp.inf))
    s = jnp.asarray(route.s, jnp.float32)
    progress = s[i] + t[i] * (s[i + 1] - s[i])
    return jnp.where(jnp.any(seg_valid), progress, 0.0)


def _lane_terms(map: MapData, center: jnp.ndarray, disp: jnp.ndarray, cfg: MetricConfig):
    """Where `center` (2,) stands among the lanes: (metres of `disp` (2,) against the direction of
    the nearest lane, distance to that lane's centreline, whether a lane connector is nearer).

    "Nearest" is by point-to-segment distance over every piece of every lane, so that a lane whose
    sample points happen to fall beside the ego is not preferred over the one it is on. Lane
    connectors are skipped for the direction and the distance: inside intersections they cross at
    every angle, so the nearest one says nothing about the ego's own lane; that one is nearer
    marks the ego as in an intersection.
    """
    lanes = jnp.asarray(map.lane_xy, jnp.float32)
    # x and y apart (see `route_progress`)
    ax, ay = lanes[:, :-1, 0] - center[0], lanes[:, :-1, 1] - center[1]  # (L, P-1)
    abx, aby = lanes[:, 1:, 0] - center[0] - ax, lanes[:, 1:, 1] - center[1] - ay
    length2 = abx * abx + aby * aby
    t = jnp.clip(-(ax * abx + ay * aby) / jnp.maximum(length2, 1e-12), 0.0, 1.0)
    fx, fy = ax + t * abx, ay + t * aby
    dist2 = jnp.where(map.lane_valid[:, None] & (length2 > 1e-12), fx * fx + fy * fy, jnp.inf)
    d2 = jnp.where(map.lane_is_connector[:, None], jnp.inf, dist2).reshape(-1)
    k = _argmin(d2)
    k = jnp.minimum(k, d2.shape[0] - 1)
    tx, ty = abx.reshape(-1)[k], aby.reshape(-1)[k]
    norm = jnp.sqrt(length2.reshape(-1)[k])
    near = d2[k] <= cfg.lane_search_radius**2
    along = (disp[0] * tx + disp[1] * ty) / jnp.maximum(norm, 1e-6)
    wrong_way = jnp.where(near, jnp.maximum(-along, 0.0), 0.0).astype(jnp.float32)
    connector2 = jnp.min(jnp.where(map.lane_is_connector[:, None], dist2, jnp.inf))
    return wrong_way, jnp.sqrt(d2[k]).astype(jnp.float32), connector2 < d2[k]


def _argmin(v: jnp.ndarray) -> jnp.ndarray:
    """() int32 index of the first minimum of (N,) v (0 if all are inf, N if all are NaN).

    Two plain reductions: XLA:CPU does not vectorise `argmin`'s variadic reduce, which made it
    several times slower here.
    """
    n = v.shape[0]
    return jnp.min(jnp.where(v == jnp.min(v), jnp.arange(n, dtype=jnp.int32), n))


# --------------------------------------------------------------------------------------------
# Over the rollout


def score(
    terms: StepTerms,
    ego_trace: EgoState,
    expert_progress: jnp.ndarray,
    valid: jnp.ndarray,
    cfg: MetricConfig = MetricConfig(),  # noqa: B008 (frozen, hence immutable)
    tlc_known=True,
) -> Scores:
    """The rollout's scores from its per-step terms (the rules are in the module docstring).

    Args:
      terms: `StepTerms` with leading (T,) (what `step_terms` gave at each step).
      ego_trace: the ego at the same T steps (10 Hz, `SIM_DT` apart): speed (T,), yaw (T,).
      expert_progress: () best reference route progress over the same time (m).
      valid: (T,) bool: steps that count (a contiguous run is expected; progress is measured
        from the first to the last valid step). With no valid step every term is 1 except EP,
        which follows the `min_progress` rule with zero ego progress.
      cfg: thresholds (static).
      tlc_known: () bool: the light states were known (reported as `Scores.tlc_known`).

    Returns:
      `Scores` of () float32 scalars (EPDMS without its history, plans and human filter: see
      `drivesim.metrics.epdms.extend`).
    """
    with jax.named_scope("score"):
        valid = jnp.asarray(valid, bool)
        T = valid.shape[0]
        f32 = jnp.float32
        nc = jnp.min(jnp.where(valid, terms.collision, 1.0), initial=1.0).astype(f32)
        dac = jnp.all(terms.drivable | ~valid).astype(f32)
        ttc = jnp.all(terms.ttc_ok | ~valid).astype(f32)

        first = jnp.argmax(valid)
        last = T - 1 - jnp.argmax(valid[::-1])
        ego_progress = jnp.where(jnp.any(valid), terms.progress[last] - terms.progress[first], 0.0).astype(f32)
        expert_progress = jnp.asarray(expert_progress, f32)
        short = expert_progress < cfg.min_progress
        ep = jnp.where(short, 1.0, jnp.clip(ego_progress / jnp.maximum(expert_progress, 1e-6), 0.0, 1.0)).astype(f32)
        c = comfort(ego_trace, SIM_DT, cfg, valid)
        pdms = nc * dac * (5.0 * ttc + 5.0 * ep + 2.0 * c) / 12.0

        making_progress = (short | (ego_progress >= cfg.making_progress_ratio * expert_progress)).astype(f32)
        max_wrong_way, driving_direction = driving_direction_compliance(terms.wrong_way, valid, cfg)
        overspeed = jnp.maximum(terms.speed - cfg.speed_limit, 0.0) / cfg.speed_limit
        mean_overspeed = jnp.sum(jnp.where(valid, overspeed, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
        speed_limit = jnp.clip(1.0 - mean_overspeed, 0.0, 1.0).astype(f32)
        cls = (
            nc * dac * making_progress * driving_direction * (5.0 * ep + 5.0 * ttc + 4.0 * speed_limit + 2.0 * c) / 16.0
        )

        tlc = jnp.all(~terms.red_light | ~valid).astype(f32)
        lk = lane_keeping(terms, valid, cfg)
        ec = jnp.ones((), f32)
        epdms = nc * dac * driving_direction * tlc * (5.0 * ep + 5.0 * ttc + 2.0 * lk + 2.0 * c + 2.0 * ec) / 16.0

        def first_time(bad):
            bad = bad & valid
            return jnp.where(jnp.any(bad), (jnp.argmax(bad) - first) * SIM_DT, jnp.nan).astype(f32)

        return Scores(
            nc=nc,
            dac=dac,
            ttc=ttc,
            ep=ep,
            c=c,
            pdms=pdms.astype(f32),
            making_progress=making_progress,
            driving_direction=driving_direction,
            speed_limit=speed_limit,
            cls=cls.astype(f32),
            ego_progress=ego_progress,
            expert_progress=expert_progress,
            max_wrong_way=max_wrong_way,
            first_collision_time=first_time(terms.collision < 1.0),
            first_offroad_time=first_time(~terms.drivable),
            first_ttc_violation_time=first_time(~terms.ttc_ok),
            ddc=driving_direction,
            tlc=tlc,
            tlc_known=jnp.asarray(tlc_known, f32),
            lk=lk,
            hc=c,
            ec=ec,
            epdms=epdms.astype(f32),
        )


def driving_direction_compliance(
    wrong_way: jnp.ndarray,
    valid: jnp.ndarray,
    cfg: MetricConfig = MetricConfig(),  # noqa: B008 (frozen, hence immutable)
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """nuPlan's / NAVSIM's driving-direction compliance from the metres driven against the lane
    direction at each step (T,): (the largest sum within one `wrong_way_window`, and 1, 0.5 or 0
    as it stays below `wrong_way_warn`, below `wrong_way_fail`, or not)."""
    T = wrong_way.shape[0]
    window = max(1, round(cfg.wrong_way_window / SIM_DT))
    cum = jnp.cumsum(jnp.where(valid, wrong_way, 0.0))
    lagged = jnp.concatenate([jnp.zeros((window,), cum.dtype), cum])[:T]  # cum[k - window]
    worst = jnp.max(cum - lagged, initial=0.0).astype(jnp.float32)
    ddc = jnp.where(worst < cfg.wrong_way_warn, 1.0, jnp.where(worst < cfg.wrong_way_fail, 0.5, 0.0))
    return worst, ddc.astype(jnp.float32)


def lane_keeping(
    terms: StepTerms,
    valid: jnp.ndarray,
    cfg: MetricConfig = MetricConfig(),  # noqa: B008 (frozen, hence immutable)
) -> jnp.ndarray:
    """EPDMS lane keeping: 0 if the ego drifts farther than `lane_keeping_limit` from the lane
    centreline for `lane_keeping_window` seconds without a break, else 1.

    As NAVSIM v2: steps in an intersection (`terms.in_intersection`) neither count nor break a run,
    and neither do invalid steps.

    Args:
      terms: `StepTerms` with leading (T,): lane_deviation, in_intersection.
      valid: (T,) bool.
    Returns:
      () float32, 1.0 or 0.0.
    """
    need = max(1, math.ceil(cfg.lane_keeping_window / SIM_DT - 1e-6))
    skip = terms.in_intersection | ~jnp.asarray(valid, bool)
    out = terms.lane_deviation > cfg.lane_keeping_limit

    def body(run, x):
        o, sk = x
        run = jnp.where(sk, run, jnp.where(o, run + 1, 0))
        return run, run

    _, runs = jax.lax.scan(body, jnp.zeros((), jnp.int32), (out, skip))
    return (jnp.max(runs, initial=0) < need).astype(jnp.float32)


def comfort(
    ego_trace: EgoState,
    dt: float = SIM_DT,
    cfg: MetricConfig = MetricConfig(),  # noqa: B008 (frozen, hence immutable)
    valid: jnp.ndarray | None = None,
    counts: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """1 if the ego trace stays within every comfort bound, else 0.

    Derivatives are Savitzky-Golay estimates (window `cfg.comfort_window`, polynomial order 2, as
    nuPlan's `approximate_derivatives`) of the state's speed and unwrapped heading:
    longitudinal acceleration d(speed)/dt, yaw rate d(yaw)/dt, yaw acceleration d2(yaw)/dt2,
    lateral acceleration speed * yaw rate (the rear axle moves along the heading), longitudinal
    jerk d(lon accel)/dt and jerk d|(lon accel, lat accel)|/dt. A bound is checked only where the
    whole filter window (two chained windows for the jerks) lies on valid steps, so traces shorter
    than one window are comfortable and padding never creates spikes. The filters are exact on
    quadratics, so a trace with constant acceleration and yaw rate is never flagged.

    Args:
      ego_trace: EgoState with leading (T,): speed (T,), yaw (T,).
      dt: seconds between steps (static).
      cfg: the bounds (static).
      valid: (T,) bool, or None for all steps.
      counts: (T,) bool, or None for all steps: only windows that include one of these steps are
        checked (EPDMS's history comfort: the logged history is the same for every planner, so a
        window that lies wholly in it says nothing about the planner).

    Returns:
      () float32, 1.0 or 0.0.
    """
    with jax.named_scope("comfort"):
        ext = comfort_extremes(ego_trace, dt, cfg, valid, counts)
        ok = (
            (ext["min_lon_accel"] >= cfg.min_lon_accel)
            & (ext["max_lon_accel"] <= cfg.max_lon_accel)
            & (ext["lat_accel"] <= cfg.max_lat_accel)
            & (ext["jerk"] <= cfg.max_jerk)
            & (ext["lon_jerk"] <= cfg.max_lon_jerk)
            & (ext["yaw_accel"] <= cfg.max_yaw_accel)
            & (ext["yaw_rate"] <= cfg.max_yaw_rate)
        )
        return ok.astype(jnp.float32)


def comfort_extremes(
    ego_trace: EgoState,
    dt: float = SIM_DT,
    cfg: MetricConfig = MetricConfig(),  # noqa: B008 (frozen, hence immutable)
    valid: jnp.ndarray | None = None,
    counts: jnp.ndarray | None = None,
) -> dict[str, jnp.ndarray]:
    """The extremes that `comfort` compares with its bounds (for diagnostics; `counts` as there).

    Returns:
      dict of () float32: min_lon_accel, max_lon_accel, and the largest absolute lat_accel, jerk,
      lon_jerk, yaw_accel, yaw_rate over the checked steps (0 where none is checked).
    """
    speed = jnp.asarray(ego_trace.speed, jnp.float32)
    yaw = jnp.unwrap(jnp.asarray(ego_trace.yaw, jnp.float32))
    T = speed.shape[0]
    mask = jnp.ones((T,), bool) if valid is None else jnp.asarray(valid, bool)
    w = cfg.comfort_window
    d1 = _savgol_coeffs(w, 2, 1, dt)
    d2 = _savgol_coeffs(w, 2, 2, dt)

    lon_accel, m1 = _filter(speed, mask, d1)
    yaw_rate, _ = _filter(yaw, mask, d1)
    yaw_accel, _ = _filter(yaw, mask, d2)
    h = w // 2
    lat_accel = speed[h : T - h] * yaw_rate if T >= w else jnp.zeros((0,), jnp.float32)
    lon_jerk, m2 = _filter(lon_accel, m1, d1)
    jerk, _ = _filter(jnp.hypot(lon_accel, lat_accel), m1, d1)
    if counts is not None:  # only windows with a counted step
        c1 = _any_in_window(jnp.asarray(counts, bool), w)
        m1, m2 = m1 & c1, m2 & _any_in_window(c1, w)

    def extreme(x, m, fn, neutral):
        return fn(jnp.where(m, x, neutral), initial=neutral).astype(jnp.float32)

    return {
        "min_lon_accel": extreme(lon_accel, m1, jnp.min, 0.0),
        "max_lon_accel": extreme(lon_accel, m1, jnp.max, 0.0),
        "lat_accel": extreme(jnp.abs(lat_accel), m1, jnp.max, 0.0),
        "jerk": extreme(jnp.abs(jerk), m2, jnp.max, 0.0),
        "lon_jerk": extreme(jnp.abs(lon_jerk), m2, jnp.max, 0.0),
        "yaw_accel": extreme(jnp.abs(yaw_accel), m1, jnp.max, 0.0),
        "yaw_rate": extreme(jnp.abs(yaw_rate), m1, jnp.max, 0.0),
    }


def _savgol_coeffs(window: int, order: int, deriv: int, dt: float) -> np.ndarray:
    """(window,) weights w such that sum_j w[j] y[i + j] is the `deriv`-th derivative, at the window
    centre, of the least-squares polynomial of `order` through y[i : i + window]."""
    x = np.arange(window) - window // 2
    vander = np.vander(x, order + 1, increasing=True).astype(np.float64)
    return (np.linalg.pinv(vander)[deriv] * math.factorial(deriv) / dt**deriv).astype(np.float32)


def _any_in_window(flags: jnp.ndarray, w: int) -> jnp.ndarray:
    """(N - w + 1,) bool: some flag of (N,) `flags` lies in each 'valid' window of w."""
    n = flags.shape[0] - w + 1
    if n <= 0:
        return jnp.zeros((0,), bool)
    out = flags[0:n]
    for j in range(1, w):
        out = out | flags[j : j + n]
    return out


def _filter(y: jnp.ndarray, mask: jnp.ndarray, coeffs: np.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """'Valid' correlation of (N,) y with the weights: (N - w + 1,) values at the window centres,
    and whether each whole window lies on masked-in samples."""
    w = len(coeffs)
    n = y.shape[0] - w + 1
    if n <= 0:
        return jnp.zeros((0,), jnp.float32), jnp.zeros((0,), bool)
    out = sum(float(coeffs[j]) * y[j : j + n] for j in range(w))
    ok = mask[0:n]
    for j in range(1, w):
        ok = ok & mask[j : j + n]
    return out, ok

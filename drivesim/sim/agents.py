"""Other road users: log replay (non-reactive) and IDM lane followers (reactive).

Reactive mode (nuPlan's CLS-R): every vehicle that is present and moving at the start follows the
lane-graph path that best matches its logged future, with its speed set by the Intelligent Driver
Model: it brakes for whatever is in its corridor ahead — the ego or another agent — among its K
nearest neighbours. Vehicles that are parked in the log, pedestrians, cyclists, obstacles and
objects that appear only later are replayed from the log. A vehicle more than `lane_snap` metres
from any lane follows its own logged path instead.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from drivesim.data.classes import VEHICLE
from drivesim.data.types import EGO_REAR_AXLE_TO_CENTER, EGO_SIZE, SIM_DT, AgentState, EgoState, Log, Route
from drivesim.sim.idm import IdmParams
from drivesim.sim.paths import _argmin_last, close_path, lane_path, point_at, project, project_many

CROSSING_TIMES = (1.5, 3.0)
"""Seconds ahead at which neighbours' constant-velocity futures are checked for crossing paths."""


@dataclasses.dataclass(frozen=True)
class ReactiveParams:
    """The reactive agents: their driving law and how they find their leaders and lanes."""

    idm: IdmParams = IdmParams()
    """The IDM law the agents drive by (its defaults are the traffic's)."""
    neighbours: int = 8
    """Objects checked for being the leader: the K nearest."""
    window: int = 48
    """Path points ahead (about 1 m apart on lanes) in which leaders are looked for."""
    lateral_margin: float = 0.3
    """Extra half-width of the corridor (m)."""
    lane_snap: float = 3.0
    """Farther than this from a lane (m), an agent follows its logged path."""
    static_distance: float = 1.0
    """Vehicles that move less than this in the log (m) are parked: replayed."""
    offset_decay: float = 1.5
    """Time constant (s) with which an agent's start offset from its lane centre fades."""
    n_segments: int = 24
    """Lane segments in an agent's path (segments are at most 15 m: enough for 20 s of driving).
    An agent that reaches the end of its path (it ran out of known road) leaves the scene."""


@struct.dataclass
class IdmState:
    """Reactive agents' own state.

    Attributes:
      controlled: (A,) bool: driven by IDM (others replay the log).
      path: Route with (A, N) points: each agent's path.
      s: (A,) arc length along the path.
      speed: (A,) m/s.
      offset: (A,) lateral offset from the path (m, left +).
      v0: (A,) desired speed.
    """

    controlled: jnp.ndarray
    path: Route
    s: jnp.ndarray
    speed: jnp.ndarray
    offset: jnp.ndarray
    v0: jnp.ndarray


def log_agents(log: Log, t) -> AgentState:
    """The logged agents at step t (clipped to the log)."""
    t = jnp.clip(t, 0, log.time.shape[-1] - 1)
    ag = log.agents
    speed = jnp.linalg.norm(ag.velocity[:, t], axis=-1)
    return AgentState(xy=ag.xy[:, t], yaw=ag.yaw[:, t], speed=speed, valid=ag.valid[:, t])


def _resample(xy, valid, n: int):
    """A polyline (T, 2) with a validity mask (T,) resampled to n points evenly in arc length."""
    seg = jnp.linalg.norm(jnp.diff(xy, axis=0), axis=-1) * (valid[1:] & valid[:-1])
    cum = jnp.concatenate([jnp.zeros(1), jnp.cumsum(seg)])
    target = jnp.linspace(0.0, cum[-1], n)
    first = jnp.argmax(valid)
    xs = jnp.interp(target, cum, jnp.where(valid, xy[:, 0], xy[first, 0]))
    ys = jnp.interp(target, cum, jnp.where(valid, xy[:, 1], xy[first, 1]))
    return jnp.stack([xs, ys], axis=-1)


@jax.named_scope("init_idm")
def init_idm(log: Log, t0, cfg: ReactiveParams = ReactiveParams()) -> IdmState:
    """Pick the reactive agents at step t0 and lay out their paths."""
    ag = log.agents
    T = log.time.shape[-1]
    steps = jnp.arange(T)
    future = (steps >= t0)[None, :] & ag.valid  # (A, T)
    start = log_agents(log, t0)
    # how far each agent moves in the rest of the log
    xy_f = jnp.where(future[..., None], ag.xy, start.xy[:, None, :])
    moved = jnp.linalg.norm(xy_f - start.xy[:, None, :], axis=-1).max(axis=1)
    controlled = start.valid & (ag.category == VEHICLE) & (moved > cfg.static_distance)

    def one(xy, yaw, guide, guide_valid):
        path, dist = lane_path(log.map, xy, yaw, guide, guide_valid, cfg.n_segments)
        own = close_path(_resample(guide, guide_valid, path.xy.shape[0]), jnp.ones(path.xy.shape[0], bool))
        use_lane = dist < cfg.lane_snap
        path = jax.tree.map(lambda a, b: jnp.where(use_lane, a, b), path, own)
        s, lateral = project(path, xy)
        return path, s, lateral

    guide_valid = future
    path, s, lateral = jax.vmap(one)(start.xy, start.yaw, ag.xy, guide_valid)
    speeds = jnp.linalg.norm(ag.velocity, axis=-1)
    v_max = jnp.where(future, speeds, 0.0).max(axis=1)
    v0 = jnp.clip(jnp.maximum(v_max, start.speed), 3.0, 20.0)
    return IdmState(
        controlled=controlled,
        path=path,
        s=s,
        speed=start.speed,
        offset=jnp.where(controlled, lateral, 0.0),
        v0=v0,
    )


def _corners_extent(yaw_rel, length, width):
    c, s = jnp.abs(jnp.cos(yaw_rel)), jnp.abs(jnp.sin(yaw_rel))
    return 0.5 * length * c + 0.5 * width * s, 0.5 * width * c + 0.5 * length * s


@jax.named_scope("idm_step")
def idm_step(
    idm: IdmState,
    current: AgentState,
    replay: AgentState,
    ego: EgoState,
    size,
    cfg: ReactiveParams = ReactiveParams(),
    dt: float = SIM_DT,
) -> tuple[IdmState, AgentState]:
    """Advance the reactive agents one step.

    Args:
      idm: their state; current: all agents now (controlled ones at their simulated poses);
      replay: the logged agents at the next step (used for the agents IDM does not drive);
      ego: the ego now; size: (A, 3) agent sizes.
    Returns the new IDM state and all agents at the next step.
    """
    A = current.xy.shape[0]
    ego_center = ego.xy + EGO_REAR_AXLE_TO_CENTER * jnp.stack([jnp.cos(ego.yaw), jnp.sin(ego.yaw)])
    # everybody that can be a leader: the agents, then the ego
    obj_xy = jnp.concatenate([current.xy, ego_center[None]])
    obj_yaw = jnp.concatenate([current.yaw, ego.yaw[None]])
    obj_speed = jnp.concatenate([current.speed, ego.speed[None]])
    obj_valid = jnp.concatenate([current.valid, jnp.ones(1, bool)])
    obj_size = jnp.concatenate([size[:, :2], jnp.array(EGO_SIZE[:2])[None]])
    K = min(cfg.neighbours, A)

    def leader(i):
        d = jnp.linalg.norm(obj_xy - current.xy[i], axis=-1)
        d = jnp.where(obj_valid & (jnp.arange(A + 1) != i), d, jnp.inf)
        _, nb = jax.lax.top_k(-d, K)
        path = idm.path
        i0 = jnp.clip(jnp.searchsorted(path.s[i], idm.s[i], side="right") - 1, 0, path.s.shape[1] - cfg.window)
        # every other point (about 2 m apart) is enough: projections refine on the segments
        win = Route(
            xy=jax.lax.dynamic_slice_in_dim(path.xy[i], i0, cfg.window)[::2],
            valid=jax.lax.dynamic_slice_in_dim(path.valid[i], i0, cfg.window)[::2],
            s=jax.lax.dynamic_slice_in_dim(path.s[i], i0, cfg.window)[::2],
        )
        s_j, lat_j = project_many(win, obj_xy[nb])
        d01 = win.xy[1] - win.xy[0]  # the path's heading here (the window starts at the agent)
        heading = jnp.arctan2(d01[1], d01[0])
        rel = obj_yaw[nb] - heading
        along, across = _corners_extent(rel, obj_size[nb, 0], obj_size[nb, 1])
        inside = jnp.abs(lat_j - idm.offset[i]) < 0.5 * size[i, 1] + across + cfg.lateral_margin
        ahead = s_j > idm.s[i] + 0.1
        gap = s_j - idm.s[i] - 0.5 * size[i, 0] - along
        # something beyond the window's far end is not seen
        seen = inside & ahead & jnp.isfinite(d[nb]) & (s_j < win.s[-1] - 0.5)
        gap = jnp.where(seen, gap, jnp.inf)
        j = _argmin_last(gap)
        lead_gap, lead_speed = gap[j], jnp.maximum(obj_speed[nb[j]] * jnp.cos(rel[j]), 0.0)
        # crossing traffic: a neighbour whose constant-velocity future enters our corridor ahead
        # before we get there (ties go to the lower index, so two agents never wait for each other)
        tau = jnp.array(CROSSING_TIMES)
        vel = obj_speed[nb, None] * jnp.stack([jnp.cos(obj_yaw[nb]), jnp.sin(obj_yaw[nb])], -1)  # (K, 2)
        future = obj_xy[nb][:, None, :] + tau[None, :, None] * vel[:, None, :]  # (K, F, 2)
        s_f, lat_f = project_many(win, future.reshape(-1, 2))
        s_f, lat_f = s_f.reshape(future.shape[:2]), lat_f.reshape(future.shape[:2])
        in_path = jnp.abs(lat_f - idm.offset[i]) < 0.5 * size[i, 1] + obj_size[nb, 1, None] / 2 + cfg.lateral_margin
        in_path &= (s_f > idm.s[i] + 0.5 * size[i, 0]) & (s_f < win.s[-1] - 0.5) & jnp.isfinite(d[nb, None])
        in_path &= ~seen[:, None] & (obj_speed[nb, None] > 0.5)
        my_eta = (s_f - idm.s[i]) / jnp.maximum(idm.speed[i], 1.0)
        first = (tau[None] < my_eta - 0.5) | ((jnp.abs(tau[None] - my_eta) <= 0.5) & (nb[:, None] < i))
        cross_gap = jnp.where(in_path & first, s_f - idm.s[i] - 0.5 * size[i, 0] - 2.0, jnp.inf).min()
        use_cross = cross_gap < lead_gap
        return jnp.where(use_cross, cross_gap, lead_gap), jnp.where(use_cross, 0.0, lead_speed)

    gap, lead_speed = jax.vmap(leader)(jnp.arange(A))
    v = idm.speed
    accel = cfg.idm.accel(v, idm.v0, gap, lead_speed)
    v_next = jnp.maximum(v + accel * dt, 0.0)
    s_next = idm.s + 0.5 * (v + v_next) * dt
    offset = idm.offset * jnp.exp(-dt / cfg.offset_decay)
    xy, heading = jax.vmap(point_at)(idm.path, s_next)
    normal = jnp.stack([-jnp.sin(heading), jnp.cos(heading)], axis=-1)
    xy = xy + offset[:, None] * normal
    c = idm.controlled
    new = IdmState(
        controlled=c,
        path=idm.path,
        s=jnp.where(c, s_next, idm.s),
        speed=jnp.where(c, v_next, idm.speed),
        offset=offset,
        v0=idm.v0,
    )
    # past the end of its path (beyond the straight extension) an agent has left the scene
    on_path = s_next < idm.path.s[:, -1] - 0.5
    agents = AgentState(
        xy=jnp.where(c[:, None], xy, replay.xy),
        yaw=jnp.where(c, heading, replay.yaw),
        speed=jnp.where(c, v_next, replay.speed),
        valid=jnp.where(c, on_path, replay.valid),
    )
    return new, agents

"""Built-in planners, all pure JAX (they run inside the compiled closed loop).

- `LogReplay` (expert): the logged ego future.
- `ConstantVelocity`: straight ahead at the current speed.
- `IdmPlanner`: follows the route centreline with an IDM speed profile behind the leader.
- `PdmClosed`: PDM-Closed-like: IDM proposals at several target speeds x lateral offsets, the
  other agents forecast at constant velocity, every proposal scored with the same metric
  functions as the benchmark, the best one returned.
- Weak variants so that rankings have spread: `DistractedIdm` (misses its leader now and then
  and wanders in its lane) and `TimidIdm` (slow, with long gaps).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from drivesim.data.types import EGO_SIZE, SIM_DT, AgentState, EgoState, Observation, Route, Trajectory
from drivesim.metrics.pdms import MetricConfig, score, step_terms
from drivesim.sim.dynamics import to_ego_frame, to_global, wrap
from drivesim.sim.idm import IdmParams
from drivesim.sim.paths import close_path, point_at, project

HORIZON = 40  # 4 s at 10 Hz
LAT_ACCEL = 3.0  # planners slow down so that curves take at most this lateral acceleration (m/s^2)


def _traj(xy, yaw, dt=SIM_DT) -> Trajectory:
    return Trajectory(xy=xy, yaw=yaw, dt=dt)


@dataclasses.dataclass(frozen=True)
class LogReplay:
    """The expert: what the logged ego did next."""

    name: str = "expert"

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        return _traj(obs.expert, obs.expert_yaw)


@dataclasses.dataclass(frozen=True)
class FollowPoses:
    """A commanded ego path (an ego edit): params are the global rear-axle poses (N, 3) [x, y, yaw],
    one per 0.1 s after the scenario's start; each call returns the next `horizon` of them in the
    current ego frame (the last pose repeats past the end)."""

    name: str = "follow_poses"
    horizon: int = 40

    def init(self, rng):
        raise ValueError("FollowPoses has no parameters of its own: pass the poses (N, 3) as params")

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        poses = jnp.asarray(params, jnp.float32)
        i = jnp.round(obs.time / SIM_DT).astype(jnp.int32)
        k = jnp.clip(i + jnp.arange(self.horizon), 0, poses.shape[0] - 1)
        xy = to_ego_frame(poses[k, :2], obs.ego.xy, obs.ego.yaw)
        return _traj(xy, wrap(poses[k, 2] - obs.ego.yaw))


@dataclasses.dataclass(frozen=True)
class ConstantVelocity:
    """Straight ahead at the current speed."""

    name: str = "constant_velocity"
    horizon: int = HORIZON

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        t = (jnp.arange(self.horizon) + 1) * SIM_DT
        xy = jnp.stack([obs.ego.speed * t, jnp.zeros_like(t)], axis=-1)
        return _traj(xy, jnp.zeros_like(t))


def route_in_ego_frame(obs: Observation) -> Route:
    """The observation's route as a path in the ego frame."""
    return close_path(obs.route, obs.route_valid)


def agents_in_ego_frame(obs: Observation) -> AgentState:
    ag = obs.agents
    return ag.replace(xy=to_ego_frame(ag.xy, obs.ego.xy, obs.ego.yaw), yaw=wrap(ag.yaw - obs.ego.yaw))


def leader_on_path(path: Route, s_ego, agents: AgentState, size, ego_length=EGO_SIZE[0], margin=0.3, offset=0.0):
    """Gap (m) to, and speed along the path of, the nearest agent ahead in the corridor.

    Everything in one frame; `s_ego` is the ego's rear-axle arc length on the path. inf if none.
    """
    s, lat = jax.vmap(lambda p: project(path, p))(agents.xy)
    _, heading = jax.vmap(lambda si: point_at(path, si))(s)
    rel = agents.yaw - heading
    c, sn = jnp.abs(jnp.cos(rel)), jnp.abs(jnp.sin(rel))
    along = 0.5 * size[:, 0] * c + 0.5 * size[:, 1] * sn
    across = 0.5 * size[:, 1] * c + 0.5 * size[:, 0] * sn
    inside = jnp.abs(lat - offset) < 0.5 * EGO_SIZE[1] + across + margin
    front = s_ego + 1.3 + 0.5 * ego_length
    gap = s - along - front
    ahead = agents.valid & inside & (s > s_ego + 1.3) & (s < path.s[-1] - 1.0)
    gap = jnp.where(ahead, gap, jnp.inf)
    j = jnp.argmin(gap)
    return gap[j], jnp.maximum(agents.speed[j] * jnp.cos(rel[j]), 0.0)


PLANNER_IDM = IdmParams(min_gap=2.5, comfort_decel=3.0)
"""The IDM planners' law: the traffic's (`drivesim.sim.idm.IdmParams`) with a longer standstill gap
(2.5 m) and firmer comfortable braking (3 m/s^2)."""


def curve_speed_limit(path: Route, s0, lat_accel: float, decel: float):
    """A function of arc length travelled (from s0) -> the highest speed that keeps lateral
    acceleration under `lat_accel` in the curves ahead, braking at most `decel` before them."""
    # curvature from the heading change over a ~3 m baseline (robust to repeated points at lane joints)
    n = path.xy.shape[0]
    w = 3
    lo, hi = jnp.maximum(jnp.arange(n) - w, 0), jnp.minimum(jnp.arange(n) + w, n - 1)
    d_lo = path.xy[jnp.minimum(lo + 1, n - 1)] - path.xy[lo]
    d_hi = path.xy[hi] - path.xy[jnp.maximum(hi - 1, 0)]
    turn = jnp.abs(wrap(jnp.arctan2(d_hi[:, 1], d_hi[:, 0]) - jnp.arctan2(d_lo[:, 1], d_lo[:, 0])))
    kappa = turn / jnp.maximum(path.s[hi] - path.s[lo], 0.5)
    v_curve = jnp.sqrt(lat_accel / jnp.maximum(kappa, 1e-4))
    pts_s = path.s

    def limit(s):
        ahead = jnp.maximum(pts_s - (s0 + s), 0.0)
        behind = pts_s < s0 + s - 1.0
        v = jnp.sqrt(v_curve**2 + 2.0 * decel * ahead)
        return jnp.min(jnp.where(behind, jnp.inf, v))

    return limit


def idm_profile(
    v0, gap0, lead_speed, p: IdmParams, horizon: int, dt: float = SIM_DT, speed_limit=None, a0=0.0, max_jerk=None
):
    """Arc lengths (horizon,) travelled by an IDM follower from speed v0 behind a leader at
    constant speed `lead_speed`, `gap0` metres ahead (inf: free road); `speed_limit(s)` (e.g.
    `curve_speed_limit`) caps the desired speed along the way. With `max_jerk` (m/s^3) the
    acceleration changes at most that fast, starting from the current acceleration `a0`."""

    def body(carry, _):
        s, v, lead, a_prev = carry
        target = p.target_speed if speed_limit is None else jnp.minimum(p.target_speed, speed_limit(s))
        acc = p.accel(v, target, lead - s, lead_speed)
        if max_jerk is not None:
            acc = jnp.clip(acc, a_prev - max_jerk * dt, a_prev + max_jerk * dt)
        v2 = jnp.maximum(v + acc * dt, 0.0)
        s2 = s + 0.5 * (v + v2) * dt
        return (s2, v2, lead + lead_speed * dt, (v2 - v) / dt), s2

    _, s = jax.lax.scan(body, (jnp.zeros(()), v0, gap0, jnp.asarray(a0, jnp.float32)), None, length=horizon)
    return s


def _path_trajectory(path: Route, s0, ds, offset, d0=0.0):
    """Poses (K, 2), (K,) at arc lengths s0 + ds along a path (ego frame), `offset` metres to its
    left, reached smoothly over 2 s from the ego's current lateral offset `d0`."""
    xy, heading = jax.vmap(lambda s: point_at(path, s))(s0 + ds)
    u = jnp.clip((jnp.arange(ds.shape[0]) + 1) / 20.0, 0.0, 1.0)
    blend = u * u * (3.0 - 2.0 * u)  # smoothstep: no kink at either end
    lateral = d0 + (offset - d0) * blend
    normal = jnp.stack([-jnp.sin(heading), jnp.cos(heading)], axis=-1)
    return xy + lateral[:, None] * normal, heading


def _follow_setup(obs: Observation, idm: IdmParams):
    """What every route-following planner starts from: the route (ego frame), the ego's arc length
    and lateral offset on it, the agents in the ego frame, and the curve speed limit ahead."""
    path = route_in_ego_frame(obs)
    s0, d0 = project(path, jnp.zeros(2))
    limit = curve_speed_limit(path, s0, LAT_ACCEL, idm.comfort_decel)
    return path, s0, d0, agents_in_ego_frame(obs), limit


@dataclasses.dataclass(frozen=True)
class IdmPlanner:
    """Follow the route centreline; speed from IDM behind the nearest agent in the corridor."""

    name: str = "idm"
    idm: IdmParams = PLANNER_IDM
    horizon: int = HORIZON

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        path, s0, d0, local, limit = _follow_setup(obs, self.idm)
        gap, lead_speed = leader_on_path(path, s0, local, obs.agent_size)
        ds = idm_profile(obs.ego.speed, gap, lead_speed, self.idm, self.horizon, speed_limit=limit)
        xy, yaw = _path_trajectory(path, s0, ds, 0.0, d0)
        return _traj(xy, yaw)


@dataclasses.dataclass(frozen=True)
class TimidIdm:
    """A weak variant: crawls at a third of the speed and keeps very long gaps."""

    name: str = "timid_idm"
    idm: IdmParams = dataclasses.replace(PLANNER_IDM, target_speed=3.5, headway=4.0, min_gap=10.0, max_accel=0.6)
    horizon: int = HORIZON

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        return IdmPlanner(idm=self.idm, horizon=self.horizon).plan(params, obs, rng)


@dataclasses.dataclass(frozen=True)
class DistractedIdm:
    """A weak variant: looks away (misses its leader) 40% of the time and wanders in its lane."""

    name: str = "distracted_idm"
    idm: IdmParams = dataclasses.replace(PLANNER_IDM, target_speed=12.0, headway=0.8, min_gap=1.0)
    miss_prob: float = 0.4
    wander: float = 1.2
    horizon: int = HORIZON

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        k1, k2 = jax.random.split(rng)
        path, s0, d0, local, limit = _follow_setup(obs, self.idm)
        gap, lead_speed = leader_on_path(path, s0, local, obs.agent_size)
        gap = jnp.where(jax.random.uniform(k1) < self.miss_prob, jnp.inf, gap)
        ds = idm_profile(obs.ego.speed, gap, lead_speed, self.idm, self.horizon, speed_limit=limit)
        offset = self.wander * jax.random.uniform(k2, minval=-1.0, maxval=1.0)
        xy, yaw = _path_trajectory(path, s0, ds, offset, d0)
        return _traj(xy, yaw)


@dataclasses.dataclass(frozen=True)
class PdmClosed:
    """PDM-Closed-like: score IDM proposals against constant-velocity forecasts, keep the best."""

    name: str = "pdm_closed"
    speeds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    """Target speeds of the proposals, as fractions of `idm.target_speed`."""
    offsets: tuple[float, ...] = (-1.0, 0.0, 1.0)
    """Lateral offsets of the proposals from the centreline (m, left +)."""
    idm: IdmParams = dataclasses.replace(PLANNER_IDM, target_speed=13.0)
    max_jerk: float = 3.5
    """The proposals' acceleration changes at most this fast (m/s^3), from the current one."""
    metrics: MetricConfig = MetricConfig()
    horizon: int = HORIZON

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        path, s0, d0, local, limit = _follow_setup(obs, self.idm)
        v = jnp.array(self.speeds) * self.idm.target_speed
        off = jnp.array(self.offsets)
        vv, oo = jnp.meshgrid(v, off, indexing="ij")
        vv, oo = vv.ravel(), oo.ravel()

        def proposal(target, offset):
            gap, lead_speed = leader_on_path(path, s0, local, obs.agent_size, offset=offset)
            idm = dataclasses.replace(self.idm, target_speed=target)
            # comfortable by construction: the acceleration changes at most at `max_jerk`
            ds = idm_profile(
                obs.ego.speed, gap, lead_speed, idm, self.horizon, speed_limit=limit, a0=obs.ego.accel,
                max_jerk=self.max_jerk,
            )  # fmt: skip
            return _path_trajectory(path, s0, ds, offset, d0)

        xy, yaw = jax.vmap(proposal)(vv, oo)  # (N, K, 2), (N, K)
        # ... and one emergency stop in the lane, braking as hard as needed
        gap, lead_speed = leader_on_path(path, s0, local, obs.agent_size)
        stop = dataclasses.replace(self.idm, target_speed=0.0, comfort_decel=self.idm.max_decel)
        e_xy, e_yaw = _path_trajectory(
            path, s0, idm_profile(obs.ego.speed, gap, lead_speed, stop, self.horizon), 0.0, d0
        )
        xy, yaw = jnp.concatenate([xy, e_xy[None]]), jnp.concatenate([yaw, e_yaw[None]])
        oo = jnp.concatenate([oo, jnp.zeros(1)])
        scores, progress = jax.vmap(lambda x, y: self._score(obs, x, y))(xy, yaw)
        # among the best-scoring proposals: keep to the lane centre, then go furthest
        key = scores - 0.02 * jnp.abs(oo) + 1e-4 * progress
        best = jnp.argmax(key)
        return _traj(xy[best], yaw[best])

    def _score(self, obs: Observation, xy, yaw):
        """PDMS of a proposal (ego frame) against constant-velocity forecasts of the agents."""
        ego = obs.ego
        K = xy.shape[0]
        pts = to_global(xy, ego.xy, ego.yaw)
        gyaw = wrap(yaw + ego.yaw)
        seg = jnp.linalg.norm(jnp.diff(jnp.concatenate([ego.xy[None], pts]), axis=0), axis=-1)
        # the speed at the middle of each step, at the end of each step (v_k = 2 v_mid - v_{k-1})
        speed = jax.lax.scan(lambda v, vm: (jnp.maximum(2 * vm - v, 0.0),) * 2, ego.speed, seg / SIM_DT)[1]
        states = EgoState(
            xy=jnp.concatenate([ego.xy[None], pts]),
            yaw=jnp.concatenate([ego.yaw[None], gyaw]),
            speed=jnp.concatenate([ego.speed[None], speed]),
            accel=jnp.concatenate([ego.accel[None], jnp.diff(jnp.concatenate([ego.speed[None], speed])) / SIM_DT]),
            steer=jnp.zeros(K + 1),
        )
        ag = obs.agents
        t = jnp.arange(K + 1) * SIM_DT
        vel = ag.speed[:, None] * jnp.stack([jnp.cos(ag.yaw), jnp.sin(ag.yaw)], axis=-1)
        forecast = AgentState(
            xy=ag.xy[None] + t[:, None, None] * vel[None],
            yaw=jnp.broadcast_to(ag.yaw, (K + 1,) + ag.yaw.shape),
            speed=jnp.broadcast_to(ag.speed, (K + 1,) + ag.speed.shape),
            valid=jnp.broadcast_to(ag.valid, (K + 1,) + ag.valid.shape),
        )
        route = close_path(to_global(obs.route, ego.xy, ego.yaw), obs.route_valid)
        prev = jax.tree.map(lambda a: jnp.concatenate([a[:1], a[:-1]]), states)
        terms = jax.vmap(
            lambda e, a, pe: step_terms(e, a, obs.agent_size, obs.agent_category, obs.map, route, self.metrics, pe)
        )(states, forecast, prev)
        # Comfort across the hand-over: two steps of history at the current acceleration in front,
        # so a proposal that jerks away from what the car is doing now is seen as uncomfortable.
        hist_speed = jnp.maximum(ego.speed - ego.accel * SIM_DT * jnp.array([2.0, 1.0]), 0.0)
        hist = EgoState(
            xy=jnp.broadcast_to(ego.xy, (2, 2)), yaw=jnp.broadcast_to(ego.yaw, (2,)), speed=hist_speed,
            accel=jnp.broadcast_to(ego.accel, (2,)), steer=jnp.zeros(2),
        )  # fmt: skip
        trace = jax.tree.map(lambda h, x: jnp.concatenate([h, x]), hist, states)
        terms = jax.tree.map(lambda x: jnp.concatenate([x[:1], x[:1], x]), terms)
        # progress reference: the fastest proposal's free-road distance
        ref = self.idm.target_speed * K * SIM_DT
        s = score(terms, trace, jnp.asarray(ref), jnp.ones(K + 3, bool), self.metrics)
        return s.pdms, terms.progress[-1] - terms.progress[0]


BUILTIN = {
    "expert": LogReplay(),
    "pdm_closed": PdmClosed(),
    "idm": IdmPlanner(),
    "constant_velocity": ConstantVelocity(),
    "timid_idm": TimidIdm(),
    "distracted_idm": DistractedIdm(),
}
"""The built-in planners by name."""

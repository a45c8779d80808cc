"""Built-in planners, all pure JAX (they run inside the compiled closed loop).

- `LogReplay` (expert): the logged ego future.
- `ConstantVelocity`: straight ahead at the current speed.
- `IdmPlanner`: follows the route centreline with an IDM speed profile behind the leader.
- `PdmClosed`: PDM-Closed-like: IDM proposals at several target speeds x lateral offsets, the
  other agents forecast at constant velocity, every proposal scored with the same metric
  functions as the benchmark, the best one returned.
- Weak variants so that rankings have spread: `DistractedIdm` (misses its leader now and then
  and wanders in its lane) and `TimidIdm` (slow, with long gaps).
- Interaction-sensitive planners, which count on the other road users to react to them, so that
  an engine whose agents replay the log judges them differently from the truth engine:
  `Merger` (changes into a free adjacent lane when a slow leader blocks its own, ignoring the
  traffic behind it there), `Assertive` (does not yield to moving vehicles that cross or turn
  across its path) and `Tailgater` (IDM with a 0.4 s headway, a 0.8 m standstill gap and a
  higher desired speed).
- `RedLightRunner`: IDM that ignores traffic lights (every other route follower stops for a red
  light it can still stop before: `stop_for_red_lights`); EPDMS's traffic-light compliance
  tells it apart, PDMS does not.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from drivesim.data.classes import OBSTACLE, VEHICLE
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
    v0, gap0, lead_speed, p: IdmParams, horizon: int, dt: float = SIM_DT, speed_limit=None, a0=0.0, max_jerk=None,
    max_rise=None,
):  # fmt: skip
    """Arc lengths (horizon,) travelled by an IDM follower from speed v0 behind a leader at
    constant speed `lead_speed`, `gap0` metres ahead (inf: free road); `speed_limit(s)` (e.g.
    `curve_speed_limit`) caps the desired speed along the way. With `max_jerk` (m/s^3) the
    acceleration changes at most that fast, starting from the current acceleration `a0`; with
    `max_rise` (m/s^3) it only rises at most that fast (braking harder is never delayed)."""

    def body(carry, _):
        s, v, lead, a_prev = carry
        target = p.target_speed if speed_limit is None else jnp.minimum(p.target_speed, speed_limit(s))
        acc = p.accel(v, target, lead - s, lead_speed)
        if max_jerk is not None:
            acc = jnp.clip(acc, a_prev - max_jerk * dt, a_prev + max_jerk * dt)
        if max_rise is not None:
            acc = jnp.minimum(acc, a_prev + max_rise * dt)
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


STOP_DECEL = 3.5
"""Planners stop for a red light only if they can at this deceleration (m/s^2); closer, they are
committed and carry on (they see red, not amber)."""


def stop_for_red_lights(obs: Observation, decel: float = STOP_DECEL) -> Observation:
    """The observation with the stop line of every red light ahead that the ego can still stop
    before added as a standing obstacle, so that a route follower stops for it as for a stopped
    car. Lines of the other direction, behind the ego's front, or too close to stop before at
    `decel` are left out; without known light states nothing is added."""
    sig, ego = obs.signals, obs.ego
    cos, sin = jnp.cos(ego.yaw), jnp.sin(ego.yaw)
    d = sig.centre - ego.xy
    ahead = d[:, 0] * cos + d[:, 1] * sin - (1.3 + 0.5 * EGO_SIZE[0]) - 0.5 * sig.size[:, 0]
    can_stop = ahead >= ego.speed**2 / (2.0 * decel)
    facing = jnp.cos(sig.yaw - ego.yaw) > 0.5
    stop = sig.valid & sig.red & sig.known & facing & can_stop & (ahead > -0.5)
    S = sig.valid.shape[0]
    lines = AgentState(xy=sig.centre, yaw=sig.yaw, speed=jnp.zeros((S,), jnp.float32), valid=stop)
    agents = jax.tree.map(lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]), obs.agents, lines)
    size = jnp.concatenate([sig.size, jnp.ones((S, 1), jnp.float32)], axis=-1).astype(obs.agent_size.dtype)
    return obs.replace(
        agents=agents,
        agent_size=jnp.concatenate([obs.agent_size, size]),
        agent_category=jnp.concatenate([obs.agent_category, jnp.full((S,), OBSTACLE, obs.agent_category.dtype)]),
    )


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
    obey_lights: bool = True
    """Stop at red lights (`stop_for_red_lights`)."""

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        if self.obey_lights:
            obs = stop_for_red_lights(obs)
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
        obs = stop_for_red_lights(obs)
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
        obs = stop_for_red_lights(obs)
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


def adjacent_lanes(obs: Observation, path: Route, s0, ahead=(2.0, 10.0, 20.0, 30.0, 40.0, 50.0), width=(2.5, 4.5)):
    """The same-direction lanes beside the route: their lateral offsets and how far ahead they go.

    The map's lane points (not connectors: no lane changes inside intersections) are looked for
    `width` metres to each side of the route at arc lengths `s0 + ahead` (ego frame), heading the
    route's way (within 20 degrees). Returns, for [the route's lane, the lane on the left, the lane
    on the right], the offsets (3,) (m, left +) and the reach (3,): the largest `ahead` up to which
    the lane is found at every sample (0 if not at the first; the route's lane: inf).
    """
    ahead = jnp.asarray(ahead, jnp.float32)
    pts, heading = jax.vmap(lambda s: point_at(path, s))(s0 + ahead)  # (S, 2), (S,)
    m = obs.map
    lanes = to_ego_frame(m.lane_xy, obs.ego.xy, obs.ego.yaw)  # (L, P, 2)
    d = jnp.diff(lanes, axis=1)
    d = jnp.concatenate([d, d[:, -1:]], axis=1)
    tangent = jnp.arctan2(d[..., 1], d[..., 0]).reshape(-1)
    ok = jnp.broadcast_to((m.lane_valid & ~m.lane_is_connector)[:, None], lanes.shape[:2]).reshape(-1)
    lanes = lanes.reshape(-1, 2)
    rel = lanes[None] - pts[:, None]  # (S, N, 2)
    cs, sn = jnp.cos(heading)[:, None], jnp.sin(heading)[:, None]
    along = rel[..., 0] * cs + rel[..., 1] * sn
    lat = -rel[..., 0] * sn + rel[..., 1] * cs
    aligned = jnp.cos(tangent[None] - heading[:, None]) > jnp.cos(jnp.radians(20.0))
    near = ok[None] & aligned & (jnp.abs(along) < 1.5)

    def side(sign):
        hit = near & (sign * lat > width[0]) & (sign * lat < width[1])  # (S, N)
        found = jnp.cumprod(hit.any(axis=1)).astype(bool)  # found at every sample so far
        offset = jnp.sum(jnp.where(hit & found[:, None], lat, 0.0)) / jnp.maximum((hit & found[:, None]).sum(), 1)
        return jnp.where(found[0], offset, sign * 3.5), jnp.max(jnp.where(found, ahead, 0.0))

    (left, left_reach), (right, right_reach) = side(1.0), side(-1.0)
    return jnp.stack([jnp.zeros(()), left, right]), jnp.stack([jnp.asarray(jnp.inf), left_reach, right_reach])


def _lane_change_trajectory(path: Route, s0, ds, offset, d0, slope0, length):
    """Poses (K, 2), (K,) at arc lengths s0 + ds along a path (ego frame), moving from the lateral
    offset `d0` (m, left +), changing at `slope0` (m per m travelled), to `offset` over the first
    `length` metres travelled (a cubic: it starts from the car's present sideways motion, so that
    replanning every step carries a lane change through, and ends parallel to the lane)."""
    xy, heading = jax.vmap(lambda s: point_at(path, s))(s0 + ds)
    u = jnp.clip(ds / length, 0.0, 1.0)
    lateral = (2 * u**3 - 3 * u**2 + 1) * d0 + (u**3 - 2 * u**2 + u) * length * slope0 + (3 * u**2 - 2 * u**3) * offset
    normal = jnp.stack([-jnp.sin(heading), jnp.cos(heading)], axis=-1)
    return xy + lateral[:, None] * normal, heading


@dataclasses.dataclass(frozen=True)
class Merger:
    """Changes lane to get past slow traffic, assuming the others make room.

    It follows the route's lane with IDM. When a leader slower than `slow_fraction` of its
    desired speed is within `look_ahead` (seconds at its speed, at least `min_look_ahead` m) and
    a same-direction lane beside it (`adjacent_lanes`) goes on for `pass_distance` m and is freer
    ahead by at least `gain` m, it moves across into that lane (over `change_time` seconds of
    travel, at least `change_distance` m), and back into the route's lane once that is as free
    as the lane it is in (it has passed the slow car) or the lane beside ends within
    `keep_distance` m. In the target lane it looks only ahead of its own centre: a car coming up
    behind or alongside there is expected to brake for it.

    Why log replay misjudges it: replayed agents never brake for the ego, so a car in the target
    lane drives on into the merging ego (a side impact, at fault, or a time to collision under
    1 s), where the truth engine's traffic, and reactive IDM agents, brake for a car that enters
    their lane ahead of them. Log replay scores it lower than the world it would drive in.
    """

    name: str = "merger"
    idm: IdmParams = PLANNER_IDM
    slow_fraction: float = 0.8
    """A leader slower than this fraction of the desired speed is worth getting past."""
    look_ahead: float = 3.0
    """Seconds at the current speed within which a slow leader blocks the lane ..."""
    min_look_ahead: float = 25.0
    """... and at least this many metres."""
    gain: float = 10.0
    """The lane beside must be freer ahead by at least this much (m) to change into it."""
    pass_distance: float = 50.0
    """The lane beside must go on (no intersection) for this far ahead (m) to change into it ..."""
    keep_distance: float = 20.0
    """... and at least this far to stay in it."""
    change_time: float = 3.0
    """A lane change takes this many seconds of travel at the current speed ..."""
    change_distance: float = 15.0
    """... and at least this many metres."""
    max_rise: float = 1.5
    """Its acceleration rises at most this fast (m/s^3) (it brakes as IDM does) ..."""
    rise_floor: float = -1.0
    """... from the current acceleration, or from this (m/s^2) if that is lower."""
    horizon: int = HORIZON

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        obs = stop_for_red_lights(obs)
        path, s0, d0, local, limit = _follow_setup(obs, self.idm)
        offsets, reach = adjacent_lanes(obs, path, s0)
        gaps, speeds = jax.vmap(lambda o: leader_on_path(path, s0, local, obs.agent_size, offset=o))(offsets)
        look = jnp.maximum(self.min_look_ahead, self.look_ahead * obs.ego.speed)
        slow = speeds < self.slow_fraction * self.idm.target_speed
        # how far ahead each lane is free of slow traffic (inf: no leader, or a fast one)
        free = jnp.where(slow & (gaps < look), gaps, jnp.inf)
        # the lane the ego is in now: the nearest of those that still go on (else the route's)
        there = reach >= self.keep_distance
        current = jnp.argmin(jnp.where(there, jnp.abs(d0 - offsets), jnp.inf))
        # sideways motion (m per m travelled): the ego's heading against the route's
        _, heading = point_at(path, s0)
        slope = jnp.clip(jnp.tan(-heading), -0.5, 0.5)
        # from the route's lane: into the freer lane beside (left first), if it goes on far enough
        beside = jnp.where(jnp.arange(3) > 0, jnp.where(reach >= self.pass_distance, free, -jnp.inf), -jnp.inf)
        best = jnp.argmax(beside)
        overtake = (free[0] < jnp.inf) & (beside[best] > free[0] + self.gain)
        # ... or carry on with a change begun (moving out, the lane there still going on)
        side = jnp.where(d0 > 0, 1, 2)
        going = (jnp.abs(d0) > 0.5) & (d0 * slope > 0) & there[side]
        from_route = jnp.where(overtake, best, jnp.where(going, side, 0))
        # from a lane beside: back once the route's lane is as free (a margin against weaving)
        back = jnp.where(slow[0] & (gaps[0] < look + self.gain), gaps[0], jnp.inf)
        from_beside = jnp.where(back >= free[current], 0, current)
        target = jnp.where(current == 0, from_route, from_beside)
        changing = (target != 0) | (jnp.abs(d0) > 1.0)
        # brake for what is ahead in the target lane and, while changing, in the lane it leaves
        gap_here, speed_here = leader_on_path(path, s0, local, obs.agent_size, offset=d0)
        use_here = changing & (gap_here < gaps[target])
        gap = jnp.where(use_here, gap_here, gaps[target])
        lead_speed = jnp.where(use_here, speed_here, speeds[target])
        # no lurch when the slow leader drops out of sight: the acceleration rises gently (from
        # at most `rise_floor` below zero, or each plan would hold on to the braking the last began)
        ds = idm_profile(
            obs.ego.speed, gap, lead_speed, self.idm, self.horizon, speed_limit=limit,
            a0=jnp.maximum(obs.ego.accel, self.rise_floor), max_rise=self.max_rise,
        )  # fmt: skip
        length = jnp.maximum(self.change_distance, self.change_time * obs.ego.speed)
        xy_lc, yaw_lc = _lane_change_trajectory(path, s0, ds, offsets[target], d0, slope, length)
        xy_in, yaw_in = _path_trajectory(path, s0, ds, 0.0, d0)  # in its lane: as IdmPlanner
        xy = jnp.where(changing, xy_lc, xy_in)
        yaw = jnp.where(changing, yaw_lc, yaw_in)
        return _traj(xy, yaw)


@dataclasses.dataclass(frozen=True)
class Assertive:
    """Forces its way through: does not yield to vehicles that cross or turn across its path.

    IDM along the route, like `IdmPlanner`, except that a moving vehicle (faster than
    `moving_speed`) heading more than `crossing_angle` degrees away from the route where it is
    (crossing traffic, a car turning across, oncoming traffic cutting the corner) is never its
    leader: it keeps its speed through the conflict and expects the other car to stop. Vehicles
    going its way, stopped vehicles, pedestrians, cyclists and obstacles are followed as by IDM.

    Why log replay misjudges it: replayed crossing traffic drives on as logged and the ego runs
    into its side, where in the synthetic world (the truth engine) a car gives way to an ego that
    already holds the intersection or stands in its path (and reactive IDM agents brake for a car
    in their corridor). Log replay scores it lower than the world it would drive in. (`IdmPlanner`
    has no notion of right of way either, and is misjudged the same way where it enters an
    intersection ahead of a car that has it; `Assertive` also keeps going once the car is in its
    path.)
    """

    name: str = "assertive"
    idm: IdmParams = dataclasses.replace(PLANNER_IDM, target_speed=12.0)
    crossing_angle: float = 30.0
    """Vehicles heading further than this (degrees) from the route where they are are ignored ..."""
    moving_speed: float = 1.0
    """... if faster than this (m/s)."""
    horizon: int = HORIZON

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        obs = stop_for_red_lights(obs)
        path, s0, d0, local, limit = _follow_setup(obs, self.idm)
        s, _ = jax.vmap(lambda p: project(path, p))(local.xy)
        _, heading = jax.vmap(lambda si: point_at(path, si))(s)
        across = jnp.cos(local.yaw - heading) < jnp.cos(jnp.radians(self.crossing_angle))
        ignored = (obs.agent_category == VEHICLE) & (local.speed > self.moving_speed) & across
        seen = local.replace(valid=local.valid & ~ignored)
        gap, lead_speed = leader_on_path(path, s0, seen, obs.agent_size)
        ds = idm_profile(obs.ego.speed, gap, lead_speed, self.idm, self.horizon, speed_limit=limit)
        xy, yaw = _path_trajectory(path, s0, ds, 0.0, d0)
        return _traj(xy, yaw)


@dataclasses.dataclass(frozen=True)
class Tailgater:
    """IDM that follows too close and drives fast: a 0.4 s time gap, a 0.8 m standstill gap, a
    desired speed of 14 m/s and brisk acceleration.

    How log replay judges it: a leader reacts to its follower in no engine, and cars behind an
    ego faster than the logged one are left behind, so its close calls are much the same under log
    replay and in the synthetic world. The one interaction it meets: a car of the world changes
    lane only into a gap, so it does not cut in right in front of a close follower, where a
    replayed car cuts in as it did in front of the logged ego. Its time to collision sits on the
    0.95 s threshold, so small differences in a replayed leader's braking (the log is interpolated
    from 2 Hz keyframes) flip that term: on the embedded set log replay scores it a little higher
    than the truth engine (docs/closed_loop.md).
    """

    name: str = "tailgater"
    idm: IdmParams = dataclasses.replace(PLANNER_IDM, target_speed=14.0, headway=0.4, min_gap=0.8, max_accel=2.0)
    horizon: int = HORIZON

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        obs = stop_for_red_lights(obs)
        return IdmPlanner(idm=self.idm, horizon=self.horizon).plan(params, obs, rng)


@dataclasses.dataclass(frozen=True)
class RedLightRunner:
    """IDM that ignores traffic lights: it drives through red. PDMS does not tell it from IDM;
    EPDMS's traffic-light compliance does."""

    name: str = "red_light_runner"
    horizon: int = HORIZON

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        return IdmPlanner(horizon=self.horizon, obey_lights=False).plan(params, obs, rng)


BUILTIN = {
    "expert": LogReplay(),
    "pdm_closed": PdmClosed(),
    "idm": IdmPlanner(),
    "constant_velocity": ConstantVelocity(),
    "timid_idm": TimidIdm(),
    "distracted_idm": DistractedIdm(),
    "merger": Merger(),
    "assertive": Assertive(),
    "tailgater": Tailgater(),
    "red_light_runner": RedLightRunner(),
}
"""The built-in planners by name."""

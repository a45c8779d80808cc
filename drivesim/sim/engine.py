"""The reference (kinematic) engine: reset / step / observe / rollout, all pure JAX.

`rollout` is one `lax.scan` (planning every `replan_every` steps, tracking in between), with the
planner, the world and the per-step score terms inside, so a whole closed-loop run of a scenario
is one compiled program; `vmap` it over scenarios and shard the scenario axis over devices
(`drivesim.pipelines.batch`). Shapes are static: padded agents and lanes carry validity masks.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from drivesim.data.occupancy import OccupancyConfig, rasterize
from drivesim.data.types import SIM_DT, AgentState, EgoState, Log, Observation, Route, Trajectory
from drivesim.sim.agents import IdmState, ReactiveParams, idm_step, init_idm, log_agents
from drivesim.sim.dynamics import TrackerParams, VehicleParams, bicycle_step, to_ego_frame, to_global, track, wrap
from drivesim.sim.paths import close_path, lane_path, project


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Everything static about a closed-loop run."""

    agents: str = "log"
    """"log": agents replay the log (non-reactive); "idm": vehicles are IDM lane followers."""
    replan_every: int = 1
    """Steps (0.1 s each) between planner calls; the tracker follows the plan in between."""
    route_segments: int = 12
    """Lane segments in the ego's route."""
    route_ahead: int = 64
    """Route points in the observation (about 1 m apart)."""
    expert_steps: int = 40
    """Steps of the logged future given to planners (`Observation.expert`), at 0.1 s."""
    vehicle: VehicleParams = VehicleParams()
    tracker: TrackerParams = TrackerParams()
    reactive: ReactiveParams = ReactiveParams()
    occupancy: OccupancyConfig = OccupancyConfig()

    def __post_init__(self):
        if self.agents not in ("log", "idm"):
            raise ValueError(f"agents must be 'log' or 'idm' (got {self.agents!r})")
        if self.replan_every < 1:
            raise ValueError(f"replan_every must be at least 1 (got {self.replan_every})")


@struct.dataclass
class SimState:
    """Everything one closed-loop step needs. Immutable: update with `.replace`.

    Attributes:
      step: () int32 steps since the start (the log step is t0 + step).
      t0: () int32 log step of the start.
      ego: the simulated ego.
      agents: all agents now (simulated or replayed).
      idm: the reactive agents' state (unused in log mode).
      log: the scenario's log at 10 Hz (static during a rollout).
      route: the ego's route along the lanes.
      route_ok: () bool: a lane route was found near the ego at the start.
    """

    step: jnp.ndarray
    t0: jnp.ndarray
    ego: EgoState
    agents: AgentState
    idm: IdmState
    log: Log
    route: Route
    route_ok: jnp.ndarray


@struct.dataclass
class Trace:
    """A rollout, step by step (leading axis: horizon + 1 steps, the start included).

    Attributes:
      ego: EgoState per step; agents: AgentState per step; terms: what `terms_fn` computed at
        each step (e.g. the score terms of `drivesim.metrics`), or None;
      plan_nan: (H + 1,) bool: the planner returned a non-finite trajectory at that step;
      valid: (H + 1,) bool: the step lies within the log.
    """

    ego: EgoState
    agents: AgentState
    terms: object
    plan_nan: jnp.ndarray
    valid: jnp.ndarray


@jax.named_scope("reset")
def reset(log: Log, t0, rng=None, cfg: SimConfig = SimConfig()) -> SimState:
    """The state at log step t0: ego and agents as logged, the route, the reactive agents."""
    del rng  # the kinematic engine is deterministic; the argument keeps one API for all engines
    log = jax.tree.map(jnp.asarray, log)  # host (numpy) logs are fine too
    t0 = jnp.asarray(t0, jnp.int32)
    T = log.time.shape[-1]
    ego_xy, ego_yaw = log.ego.xy[t0], log.ego.yaw[t0]
    speed = jnp.linalg.norm(log.ego.velocity[t0])
    nxt = jnp.minimum(t0 + 1, T - 1)
    accel = (jnp.linalg.norm(log.ego.velocity[nxt]) - speed) / SIM_DT
    ego = EgoState(xy=ego_xy, yaw=ego_yaw, speed=speed, accel=accel, steer=jnp.zeros_like(speed))
    future = (jnp.arange(T) >= t0) & log.ego.valid
    route, dist = lane_path(log.map, ego_xy, ego_yaw, log.ego.xy, future, cfg.route_segments)
    route_ok = dist < 4.0
    # far from any lane: the route is the logged path
    n = route.xy.shape[0]
    idx = jnp.clip(t0 + jnp.arange(n) * max(T // n, 1), 0, T - 1)
    logged = close_path(log.ego.xy[idx], log.ego.valid[idx])
    route = jax.tree.map(lambda a, b: jnp.where(route_ok, a, b), route, logged)
    if cfg.agents == "idm":
        idm = init_idm(log, t0, cfg.reactive)
    else:  # placeholders of the right shapes: log agents need no paths
        A, N = log.agents.valid.shape[0], cfg.reactive.n_segments * log.map.lane_xy.shape[1]
        zeros = jnp.zeros((A,), jnp.float32)
        idm = IdmState(
            controlled=jnp.zeros((A,), bool),
            path=Route(xy=jnp.zeros((A, N, 2)), valid=jnp.zeros((A, N), bool), s=jnp.zeros((A, N))),
            s=zeros, speed=zeros, offset=zeros, v0=zeros,
        )  # fmt: skip
    return SimState(
        step=jnp.zeros((), jnp.int32),
        t0=t0,
        ego=ego,
        agents=log_agents(log, t0),
        idm=idm,
        log=log,
        route=route,
        route_ok=route_ok,
    )


def _advance(state: SimState, path, dt, elapsed, cfg: SimConfig) -> SimState:
    accel, steer = track(state.ego, path, dt, elapsed, cfg.vehicle, cfg.tracker)
    ego = bicycle_step(state.ego, accel, steer, cfg.vehicle)
    t_next = state.t0 + state.step + 1
    replay = log_agents(state.log, t_next)
    if cfg.agents == "idm":
        idm, agents = idm_step(state.idm, state.agents, replay, state.ego, state.log.agents.size, cfg.reactive)
    else:
        idm, agents = state.idm, replay
    return state.replace(step=state.step + 1, ego=ego, agents=agents, idm=idm)


@jax.named_scope("step")
def step(state: SimState, trajectory: Trajectory, rng=None, cfg: SimConfig = SimConfig()) -> SimState:
    """Track `trajectory` (planned now, in the current ego frame) for one 0.1 s step."""
    del rng
    path = jnp.concatenate([jnp.zeros((1, 2), trajectory.xy.dtype), trajectory.xy], axis=0)
    return _advance(state, path, trajectory.dt, 0.0, cfg)


@jax.named_scope("observe")
def observe(state: SimState, cfg: SimConfig = SimConfig()) -> Observation:
    """What a planner sees now."""
    ego, log = state.ego, state.log
    T = log.time.shape[-1]
    # the route from just behind the ego onward, in the ego frame
    s_ego, _ = project(state.route, ego.xy)
    n = state.route.xy.shape[0]
    i0 = jnp.clip(jnp.searchsorted(state.route.s, s_ego - 2.0, side="right") - 1, 0, n - cfg.route_ahead)
    route_xy = jax.lax.dynamic_slice_in_dim(state.route.xy, i0, cfg.route_ahead)
    route_valid = jax.lax.dynamic_slice_in_dim(state.route.valid, i0, cfg.route_ahead)
    # the logged future of the ego (privileged: for the log-replay planner)
    t = state.t0 + state.step
    k = jnp.clip(t + 1 + jnp.arange(cfg.expert_steps), 0, T - 1)
    expert = to_ego_frame(log.ego.xy[k], ego.xy, ego.yaw)
    expert_yaw = wrap(log.ego.yaw[k] - ego.yaw)
    ag = state.agents
    occ = rasterize(
        log.map, ego.xy, ego.yaw, ag.xy, ag.yaw, log.agents.size, log.agents.category, ag.valid, cfg.occupancy
    )
    return Observation(
        time=state.step.astype(jnp.float32) * SIM_DT,
        ego=ego,
        route=to_ego_frame(route_xy, ego.xy, ego.yaw),
        route_valid=route_valid,
        agents=ag,
        agent_size=log.agents.size,
        agent_category=log.agents.category,
        occupancy=occ,
        map=log.map,
        expert=expert,
        expert_yaw=expert_yaw,
    )


@jax.named_scope("rollout")
def rollout(
    state: SimState, planner, params, horizon: int, rng, cfg: SimConfig = SimConfig(), terms_fn=None
) -> tuple[SimState, Trace]:
    """Run `planner` in closed loop for `horizon` steps from `state`.

    The planner is called every `cfg.replan_every` steps with the current observation; between
    calls the tracker follows its last plan. `terms_fn(state, previous_ego) -> pytree` is
    evaluated at every step inside the loop (the scores' per-step terms). Returns the final state
    and the per-step trace; memory grows only with the stored trace.
    """
    terms_of = terms_fn or (lambda s, prev: None)
    every = cfg.replan_every
    cycles = -(-horizon // every)
    T = state.log.time.shape[-1]

    # Only what changes travels in the loop's carry; the log, the route and the agents' paths
    # are loop constants (carrying them made XLA copy megabytes per step).
    def split(st: SimState):
        dyn = (st.step, st.ego, st.agents, st.idm.s, st.idm.speed, st.idm.offset)
        return dyn

    def join(dyn) -> SimState:
        step_, ego, agents, s_, speed, offset = dyn
        idm = state.idm.replace(s=s_, speed=speed, offset=offset)
        return state.replace(step=step_, ego=ego, agents=agents, idm=idm)

    def cycle(carry, key):
        st = join(carry)
        traj = planner.plan(params, observe(st, cfg), key)
        bad = ~(jnp.all(jnp.isfinite(traj.xy)) & jnp.all(jnp.isfinite(traj.yaw)))
        # a broken plan is replaced by braking in place (and the scenario is flagged)
        xy = jnp.where(bad, jnp.zeros_like(traj.xy), traj.xy)
        plan_global = to_global(jnp.concatenate([jnp.zeros((1, 2), xy.dtype), xy]), st.ego.xy, st.ego.yaw)

        def inner(dyn, j):
            s = join(dyn)
            path = to_ego_frame(plan_global, s.ego.xy, s.ego.yaw)
            nxt = _advance(s, path, traj.dt, j * SIM_DT, cfg)
            out = (nxt.ego, nxt.agents, terms_of(nxt, s.ego), bad, nxt.t0 + nxt.step < T)
            return split(nxt), out

        dyn, outs = jax.lax.scan(inner, carry, jnp.arange(every))
        return dyn, outs

    keys = jax.random.split(rng, cycles)
    final, outs = jax.lax.scan(cycle, split(state), keys)
    final = join(final)
    flat = jax.tree.map(lambda a: a.reshape((cycles * every,) + a.shape[2:])[:horizon], outs)
    ego, agents, terms, bad, valid = flat
    first = (state.ego, state.agents, terms_of(state, state.ego), jnp.zeros((), bool), jnp.ones((), bool))
    ego, agents, terms, bad, valid = jax.tree.map(
        lambda a, b: jnp.concatenate([a[None], b]), first, (ego, agents, terms, bad, valid)
    )
    return final, Trace(ego=ego, agents=agents, terms=terms, plan_nan=bad, valid=valid)

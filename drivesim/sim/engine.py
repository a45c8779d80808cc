"""The reference (kinematic) engine: reset / step / observe / rollout, all pure JAX.

`rollout` is one `lax.scan` (planning every `replan_every` steps, tracking in between), with the
planner, the world and the per-step score terms inside, so a whole closed-loop run of a scenario
is one compiled program; `vmap` it over scenarios and shard the scenario axis over devices
(`drivesim.pipelines.batch`). Shapes are static: padded agents and lanes carry validity masks.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from drivesim.data.occupancy import OccupancyConfig, rasterize
from drivesim.data.types import SIM_DT, AgentState, EgoState, Log, Observation, Route, Trajectory
from drivesim.sim.agents import IdmState, ReactiveParams, idm_step, init_idm, log_agents
from drivesim.sim.dynamics import TrackerParams, VehicleParams, bicycle_step, to_ego_frame, to_global, track, wrap
from drivesim.sim.learned_agents import (
    KEYFRAME_STEPS,
    BehaviourHandle,
    LearnedAgents,
    init_learned,
    move_learned,
    resample_learned,
)
from drivesim.sim.paths import close_path, lane_path, project

AGENT_MODES = ("log", "idm", "learned", "cv")


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Everything static about a closed-loop run."""

    agents: str = "log"
    """"log": agents replay the log (non-reactive); "idm": vehicles are IDM lane followers (the
    reference); "learned": every agent present at the start is driven by the behaviour model
    (`drivesim.sim.learned_agents`; `reset` needs the model); "cv": the same agents at constant
    velocity (the learned model's stand-in)."""
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
    temperature: float = 1.0
    """Sampling temperature of the learned agents."""
    agent_every: int = 1
    """Sim steps between the learned agents' decisions: 1 (every 0.1 s, receding horizon: the
    default, chosen on validation seeds: half the collisions and a smaller gap to the truth) or 5
    (every 0.5 s, the model's own step: a fifth of the model's cost)."""

    def __post_init__(self):
        if self.agents not in AGENT_MODES:
            raise ValueError(f"agents must be one of {', '.join(AGENT_MODES)} (got {self.agents!r})")
        if self.replan_every < 1:
            raise ValueError(f"replan_every must be at least 1 (got {self.replan_every})")
        if self.agent_every not in (1, KEYFRAME_STEPS):
            raise ValueError(f"agent_every must be 1 or {KEYFRAME_STEPS} sim steps (got {self.agent_every})")


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
      learned: the learned (or constant-velocity) agents' memory; None in other modes.
      behaviour: the behaviour model ("learned" mode), else None.
    """

    step: jnp.ndarray
    t0: jnp.ndarray
    ego: EgoState
    agents: AgentState
    idm: IdmState
    log: Log
    route: Route
    route_ok: jnp.ndarray
    learned: LearnedAgents | None = None
    behaviour: BehaviourHandle | None = None


def simulates_agents(cfg: SimConfig) -> bool:
    """The agents are simulated from the start alone (learned or constant velocity)."""
    return cfg.agents in ("learned", "cv")


@struct.dataclass
class Trace:
    """A rollout, step by step (leading axis: horizon + 1 steps, the start included).

    Attributes:
      ego: EgoState per step; agents: AgentState per step; terms: what `terms_fn` computed at
        each step (e.g. the score terms of `drivesim.metrics`), or None;
      plan_nan: (H + 1,) bool: the planner returned a non-finite trajectory at that step;
      valid: (H + 1,) bool: the step lies within the log;
      plan: the plan the ego was following at each step (`Trajectory` with xy (H + 1, K, 2), yaw
        (H + 1, K), in the frame of the ego when it was made; for EPDMS's extended comfort), or
        None where the rollout was asked not to keep plans;
      plan_age: (H + 1,) int32 steps since that plan was made (-1 at the start: no plan yet).
    """

    ego: EgoState
    agents: AgentState
    terms: object
    plan_nan: jnp.ndarray
    valid: jnp.ndarray
    plan: Trajectory | None = None
    plan_age: jnp.ndarray | None = None


def first_plan_row(traj: Trajectory) -> Trajectory:
    """A placeholder for the trace's start row, where no plan is followed yet (age -1)."""
    return traj.replace(xy=jnp.zeros_like(traj.xy), yaw=jnp.zeros_like(traj.yaw))


@jax.named_scope("reset")
def reset(log: Log, t0, rng=None, cfg: SimConfig = SimConfig(), behaviour: BehaviourHandle | None = None) -> SimState:
    """The state at log step t0: ego and agents as logged, the route, the reactive agents.

    `rng` seeds the learned agents' sampling (other modes are deterministic); `behaviour` is the
    behaviour model ("learned" mode only).
    """
    if cfg.agents == "learned" and behaviour is None:
        raise ValueError("agents='learned' needs the behaviour model (reset(..., behaviour=BehaviourHandle.of(model)))")
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
    agents, learned = log_agents(log, t0), None
    if simulates_agents(cfg):
        key = jax.random.fold_in(jax.random.key(0) if rng is None else rng, 7)
        handle = behaviour if cfg.agents == "learned" else None
        history = behaviour.model().cfg.history if handle is not None else 5
        learned, agents = init_learned(log, t0, key, handle, history, cfg.temperature, cfg.agent_every)
    return SimState(
        step=jnp.zeros((), jnp.int32),
        t0=t0,
        ego=ego,
        agents=agents,
        idm=idm,
        log=log,
        route=route,
        route_ok=route_ok,
        learned=learned,
        behaviour=behaviour if cfg.agents == "learned" else None,
    )


def _advance(state: SimState, path, dt, elapsed, cfg: SimConfig) -> SimState:
    accel, steer = track(state.ego, path, dt, elapsed, cfg.vehicle, cfg.tracker)
    ego = bicycle_step(state.ego, accel, steer, cfg.vehicle)
    t_next = state.t0 + state.step + 1
    if simulates_agents(cfg):  # nothing of the log's future is read
        idm, agents = state.idm, move_learned(state.learned, state.agents)
    elif cfg.agents == "idm":
        replay = log_agents(state.log, t_next)
        idm, agents = idm_step(state.idm, state.agents, replay, state.ego, state.log.agents.size, cfg.reactive)
    else:
        idm, agents = state.idm, log_agents(state.log, t_next)
    state = state.replace(step=state.step + 1, ego=ego, agents=agents, idm=idm)
    if simulates_agents(cfg) and cfg.agent_every == 1:  # the agents decide at every step
        state = _decide(state, cfg)
    return state


@jax.named_scope("step")
def step(state: SimState, trajectory: Trajectory, rng=None, cfg: SimConfig = SimConfig()) -> SimState:
    """Track `trajectory` (planned now, in the current ego frame) for one 0.1 s step."""
    del rng
    path = jnp.concatenate([jnp.zeros((1, 2), trajectory.xy.dtype), trajectory.xy], axis=0)
    state = _advance(state, path, trajectory.dt, 0.0, cfg)
    if not simulates_agents(cfg):
        return state
    due = state.step % KEYFRAME_STEPS == 0
    return jax.lax.cond(due, lambda s: resample_agents(s, cfg), lambda s: s, state)


def resample_agents(state: SimState, cfg: SimConfig) -> SimState:
    """A behaviour step of the learned agents at a 0.5 s boundary: they see where everyone is and
    choose their next 0.5 s (no-op in other agent modes, and with `agent_every` 1, where
    `_advance` lets them decide at every step)."""
    if not simulates_agents(cfg) or cfg.agent_every != KEYFRAME_STEPS:
        return state
    return _decide(state, cfg)


def _decide(state: SimState, cfg: SimConfig) -> SimState:
    learned = resample_learned(
        state.learned, state.agents, state.ego, state.log, state.behaviour, state.step, state.t0 + state.step,
        cfg.temperature,
    )  # fmt: skip
    return state.replace(learned=learned)


def block_steps(cfg: SimConfig) -> int:
    """Steps of one rollout block: the planner cadence, or with simulated agents the least common
    multiple of it and the behaviour step (between blocks the agents choose their controls)."""
    if not simulates_agents(cfg):
        return cfg.replan_every
    return math.lcm(cfg.replan_every, KEYFRAME_STEPS)


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
        signals=log.signals.now(t),
    )


@jax.named_scope("rollout")
def rollout(
    state: SimState,
    planner,
    params,
    horizon: int,
    rng,
    cfg: SimConfig = SimConfig(),
    terms_fn=None,
    keep_plans: bool = True,
) -> tuple[SimState, Trace]:
    """Run `planner` in closed loop for `horizon` steps from `state`.

    The planner is called every `cfg.replan_every` steps with the current observation; between
    calls the tracker follows its last plan. `terms_fn(state, previous_ego) -> pytree` is
    evaluated at every step inside the loop (the scores' per-step terms). With `keep_plans` the
    trace keeps the plan followed at each step (EPDMS's extended comfort). Returns the final state
    and the per-step trace; memory grows only with the stored trace.
    """
    terms_of = terms_fn or (lambda s, prev: None)
    every = cfg.replan_every
    block = block_steps(cfg)
    per_block = block // every
    blocks = -(-horizon // block)
    T = state.log.time.shape[-1]

    # Only what changes travels in the loop's carry; the log, the route, the agents' paths and the
    # behaviour model are loop constants (carrying them made XLA copy megabytes per step).
    def split(st: SimState):
        dyn = (st.step, st.ego, st.agents, st.idm.s, st.idm.speed, st.idm.offset, st.learned)
        return dyn

    def join(dyn) -> SimState:
        step_, ego, agents, s_, speed, offset, learned = dyn
        idm = state.idm.replace(s=s_, speed=speed, offset=offset)
        return state.replace(step=step_, ego=ego, agents=agents, idm=idm, learned=learned)

    def cycle(carry, key):
        st = join(carry)
        traj = planner.plan(params, observe(st, cfg), key)
        bad = ~(jnp.all(jnp.isfinite(traj.xy)) & jnp.all(jnp.isfinite(traj.yaw)))
        # a broken plan is replaced by braking in place (and the scenario is flagged)
        xy = jnp.where(bad, jnp.zeros_like(traj.xy), traj.xy)
        plan_global = to_global(jnp.concatenate([jnp.zeros((1, 2), xy.dtype), xy]), st.ego.xy, st.ego.yaw)
        kept = traj.replace(xy=xy, yaw=jnp.where(bad, jnp.zeros_like(traj.yaw), traj.yaw)) if keep_plans else None

        def inner(dyn, j):
            s = join(dyn)
            path = to_ego_frame(plan_global, s.ego.xy, s.ego.yaw)
            nxt = _advance(s, path, traj.dt, j * SIM_DT, cfg)
            out = (nxt.ego, nxt.agents, terms_of(nxt, s.ego), bad, nxt.t0 + nxt.step < T, kept, j)
            return split(nxt), out

        dyn, outs = jax.lax.scan(inner, carry, jnp.arange(every))
        return dyn, outs

    def run_block(carry, keys):
        carry, outs = jax.lax.scan(cycle, carry, keys)
        return split(resample_agents(join(carry), cfg)), outs

    keys = jax.random.split(rng, blocks * per_block)
    final, outs = jax.lax.scan(run_block, split(state), keys.reshape((blocks, per_block) + keys.shape[1:]))
    final = join(final)
    flat = jax.tree.map(lambda a: a.reshape((blocks * block,) + a.shape[3:])[:horizon], outs)
    ego, agents, terms, bad, valid, plans, age = flat
    no_plan = None if plans is None else first_plan_row(jax.tree.map(lambda a: a[0], plans))
    first = (state.ego, state.agents, terms_of(state, state.ego), jnp.zeros((), bool), jnp.ones((), bool), no_plan,
             -jnp.ones((), age.dtype))  # fmt: skip
    ego, agents, terms, bad, valid, plans, age = jax.tree.map(
        lambda a, b: jnp.concatenate([a[None], b]), first, (ego, agents, terms, bad, valid, plans, age)
    )
    return final, Trace(
        ego=ego, agents=agents, terms=terms, plan_nan=bad, valid=valid, plan=plans,
        plan_age=age.astype(jnp.int32) if plans is not None else None,
    )  # fmt: skip

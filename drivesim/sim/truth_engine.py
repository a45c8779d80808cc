"""The truth engine: the planner drives the ego inside the synthetic world itself.

The scene is re-simulated from its recipe (`drivesim.synth.traffic.Traffic` of its `ScenePlan`,
bit for bit the run that wrote the log) up to the start step t0. From there the planner drives the
ego and the world's own traffic reacts to it as it does when it writes logs: IDM leaders (the ego
included), yielding at intersections by arrival order, pedestrians waiting at crossings, signals.
The engine has the other engines' API and semantics:

- `reset(plan, log, t0, uids, rng, cfg)`, `step(state, trajectory, rng, cfg)`, `observe(state,
  cfg)`, `rollout(state, planner, params, horizon, rng, cfg, terms_fn) -> (state, Trace)`;
- the ego moves by the kinematic engine's own tracker and bicycle (`drivesim.sim.engine._advance`,
  jitted), replanning every `sim.replan_every` steps of 0.1 s with the same per-cycle keys;
- the state holds a kinematic-engine `SimState` (`reset(log, t0)`: the log's map, route and
  logged ego future) whose agents are, every step, the world's agents mapped onto the log's agent
  slots (`uids`: the world uid of each slot, as `drivesim.synth.truth.record_log` returns them or
  `drivesim.pipelines.world_edits.synth_uid` finds them). So `observe` is the kinematic engine's,
  and the score terms (`drivesim.sim.closed_loop.pdms_terms`) and `evaluate` are the same kernels.

One step: the tracker moves the ego (0.1 s); the world is told the ego's new pose
(`Traffic.drive_ego`) and steps, its agents deciding on the state at the start of the step (where
the ego was), as the world's agents always do and as the kinematic engine's reactive agents do;
after the step the world's ego is exactly at the engine's ego pose.

Agents the log has no slot for (they never came within the annotation range of the logged ego, or
they were spawned differently) still drive, collide and interact in the world; when one comes
within `annotation_range` of the ego it takes a free (padding) slot of the log for the rest of the
rollout (its size and class written into the state's log), and only if no slot is free is it
left out of the observation and the scores. Agents farther than `annotation_range` from the ego are
not observed, as the synthetic writer does not annotate them.

Cameras (`TruthConfig.cameras`): the world is rendered from the six cameras of the ego where the
engine put it, at every world-model keyframe (every `camera_every` steps: 2 Hz, the world-model
engine's cadence), as the synthetic writer renders its logs (same renderer, width and JPEG quality,
then resized and centre-cropped as the world model's views); planners read them in
`Observation.cameras` (the last keyframe's, with its pose).

Host-side: the world is numpy and is advanced in place, so a `TruthState` is used once (step it,
then use the state `step` returns). The planner, the tracker, `observe` and the score terms are
jitted once per planner / configuration (no recompiles per step or per scenario of one shape).
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from drivesim.data.classes import agent_class_of
from drivesim.data.types import EGO_REAR_AXLE_TO_CENTER, SIM_DT, AgentState, CameraView, Log, Observation, Trajectory
from drivesim.errors import DataError
from drivesim.sim import engine
from drivesim.sim.dynamics import to_ego_frame, to_global
from drivesim.sim.engine import SimConfig, SimState, Trace
from drivesim.synth.traffic import DT, ScenePlan, Traffic
from drivesim.synth.world import apply_edits

START_TOLERANCE = 1.0
"""Largest distance (m) between the log's ego and the re-simulated world's ego at t0: farther, the
recipe does not re-simulate this log (a dataroot written by another version of the world)."""


@dataclasses.dataclass(frozen=True)
class TruthConfig:
    """The truth engine's settings."""

    sim: SimConfig = SimConfig()
    """The ego's vehicle and tracker, the replanning cadence, the route and the observation, as the
    kinematic engine's (its `agents` is not used: the world moves every other road user)."""
    annotation_range: float = 60.0
    """Agents farther than this from the ego's centre (m) are not observed (nor scored), as the
    synthetic writer does not annotate them (`SynthConfig.annotation_range`)."""
    cameras: bool = False
    """Render the six camera views for planners that read them (`Observation.cameras`)."""
    camera_every: int = 5
    """Sim steps between renders (5: 2 Hz, as the world-model engine's keyframes)."""
    image_width: int = 160
    """Render width (px), as the dataroot's (`SynthConfig.image_width`); then JPEG at `jpeg_quality`."""
    jpeg_quality: int = 90
    frame_size: tuple[int, int] = (64, 36)
    """(W0, H0) the renders are resized to (the clip cache's frames) ..."""
    image_size: tuple[int, int] = (64, 32)
    """... and (w, h) of their centre crops (the world model's views)."""

    def __post_init__(self):
        if not self.annotation_range > 0:
            raise ValueError(f"annotation_range must be positive (got {self.annotation_range})")
        if self.camera_every < 1:
            raise ValueError(f"camera_every must be at least 1 (got {self.camera_every})")

    @property
    def kinematic(self) -> SimConfig:
        """The kinematic engine's config for the ego, route and observation (log agents: the world
        replaces them every step)."""
        return dataclasses.replace(self.sim, agents="log")


@dataclasses.dataclass(frozen=True)
class TruthState:
    """The truth engine's state (host-side; not a pytree).

    Attributes:
      sim: the kinematic engine's state: ego, route, log (10 Hz; agent sizes and classes of any
        slot given to an unlogged agent written in), and the world's agents on the log's slots.
      world: the synthetic world at log step `sim.t0 + sim.step` (advanced in place by `step`).
      uids: (A,) int64 the world uid of each agent slot (-1: a free slot).
    """

    sim: SimState
    world: Traffic
    uids: np.ndarray

    @property
    def log_step(self) -> int:
        return int(self.sim.t0) + int(self.sim.step)


# ------------------------------------------------------------------------------------- the world


def warmup_steps(plan: ScenePlan) -> int:
    return int(round(plan.warmup / DT))


def world_at(plan: ScenePlan, t0: int, edits=()) -> Traffic:
    """The world of `plan` at log step t0 (warm-up, then t0 steps of 0.1 s), exactly as `simulate`
    runs it; `edits` (`drivesim.synth.world` edits) are applied then, as `resimulate(plan, t0 * 0.1,
    edits)` does."""
    world = Traffic(plan)
    for _ in range(warmup_steps(plan) + int(t0)):
        world.step()
    if edits:
        apply_edits(world, edits)
    return world


def worlds_at(plan: ScenePlan, t0s):
    """Copies of the world of `plan` at each log step of `t0s` (ascending), from one run: yields
    (t0, world); each world can be stepped on its own."""
    world = Traffic(plan)
    done = -warmup_steps(plan)
    for t0 in t0s:
        if t0 < done:
            raise ValueError(f"worlds_at: start steps must ascend (got {t0} after {done})")
        for _ in range(int(t0) - done):
            world.step()
        done = int(t0)
        yield t0, copy_world(world)


def copy_world(world: Traffic) -> Traffic:
    """An independent copy of a running world (its random streams included) that shares the
    immutable plan and map."""
    return copy.deepcopy(world, {id(world.plan): world.plan, id(world.map): world.map})


def _ego_centre(ego_xy, ego_yaw) -> np.ndarray:
    return np.asarray(ego_xy, np.float64) + EGO_REAR_AXLE_TO_CENTER * np.array([np.cos(ego_yaw), np.sin(ego_yaw)])


def world_agents(world: Traffic, uids: np.ndarray, ego_xy, ego_yaw, annotation_range: float):
    """The world's agents on the log's slots now.

    Returns (AgentState of (A,) float32 host arrays, uids (A,), claims): slot j holds the world
    agent with uid `uids[j]`, valid where it is in the world and within `annotation_range` of the
    ego's centre. Unlogged agents within range take free slots (nearest first): `claims` lists
    (slot, AgentSpec) for the slots newly given out (the returned `uids` includes them).
    """
    snap = world.snapshot()
    index = {spec.uid: k for k, spec in enumerate(world.specs)}
    centre = _ego_centre(ego_xy, ego_yaw)
    dist = np.hypot(*(snap.center - centre).T)
    near = snap.active & (dist < annotation_range)
    near[0] = False  # slot 0 of the world is the ego
    uids = np.asarray(uids, np.int64)
    claims = []
    free = np.flatnonzero(uids < 0)
    if len(free):
        taken = {int(u) for u in uids if u >= 0}
        extra = [k for k in np.flatnonzero(near) if world.specs[k].uid not in taken]
        if extra:
            uids = uids.copy()
            for j, k in zip(free, sorted(extra, key=lambda k: (dist[k], world.specs[k].uid)), strict=False):
                uids[j] = world.specs[k].uid
                claims.append((int(j), world.specs[k]))
    k = np.array([index.get(int(u), -1) if u >= 0 else -1 for u in uids])
    kk = np.maximum(k, 0)
    agents = AgentState(
        xy=np.where((k >= 0)[:, None], snap.center[kk], 0.0).astype(np.float32),
        yaw=np.where(k >= 0, snap.yaw[kk], 0.0).astype(np.float32),
        speed=np.where(k >= 0, snap.speed[kk], 0.0).astype(np.float32),
        valid=(k >= 0) & near[kk],
    )
    return agents, uids, claims


@functools.lru_cache(maxsize=4)
def _camera_rig(width: int):
    from drivesim.synth.rig import nuscenes_rig

    return tuple(nuscenes_rig(width))


def world_views(state: TruthState, cfg: TruthConfig) -> CameraView:
    """The six views of the world now from the engine's ego (`TruthConfig.cameras`): rendered as
    the writer renders, resized to `frame_size` and centre-cropped to `image_size`."""
    from drivesim.model.ego_warp import crop_offset
    from drivesim.synth.camera_frames import jpeg_like, render_world

    ego = jax.device_get(state.sim.ego)
    pose = (float(ego.xy[0]), float(ego.xy[1]), float(ego.yaw))
    frames = jpeg_like(render_world(state.world, _camera_rig(cfg.image_width), pose), cfg.frame_size, cfg.jpeg_quality)
    (w, h), (top, left) = cfg.image_size, crop_offset(cfg.frame_size, cfg.image_size)
    images = frames[:, top : top + h, left : left + w]
    return CameraView(images=jnp.asarray(images), xy=jnp.asarray(ego.xy), yaw=jnp.asarray(ego.yaw))


def _claim(log: Log, claims) -> Log:
    """The log with the size and class of newly claimed slots written in."""
    if not claims:
        return log
    size, category = np.array(log.agents.size), np.array(log.agents.category)
    for j, spec in claims:
        size[j] = spec.size
        category[j] = agent_class_of(spec.category)
    agents = log.agents.replace(size=jnp.asarray(size), category=jnp.asarray(category))
    return log.replace(agents=agents)


# ------------------------------------------------------------------------------------- jitted parts


@functools.lru_cache(maxsize=8)
def _reset_fn(cfg: SimConfig):
    return jax.jit(lambda log, t0: engine.reset(log, t0, None, cfg))


@functools.lru_cache(maxsize=8)
def _observe_fn(cfg: SimConfig):
    return jax.jit(lambda sim: engine.observe(sim, cfg))


@functools.lru_cache(maxsize=8)
def _step_fn(cfg: SimConfig):
    return jax.jit(lambda sim, traj: engine.step(sim, traj, None, cfg))


@functools.lru_cache(maxsize=16)
def _advance_fn(cfg: SimConfig, dt: float):
    """One tracker + bicycle step along a plan in the global frame (as `engine.rollout`'s inner
    step), `elapsed` seconds after it was made."""

    def advance(sim: SimState, plan_global, elapsed):
        path = to_ego_frame(plan_global, sim.ego.xy, sim.ego.yaw)
        return engine._advance(sim, path, dt, elapsed, cfg)

    return jax.jit(advance)


@functools.lru_cache(maxsize=32)
def plan_fn(planner, cfg: SimConfig):
    """jit(observe -> planner.plan) of one planner: (params, sim, key) -> (plan in the global
    frame (K + 1, 2) from the ego now, non-finite flag, the trajectory). Compiled once per planner
    and observation shape; a non-finite plan is replaced by braking in place (as `engine.rollout`)."""

    def plan(params, sim: SimState, key, cameras=None):
        traj = planner.plan(params, engine.observe(sim, cfg).replace(cameras=cameras), key)
        bad = ~(jnp.all(jnp.isfinite(traj.xy)) & jnp.all(jnp.isfinite(traj.yaw)))
        xy = jnp.where(bad, jnp.zeros_like(traj.xy), traj.xy)
        plan_global = to_global(jnp.concatenate([jnp.zeros((1, 2), xy.dtype), xy]), sim.ego.xy, sim.ego.yaw)
        return plan_global, bad, traj

    return jax.jit(plan)


@functools.lru_cache(maxsize=32)
def _terms_fn(terms_fn):
    return jax.jit(terms_fn)


# ------------------------------------------------------------------------------------- the API


def reset(
    plan: ScenePlan, log: Log, t0, uids, rng=None, cfg: TruthConfig = TruthConfig(), world: Traffic | None = None
) -> TruthState:
    """The state at log step t0 of a scene re-simulated from `plan`.

    Args:
      plan: the scene's plan (`drivesim.synth.dataset.plan_for` of its recipe).
      log: the scene's `Log` at 10 Hz (loaded from the dataroot, or `record_log` of the scene).
      t0: the start step of the log.
      uids: the world uid of each of the log's agent slots (-1 for padding), A or fewer entries.
      rng: unused (the world is deterministic); kept for one API across engines.
      world: the world at t0 if already run there (`world_at` / `worlds_at`; it is advanced in
        place); None: run from the plan.
    Raises:
      DataError: the plan does not re-simulate this log (the egos part by over `START_TOLERANCE`).
    """
    del rng
    t0 = int(t0)
    sim = _reset_fn(cfg.kinematic)(log, t0)
    world = world_at(plan, t0) if world is None else world
    if world.step_index != warmup_steps(plan) + t0:
        raise ValueError(f"the world is at log step {world.step_index - warmup_steps(plan)}, not at t0 = {t0}")
    gap = float(np.hypot(*(np.asarray(world.rear[0]) - np.asarray(sim.ego.xy, np.float64))))
    if gap > START_TOLERANCE:
        raise DataError(
            f"the re-simulated ego is {gap:.1f} m from the log's at step {t0}: this recipe does not re-simulate "
            "the log (was the dataroot written by another version of drivesim synth?)"
        )
    A = sim.agents.valid.shape[-1]
    slots = np.full(A, -1, np.int64)
    uids = np.asarray(list(uids)[:A], np.int64)
    slots[: len(uids)] = uids
    agents, slots, claims = world_agents(world, slots, sim.ego.xy, float(sim.ego.yaw), cfg.annotation_range)
    sim = sim.replace(agents=jax.tree.map(jnp.asarray, agents), log=_claim(sim.log, claims))
    return TruthState(sim=sim, world=world, uids=slots)


def _world_step(state: TruthState, sim: SimState, cfg: TruthConfig) -> TruthState:
    """The world's step once the ego has moved to `sim.ego` (a step further than `state`)."""
    world = state.world
    ego = jax.device_get(sim.ego)
    world.drive_ego((float(ego.xy[0]), float(ego.xy[1]), float(ego.yaw)))
    world.step()
    agents, uids, claims = world_agents(world, state.uids, ego.xy, float(ego.yaw), cfg.annotation_range)
    sim = sim.replace(agents=jax.tree.map(jnp.asarray, agents), log=_claim(sim.log, claims))
    return TruthState(sim=sim, world=world, uids=uids)


def observe(state: TruthState, cfg: TruthConfig = TruthConfig()) -> Observation:
    """What a planner sees now (the kinematic engine's observation of the world's agents; with
    `cfg.cameras`, the views rendered now)."""
    obs = _observe_fn(cfg.kinematic)(state.sim)
    return obs.replace(cameras=world_views(state, cfg)) if cfg.cameras else obs


def step(state: TruthState, trajectory: Trajectory, rng=None, cfg: TruthConfig = TruthConfig()) -> TruthState:
    """Track `trajectory` (planned now, in the current ego frame) for one 0.1 s step; the world's
    traffic steps with it. The world of `state` is advanced in place."""
    del rng
    return _world_step(state, _step_fn(cfg.kinematic)(state.sim, trajectory), cfg)


def rollout(
    state: TruthState,
    planner,
    params,
    horizon: int,
    rng,
    cfg: TruthConfig = TruthConfig(),
    terms_fn=None,
    keep_plans: bool = True,
) -> tuple[TruthState, Trace]:
    """Run `planner` in closed loop for `horizon` steps from `state`, as `engine.rollout` does
    (planner every `sim.replan_every` steps with the keys `jax.random.split(rng, cycles)`, the
    tracker following its last plan in between, `terms_fn(sim_state, previous_ego)` at every
    step). Returns the state after `horizon` steps and the trace (host loop; the world of `state`
    is advanced in place). Pass the same `terms_fn` object to every rollout: it is jitted once.
    `keep_plans`: the trace keeps the plan followed at each step (as `engine.rollout`).
    """
    kin = cfg.kinematic
    every = kin.replan_every
    cycles = -(-horizon // every)
    T = state.sim.log.time.shape[-1]
    plan = plan_fn(planner, kin)
    terms_of = _terms_fn(terms_fn) if terms_fn is not None else (lambda s, prev: None)
    keys = jax.random.split(rng, cycles)
    egos, agents, terms = [state.sim.ego], [state.sim.agents], [terms_of(state.sim, state.sim.ego)]
    bads, valids, plans, ages = [False], [True], [], [-1]
    views = None
    for c in range(cycles):
        if cfg.cameras and (views is None or (c * every) % cfg.camera_every == 0):
            views = world_views(state, cfg)
        plan_global, bad, traj = plan(params, state.sim, keys[c], views)
        advance = _advance_fn(kin, float(traj.dt))
        bad = bool(bad)
        kept = traj.replace(xy=jnp.zeros_like(traj.xy), yaw=jnp.zeros_like(traj.yaw)) if bad else traj
        if not plans:
            plans.append(engine.first_plan_row(kept))
        for j in range(every):
            if len(egos) > horizon:
                break
            prev = state.sim.ego
            state = _world_step(state, advance(state.sim, plan_global, j * SIM_DT), cfg)
            egos.append(state.sim.ego)
            agents.append(state.sim.agents)
            terms.append(terms_of(state.sim, prev))
            bads.append(bad)
            valids.append(state.log_step < T)
            plans.append(kept)
            ages.append(j)
    stack = lambda xs: jax.tree.map(lambda *a: jnp.stack(a), *xs)  # noqa: E731
    trace = Trace(
        ego=stack(egos),
        agents=stack(agents),
        terms=stack(terms) if terms_fn is not None else None,
        plan_nan=jnp.asarray(bads),
        valid=jnp.asarray(valids),
        plan=stack(plans) if keep_plans else None,
        plan_age=jnp.asarray(ages, jnp.int32) if keep_plans else None,
    )
    return state, trace

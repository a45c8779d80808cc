"""Agents driven by the learned behaviour model (`drivesim.model.behaviour`), or, as its ablation,
at constant velocity.

Every agent present at the start is simulated; nothing of the log's agents or ego after the start
is read (the start's history, up to 2 s before it, is). A model that reads traffic lights
(`BehaviourConfig.signals`) sees each light as it is now, at every decision, as the planners do
(`Signals.now`): the world's light schedule does not depend on anyone's driving. Every 0.5 s (`KEYFRAME_STEPS` sim steps) the model
looks at the last 2 s of everyone's motion (the simulated ego included, as it actually drove) and
the map, and samples each agent's control (acceleration, yaw rate) for the next 0.5 s; the sim
steps in between move the agents by it as unicycles (`motion_tokens.advance`). Agents that appear
later in the log do not exist here (nothing announces them); agents never leave.

With `every` = 1 (`SimConfig.agent_every`) the agents decide at every sim step instead: each step
the model sees the same 2 s of 0.5 s-spaced history, now ending at this step, and the sampled
0.5 s control is applied for 0.1 s before the next decision (receding horizon), so an agent reacts
to a braking car ahead within 0.1 s rather than up to 0.5 s; the memory then keeps every sim step.

"cv" (constant velocity) is the same machinery with every control zero: the stand-in the learned
model is compared with.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from drivesim.data.classes import VEHICLE
from drivesim.data.types import EGO_REAR_AXLE_TO_CENTER, EGO_SIZE, SIM_DT, AgentState, EgoState, Log
from drivesim.model import motion_tokens
from drivesim.model.behaviour import (
    BehaviourInput,
    BehaviourModel,
    lane_points,
    light_states,
    predict_controls,
    push_history,
    signal_lines,
)

KEYFRAME_STEPS = int(round(motion_tokens.STEP / SIM_DT))
"""Sim steps per behaviour step (5: the model runs at 2 Hz)."""


@struct.dataclass
class BehaviourHandle:
    """A behaviour model as a pytree: its graph (static) and its weights."""

    graphdef: object = struct.field(pytree_node=False)
    params: object

    @staticmethod
    def of(model: BehaviourModel) -> BehaviourHandle:
        g, p = nnx.split(model)
        return BehaviourHandle(graphdef=g, params=p)

    def model(self) -> BehaviourModel:
        return nnx.merge(self.graphdef, self.params)


@struct.dataclass
class LearnedAgents:
    """The simulated agents' memory (N = 1 + A rows; row 0 is the ego).

    Attributes:
      xy: (N, L, 2) box centres at the last L decisions, L = (H - 1) * stride + 1 for H history
        keyframes (stride = KEYFRAME_STEPS // every decisions per 0.5 s; the model sees every
        stride-th, ending now); yaw, speed: (N, L); valid: (N, L).
      controls: (N, 2) [accel, yaw rate] applied until the next behaviour step.
      key: the PRNG key of the agents' sampling (folded with the step).
      points: (M, 5) the log map's lane points and points_valid (M,) (`lane_points`), computed
        once at the start (they depend on the map only); empty for constant velocity.
      stride: decisions per 0.5 s (static).
    """

    xy: jnp.ndarray
    yaw: jnp.ndarray
    speed: jnp.ndarray
    valid: jnp.ndarray
    controls: jnp.ndarray
    key: jnp.ndarray
    points: jnp.ndarray
    points_valid: jnp.ndarray
    stride: int = struct.field(pytree_node=False, default=1)


def ego_centre(ego: EgoState):
    """(2,) box centre of the ego (its state is at the rear axle)."""
    return ego.xy + EGO_REAR_AXLE_TO_CENTER * jnp.stack([jnp.cos(ego.yaw), jnp.sin(ego.yaw)])


def _stride(every: int) -> int:
    if every not in (1, KEYFRAME_STEPS):
        raise ValueError(f"the learned agents decide every 1 or {KEYFRAME_STEPS} sim steps (got {every})")
    return KEYFRAME_STEPS // every


def _input(mem: LearnedAgents, log: Log, t, reads_lights: bool) -> BehaviourInput:
    """What the model sees at log step t (the lights are those of now: `light_states`)."""
    A = log.agents.size.shape[0]
    signals = signals_valid = None
    if reads_lights:
        lines, signals_valid = signal_lines(log.signals)
        steps_per_second = 1.0 / SIM_DT
        signals = jnp.concatenate([lines, light_states(log.signals.red, t, steps_per_second)], -1)
    pick = lambda a: a[:, :: mem.stride]  # noqa: E731  (the 0.5 s-spaced history, ending now)
    return BehaviourInput(
        xy=pick(mem.xy), yaw=pick(mem.yaw), speed=pick(mem.speed), valid=pick(mem.valid),
        size=jnp.concatenate([jnp.asarray(EGO_SIZE, jnp.float32)[None], log.agents.size]),
        category=jnp.concatenate([jnp.full((1,), VEHICLE, jnp.int32), log.agents.category.astype(jnp.int32)]),
        is_ego=jnp.arange(A + 1) == 0, points=mem.points, points_valid=mem.points_valid, raster=log.map.raster,
        raster_origin=log.map.raster_origin, raster_resolution=log.map.raster_resolution, signals=signals,
        signals_valid=signals_valid,
    )  # fmt: skip


def _controls(mem: LearnedAgents, log: Log, handle: BehaviourHandle | None, step, t, temperature: float):
    """Sampled controls (N, 2) at sim step `step` (the sampling key's fold), log step t."""
    if handle is None:  # constant velocity
        return jnp.zeros_like(mem.controls)
    model = handle.model()
    key = jax.random.fold_in(mem.key, step)
    ctrl = predict_controls(model, _input(mem, log, t, model.cfg.signals > 0), key, temperature)
    return jnp.where(mem.valid[:, -1:], ctrl, 0.0)


@jax.named_scope("learned_init")
def init_learned(
    log: Log, t0, key, handle: BehaviourHandle | None, history: int = 5, temperature: float = 1.0, every: int = 5
):
    """(memory, agents) at log step t0 of a 10 Hz log: the history is the log's states up to t0
    (every `every` steps), the first controls are sampled from it."""
    T = log.time.shape[-1]
    stride = _stride(every)
    steps = t0 - every * jnp.arange((history - 1) * stride, -1, -1)
    ok = steps >= 0
    st = jnp.clip(steps, 0, T - 1)
    ego, ag = log.ego, log.agents
    eyaw = ego.yaw[st]
    exy = ego.xy[st] + EGO_REAR_AXLE_TO_CENTER * jnp.stack([jnp.cos(eyaw), jnp.sin(eyaw)], -1)
    xy = jnp.concatenate([exy[None], ag.xy[:, st]])  # (N, H, 2)
    yaw = jnp.concatenate([eyaw[None], ag.yaw[:, st]])
    speed = jnp.concatenate(
        [jnp.linalg.norm(ego.velocity[st], axis=-1)[None], jnp.linalg.norm(ag.velocity[:, st], axis=-1)]
    )
    valid = jnp.concatenate([ego.valid[st][None], ag.valid[:, st]]) & ok[None]
    # only agents present now are simulated (their earlier frames are their history)
    valid = valid & valid[:, -1:]
    zero = lambda a: jnp.where(valid.reshape(valid.shape + (1,) * (a.ndim - 2)), a, 0.0)  # noqa: E731
    if handle is None:  # constant velocity reads no map
        points, points_valid = jnp.zeros((0, 5), jnp.float32), jnp.zeros((0,), bool)
    else:
        points, points_valid = lane_points(log.map, handle.model().cfg.lane_stride)
    mem = LearnedAgents(
        xy=zero(xy).astype(jnp.float32), yaw=zero(yaw).astype(jnp.float32), speed=zero(speed).astype(jnp.float32),
        valid=valid, controls=jnp.zeros((valid.shape[0], 2), jnp.float32), key=key, points=points,
        points_valid=points_valid, stride=stride,
    )  # fmt: skip
    mem = mem.replace(controls=_controls(mem, log, handle, 0, t0, temperature))
    agents = AgentState(xy=mem.xy[1:, -1], yaw=mem.yaw[1:, -1], speed=mem.speed[1:, -1], valid=mem.valid[1:, -1])
    return mem, agents


def move_learned(mem: LearnedAgents, agents: AgentState) -> AgentState:
    """The agents one sim step (0.1 s) later, under their current controls."""
    a, w = mem.controls[1:, 0], mem.controls[1:, 1]
    xy, yaw, speed = motion_tokens.advance(agents.xy, agents.yaw, agents.speed, a, w, SIM_DT)
    v = agents.valid
    return AgentState(
        xy=jnp.where(v[:, None], xy, agents.xy), yaw=jnp.where(v, yaw, agents.yaw),
        speed=jnp.where(v, speed, agents.speed), valid=v,
    )  # fmt: skip


@jax.named_scope("learned_resample")
def resample_learned(
    mem: LearnedAgents, agents: AgentState, ego: EgoState, log: Log, handle, step, t, temperature: float = 1.0
) -> LearnedAgents:
    """At a behaviour step (sim step `step`, log step t): remember where everyone is now (the ego
    as it drove) and sample the next controls."""
    xy = jnp.concatenate([ego_centre(ego)[None], agents.xy])
    yaw = jnp.concatenate([ego.yaw[None], agents.yaw])
    speed = jnp.concatenate([ego.speed[None], agents.speed])
    valid = jnp.concatenate([jnp.ones((1,), bool), agents.valid])
    inp = push_history(
        BehaviourInput(
            xy=mem.xy, yaw=mem.yaw, speed=mem.speed, valid=mem.valid, size=None, category=None, is_ego=None,
            points=None, points_valid=None, raster=None, raster_origin=None, raster_resolution=None,
        ),
        xy, yaw, speed, valid,
    )  # fmt: skip
    mem = mem.replace(xy=inp.xy, yaw=inp.yaw, speed=inp.speed, valid=inp.valid)
    return mem.replace(controls=_controls(mem, log, handle, step, t, temperature))

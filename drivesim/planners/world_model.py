"""Planners that plan with the world model: they imagine the future of each candidate before choosing.

Both planners have `needs_world_model = True`: under the world-model engine
(`drivesim.sim.wm_engine.rollout`) they receive the engine state — the model's latent window —
and roll the model forward from a copy of it, once per candidate trajectory and sampled future:

    for each imagined frame j (0.5 s apart, from the engine's next keyframe on):
        the ego pose the candidate reaches at that time (ideal tracking),
        the ego motion since the previous frame -> `sample_frame` -> decode the BEV occupancy.

- `WorldModelMPC` ("wm_mpc"): PDM-Closed-like IDM proposals (target speeds x lateral offsets)
  scored with the PDMS terms on the imagined grids — at-fault collision and time to collision
  against predicted agent cells under (and up to 1 s ahead of) the ego footprint, the drivable
  area of the imagined grid and of the map, route progress, the candidate's own comfort — worst
  case over the sampled futures; the best candidate is returned.
- `GradientPlanner` ("wm_grad"): starts from the IDM proposal and refines per-knot acceleration
  and lateral-offset corrections by a few gradient steps of a smooth surrogate of those scores,
  computed through the model with fixed noise keys (the imagination is then a deterministic,
  differentiable function of the trajectory).

Cost. One call imagines `len(candidates) * samples * frames` frames, each `sample_steps` passes
of the dynamics transformer over the whole window; with the defaults (8 candidates, 1 sample, 3
frames, 2 Euler steps) and the shipped small model a closed-loop run costs about 1.8 s of a
2-core CPU per call and scenario (8 scenarios vmapped). Run them with one plan per world-model
frame:

    drivesim bench --engine world-model --layout guided --replan-every 5 \
        --planner-module drivesim.planners.world_model:WorldModelMPC

(`WMConfig(sim=SimConfig(replan_every=5), layout=True)` in `drivesim.pipelines.benchmark.BenchConfig`;
with `replan_every=1` they plan five times as often.) Layout-guided, the imagined frames are
conditioned on the agents the planner sees, moved at constant velocity (the model renders that
forecast; the window's past frames were conditioned on the true boxes); free-running, the model
forecasts the agents itself.

`plan(params, observation, rng)` (no model at hand, e.g. under the reference engine) returns
the fastest proposal in the lane, so both planners still satisfy the `Planner` protocol.

`reference_rollout` runs a world-model planner where the world is the reference engine: the
model is layout-guided by the reference engine's agents (the planner's imagination kept in sync
with the real world), and the scores are the reference engine's exact terms.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from drivesim.data.classes import OCC_OBSTACLE, OCC_VEHICLE
from drivesim.data.geometry import box_corners
from drivesim.data.types import (
    EGO_REAR_AXLE_TO_CENTER,
    EGO_SIZE,
    EGO_WHEELBASE,
    SIM_DT,
    AgentState,
    EgoState,
    MapData,
    Observation,
    Route,
    Trajectory,
)
from drivesim.metrics.pdms import DRIVABLE_CLASSES, MetricConfig, comfort, comfort_extremes, route_progress
from drivesim.model.config import MOTION_SCALE, OCC_EXTENT
from drivesim.model.world import layout_grid, sample_frame
from drivesim.planners.builtin import (
    HORIZON,
    PLANNER_IDM,
    _follow_setup,
    _path_trajectory,
    idm_profile,
    leader_on_path,
    stop_for_red_lights,
)
from drivesim.sim import wm_engine
from drivesim.sim.dynamics import to_ego_frame, to_global, wrap
from drivesim.sim.idm import IdmParams
from drivesim.sim.paths import point_at

FIRST_AGENT_CLASS = OCC_VEHICLE
"""Occupancy classes from this id on are agents (vehicle, pedestrian, cyclist, obstacle)."""


# ------------------------------------------------------------------------------ imagination
def frame_times(state: wm_engine.WMState, cfg: wm_engine.WMConfig, frames: int) -> jnp.ndarray:
    """(frames,) seconds from now to each of the next world-model keyframes."""
    first = (state.key_step + cfg.keyframe_steps - state.base.step).astype(jnp.float32) * SIM_DT
    return first + jnp.arange(frames, dtype=jnp.float32) * (cfg.keyframe_steps * SIM_DT)


def poses_at(xy, yaw, times, dt: float = SIM_DT):
    """Poses (T, 2), (T,) of a trajectory (ego frame: xy (K, 2), yaw (K,), pose k at (k + 1) dt,
    the ego at the origin at 0) at `times` (T,) seconds, linearly interpolated (ideal tracking)."""
    t = jnp.arange(xy.shape[0] + 1, dtype=jnp.float32) * dt
    px = jnp.concatenate([jnp.zeros(1, xy.dtype), xy[:, 0]])
    py = jnp.concatenate([jnp.zeros(1, xy.dtype), xy[:, 1]])
    pyaw = jnp.concatenate([jnp.zeros(1, yaw.dtype), yaw])
    return jnp.stack([jnp.interp(times, t, px), jnp.interp(times, t, py)], axis=-1), jnp.interp(times, t, pyaw)


def speeds_along(xy, speed0, dt: float = SIM_DT):
    """(K + 1,) speed at the start and at each pose of an ego-frame trajectory (K, 2) (the mean
    speed over each step, the first taken as the current one)."""
    seg = jnp.linalg.norm(jnp.diff(jnp.concatenate([jnp.zeros((1, 2), xy.dtype), xy]), axis=0), axis=-1)
    return jnp.concatenate([jnp.reshape(speed0, (1,)).astype(seg.dtype), seg / dt])


def forecast_boxes(agents: AgentState, size, category, t, ego_xy, ego_yaw):
    """The agents moved `t` seconds at constant velocity, as the model's layout (`AgentLayout`, A)
    in the ego frame of (ego_xy, ego_yaw)."""
    heading = jnp.stack([jnp.cos(agents.yaw), jnp.sin(agents.yaw)], axis=-1)
    moved = agents.replace(xy=agents.xy + (agents.speed * t)[:, None] * heading)
    return wm_engine.layout_boxes(moved, size, category, ego_xy, ego_yaw)


@jax.named_scope("imagine")
def imagine(
    handle: wm_engine.ModelHandle,
    state: wm_engine.WMState,
    frame_xy,
    frame_yaw,
    key,
    cfg: wm_engine.WMConfig,
    layout_agents: tuple | None = None,
    times=None,
    sample_steps: int | None = None,
):
    """Imagine the next F world-model frames with the ego at the given poses.

    From a copy of the state's latent window, frame by frame: the ego motion from the previous
    frame's pose (the last keyframe's at first), `sample_frame`, the decoded BEV logits.
    Differentiable w.r.t. the poses; with a fixed `key` a deterministic function of them.

    Args:
      frame_xy: (F, 2) global ego positions at the imagined frames; frame_yaw: (F,) headings.
      key: the noise of this imagined future (frame j uses `fold_in(key, j)`).
      cfg: the engine's settings (`cfg.layout`: the frames are layout-guided).
      layout_agents: (AgentState (A,), size (A, 3), category (A,)): the agents whose constant-
        velocity forecast, `times` (F,) seconds from now, conditions each frame (layout-guided
        only; None: no layout, the model runs free).
      sample_steps: Euler steps of the sampler (None: the model's).
    Returns:
      (F, G, G, classes) logits of the imagined BEV grids, each in the ego frame of its pose.
    """
    model = handle.model()
    mcfg = model.cfg
    if sample_steps is not None:
        mcfg = dataclasses.replace(mcfg, sample_steps=sample_steps)
    W, G = mcfg.window, mcfg.occ_grid
    guided = cfg.layout and layout_agents is not None
    on = jnp.full((1, W), guided)
    F = frame_xy.shape[0]
    times = jnp.zeros((F,)) if times is None else times

    def one(carry, j):
        cam, occ, motion, layout, count, prev_xy, prev_yaw, anchor = carry
        xy, yaw = frame_xy[j], frame_yaw[j]
        d = to_ego_frame(xy[None], prev_xy, prev_yaw)[0]
        raw = jnp.stack([d[0], d[1], wrap(yaw - prev_yaw)])
        full = count >= W
        roll = lambda a: jnp.where(full, jnp.roll(a, -1, axis=0), a)  # noqa: E731
        cam, occ, motion, layout = roll(cam), roll(occ), roll(motion), roll(layout)
        p = jnp.minimum(count, W - 1)
        motion = motion.at[p].set(raw / jnp.asarray(MOTION_SCALE))
        if guided:
            agents, size, category = layout_agents
            boxes = forecast_boxes(agents, size, category, times[j], jax.lax.stop_gradient(xy),
                                   jax.lax.stop_gradient(yaw))  # fmt: skip
            lay = layout_grid(boxes, mcfg)
        else:
            boxes, lay = None, jnp.zeros((G, G), jnp.int32)
        layout = layout.at[p].set(lay)
        k = jax.random.fold_in(key, j)
        xc, xo = sample_frame(model.dynamics, cam[None], occ[None], motion[None], layout[None], on, p, k, mcfg)
        cam, occ = cam.at[p].set(xc[0]), occ.at[p].set(xo[0])
        anchor = anchor.moved(raw)
        plain = model.occupancy_logits(xo[0])
        refined = model.refine(plain, anchor, boxes, guided)
        anchor = anchor.renewed(jnp.argmax(refined, axis=-1).astype(jnp.int32), mcfg)
        if cfg.agents_from == "refined":
            logits = refined
        else:  # as the engine reads agents: the map from the refined grid, agents from the decoder's own
            agent = (jnp.argmax(plain, -1) >= FIRST_AGENT_CLASS) | (jnp.argmax(refined, -1) >= FIRST_AGENT_CLASS)
            logits = jnp.where(agent[..., None], plain, refined)
        return (cam, occ, motion, layout, count + 1, xy, yaw, anchor), logits

    init = (state.cam, state.occ, state.motion, state.layout, state.count, state.key_xy, state.key_yaw, state.anchor)
    _, logits = jax.lax.scan(one, init, jnp.arange(F))
    return logits


# ------------------------------------------------------------------------------ footprints
def _footprint_local(front_only: bool, inset: float = 0.0, n_lon: int = 5, n_lat: int = 3) -> jnp.ndarray:
    """(P, 2) sample points of the ego box in the ego (rear-axle) frame, shrunk by `inset` metres
    at the sides and the ends; `front_only`: the part ahead of the rear axle (what an at-fault
    collision touches)."""
    length, width = EGO_SIZE[0], EGO_SIZE[1]
    rear = EGO_REAR_AXLE_TO_CENTER - length / 2 + inset
    front = EGO_REAR_AXLE_TO_CENTER + length / 2 - inset
    lo = 0.0 if front_only else rear
    u = lo + (jnp.arange(n_lon) + 0.5) / n_lon * (front - lo)
    v = ((jnp.arange(n_lat) + 0.5) / n_lat - 0.5) * (width - 2 * inset)
    uu, vv = jnp.meshgrid(u, v, indexing="ij")
    return jnp.stack([uu.reshape(-1), vv.reshape(-1)], axis=-1)


def _corners_local() -> jnp.ndarray:
    """(4, 2) ego box corners in the ego (rear-axle) frame."""
    return box_corners(jnp.array([EGO_REAR_AXLE_TO_CENTER, 0.0]), jnp.zeros(()), jnp.asarray(EGO_SIZE[:2]))


def map_drivable(map: MapData, xy, yaw) -> jnp.ndarray:
    """() bool: the four ego box corners (rear axle at xy, heading yaw) lie on drivable map cells
    (the rule of `drivesim.metrics.pdms`)."""
    corners = to_global(_corners_local(), xy, yaw) - jnp.asarray(map.raster_origin, jnp.float32)
    cells = corners / map.raster_resolution
    size_r, size_c = map.raster.shape
    col = jnp.floor(cells[:, 0]).astype(jnp.int32)
    row = jnp.floor(cells[:, 1]).astype(jnp.int32)
    inside = (col >= 0) & (col < size_c) & (row >= 0) & (row < size_r)
    cls = map.raster[jnp.clip(row, 0, size_r - 1), jnp.clip(col, 0, size_c - 1)]
    return jnp.all(inside & jnp.isin(cls, jnp.asarray(DRIVABLE_CLASSES)))


def bilinear(values, grid_xy, grid_yaw, points):
    """Values (G, G) of a BEV grid made at pose (grid_xy, grid_yaw), bilinearly interpolated at
    global points (..., 2) (0 outside the grid); differentiable w.r.t. everything."""
    G = values.shape[0]
    r = 2 * OCC_EXTENT / G
    local = to_ego_frame(points, grid_xy, grid_yaw)
    fi = (OCC_EXTENT - local[..., 0]) / r - 0.5
    fj = (OCC_EXTENT - local[..., 1]) / r - 0.5
    i0, j0 = jnp.floor(fi), jnp.floor(fj)
    out = jnp.zeros(points.shape[:-1], values.dtype)
    for di in (0, 1):
        for dj in (0, 1):
            ii, jj = i0 + di, j0 + dj
            w = (1 - jnp.abs(fi - ii)) * (1 - jnp.abs(fj - jj))
            ok = (ii >= 0) & (ii < G) & (jj >= 0) & (jj < G)
            v = values[jnp.clip(ii, 0, G - 1).astype(jnp.int32), jnp.clip(jj, 0, G - 1).astype(jnp.int32)]
            out = out + jnp.where(ok, w, 0.0) * v
    return out


# ------------------------------------------------------------------------------ scores on grids
@jax.named_scope("grid_terms")
def grid_terms(
    grids,
    frame_xy,
    frame_yaw,
    frame_speed,
    ttc_times=(0.5, 0.9),
    stopped_speed: float = 0.05,
    inset: float = 0.0,
    min_cells: int = 1,
):
    """PDMS terms of an ego passing through imagined grids.

    Frame j's grid is made around the ego's pose at that frame. The ego is at fault when it moves
    and predicted agent cells lie under its footprint ahead of the rear axle (at least
    `min_cells` of its 15 sample points, the footprint shrunk by `inset` m: the predicted grids'
    1 m cells, max-pooled from 0.5 m, make every agent about half a cell larger). Time to
    collision: the ego, projected at constant speed and heading `ttc_times` seconds ahead, is on
    an agent cell of the grid nearest that time (frames are 0.5 s apart; the last grid stands for
    later times). Drivable: every box corner on a drivable (or agent) cell of the grid.

    Args:
      grids: (F, G, G) int class ids; frame_xy (F, 2), frame_yaw (F,): the poses they were
        made at (global); frame_speed: (F,) ego speed there.
    Returns:
      collision (F,) float32 (1 none, 0.5 only obstacles, 0 any other agent), ttc_ok (F,) bool,
      drivable (F,) bool.
    """
    F = grids.shape[0]
    front = _footprint_local(front_only=True, inset=inset)
    corners = _corners_local()
    drivable_ids = jnp.asarray(DRIVABLE_CLASSES)

    def agent_under(k, xy, yaw):
        cls = wm_engine.lookup(grids[k], frame_xy[k], frame_yaw[k], to_global(front, xy, yaw))
        agent = cls >= FIRST_AGENT_CLASS
        return jnp.sum(agent) >= min_cells, jnp.sum(agent & (cls != OCC_OBSTACLE)) >= min_cells

    def per_frame(j):
        xy, yaw, v = frame_xy[j], frame_yaw[j], frame_speed[j]
        moving = v >= stopped_speed
        any_hit, moving_hit = agent_under(j, xy, yaw)
        collision = jnp.where(moving & moving_hit, 0.0, jnp.where(moving & any_hit, 0.5, 1.0))
        heading = jnp.stack([jnp.cos(yaw), jnp.sin(yaw)])
        ahead_hit = jnp.zeros((), bool)
        for tau in ttc_times:
            k = jnp.minimum(j + round(tau / 0.5), F - 1)
            ahead_hit = ahead_hit | agent_under(k, xy + v * tau * heading, yaw)[0]
        cls = wm_engine.lookup(grids[j], xy, yaw, to_global(corners, xy, yaw))
        drivable = jnp.all(jnp.isin(cls, drivable_ids) | (cls >= FIRST_AGENT_CLASS))
        return collision.astype(jnp.float32), ~(moving & ahead_hit), drivable

    return jax.vmap(per_frame)(jnp.arange(F))


def candidate_trace(ego: EgoState, xy, yaw) -> EgoState:
    """The ego along a candidate (global xy (K, 2), yaw (K,)), 10 Hz, for the comfort score: two
    steps of history at the current acceleration and yaw rate, the ego now, then the K poses (K + 3 states),
    so that a candidate that jerks away from what the car does now counts as uncomfortable."""
    K = xy.shape[0]
    seg = jnp.linalg.norm(jnp.diff(jnp.concatenate([ego.xy[None], xy]), axis=0), axis=-1)
    # the speed at the end of each step from the mean speed over it (v_k = 2 v_mid - v_{k-1})
    speed = jax.lax.scan(lambda v, vm: (jnp.maximum(2 * vm - v, 0.0),) * 2, ego.speed, seg / SIM_DT)[1]
    back = SIM_DT * jnp.array([2.0, 1.0, 0.0])
    speeds = jnp.concatenate([jnp.maximum(ego.speed - ego.accel * back[:2], 0.0), ego.speed[None], speed])
    # the history turns as the car turns now (a straight history would make every curve a jerk)
    yaw_rate = ego.speed * jnp.tan(ego.steer) / EGO_WHEELBASE
    return EgoState(
        xy=jnp.concatenate([jnp.broadcast_to(ego.xy, (3, 2)), xy]),
        yaw=jnp.concatenate([ego.yaw - yaw_rate * back, yaw]),
        speed=speeds,
        accel=jnp.concatenate([jnp.broadcast_to(ego.accel, (3,)), jnp.diff(speeds[2:]) / SIM_DT]),
        steer=jnp.zeros(K + 3),
    )


# ------------------------------------------------------------------------------ proposals
def proposals(obs: Observation, idm: IdmParams, candidates, max_jerk: float, horizon: int):
    """IDM proposals along the route (ego frame): one per (fraction of `idm.target_speed`,
    lateral offset m, left +) in `candidates`, behind the leader in that corridor, the
    acceleration changing at most at `max_jerk` from the current one.

    Returns: xy (C, K, 2), yaw (C, K), offsets (C,).
    """
    obs = stop_for_red_lights(obs)
    path, s0, d0, local, limit = _follow_setup(obs, idm)
    frac = jnp.array([c[0] for c in candidates], jnp.float32)
    offsets = jnp.array([c[1] for c in candidates], jnp.float32)

    def one(f, offset):
        gap, lead_speed = leader_on_path(path, s0, local, obs.agent_size, offset=offset)
        p = dataclasses.replace(idm, target_speed=f * idm.target_speed)
        ds = idm_profile(obs.ego.speed, gap, lead_speed, p, horizon, speed_limit=limit, a0=obs.ego.accel,
                         max_jerk=max_jerk)  # fmt: skip
        return _path_trajectory(path, s0, ds, offset, d0)

    xy, yaw = jax.vmap(one)(frac, offsets)
    return xy, yaw, offsets


def _global_frames(xy, yaw, times, ego: EgoState):
    """Global poses (F, 2), (F,) and speeds (F,) of an ego-frame trajectory at `times`."""
    fxy, fyaw = poses_at(xy, yaw, times)
    v = speeds_along(xy, ego.speed)
    t = jnp.arange(xy.shape[0] + 1, dtype=jnp.float32) * SIM_DT
    # the mean speed over the step that ends at each pose: at time t, the step around it
    speed = jnp.interp(times + 0.5 * SIM_DT, t, v)
    return to_global(fxy, ego.xy, ego.yaw), wrap(fyaw + ego.yaw), speed


@struct.dataclass
class MPCEvaluation:
    """The proposals of one MPC call, imagined and scored.

    Attributes:
      xy (C, K, 2), yaw (C, K), offsets (C,): the proposals (ego frame) and their lateral offsets.
      frame_xy (C, F, 2), frame_yaw (C, F): the global ego poses of the imagined frames.
      grids: (C, S, F, G, G) int8 imagined BEV classes (each around its frame's pose).
      pdms (C,): the worst score over the sampled futures; progress (C,) route progress (m).
      terms: `WorldModelMPC.score_terms`.
    """

    xy: jnp.ndarray
    yaw: jnp.ndarray
    offsets: jnp.ndarray
    frame_xy: jnp.ndarray
    frame_yaw: jnp.ndarray
    grids: jnp.ndarray
    pdms: jnp.ndarray
    progress: jnp.ndarray
    terms: dict


@dataclasses.dataclass(frozen=True)
class WorldModelMPC:
    """Imagine every proposal with the world model, score it on the imagined grids, keep the best."""

    name: str = "wm_mpc"
    candidates: tuple[tuple[float, float], ...] = (
        (1.0, 0.0), (0.7, 0.0), (0.4, 0.0), (0.0, 0.0), (1.0, 1.0), (1.0, -1.0), (0.7, 1.0), (0.7, -1.0),
    )  # fmt: skip
    """Proposals: (fraction of `idm.target_speed`, lateral offset from the route centreline m)."""
    idm: IdmParams = PLANNER_IDM
    max_jerk: float = 3.5
    """The proposals' acceleration changes at most this fast (m/s^3), from the current one."""
    frames: int = 3
    """World-model frames imagined per proposal (0.5 s each)."""
    samples: int = 1
    """Sampled futures per proposal (the same keys for every proposal); the score is the worst."""
    sample_steps: int | None = 2
    """Euler steps of the sampler while imagining (None: the model's own)."""
    forecast_layout: bool = True
    """Layout-guided engine: condition the imagined frames on the seen agents moved at constant
    velocity (False: imagine free-running)."""
    drivable: str = "both"
    """Drivable area from the imagined grids and the map ("both"), or only one ("prediction", "map")."""
    inset: float = 0.5
    """Metres the ego footprint is shrunk by when it is checked against imagined agent cells (the
    1 m cells make agents about half a cell larger)."""
    min_cells: int = 2
    """Footprint sample points (of 15) on imagined agent cells that make a collision (one stray
    cell of a blurred prediction does not)."""
    comfort_bounds: str = "longitudinal"
    """Which comfort bounds a proposal is held to: "longitudinal" (acceleration, longitudinal
    jerk) or "full" (nuPlan's, yaw included). The proposals' headings are the route's, a polyline:
    in curves their yaw acceleration exceeds the bound where the tracked car's does not, and "full"
    would prefer crawling through every turn."""
    offset_cost: float = 0.02
    """Score given up per metre of lateral offset (among equally scored proposals, keep the lane)."""
    metrics: MetricConfig = MetricConfig()
    horizon: int = HORIZON

    needs_world_model = True  # a class attribute: not a field, so not part of the hash

    def __post_init__(self):
        if self.comfort_bounds not in ("longitudinal", "full"):
            raise ValueError(f"comfort_bounds must be 'longitudinal' or 'full' (got {self.comfort_bounds!r})")
        if self.drivable not in ("both", "map", "prediction"):
            raise ValueError(f"drivable must be 'both', 'map' or 'prediction' (got {self.drivable!r})")
        if not self.candidates or self.frames < 1 or self.samples < 1:
            raise ValueError("WorldModelMPC needs at least one candidate, one frame and one sample")

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        """Without a world model: the first proposal (full speed in the lane by default)."""
        xy, yaw, _ = proposals(obs, self.idm, self.candidates[:1], self.max_jerk, self.horizon)
        return Trajectory(xy=xy[0], yaw=yaw[0])

    def plan_wm(self, params, state: wm_engine.WMState, handle, cfg: wm_engine.WMConfig, rng) -> Trajectory:
        with jax.named_scope("wm_mpc"):
            ev = self.evaluate(state, handle, cfg, rng)
            best = self.choose(ev.pdms, ev.progress, ev.offsets)
            return Trajectory(xy=ev.xy[best], yaw=ev.yaw[best])

    def evaluate(self, state: wm_engine.WMState, handle, cfg: wm_engine.WMConfig, rng) -> MPCEvaluation:
        """Every proposal, imagined and scored (what `plan_wm` chooses from; for diagnostics)."""
        obs = wm_engine.observe(state, cfg)
        xy, yaw, offsets = proposals(obs, self.idm, self.candidates, self.max_jerk, self.horizon)
        times = frame_times(state, cfg, self.frames)
        ego = state.base.ego
        fxy, fyaw, _ = jax.vmap(lambda x, y: _global_frames(x, y, times, ego))(xy, yaw)
        keys = jax.random.split(rng, self.samples)  # common random numbers across proposals
        agents = (obs.agents, obs.agent_size, obs.agent_category) if self.forecast_layout else None

        def dream(x, y, k):
            logits = imagine(handle, state, x, y, k, cfg, agents, times, self.sample_steps)
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)

        grids = jax.vmap(lambda x, y: jax.vmap(lambda k: dream(x, y, k))(keys))(fxy, fyaw)  # (C, S, F, G, G)
        terms = self.score_terms(ego, state.base.route, state.base.log.map, xy, yaw, grids, times)
        return MPCEvaluation(
            xy=xy, yaw=yaw, offsets=offsets, frame_xy=fxy, frame_yaw=fyaw, grids=grids.astype(jnp.int8),
            pdms=jnp.min(terms["pdms"], axis=-1), progress=terms["progress"], terms=terms,
        )  # fmt: skip

    def score_candidates(self, ego: EgoState, route: Route, map: MapData, xy, yaw, grids, times):
        """PDMS of each proposal on its imagined grids, the worst over the sampled futures.

        Args:
          ego: the ego now (global); route: the route (global); map: the map.
          xy (C, K, 2), yaw (C, K): the proposals (ego frame).
          grids: (C, S, F, G, G) imagined class ids, frame f of proposal c made at the pose the
            proposal reaches `times[f]` seconds from now.
        Returns:
          pdms (C,) and route progress (C,) m over the proposal.
        """
        terms = self.score_terms(ego, route, map, xy, yaw, grids, times)
        return jnp.min(terms["pdms"], axis=-1), terms["progress"]

    def score_terms(self, ego: EgoState, route: Route, map: MapData, xy, yaw, grids, times) -> dict:
        """The PDMS terms behind `score_candidates`: nc, dac, ttc, pdms (C, S) per sampled
        future, ep, c and progress (C,)."""
        ref = self.idm.target_speed * xy.shape[1] * SIM_DT

        def one(x, y, g):
            fxy, fyaw, fspeed = _global_frames(x, y, times, ego)
            collision, ttc_ok, drivable = jax.vmap(
                lambda gs: grid_terms(gs, fxy, fyaw, fspeed, inset=self.inset, min_cells=self.min_cells)
            )(g)  # (S, F)
            nc = jnp.min(collision, axis=-1)
            ttc = jnp.all(ttc_ok, axis=-1).astype(jnp.float32)
            gxy, gyaw = to_global(x, ego.xy, ego.yaw), wrap(y + ego.yaw)
            on_map = jnp.all(jax.vmap(lambda a, b: map_drivable(map, a, b))(gxy, gyaw))
            on_grid = jnp.all(drivable, axis=-1)
            dac = {"both": on_map & on_grid, "map": on_map & jnp.ones_like(on_grid), "prediction": on_grid}
            dac = dac[self.drivable].astype(jnp.float32)
            progress = route_progress(route, gxy[-1]) - route_progress(route, ego.xy)
            ep = jnp.clip(progress / ref, 0.0, 1.0)
            c = self.comfort(candidate_trace(ego, gxy, gyaw))
            pdms = nc * dac * (5.0 * ttc + 5.0 * ep + 2.0 * c) / 12.0
            return {"nc": nc, "dac": dac, "ttc": ttc, "ep": ep, "c": c, "pdms": pdms, "progress": progress}

        return jax.vmap(one)(xy, yaw, grids)

    def comfort(self, trace: EgoState):
        """() 1.0 if a proposal's trace is comfortable: all of nuPlan's bounds (`comfort="full"`),
        or only the longitudinal ones (acceleration and longitudinal jerk)."""
        if self.comfort_bounds == "full":
            return comfort(trace, SIM_DT, self.metrics)
        m = self.metrics
        ext = comfort_extremes(trace, SIM_DT, m)
        ok = (ext["min_lon_accel"] >= m.min_lon_accel) & (ext["max_lon_accel"] <= m.max_lon_accel)
        return (ok & (ext["lon_jerk"] <= m.max_lon_jerk)).astype(jnp.float32)

    def choose(self, pdms, progress, offsets):
        """Index of the best proposal: the highest score, a little less per metre of lateral
        offset, then the furthest."""
        return jnp.argmax(pdms - self.offset_cost * jnp.abs(offsets) + 1e-4 * progress)


# ------------------------------------------------------------------------------ gradient planner
@struct.dataclass
class GradProblem:
    """What one refinement needs (one scenario, one call).

    Attributes:
      state: the engine state (the model's latent window to imagine from).
      path: the route in the ego frame; s0: () the ego's arc length on it.
      speed: (K,) the proposal's mean speed over each step; lateral: (K,) its lateral offset.
      times: (F,) seconds to the imagined frames; keys: (S,) their fixed noise keys.
      agents, size, category: the seen agents (their constant-velocity forecast conditions the
        imagined frames when the engine is layout-guided).
    """

    state: wm_engine.WMState
    path: Route
    s0: jnp.ndarray
    speed: jnp.ndarray
    lateral: jnp.ndarray
    times: jnp.ndarray
    keys: jnp.ndarray
    agents: AgentState
    size: jnp.ndarray
    category: jnp.ndarray


def _hat_basis(steps: int, knots: int) -> jnp.ndarray:
    """(steps, knots) linear interpolation weights of knot values at steps (n + 1) * steps / knots
    (0 now, constant after the last knot)."""
    t = jnp.arange(steps, dtype=jnp.float32) + 1.0
    at = (jnp.arange(knots, dtype=jnp.float32) + 1.0) * steps / knots
    hat = jnp.clip(1.0 - jnp.abs(t[:, None] - at[None, :]) / (steps / knots), 0.0, 1.0)
    return jnp.where((t[:, None] > at[-1]) & (jnp.arange(knots) == knots - 1), 1.0, hat)


@dataclasses.dataclass(frozen=True)
class GradientPlanner:
    """Refine the IDM proposal by gradient steps on a smooth score surrogate through the world model.

    The trajectory is the proposal plus corrections at `knots` instants (linearly interpolated):
    longitudinal acceleration (m/s^2, integrated into the speed) and lateral offset (m). The
    surrogate (lower is better), summed over the imagined frames and averaged over the fixed keys:

        w_collision * P(agent) under the footprint ahead of the rear axle
      + w_ttc * P(agent) under that footprint projected 0.5 s and 0.9 s ahead
      + w_offroad * P(not drivable) under the box corners
      + w_progress * (progress lost against the proposal) / (target speed * horizon)
      + w_accel * mean accel^2 + w_jerk * mean jerk^2 + w_lateral * mean offset correction^2,

    P from the softmax of the decoded occupancy logits, sampled bilinearly under the footprint.
    Progress is only lost, never won: IDM already drives at the speed it wants, so the model's
    danger terms (and comfort) are what moves the plan. The steps are plain gradient steps
    (`learning_rate`), each correction moving at most `max_step` per step: a small gradient makes
    a small change (an adaptive optimiser would turn the model's noise into full-size steps). The
    best iterate (the proposal included) is returned, so the plan never scores worse on the
    surrogate than the proposal.
    """

    name: str = "wm_grad"
    idm: IdmParams = PLANNER_IDM
    max_jerk: float = 3.5
    """The proposal's acceleration changes at most this fast (m/s^3), from the current one."""
    frames: int = 3
    """World-model frames imagined (0.5 s each)."""
    samples: int = 1
    """Sampled futures (fixed keys) the surrogate is averaged over."""
    sample_steps: int | None = 2
    """Euler steps of the sampler (None: the model's own)."""
    forecast_layout: bool = True
    """Layout-guided engine: condition the imagined frames on the seen agents at constant velocity."""
    knots: int = 8
    """Correction knots over the horizon (0.5 s apart for 4 s)."""
    steps: int = 3
    """Gradient steps per call."""
    learning_rate: float = 3.0
    """Step size (correction units per unit of surrogate gradient)."""
    max_step: float = 0.5
    """Largest change of one correction in one step (m/s^2 or m)."""
    w_collision: float = 4.0
    w_ttc: float = 2.0
    w_offroad: float = 2.0
    w_progress: float = 1.0
    w_accel: float = 0.02
    w_jerk: float = 0.002
    w_lateral: float = 0.05
    horizon: int = HORIZON

    needs_world_model = True  # a class attribute: not a field, so not part of the hash

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        """Without a world model: the IDM proposal."""
        xy, yaw, _ = proposals(obs, self.idm, ((1.0, 0.0),), self.max_jerk, self.horizon)
        return Trajectory(xy=xy[0], yaw=yaw[0])

    def plan_wm(self, params, state: wm_engine.WMState, handle, cfg: wm_engine.WMConfig, rng) -> Trajectory:
        with jax.named_scope("wm_grad"):
            prob = self.problem(state, cfg, rng)
            theta, _, _ = self.refine(prob, handle, cfg)
            xy, yaw, _ = self.trajectory(theta, prob)
            return Trajectory(xy=xy, yaw=yaw)

    def problem(self, state: wm_engine.WMState, cfg: wm_engine.WMConfig, rng) -> GradProblem:
        """The refinement's fixed inputs at this state: the IDM proposal, the frames, the keys."""
        obs = stop_for_red_lights(wm_engine.observe(state, cfg))
        path, s0, d0, local, limit = _follow_setup(obs, self.idm)
        gap, lead_speed = leader_on_path(path, s0, local, obs.agent_size)
        ds = idm_profile(obs.ego.speed, gap, lead_speed, self.idm, self.horizon, speed_limit=limit,
                         a0=obs.ego.accel, max_jerk=self.max_jerk)  # fmt: skip
        u = jnp.clip((jnp.arange(self.horizon) + 1) / 20.0, 0.0, 1.0)
        return GradProblem(
            state=state, path=path, s0=s0, speed=jnp.diff(jnp.concatenate([jnp.zeros(1), ds])) / SIM_DT,
            lateral=d0 * (1.0 - u * u * (3.0 - 2.0 * u)),  # back to the centreline, as the proposals
            times=frame_times(state, cfg, self.frames), keys=jax.random.split(rng, self.samples),
            agents=obs.agents, size=obs.agent_size, category=obs.agent_category,
        )  # fmt: skip

    def init_theta(self):
        """Zero corrections: the proposal itself."""
        return {"accel": jnp.zeros(self.knots), "lateral": jnp.zeros(self.knots)}

    def trajectory(self, theta, prob: GradProblem):
        """Ego-frame xy (K, 2), yaw (K,) and mean speed over each step (K,) of the corrected proposal."""
        basis = _hat_basis(self.horizon, self.knots)
        speed = jnp.maximum(prob.speed + jnp.cumsum(basis @ theta["accel"]) * SIM_DT, 0.0)
        lateral = prob.lateral + basis @ theta["lateral"]
        pts, heading = jax.vmap(lambda s: point_at(prob.path, s))(prob.s0 + jnp.cumsum(speed) * SIM_DT)
        normal = jnp.stack([-jnp.sin(heading), jnp.cos(heading)], axis=-1)
        return pts + lateral[:, None] * normal, heading, speed

    def surrogate(self, theta, prob: GradProblem, handle, cfg: wm_engine.WMConfig):
        """() the smooth score surrogate of the corrected proposal (the class docstring)."""
        xy, yaw, speed = self.trajectory(theta, prob)
        ego = prob.state.base.ego
        fxy, fyaw = poses_at(xy, yaw, prob.times)
        fxy, fyaw = to_global(fxy, ego.xy, ego.yaw), fyaw + ego.yaw
        t = jnp.arange(xy.shape[0] + 1, dtype=jnp.float32) * SIM_DT
        fspeed = jnp.interp(prob.times + 0.5 * SIM_DT, t, jnp.concatenate([ego.speed[None], speed]))
        agents = (prob.agents, prob.size, prob.category) if self.forecast_layout else None
        front, corners = _footprint_local(front_only=True), _corners_local()
        drivable_ids = jnp.asarray(DRIVABLE_CLASSES)
        F = self.frames

        def risk(key):
            logits = imagine(handle, prob.state, fxy, fyaw, key, cfg, agents, prob.times, self.sample_steps)
            p = jax.nn.softmax(logits, axis=-1)  # (F, G, G, classes)
            p_agent = jnp.sum(p[..., FIRST_AGENT_CLASS:], axis=-1)
            p_drive = p_agent + jnp.sum(p[..., drivable_ids], axis=-1)

            def per_frame(j):
                xy_j, yaw_j = fxy[j], fyaw[j]
                col = jnp.mean(bilinear(p_agent[j], xy_j, yaw_j, to_global(front, xy_j, yaw_j)))
                heading = jnp.stack([jnp.cos(yaw_j), jnp.sin(yaw_j)])
                ttc = 0.0
                for tau in (0.5, 0.9):
                    k = jnp.minimum(j + round(tau / 0.5), F - 1)
                    ahead = to_global(front, xy_j + fspeed[j] * tau * heading, yaw_j)
                    ttc = ttc + 0.5 * jnp.mean(bilinear(p_agent[k], fxy[k], fyaw[k], ahead))
                off = jnp.mean(1.0 - bilinear(p_drive[j], xy_j, yaw_j, to_global(corners, xy_j, yaw_j)))
                return col, ttc, off

            col, ttc, off = jax.vmap(per_frame)(jnp.arange(F))
            return self.w_collision * jnp.sum(col) + self.w_ttc * jnp.sum(ttc) + self.w_offroad * jnp.sum(off)

        danger = jnp.mean(jax.vmap(risk)(prob.keys))
        accel = jnp.diff(jnp.concatenate([ego.speed[None], speed])) / SIM_DT
        jerk = jnp.diff(jnp.concatenate([ego.accel[None], accel])) / SIM_DT
        lost = jnp.maximum(jnp.sum(prob.speed) - jnp.sum(speed), 0.0) / (self.idm.target_speed * self.horizon)
        basis = _hat_basis(self.horizon, self.knots)
        return (
            danger
            + self.w_progress * lost
            + self.w_accel * jnp.mean(accel**2)
            + self.w_jerk * jnp.mean(jerk**2)
            + self.w_lateral * jnp.mean((basis @ theta["lateral"]) ** 2)
        )

    def refine(self, prob: GradProblem, handle, cfg: wm_engine.WMConfig):
        """`steps` clipped gradient steps on the surrogate from zero corrections.

        Returns:
          the best corrections seen (the proposal's zeros included), the surrogate at each
          iterate ((steps + 1,): the proposal first) and the gradient at each step (like theta
          with a leading (steps,) axis; non-finite entries are skipped by the update).
        """
        opt = optax.chain(optax.scale(-self.learning_rate), optax.clip(self.max_step))
        value_and_grad = jax.value_and_grad(lambda th: self.surrogate(th, prob, handle, cfg))
        theta = self.init_theta()

        def step(carry, _):
            th, st, best, best_cost = carry
            cost, g = value_and_grad(th)
            better = cost < best_cost
            best = jax.tree.map(lambda a, b: jnp.where(better, a, b), th, best)
            best_cost = jnp.where(better, cost, best_cost)
            safe = jax.tree.map(lambda a: jnp.where(jnp.isfinite(a), a, 0.0), g)
            upd, st = opt.update(safe, st, th)
            return (optax.apply_updates(th, upd), st, best, best_cost), (cost, g)

        init = (theta, opt.init(theta), theta, jnp.asarray(jnp.inf, jnp.float32))
        (last, _, best, best_cost), (costs, grads) = jax.lax.scan(step, init, None, length=self.steps)
        last_cost = self.surrogate(last, prob, handle, cfg)
        better = last_cost < best_cost
        best = jax.tree.map(lambda a, b: jnp.where(better, a, b), last, best)
        return best, jnp.concatenate([costs, last_cost[None]]), grads


# ------------------------------------------------------------------------------ scoring
def reference_rollout(
    handle: wm_engine.ModelHandle,
    state: wm_engine.WMState,
    planner,
    params,
    horizon: int,
    rng,
    cfg: wm_engine.WMConfig,
    metrics: MetricConfig = MetricConfig(),
):
    """Run a planner where the world is the reference engine, and score it as the reference does.

    `wm_engine.rollout` (the world model keeps its window; a world-model planner imagines from
    it) with the step terms of the reference engine's own state (`state.base`: the exact ego,
    the reference agents, the map), scored by `drivesim.sim.closed_loop.evaluate`. With
    `cfg.layout` the model is conditioned on the reference agents, so the planner's imagination
    is kept in sync with the real world; the ego moves by the same bicycle model and tracker as
    in the reference engine, so a planner that ignores the model scores exactly as there.

    Returns:
      (Scores of () scalars, the rollout's WMTrace).
    """
    from drivesim.sim.closed_loop import evaluate, pdms_terms

    terms = pdms_terms(metrics)
    _, tr = wm_engine.rollout(handle, state, planner, params, horizon, rng, cfg, lambda s, prev: terms(s.base, prev))
    trace = tr.as_trace()
    return evaluate(state.base, trace, horizon, metrics), tr

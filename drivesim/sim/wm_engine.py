"""The world-model engine: the reference engine's API, with the world seen through the world model.

`reset` encodes the 2 s history of a log (camera frames and BEV occupancy of the last keyframes,
as the clip cache holds them); `step` moves the ego with the same bicycle model and tracker as the
reference engine; every `keyframe_steps` steps (0.5 s, the model's 2 Hz) the world model predicts
the next keyframe's latents conditioned on the ego motion since the last keyframe, and decodes its
BEV occupancy (camera frames only when `cameras` asks for them). `observe` gives planners the same
`Observation` as the reference engine, built from the prediction:

- occupancy: the last predicted BEV grid, resampled into the current ego pose;
- agents (free-running): the log's agents at t0, tracked through the predicted grids (each box
  moved by its velocity, then fitted to the predicted agent cells, its velocity re-measured; an
  agent the model drops is gone), plus static boxes for predicted agent cells no tracked agent
  explains (agents the model makes up); between keyframes they move at their velocities;
- the map, the route and the logged ego future as the reference engine (they are the log's);
- the camera views of the last keyframe (`cameras` "refiner" or "latent"), with the pose they were
  taken at.

Cameras (`WMConfig.cameras`): "refiner" draws each keyframe's six views with the camera refiner
(`drivesim.model.camera_refine`: the ego-warped anchor frame, corrected where the predicted layout
puts the agents). The anchor is the last context frame at t0; after `CameraRefineConfig.horizon`
keyframes the latest generated frame (with its layout and pose) becomes the anchor, so the refiner
always works within the reach it was trained for. "warp" is its stand-in without the learned part:
the anchor warped by the ego's motion alone (`drivesim.model.ego_warp`; the ablation row). "latent"
decodes the world model's own camera latents (its tokenizer's decoder); "off" draws nothing.

Free-running (`layout=False`) the model forecasts the other agents itself. Layout-guided
(`layout=True`) the agents come from the reference engine (log replay or IDM, `sim.agents`), and
the model renders them: their boxes condition every predicted frame. Either way the scores are
computed from what the model predicts (`drivesim.sim.closed_loop.wm_pdms_terms`).

`rollout` is one `lax.scan` over keyframes, with the sim steps (planner, tracker, score terms) of
each keyframe in an inner scan: planner + world model + metrics are one compiled program; `vmap`
it over scenarios and over sampled futures (each key draws its own future).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx, struct

from drivesim.data.classes import OCC_VEHICLE
from drivesim.data.types import SIM_DT, AgentLayout, AgentState, CameraView, EgoState, Log, Observation, Trajectory
from drivesim.model.camera_refine import CameraRefiner
from drivesim.model.config import MOTION_SCALE, OCC_EXTENT
from drivesim.model.ego_warp import crop_offset
from drivesim.model.refine import Anchor
from drivesim.model.world import WorldModel, layout_grid, prepare_occupancy, sample_frame
from drivesim.sim.dynamics import to_ego_frame, to_global, wrap
from drivesim.sim.engine import SimConfig, SimState, Trace, _advance, first_plan_row, resample_agents
from drivesim.sim.engine import observe as reference_observe
from drivesim.sim.engine import reset as reference_reset


@dataclasses.dataclass(frozen=True)
class WMConfig:
    """Everything static about a world-model closed loop."""

    sim: SimConfig = SimConfig()
    """The ego, its tracker, the route and (layout-guided) the agents: as the reference engine."""
    layout: bool = False
    """Layout-guided: the reference engine's agents condition the model. False: free-running."""
    cameras: str = "off"
    """The six camera views of every keyframe (for planners or figures that read them): "off",
    "refiner" (the camera refiner on the predicted layout: needs a refiner in the `ModelHandle` and
    a layout, `layout=True`), "warp" (its stand-in: the ego warp of the same anchor, no learning;
    the refiner in the handle gives the rig) or "latent" (the world model's own latents, decoded)."""
    keyframe_steps: int = 5
    """Sim steps (0.1 s) per world-model frame (the model runs at 2 Hz)."""
    block: int = 2
    """Side (in 1 m cells of the predicted grid) of the boxes that stand for predicted agent
    cells no tracked agent explains."""
    extra_agents: int = 16
    """How many such boxes (the nearest) planners and scores see besides the tracked agents."""
    search: float = 2.0
    """How far (m) a tracked agent's box is searched around where its velocity takes it."""
    search_step: float = 0.5
    """Spacing (m) of that search."""
    min_cover: float = 0.25
    """A tracked agent whose best box covers less than this fraction of predicted agent cells is
    gone (the model dropped it)."""
    explain_margin: float = 2.5
    """Predicted agent cells within this distance (m) of a tracked box belong to it."""
    min_block_cells: int = 4
    """Agent cells a block needs to stand for an unexplained agent."""
    smoothing: float = 0.5
    """Weight of the previous velocity when a tracked agent's velocity is re-measured."""
    min_moving: float = 0.5
    """Below this speed (m/s) an agent counts as standing."""
    agents_from: str = "refined"
    """Which predicted grid the agents are read off: "refined" (the refiner's, whose reference
    moves the known agents at constant velocity) or "decoder" (the coarse decoder's own; the
    choice of an earlier refiner whose reference left agents where the anchor saw them)."""

    def __post_init__(self):
        if self.cameras not in ("off", "refiner", "warp", "latent"):
            raise ValueError(f"cameras must be 'off', 'refiner', 'warp' or 'latent', got {self.cameras!r}")
        if self.cameras in ("refiner", "warp") and not self.layout:
            raise ValueError("the camera refiner draws the agents of a layout: cameras='refiner' needs layout=True")
        if self.agents_from not in ("refined", "decoder"):
            raise ValueError(f"agents_from must be 'refined' or 'decoder', got {self.agents_from!r}")
        if self.sim.agents in ("learned", "cv") and self.keyframe_steps != 5:
            raise ValueError("simulated agents choose their motion every 0.5 s: keyframe_steps must be 5")
        if self.keyframe_steps % self.sim.replan_every:
            raise ValueError(
                f"replan_every {self.sim.replan_every} must divide the {self.keyframe_steps} steps of a "
                "world-model frame (use 1 or 5)"
            )


@struct.dataclass
class ModelHandle:
    """A world model (and, for `cameras="refiner"`, a camera refiner) as a pytree: graphs (static)
    and weights."""

    graphdef: object = struct.field(pytree_node=False)
    params: object
    camera_graphdef: object = struct.field(pytree_node=False, default=None)
    camera_params: object = None

    @staticmethod
    def of(model: WorldModel, camera: CameraRefiner | None = None) -> ModelHandle:
        g, p = nnx.split(model)
        cg, cp = nnx.split(camera) if camera is not None else (None, None)
        return ModelHandle(graphdef=g, params=p, camera_graphdef=cg, camera_params=cp)

    def model(self) -> WorldModel:
        return nnx.merge(self.graphdef, self.params)

    def camera(self) -> CameraRefiner:
        if self.camera_graphdef is None:
            raise ValueError("cameras='refiner' needs a camera refiner: ModelHandle.of(model, camera=refiner)")
        return nnx.merge(self.camera_graphdef, self.camera_params)


@struct.dataclass
class CameraAnchor:
    """The frame the camera refiner warps from (`cameras="refiner"`).

    Attributes:
      views: (6, h, w, 3) uint8; xy: (2,), yaw: () the ego pose they were taken at (global);
      layout: (A, 8) packed agent boxes at that keyframe, in its ego frame;
      age: () int32 keyframes drawn from it so far.
    """

    views: jnp.ndarray
    xy: jnp.ndarray
    yaw: jnp.ndarray
    layout: jnp.ndarray
    age: jnp.ndarray


@struct.dataclass
class Context:
    """The history the world model starts from: the last `history` keyframes up to t0.

    Attributes:
      frames: (H, 6, h, w, 3) uint8 camera frames (the clip cache's size).
      occupancy: (H, 160, 160) class ids (the cache's 0.5 m grid).
      motion: (H - 1, 3) ego motion from each keyframe to the next (dx, dy m, dyaw rad, in the
        earlier keyframe's ego frame).
    """

    frames: jnp.ndarray
    occupancy: jnp.ndarray
    motion: jnp.ndarray


@struct.dataclass
class Seen:
    """Agents read off a predicted grid (global frame).

    Attributes:
      agents: AgentState (A,); size: (A, 3); category: (A,) int32 agent classes.
    """

    agents: AgentState
    size: jnp.ndarray
    category: jnp.ndarray


@struct.dataclass
class WMState:
    """The world-model engine's state (immutable; batch by leading dims).

    Attributes:
      base: the reference engine's state: step, ego, route, log and the reference agents (the
        layout source when layout-guided; never seen by planners or scores otherwise).
      cam: (W, 6, r, c, Cc) and occ: (W, g, g, Co): the model's latent window (normalised);
      motion: (W, 3) normalised ego motion into each window frame; layout: (W, G, G) agent grids;
      count: () int32 frames in the window so far (the next goes to min(count, W - 1)).
      key_xy: (2,) and key_yaw: () ego pose at the last keyframe; key_step: () its sim step.
      grid: (G, G) int32 predicted BEV classes at the last keyframe (its ego frame, 1 m cells).
      tracked: the log's agents at t0 followed through the predictions (`track_agents`).
      seen: what planners and scores see at the last keyframe: `tracked`, then the predicted
        agent cells no tracked agent explains (`unexplained_blocks`).
      images: (6, h, w, 3) uint8 views of the last keyframe (`cfg.cameras`; "off": zeros, or the
        last context frame with the refiner's anchor).
      camera: the camera refiner's anchor (`CameraAnchor`; kept, unused, unless cameras="refiner").
      anchor: the BEV refiner's reference (`drivesim.model.refine.Anchor`): the last context grid
        and the logged boxes and velocities at t0 (later the model's own grid, the agents carried
        on at constant velocity), and the ego pose in its frame.
    """

    base: SimState
    cam: jnp.ndarray
    occ: jnp.ndarray
    motion: jnp.ndarray
    layout: jnp.ndarray
    count: jnp.ndarray
    key_xy: jnp.ndarray
    key_yaw: jnp.ndarray
    key_step: jnp.ndarray
    grid: jnp.ndarray
    tracked: Seen
    seen: Seen
    images: jnp.ndarray
    anchor: Anchor
    camera: CameraAnchor


@struct.dataclass
class WMTrace:
    """A world-model rollout (leading axis: horizon + 1 steps, the start included), as the
    reference `Trace`, plus the predicted BEV of every keyframe.

    Attributes:
      ego, terms, plan_nan, valid, plan, plan_age: as `drivesim.sim.engine.Trace`;
      agents: the predicted agents (extrapolated between keyframes) at every step;
      grids: (K + 1, G, G) int8 the predicted grid at the start and at each later keyframe;
      key_xy: (K + 1, 2), key_yaw: (K + 1,) the ego poses of those keyframes.
      images: (K + 1, 6, h, w, 3) uint8 the views of those keyframes (the first: the state's at
        the start) with `cameras`, else None.
    """

    ego: EgoState
    agents: AgentState
    terms: object
    plan_nan: jnp.ndarray
    valid: jnp.ndarray
    grids: jnp.ndarray
    key_xy: jnp.ndarray
    key_yaw: jnp.ndarray
    images: jnp.ndarray | None = None
    plan: Trajectory | None = None
    plan_age: jnp.ndarray | None = None

    def as_trace(self) -> Trace:
        """The rollout as the reference engine's `Trace` (what `closed_loop.evaluate` scores)."""
        return Trace(ego=self.ego, agents=self.agents, terms=self.terms, plan_nan=self.plan_nan, valid=self.valid,
                     plan=self.plan, plan_age=self.plan_age)  # fmt: skip


# ------------------------------------------------------------------------------ grid geometry
def cell_centres(n: int, extent: float) -> jnp.ndarray:
    """(n,) ego-frame coordinate of row/column centres: x = extent - (i + 0.5) * 2 extent / n."""
    return extent - (jnp.arange(n) + 0.5) * (2 * extent / n)


def lookup(grid, grid_xy, grid_yaw, points, fill: int = 0):
    """Classes of a BEV grid (G, G) around pose (grid_xy, grid_yaw) at global points (..., 2)
    (nearest cell; `fill` outside)."""
    G = grid.shape[0]
    r = 2 * OCC_EXTENT / G
    local = to_ego_frame(points, grid_xy, grid_yaw)
    i = jnp.floor((OCC_EXTENT - local[..., 0]) / r).astype(jnp.int32)
    j = jnp.floor((OCC_EXTENT - local[..., 1]) / r).astype(jnp.int32)
    ok = (i >= 0) & (i < G) & (j >= 0) & (j < G)
    return jnp.where(ok, grid[jnp.clip(i, 0, G - 1), jnp.clip(j, 0, G - 1)], fill)


def resample(grid, src_xy, src_yaw, dst_xy, dst_yaw, cells: int, extent: float = OCC_EXTENT):
    """A BEV grid (G, G) made around pose src, seen from pose dst: (cells, cells), nearest
    neighbour, free (0) where the source grid has nothing."""
    c = cell_centres(cells, extent)
    x, y = jnp.meshgrid(c, c, indexing="ij")
    # dst ego frame -> src ego frame, relative positions first (float32 keeps its precision)
    d = to_ego_frame(dst_xy[None], src_xy, src_yaw)[0]
    dyaw = dst_yaw - src_yaw
    cs, sn = jnp.cos(dyaw), jnp.sin(dyaw)
    xs, ys = cs * x - sn * y + d[0], sn * x + cs * y + d[1]
    G = grid.shape[0]
    r = 2 * OCC_EXTENT / G
    i = jnp.floor((OCC_EXTENT - xs) / r).astype(jnp.int32)
    j = jnp.floor((OCC_EXTENT - ys) / r).astype(jnp.int32)
    ok = (i >= 0) & (i < G) & (j >= 0) & (j < G)
    return jnp.where(ok, grid[jnp.clip(i, 0, G - 1), jnp.clip(j, 0, G - 1)], 0)


def _box_points(n_lon: int = 5, n_lat: int = 3) -> jnp.ndarray:
    """(P, 2) sample points of a unit box (fractions of length and width, centred)."""
    u = (jnp.arange(n_lon) + 0.5) / n_lon - 0.5
    v = (jnp.arange(n_lat) + 0.5) / n_lat - 0.5
    uu, vv = jnp.meshgrid(u, v, indexing="ij")
    return jnp.stack([uu.reshape(-1), vv.reshape(-1)], axis=-1)


def _in_boxes(points, xy, yaw, size, valid, margin: float = 0.5):
    """(...,) bool: points (..., 2) lie in any valid box (A,) grown by `margin` metres."""
    d = points[..., None, :] - xy
    cs, sn = jnp.cos(yaw), jnp.sin(yaw)
    lon = cs * d[..., 0] + sn * d[..., 1]
    lat = -sn * d[..., 0] + cs * d[..., 1]
    inside = (jnp.abs(lon) <= size[:, 0] / 2 + margin) & (jnp.abs(lat) <= size[:, 1] / 2 + margin) & valid
    return jnp.any(inside, axis=-1)


def track_agents(tracked: Seen, grid, ego_xy, ego_yaw, cfg: WMConfig, dt: float = 0.5, given=None) -> Seen:
    """Follow known agents into a new predicted grid.

    Each valid agent is moved at its velocity for `dt` (layout-guided: put where the layout `given`
    (an AgentState of the same slots) told the model to render it), then shifted (within `cfg.search` metres,
    `cfg.search_step` apart) to where its box covers the most predicted agent cells; its velocity
    becomes the measured displacement over `dt` (smoothed by `cfg.smoothing`). An agent whose
    best box covers less than `cfg.min_cover` of agent cells inside the predicted grid is gone
    (the model let it vanish); outside the grid it keeps moving as it did. With `given`, speeds and
    headings are the layout's (only the positions are read off the prediction).

    Args:
      tracked: the agents at the previous keyframe (global frame).
      grid: (G, G) the new prediction around (ego_xy, ego_yaw), 1 m cells.
    """
    ag = tracked.agents
    heading = jnp.stack([jnp.cos(ag.yaw), jnp.sin(ag.yaw)], axis=-1)
    guess = ag.xy + (ag.speed * dt)[:, None] * heading
    if given is not None:
        guess = given.xy
    n = int(round(cfg.search / cfg.search_step))
    offs = jnp.arange(-n, n + 1) * cfg.search_step
    ox, oy = jnp.meshgrid(offs, offs, indexing="ij")
    offsets = jnp.stack([ox.reshape(-1), oy.reshape(-1)], axis=-1)  # (S, 2)
    unit = _box_points()  # (P, 2)

    def fit(xy, yaw, size):
        cs, sn = jnp.cos(yaw), jnp.sin(yaw)
        local = unit * size[:2]
        pts = jnp.stack([cs * local[:, 0] - sn * local[:, 1], sn * local[:, 0] + cs * local[:, 1]], axis=-1)
        cand = xy + offsets[:, None, :] + pts[None]  # (S, P, 2)
        cover = jnp.mean(lookup(grid, ego_xy, ego_yaw, cand) >= OCC_VEHICLE, axis=-1)
        score = cover - 1e-3 * jnp.sum(offsets**2, axis=-1)
        k = jnp.argmax(score)
        return xy + offsets[k], cover[k]

    new_xy, cover = jax.vmap(fit)(guess, ag.yaw, tracked.size)
    local = to_ego_frame(guess, ego_xy, ego_yaw)
    inside = jnp.all(jnp.abs(local) < OCC_EXTENT - 2.0, axis=-1)
    found = cover >= cfg.min_cover
    xy = jnp.where((inside & found)[:, None], new_xy, guess)
    v_meas = (xy - ag.xy) / dt
    v_old = ag.speed[:, None] * heading
    v = jnp.where(inside[:, None], cfg.smoothing * v_old + (1 - cfg.smoothing) * v_meas, v_old)
    speed = jnp.linalg.norm(v, axis=-1)
    moving = speed >= cfg.min_moving
    yaw = jnp.where(moving, jnp.arctan2(v[:, 1], v[:, 0]), ag.yaw)
    # a heading flip means a noisy measurement, not a U-turn: keep the heading, drive backwards never
    flip = jnp.cos(wrap(yaw - ag.yaw)) < 0
    yaw = jnp.where(flip, ag.yaw, yaw)
    speed = jnp.where(flip | ~moving, 0.0, speed)
    valid = ag.valid & (found | ~inside)
    if given is not None:
        yaw, speed, valid = given.yaw, given.speed, given.valid & (found | ~inside)
    return tracked.replace(agents=AgentState(xy=xy, yaw=yaw, speed=speed, valid=valid))


def unexplained_blocks(grid, tracked: Seen, ego_xy, ego_yaw, count: int, cfg: WMConfig) -> Seen:
    """Predicted agent cells that no tracked agent explains (agents the model made up or moved
    far), as `count` static `cfg.block`-metre boxes, the nearest first. Cells within
    `cfg.explain_margin` of a tracked box are its (the prediction is blurry); a block needs
    `cfg.min_block_cells` agent cells (single cells are noise)."""
    G = grid.shape[0]
    r = 2 * OCC_EXTENT / G
    c = cell_centres(G, OCC_EXTENT)
    x, y = jnp.meshgrid(c, c, indexing="ij")
    pts = to_global(jnp.stack([x, y], axis=-1).reshape(-1, 2), ego_xy, ego_yaw)
    ag = tracked.agents
    covered = _in_boxes(pts, ag.xy, ag.yaw, tracked.size, ag.valid, cfg.explain_margin).reshape(G, G)
    free_agent = jnp.where((grid >= OCC_VEHICLE) & ~covered, grid, 0)
    b = cfg.block
    nb = G // b
    cut = free_agent[: nb * b, : nb * b].reshape(nb, b, nb, b)
    blocks = jnp.where(jnp.sum(cut > 0, axis=(1, 3)) >= cfg.min_block_cells, cut.max(axis=(1, 3)), 0)
    cb = cell_centres(nb, OCC_EXTENT)
    bx, by = jnp.meshgrid(cb, cb, indexing="ij")
    score = jnp.where(blocks >= OCC_VEHICLE, -jnp.hypot(bx, by), -jnp.inf).reshape(-1)
    _, idx = jax.lax.top_k(score, count)
    valid = (blocks.reshape(-1) >= OCC_VEHICLE)[idx]
    xy = to_global(jnp.stack([bx.reshape(-1)[idx], by.reshape(-1)[idx]], axis=-1), ego_xy, ego_yaw)
    side = b * r
    zeros = jnp.zeros((count,), jnp.float32)
    return Seen(
        agents=AgentState(xy=xy, yaw=jnp.full((count,), ego_yaw), speed=zeros, valid=valid),
        size=jnp.broadcast_to(jnp.array([side, side, 1.5], jnp.float32), (count, 3)),
        category=jnp.clip(blocks.reshape(-1)[idx] - OCC_VEHICLE, 0, 3).astype(jnp.int32),
    )


def read_world(grid, tracked: Seen, ego_xy, ego_yaw, cfg: WMConfig, dt: float, given=None) -> tuple[Seen, Seen]:
    """(tracked agents followed into `grid`, everything the planner and the scores see: the
    tracked agents then the unexplained blocks). `given`: the layout (guided)."""
    tracked = track_agents(tracked, grid, ego_xy, ego_yaw, cfg, dt, given)
    extra = unexplained_blocks(grid, tracked, ego_xy, ego_yaw, cfg.extra_agents, cfg)
    return tracked, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), tracked, extra)


def seen_now(state: WMState) -> Seen:
    """The predicted agents at the current step: the last keyframe's, moved at their velocities."""
    seen = state.seen
    ag = seen.agents
    t = (state.base.step - state.key_step).astype(jnp.float32) * SIM_DT
    heading = jnp.stack([jnp.cos(ag.yaw), jnp.sin(ag.yaw)], axis=-1)
    return seen.replace(agents=ag.replace(xy=ag.xy + (ag.speed * t)[:, None] * heading))


def layout_boxes(agents: AgentState, size, category, ego_xy, ego_yaw) -> AgentLayout:
    """The agents (A) as the model's layout: boxes in the ego frame of (ego_xy, ego_yaw)."""
    xy = to_ego_frame(agents.xy, ego_xy, ego_yaw)
    yaw = wrap(agents.yaw - ego_yaw)
    return AgentLayout(
        xy=xy, yaw=yaw, size=jnp.asarray(size, jnp.float32), category=jnp.asarray(category, jnp.int32),
        valid=jnp.asarray(agents.valid, bool),
    )  # fmt: skip


# ------------------------------------------------------------------------------ the engine
def reset(
    handle: ModelHandle, log: Log, t0, context: Context, rng=None, cfg: WMConfig = WMConfig(), behaviour=None
) -> WMState:
    """The state at log step t0 (a keyframe: a multiple of `keyframe_steps`) from its history.

    With `cfg.sim.agents` "learned" (`behaviour`: the behaviour model's handle) or "cv", the agents
    the model renders are simulated from t0 on (`drivesim.sim.learned_agents`; `rng` seeds them).
    """
    model = handle.model()
    mcfg = model.cfg
    H, W, K = mcfg.history, mcfg.window, cfg.keyframe_steps
    base = reference_reset(log, t0, rng, cfg.sim, behaviour)
    log = base.log
    T = log.time.shape[-1]
    cam, occ = model.encode(context.frames[None], context.occupancy[None])
    cam, occ = cam[0], occ[0]
    pad = W - H
    cam = jnp.concatenate([cam, jnp.zeros((pad,) + cam.shape[1:], cam.dtype)])
    occ = jnp.concatenate([occ, jnp.zeros((pad,) + occ.shape[1:], occ.dtype)])
    into = jnp.concatenate([jnp.zeros((1, 3)), jnp.asarray(context.motion, jnp.float32)]) / jnp.asarray(MOTION_SCALE)
    motion = jnp.concatenate([into, jnp.zeros((pad, 3))])
    # the context's layouts: the logged agents at the history keyframes, in each one's ego frame
    steps = jnp.clip(base.t0 - K * jnp.arange(H - 1, -1, -1), 0, T - 1)

    def frame_layout(t):
        ag = log.agents
        agents = AgentState(xy=ag.xy[:, t], yaw=ag.yaw[:, t], speed=jnp.zeros_like(ag.yaw[:, t]), valid=ag.valid[:, t])
        boxes = layout_boxes(agents, ag.size, ag.category, log.ego.xy[t], log.ego.yaw[t])
        return layout_grid(boxes, mcfg)

    G = mcfg.occ_grid
    layout = jnp.concatenate([jax.vmap(frame_layout)(steps), jnp.zeros((pad, G, G), jnp.int32)])
    # what the planner sees first: the last context keyframe, agents matched against the one before
    grids = prepare_occupancy(jnp.asarray(context.occupancy), mcfg)
    ego_xy, ego_yaw = base.ego.xy, base.ego.yaw
    ag = log.agents
    vel = ag.velocity[:, base.t0]
    heading = jnp.stack([jnp.cos(ag.yaw[:, base.t0]), jnp.sin(ag.yaw[:, base.t0])], axis=-1)
    speed = jnp.maximum(jnp.sum(vel * heading, axis=-1), 0.0)
    tracked = Seen(
        agents=AgentState(xy=ag.xy[:, base.t0], yaw=ag.yaw[:, base.t0], speed=speed, valid=ag.valid[:, base.t0]),
        size=ag.size,
        category=ag.category,
    )
    extra = unexplained_blocks(grids[-1], tracked, ego_xy, ego_yaw, cfg.extra_agents, cfg)
    # the refiner's anchor: the last context grid, the logged boxes at t0 and their velocities
    c, sn = jnp.cos(ego_yaw), jnp.sin(ego_yaw)
    ego_vel = jnp.stack([c * vel[:, 0] + sn * vel[:, 1], -sn * vel[:, 0] + c * vel[:, 1]], axis=-1)
    valid = ag.valid[:, base.t0]
    boxes = layout_boxes(tracked.agents, ag.size, ag.category, ego_xy, ego_yaw)
    anchor = Anchor.at(context.occupancy[-1], boxes, jnp.where(valid[:, None], ego_vel, 0.0))
    seen = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), tracked, extra)
    w, h = mcfg.image_size
    top, left = crop_offset(mcfg.frame_size, mcfg.image_size)
    last = jnp.asarray(context.frames[-1])[:, top : top + h, left : left + w]
    camera = CameraAnchor(views=last, xy=ego_xy, yaw=ego_yaw, layout=boxes.packed(), age=jnp.zeros((), jnp.int32))
    images = last if cfg.cameras in ("refiner", "warp") else jnp.zeros((mcfg.cameras, h, w, 3), jnp.uint8)
    return WMState(
        base=base, cam=cam, occ=occ, motion=motion, layout=layout, count=jnp.asarray(H, jnp.int32),
        key_xy=ego_xy, key_yaw=ego_yaw, key_step=base.step, grid=grids[-1], tracked=tracked, seen=seen,
        images=images, anchor=anchor, camera=camera,
    )  # fmt: skip


def refined_views(refiner: CameraRefiner, camera: CameraAnchor, boxes: AgentLayout, ego_xy, ego_yaw, learned=True):
    """The camera refiner's views at ego pose (ego_xy, ego_yaw) with the agents at `boxes` (A, in
    that ego frame), warped from the anchor -> ((6, h, w, 3) uint8, the next anchor: these views
    once the anchor has served `refiner.cfg.horizon` keyframes, else the same one a keyframe older).
    `learned` False: the ego warp alone (the refiner's input, uncorrected)."""
    d = to_ego_frame(ego_xy[None], camera.xy, camera.yaw)[0]
    pose = jnp.stack([d[0], d[1], wrap(ego_yaw - camera.yaw)])
    k = camera.age + 1
    ref, feats = refiner.inputs(camera.views, pose, camera.layout, boxes.packed(), k.astype(jnp.float32))
    out = refiner.correct(ref, feats) if learned else ref
    views = jnp.clip(jnp.round((out + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
    renew = k >= refiner.cfg.horizon
    fresh = CameraAnchor(views=views, xy=ego_xy, yaw=ego_yaw, layout=boxes.packed(), age=jnp.zeros((), jnp.int32))
    return views, jax.tree.map(lambda a, b: jnp.where(renew, a, b), fresh, camera.replace(age=k))


def keyframe(handle: ModelHandle, state: WMState, rng, cfg: WMConfig = WMConfig()) -> WMState:
    """Predict the next world-model frame at the current ego pose (the end of a 0.5 s step)."""
    model = handle.model()
    mcfg = model.cfg
    W = mcfg.window
    base = state.base
    ego = base.ego
    d = to_ego_frame(ego.xy[None], state.key_xy, state.key_yaw)[0]
    raw = jnp.stack([d[0], d[1], wrap(ego.yaw - state.key_yaw)])
    log = base.log
    ag = base.agents
    boxes = layout_boxes(ag, log.agents.size, log.agents.category, ego.xy, ego.yaw)
    lay = layout_grid(boxes, mcfg)
    full = state.count >= W
    roll = lambda a: jnp.where(full, jnp.roll(a, -1, axis=0), a)  # noqa: E731
    cam, occ, motion, layout = roll(state.cam), roll(state.occ), roll(state.motion), roll(state.layout)
    p = jnp.minimum(state.count, W - 1)
    motion = motion.at[p].set(raw / jnp.asarray(MOTION_SCALE))
    layout = layout.at[p].set(lay)
    on = jnp.full((1, W), cfg.layout)
    xc, xo = sample_frame(model.dynamics, cam[None], occ[None], motion[None], layout[None], on, p, rng, mcfg)
    cam, occ = cam.at[p].set(xc[0]), occ.at[p].set(xo[0])
    anchor = state.anchor.moved(raw)
    plain = model.occupancy_logits(xo[0])
    grid = jnp.argmax(model.refine(plain, anchor, boxes, cfg.layout), axis=-1).astype(jnp.int32)
    anchor = anchor.renewed(grid, mcfg)
    camera = state.camera
    if cfg.cameras in ("refiner", "warp"):
        images, camera = refined_views(handle.camera(), camera, boxes, ego.xy, ego.yaw, cfg.cameras == "refiner")
    elif cfg.cameras == "latent":
        images = model.decode_cameras(xc[0])
    else:
        images = state.images
    given = base.agents if cfg.layout else None
    agent_grid = grid if cfg.agents_from == "refined" else jnp.argmax(plain, axis=-1).astype(jnp.int32)
    tracked, seen = read_world(agent_grid, state.tracked, ego.xy, ego.yaw, cfg, cfg.keyframe_steps * SIM_DT, given)
    return state.replace(
        cam=cam, occ=occ, motion=motion, layout=layout, count=state.count + 1,
        key_xy=ego.xy, key_yaw=ego.yaw, key_step=base.step, grid=grid, tracked=tracked, seen=seen, images=images,
        anchor=anchor, camera=camera,
    )  # fmt: skip


def observe(state: WMState, cfg: WMConfig = WMConfig()) -> Observation:
    """What a planner sees now: the reference observation's ego, route and map, with the agents and
    the occupancy the world model predicts."""
    obs = reference_observe(state.base, cfg.sim)
    ego = state.base.ego
    n = obs.occupancy.grid.shape[-1]
    grid = resample(state.grid, state.key_xy, state.key_yaw, ego.xy, ego.yaw, n, cfg.sim.occupancy.extent)
    obs = obs.replace(occupancy=obs.occupancy.replace(grid=grid.astype(obs.occupancy.grid.dtype)))
    if cfg.cameras != "off":
        obs = obs.replace(cameras=CameraView(images=state.images, xy=state.key_xy, yaw=state.key_yaw))
    if cfg.layout:  # the agents are given (the model renders them): the planner sees them as given
        return obs
    seen = seen_now(state)
    return obs.replace(agents=seen.agents, agent_size=seen.size, agent_category=seen.category)


def step(handle: ModelHandle, state: WMState, trajectory: Trajectory, rng, cfg: WMConfig = WMConfig()) -> WMState:
    """Track `trajectory` for one 0.1 s step; at the end of every `keyframe_steps` steps the world
    model predicts the next frame (under `vmap` both branches run: `rollout` avoids that)."""
    path = jnp.concatenate([jnp.zeros((1, 2), trajectory.xy.dtype), trajectory.xy], axis=0)
    state = state.replace(base=_advance(state.base, path, trajectory.dt, 0.0, cfg.sim))
    due = (state.base.step - state.key_step) >= cfg.keyframe_steps

    def at_keyframe(s):
        return keyframe(handle, s.replace(base=resample_agents(s.base, cfg.sim)), rng, cfg)

    return jax.lax.cond(due, at_keyframe, lambda s: s, state)


def plan_with(planner, params, handle: ModelHandle, state: WMState, rng, cfg: WMConfig) -> Trajectory:
    """Call a planner: `planner.plan(params, observe(state), rng)`, or, for a planner that plans with
    the world model itself (`planner.needs_world_model` true), `planner.plan_wm(params, state,
    handle, cfg, rng)`: it gets the engine state (the model's latent window) to imagine futures."""
    if getattr(planner, "needs_world_model", False):
        return planner.plan_wm(params, state, handle, cfg, rng)
    return planner.plan(params, observe(state, cfg), rng)


def rollout(
    handle: ModelHandle,
    state: WMState,
    planner,
    params,
    horizon: int,
    rng,
    cfg: WMConfig = WMConfig(),
    terms_fn=None,
    keep_plans: bool = True,
) -> tuple[WMState, WMTrace]:
    """Run `planner` in closed loop for `horizon` steps (a multiple of `keyframe_steps` is best).

    One `lax.scan` over world-model frames; inside, `keyframe_steps` sim steps (planner every
    `sim.replan_every`, tracker, `terms_fn(state, previous_ego)` at every step), then the model
    predicts the next frame. `rng` draws the planner's and the model's noise: another key, another
    sampled future. `keep_plans`: the trace keeps the plan followed at each step (as
    `drivesim.sim.engine.rollout`).
    """
    terms_of = terms_fn or (lambda s, prev: None)
    K = cfg.keyframe_steps
    every = cfg.sim.replan_every
    cycles = -(-horizon // K)
    T = state.base.log.time.shape[-1]
    const = state

    def split(st: WMState):
        b = st.base
        return (b.step, b.ego, b.agents, b.idm.s, b.idm.speed, b.idm.offset, b.learned, st.cam, st.occ, st.motion,
                st.layout, st.count, st.key_xy, st.key_yaw, st.key_step, st.grid, st.tracked, st.seen, st.images,
                st.anchor, st.camera)  # fmt: skip

    def join(dyn) -> WMState:
        (step_, ego, agents, s_, speed, offset, learned, cam, occ, motion, layout,
         count, key_xy, key_yaw, key_step, grid, tracked, seen, images, anchor, camera) = dyn  # fmt: skip
        idm = const.base.idm.replace(s=s_, speed=speed, offset=offset)
        base = const.base.replace(step=step_, ego=ego, agents=agents, idm=idm, learned=learned)
        return WMState(base=base, cam=cam, occ=occ, motion=motion, layout=layout, count=count, key_xy=key_xy,
                       key_yaw=key_yaw, key_step=key_step, grid=grid, tracked=tracked, seen=seen,
                       images=images, anchor=anchor, camera=camera)  # fmt: skip

    def frame(carry, key):
        k_plan, k_model = jax.random.split(key)

        def plan_cycle(dyn, c):
            st = join(dyn)
            traj = plan_with(planner, params, handle, st, jax.random.fold_in(k_plan, c), cfg)
            bad = ~(jnp.all(jnp.isfinite(traj.xy)) & jnp.all(jnp.isfinite(traj.yaw)))
            xy = jnp.where(bad, jnp.zeros_like(traj.xy), traj.xy)
            plan_global = to_global(jnp.concatenate([jnp.zeros((1, 2), xy.dtype), xy]), st.base.ego.xy, st.base.ego.yaw)
            yaw = jnp.where(bad, jnp.zeros_like(traj.yaw), traj.yaw)
            kept = traj.replace(xy=xy, yaw=yaw) if keep_plans else None

            def inner(dyn, j):
                s = join(dyn)
                path = to_ego_frame(plan_global, s.base.ego.xy, s.base.ego.yaw)
                nxt = s.replace(base=_advance(s.base, path, traj.dt, j * SIM_DT, cfg.sim))
                out = (
                    nxt.base.ego,
                    seen_now(nxt).agents,
                    terms_of(nxt, s.base.ego),
                    bad,
                    nxt.base.t0 + nxt.base.step < T,
                    kept,
                    j,
                )
                return split(nxt), out

            return jax.lax.scan(inner, dyn, jnp.arange(every))

        dyn, outs = jax.lax.scan(plan_cycle, carry, jnp.arange(K // every))
        outs = jax.tree.map(lambda a: a.reshape((K,) + a.shape[2:]), outs)
        st = join(dyn)
        nxt = keyframe(handle, st.replace(base=resample_agents(st.base, cfg.sim)), k_model, cfg)
        images = nxt.images if cfg.cameras != "off" else None
        return split(nxt), (outs, nxt.grid.astype(jnp.int8), nxt.key_xy, nxt.key_yaw, images)

    keys = jax.random.split(rng, cycles)
    final, (outs, grids, key_xy, key_yaw, images) = jax.lax.scan(frame, split(state), keys)
    final = join(final)
    flat = jax.tree.map(lambda a: a.reshape((cycles * K,) + a.shape[2:])[:horizon], outs)
    ego, agents, terms, bad, valid, plans, age = flat
    first = (
        state.base.ego,
        seen_now(state).agents,
        terms_of(state, state.base.ego),
        jnp.zeros((), bool),
        jnp.ones((), bool),
        None if plans is None else first_plan_row(jax.tree.map(lambda a: a[0], plans)),
        -jnp.ones((), age.dtype),
    )
    ego, agents, terms, bad, valid, plans, age = jax.tree.map(
        lambda a, b: jnp.concatenate([a[None], b]), first, (ego, agents, terms, bad, valid, plans, age)
    )
    cat = lambda a, b: jnp.concatenate([a[None], b])  # noqa: E731
    return final, WMTrace(
        ego=ego, agents=agents, terms=terms, plan_nan=bad, valid=valid,
        grids=cat(state.grid.astype(jnp.int8), grids), key_xy=cat(state.key_xy, key_xy), key_yaw=cat(state.key_yaw, key_yaw),
        images=None if images is None else cat(state.images, images),
        plan=plans, plan_age=age.astype(jnp.int32) if plans is not None else None,
    )  # fmt: skip

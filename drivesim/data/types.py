"""Core pytrees, the datatypes layer: one driving scene (`Log`), a BEV semantic grid (`Occupancy`),
and the closed loop's ego and agent states, planner observations and trajectories.

Conventions used everywhere in drivesim:
- Global frame: x east, y north, metres (the nuScenes map frame; not centred at the origin).
- Ego frame: x forward, y left. Yaw is counter-clockwise from +x, radians, in (-pi, pi].
- Boxes are `(length, width, height)`; note that nuScenes tables store `[width, length, height]`.
- Times are float32 seconds since the scene's first timestamp (`LogInfo.start_us`).
- Leading `...` dims are batch dims: library code is written for one scene and `vmap`ped.

Arrays only: every field of a pytree here is a jax/numpy array so that scenes of equal padded
sizes share one compiled program. Names, tokens and file paths live in `LogInfo`, outside the
pytree, so that jitted code never recompiles because a scene name changed.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import struct


# The nuScenes ego car (a Renault Zoe): box size and where the box centre sits ahead of the ego
# frame origin, which nuScenes puts at the middle of the rear axle.
EGO_SIZE = (4.084, 1.730, 1.562)
EGO_WHEELBASE = 2.588
EGO_REAR_AXLE_TO_CENTER = 1.3


@struct.dataclass
class EgoTrack:
    """The ego vehicle's logged motion.

    Attributes:
      xy: (..., T, 2) float32 position of the ego frame origin (rear axle, as in nuScenes) in the
        global frame.
      yaw: (..., T) float32 heading.
      velocity: (..., T, 2) float32 global-frame velocity (finite differences of the poses).
      size: (..., 3) float32 `(length, width, height)` of the ego vehicle.
      valid: (..., T) bool, False on padded steps.
    """

    xy: jnp.ndarray
    yaw: jnp.ndarray
    velocity: jnp.ndarray
    size: jnp.ndarray
    valid: jnp.ndarray

    @property
    def speed(self) -> jnp.ndarray:
        """(..., T) speed in m/s."""
        return jnp.linalg.norm(self.velocity, axis=-1)


@struct.dataclass
class AgentTracks:
    """Tracked objects other than the ego, padded to a fixed number of slots.

    Attributes:
      xy: (..., A, T, 2) float32 box centre in the global frame.
      z: (..., A, T) float32 box centre height above the ground plane of the ego.
      yaw: (..., A, T) float32 box heading.
      velocity: (..., A, T, 2) float32 global-frame velocity.
      size: (..., A, 3) float32 `(length, width, height)`.
      category: (..., A) int32 coarse agent class (`drivesim.data.classes`).
      valid: (..., A, T) bool: the object is annotated at that step (objects appear and vanish;
        padded slots are never valid).
    """

    xy: jnp.ndarray
    z: jnp.ndarray
    yaw: jnp.ndarray
    velocity: jnp.ndarray
    size: jnp.ndarray
    category: jnp.ndarray
    valid: jnp.ndarray

    @property
    def num_agents(self) -> int:
        return self.valid.shape[-2]

    @staticmethod
    def zeros(num_agents: int, num_steps: int) -> dict[str, np.ndarray]:
        """Host arrays of an empty (all-invalid) track set, to be filled and passed to the constructor."""
        A, T = num_agents, num_steps
        return {
            "xy": np.zeros((A, T, 2), np.float32),
            "z": np.zeros((A, T), np.float32),
            "yaw": np.zeros((A, T), np.float32),
            "velocity": np.zeros((A, T, 2), np.float32),
            "size": np.zeros((A, 3), np.float32),
            "category": np.zeros(A, np.int32),
            "valid": np.zeros((A, T), bool),
        }


@struct.dataclass
class MapData:
    """The map around one scene: lane graph and a semantic raster.

    Lanes (and lane connectors) are split into segments of bounded length and resampled to a fixed
    number of points, so that they pad into one array.

    Attributes:
      lane_xy: (..., L, P, 2) float32 lane-segment centreline points, in driving direction.
      lane_valid: (..., L) bool, False on padded segments.
      lane_successors: (..., L, S) int32 indices of the segments that follow, -1 padded.
      lane_predecessors: (..., L, S) int32 indices of the segments that precede, -1 padded.
      lane_is_connector: (..., L) bool: the segment belongs to a lane connector (intersection).
      raster: (..., R, R) uint8 occupancy map classes (`OCC_FREE` .. `OCC_LANE_MARKING`) on a
        square grid aligned with the global axes; row index grows with y, column with x.
      raster_origin: (..., 2) float32 global xy of the corner of cell (0, 0).
      raster_resolution: (...) float32 metres per cell.
    """

    lane_xy: jnp.ndarray
    lane_valid: jnp.ndarray
    lane_successors: jnp.ndarray
    lane_predecessors: jnp.ndarray
    lane_is_connector: jnp.ndarray
    raster: jnp.ndarray
    raster_origin: jnp.ndarray
    raster_resolution: jnp.ndarray


@struct.dataclass
class Signals:
    """Traffic lights of a scene: the stop lines they control and when each light is red.

    Each stop line is a box across its lane, just before an intersection. The synthetic world
    knows its lights and writes their states beside the logs (`drivesim.synth.signals`); real
    nuScenes has no light states, so there `known` is False and every light reads not red.

    Attributes:
      centre: (..., S, 2) float32 global xy of each stop-line box centre.
      yaw: (..., S) float32 driving direction of the lane the stop line controls.
      size: (..., S, 2) float32 `(depth along the lane, width across it)`.
      valid: (..., S) bool, False on padded slots.
      red: (..., T, S) bool in a `Log` (on its time axis); (..., S) in an `Observation` (now).
      known: (...) bool: the light states are known (False: every `red` is False, unknown).
    """

    centre: jnp.ndarray
    yaw: jnp.ndarray
    size: jnp.ndarray
    valid: jnp.ndarray
    red: jnp.ndarray
    known: jnp.ndarray

    @staticmethod
    def empty(num_lines: int, num_steps: int) -> dict[str, np.ndarray]:
        """Host arrays of no stop lines and unknown states (real nuScenes), for the constructor."""
        S, T = num_lines, num_steps
        return {
            "centre": np.zeros((S, 2), np.float32),
            "yaw": np.zeros(S, np.float32),
            "size": np.zeros((S, 2), np.float32),
            "valid": np.zeros(S, bool),
            "red": np.zeros((T, S), bool),
            "known": np.zeros((), bool),
        }

    def now(self, t) -> Signals:
        """The lights at log step t (`red` (..., S)); for one scene (no batch dims)."""
        T = self.red.shape[-2]
        return self.replace(red=self.red[jnp.clip(t, 0, T - 1)])


@struct.dataclass
class CameraRig:
    """Six cameras, in `CAMERA_CHANNELS` order.

    Attributes:
      intrinsics: (..., C, 3, 3) float32 pinhole matrices for images of `LogInfo.image_size`.
      rotation: (..., C, 3, 3) float32 camera-to-ego rotation (camera frame: x right, y down,
        z forward).
      translation: (..., C, 3) float32 camera position in the ego frame.
    """

    intrinsics: jnp.ndarray
    rotation: jnp.ndarray
    translation: jnp.ndarray


@struct.dataclass
class Log:
    """One driving scene as arrays (see the module docstring for frames and units).

    Attributes:
      time: (..., T) float32 seconds since `LogInfo.start_us`, at a fixed rate.
      ego: the ego track, T steps.
      agents: the other objects, A slots x T steps.
      map: lanes and the semantic raster around the scene.
      rig: the camera rig.
      signals: the traffic lights' stop lines and states (`known` False on real nuScenes).
    """

    time: jnp.ndarray
    ego: EgoTrack
    agents: AgentTracks
    map: MapData
    rig: CameraRig
    signals: Signals

    @property
    def num_steps(self) -> int:
        return self.time.shape[-1]

    @property
    def dt(self) -> float:
        """Seconds between steps (host-side; needs at least two steps)."""
        t = np.asarray(self.time)
        return float(t[..., 1].ravel()[0] - t[..., 0].ravel()[0])


CAMERA_CHANNELS = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)


@dataclasses.dataclass(frozen=True)
class LogInfo:
    """Everything about a scene that is not an array (names, tokens, files).

    Attributes:
      scene_name: e.g. "scene-0061".
      scene_token: the scene's token.
      location: map location, one of the four nuScenes locations.
      dataroot: the dataroot the scene was loaded from.
      version: table version, e.g. "v1.0-mini".
      start_us: timestamp in microseconds of `Log.time == 0`.
      image_size: (width, height) of the camera frames the rig's intrinsics are scaled to.
      camera_files: T rows of 6 paths (relative to `dataroot`, `CAMERA_CHANNELS` order) of the
        camera frame nearest each step, "" where there is none within half a step.
      agent_tokens: the instance token of each agent slot ("" for padding).
      agent_categories: the nuScenes category name of each agent slot ("" for padding).
      num_agents_total: objects annotated in the scene before truncation to the slot count.
      num_lanes_total: lane segments in the map crop before truncation.
    """

    scene_name: str
    scene_token: str
    location: str
    dataroot: str
    version: str
    start_us: int
    image_size: tuple[int, int]
    camera_files: tuple[tuple[str, ...], ...]
    agent_tokens: tuple[str, ...]
    agent_categories: tuple[str, ...]
    num_agents_total: int = 0
    num_lanes_total: int = 0


@struct.dataclass
class AgentLayout:
    """Agent boxes in one ego frame: the layout the world model is conditioned on and forecasts from.

    Attributes:
      xy: (..., A, 2) box centres in the ego frame (x forward, y left), m.
      yaw: (..., A) headings relative to the ego's.
      size: (..., A, 3) length, width, height (m).
      category: (..., A) int32 agent class (`drivesim.data.classes`: 0 vehicle, 1 pedestrian,
        2 cyclist, 3 obstacle).
      valid: (..., A) bool: the slot holds an agent.

    The clip cache stores a layout packed as (..., A, 8) float32 rows [x, y, yaw, length, width,
    height, class, valid] (`LAYOUT_ROW` wide); `from_packed` and `packed` convert. The fields are
    numpy arrays when built from numpy rows (host code), jax arrays otherwise.
    """

    xy: jnp.ndarray
    yaw: jnp.ndarray
    size: jnp.ndarray
    category: jnp.ndarray
    valid: jnp.ndarray

    @staticmethod
    def from_packed(rows) -> AgentLayout:
        """A layout from packed (..., A, 8) rows (or the layout itself, unchanged)."""
        if isinstance(rows, AgentLayout):
            return rows
        xp = np if isinstance(rows, np.ndarray) else jnp
        if xp is np:  # host code keeps its precision (float64 baselines)
            rows = rows if np.issubdtype(rows.dtype, np.floating) else rows.astype(np.float32)
        else:
            rows = jnp.asarray(rows, jnp.float32)
        if rows.shape[-1] != LAYOUT_ROW:
            raise ValueError(f"a packed agent layout has {LAYOUT_ROW} columns per agent; got shape {rows.shape}")
        return AgentLayout(
            xy=rows[..., 0:2],
            yaw=rows[..., 2],
            size=rows[..., 3:6],
            category=xp.round(rows[..., 6]).astype(xp.int32),
            valid=rows[..., 7] > 0.5,
        )

    @staticmethod
    def empty(lead: tuple[int, ...], slots: int, xp=jnp) -> AgentLayout:
        """A layout of `slots` empty slots with leading dims `lead`."""
        return AgentLayout.from_packed(xp.zeros(tuple(lead) + (slots, LAYOUT_ROW), xp.float32))

    def packed(self):
        """(..., A, 8) float32 rows, as the clip cache stores them."""
        xp = np if isinstance(self.xy, np.ndarray) else jnp
        cols = [self.xy, self.yaw[..., None], self.size, self.category[..., None], self.valid[..., None]]
        return xp.concatenate([xp.asarray(c, xp.float32) for c in cols], axis=-1)

    @property
    def slots(self) -> int:
        return self.valid.shape[-1]


LAYOUT_ROW = 8
"""Width of a packed agent-layout row: x, y, yaw, length, width, height, class, valid."""


@struct.dataclass
class Occupancy:
    """An ego-centric bird's-eye-view semantic grid.

    Cell (i, j) has its centre at ego-frame `x = extent - (i + 0.5) * resolution` (forward is up
    when drawn as an image) and `y = extent - (j + 0.5) * resolution` (left is left).

    Attributes:
      grid: (..., H, W) uint8 occupancy class ids (`drivesim.data.classes.OCC_*`).
      extent: (...) float32 half-size of the square grid in metres.
      resolution: (...) float32 metres per cell.
    """

    grid: jnp.ndarray
    extent: jnp.ndarray
    resolution: jnp.ndarray


# ---------------------------------------------------------------- closed-loop types
# What one closed-loop step needs, what a planner sees, what it returns. Written for one scenario;
# batching is by leading dims (`vmap`), never by hidden globals.
SIM_DT = 0.1
"""The simulator's step (s): 10 Hz, as nuPlan."""


@struct.dataclass
class EgoState:
    """The ego vehicle as a kinematic bicycle.

    Attributes:
      xy: (..., 2) rear-axle position, global frame.
      yaw: (...) heading.
      speed: (...) m/s along the heading (never negative).
      accel: (...) longitudinal acceleration applied over the last step (m/s^2).
      steer: (...) front-wheel steering angle applied over the last step (rad, left positive).
    """

    xy: jnp.ndarray
    yaw: jnp.ndarray
    speed: jnp.ndarray
    accel: jnp.ndarray
    steer: jnp.ndarray


@struct.dataclass
class AgentState:
    """Other road users at one step.

    Attributes:
      xy: (..., A, 2) box centres, global frame.
      yaw: (..., A) headings.
      speed: (..., A) speeds along the heading (m/s).
      valid: (..., A) bool: present at this step.
    """

    xy: jnp.ndarray
    yaw: jnp.ndarray
    speed: jnp.ndarray
    valid: jnp.ndarray


@struct.dataclass
class Trajectory:
    """A planner's output: future ego poses in the ego frame of the current step.

    Pose k is where the rear axle should be (k + 1) * dt seconds from now.

    Attributes:
      xy: (..., K, 2) positions, ego frame (x forward, y left).
      yaw: (..., K) headings relative to the current heading.
      dt: seconds between poses (static).
    """

    xy: jnp.ndarray
    yaw: jnp.ndarray
    dt: float = struct.field(pytree_node=False, default=SIM_DT)

    @property
    def horizon(self) -> int:
        return self.xy.shape[-2]


@struct.dataclass
class Route:
    """A path along lane centrelines (the ego's route, or an agent's), in driving direction.

    Attributes:
      xy: (..., N, 2) global points; after the last valid point the path continues straight.
      valid: (..., N) bool: points that lie on the lanes (a prefix of the array).
      s: (..., N) arc length of each point from the first (constant past the last valid point).
    """

    xy: jnp.ndarray
    valid: jnp.ndarray
    s: jnp.ndarray


@struct.dataclass
class CameraView:
    """The six camera views a planner may read, and the ego pose they were taken at.

    Attributes:
      images: (..., 6, h, w, 3) uint8 views (the world model's centre crops, the rig's order).
      xy: (..., 2) and yaw: (...,) the ego pose (global frame) of the views: the last keyframe's
        (views come at 2 Hz; between keyframes the ego has moved on).
    """

    images: jnp.ndarray
    xy: jnp.ndarray
    yaw: jnp.ndarray


@struct.dataclass
class Observation:
    """What a planner sees. The same structure under every engine.

    Attributes:
      time: () seconds since the scenario start.
      ego: the ego state (global frame).
      route: (R, 2) route points ahead of the ego, in the ego frame, with `route_valid` (R,).
      route_valid: (R,) bool.
      agents: the agent list (global frame) with sizes (A, 3) and categories (A,).
      agent_size: (A, 3) length, width, height.
      agent_category: (A,) int32 agent classes.
      occupancy: the ego-centric BEV occupancy (computed only if a planner reads it: under jit,
        unused fields cost nothing).
      map: the map (lanes and raster), for planners that want it.
      expert: (K, 2) and `expert_yaw` (K,): the logged ego future in the ego frame at the
        trajectory rate (what the log-replay planner returns); privileged information.
      expert_yaw: (K,)
      signals: the traffic lights now (`Signals` with `red` (S,)); `known` False where the data
        has no light states.
      cameras: the camera views (`CameraView`) where the engine is asked for them (the world-model
        engine with `WMConfig.cameras`, the truth engine with `TruthConfig.cameras`), else None.
    """

    time: jnp.ndarray
    ego: EgoState
    route: jnp.ndarray
    route_valid: jnp.ndarray
    agents: AgentState
    agent_size: jnp.ndarray
    agent_category: jnp.ndarray
    occupancy: Occupancy
    map: MapData
    expert: jnp.ndarray
    expert_yaw: jnp.ndarray
    signals: Signals
    cameras: CameraView | None = None

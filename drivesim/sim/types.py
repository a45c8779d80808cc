"""Simulator pytrees: the state one closed-loop step needs, what a planner sees, what it returns.

All of them are written for one scenario; batching is by leading dims (`vmap`), never by hidden
globals. Frames and units follow `drivesim.data.types`: global x east / y north, ego frame x
forward / y left, the ego reference point is the middle of the rear axle, seconds and metres.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from drivesim.data.types import MapData, Occupancy

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

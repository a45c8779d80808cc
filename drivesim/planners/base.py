"""The planner protocol, and the escape hatch for planners written in plain Python.

A planner is a hashable object (a frozen dataclass: it is a static argument of the compiled
rollout) with

    init(rng) -> params                                  # any pytree (or None)
    plan(params, observation, rng) -> Trajectory         # pure JAX, traceable

Pure-JAX planners run inside the compiled closed loop. `PythonPlanner` wraps an arbitrary Python
function with `jax.pure_callback`: it works everywhere a JAX planner does, but every call leaves
the compiled program for the host, so it is much slower (no fusion, one host round trip per call
and scenario). Use it to try an idea, then port the planner to JAX.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from drivesim.data.types import SIM_DT, Observation, Trajectory


@runtime_checkable
class Planner(Protocol):
    name: str

    def init(self, rng) -> Any: ...

    def plan(self, params, obs: Observation, rng) -> Trajectory: ...


@dataclasses.dataclass(frozen=True)
class PythonPlanner:
    """A planner from a Python function `fn(obs_numpy) -> (xy (K, 2), yaw (K,))` in the ego frame.

    `fn` receives the observation as a pytree of numpy arrays (one scenario at a time) and must
    return poses `dt` apart. It is called through `jax.pure_callback` (vectorised over scenarios
    one by one), so it runs on the host, outside the compiled program.
    """

    fn: Any
    name: str = "python"
    horizon: int = 40
    dt: float = SIM_DT

    def init(self, rng):
        return None

    def plan(self, params, obs: Observation, rng) -> Trajectory:
        shape = (
            jax.ShapeDtypeStruct((self.horizon, 2), jnp.float32),
            jax.ShapeDtypeStruct((self.horizon,), jnp.float32),
        )

        def host(o):
            xy, yaw = self.fn(jax.tree.map(np.asarray, o))
            xy = np.asarray(xy, np.float32).reshape(self.horizon, 2)
            return xy, np.asarray(yaw, np.float32).reshape(self.horizon)

        # the occupancy grid is not sent to the host unless the function needs it (it is large)
        slim = obs.replace(occupancy=None, map=None)
        xy, yaw = jax.pure_callback(host, shape, slim, vmap_method="sequential")
        return Trajectory(xy=xy, yaw=yaw, dt=self.dt)


def check_planner(planner, obs: Observation) -> None:
    """Fail early, naming the planner, if it lacks the protocol or returns the wrong shapes."""
    name = getattr(planner, "name", type(planner).__name__)
    for attr in ("init", "plan"):
        if not callable(getattr(planner, attr, None)):
            raise TypeError(f"planner {name!r} has no {attr}() method; see drivesim.planners.base.Planner")
    try:
        hash(planner)
    except TypeError:
        raise TypeError(f"planner {name!r} must be hashable (make it a frozen dataclass)") from None
    params = planner.init(jax.random.key(0))
    out = jax.eval_shape(lambda p, o: planner.plan(p, o, jax.random.key(0)), params, obs)
    if not isinstance(out, Trajectory):
        raise TypeError(f"planner {name!r} returned {type(out).__name__}, not a Trajectory")
    if out.xy.ndim != 2 or out.xy.shape[-1] != 2 or out.yaw.shape != out.xy.shape[:1]:
        raise ValueError(
            f"planner {name!r} returned a trajectory of shape xy {out.xy.shape}, yaw {out.yaw.shape}; "
            "expected xy (K, 2) and yaw (K,)"
        )

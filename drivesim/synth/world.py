"""Run a scene plan into a recorded scene, and re-run it from any time under edits.

`simulate(plan)` records the whole scene at 10 Hz. `resimulate(plan, t, edits)` reproduces the
recording bit for bit up to log time `t`, applies the edits to the world's state at `t`, and runs
on: the result is the true future of that counterfactual (the same traffic rules, the same random
streams), from which the writer and renderer produce its sensors, boxes and occupancy.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from drivesim.data.classes import DEFAULT_SIZES  # noqa: F401 (re-exported: the world sizes inserted agents with it)
from drivesim.synth.traffic import DT, AgentSpec, ScenePlan, Traffic

# -------------------------------------------------------------------------- edits


@dataclasses.dataclass(frozen=True)
class RemoveAgent:
    """The agent disappears."""

    uid: int


@dataclasses.dataclass(frozen=True)
class InsertAgent:
    """A new agent. `behaviour`: "lane" (vehicles follow the nearest lane with IDM), "straight"
    (walk/drive straight ahead at `speed`), or "static". `size` defaults by category."""

    category: str
    x: float
    y: float
    yaw: float
    speed: float = 0.0
    behaviour: str = "lane"
    size: tuple[float, float, float] | None = None


@dataclasses.dataclass(frozen=True)
class MoveAgent:
    """The agent's box centre jumps to (x, y), heading `yaw` (kept if None)."""

    uid: int
    x: float
    y: float
    yaw: float | None = None


@dataclasses.dataclass(frozen=True)
class SetSpeed:
    """The agent's speed becomes `speed` (m/s) and it keeps wanting that speed."""

    uid: int
    speed: float


@dataclasses.dataclass(frozen=True)
class EgoTrajectory:
    """The ego's rear axle follows these poses (K, 3) [x, y, yaw], one per 0.1 s from the edit time."""

    poses: tuple[tuple[float, float, float], ...]


@dataclasses.dataclass(frozen=True)
class EgoCommand:
    """brake | accelerate | keep | lane_change_left | lane_change_right | turn_left | turn_right |
    straight; `value` is the deceleration/acceleration in m/s^2 for brake/accelerate."""

    kind: str
    value: float | None = None


Edit = RemoveAgent | InsertAgent | MoveAgent | SetSpeed | EgoTrajectory | EgoCommand

INSERTED_UID_BASE = 1_000_000


# -------------------------------------------------------------------------- records


@dataclasses.dataclass
class SceneRecord:
    """A simulated scene at 10 Hz, from log time 0 to `plan.duration`.

    Attributes:
      plan: what was simulated.
      time: (T,) log times (s).
      ego_rear: (T, 2) ego rear-axle position (the nuScenes ego frame origin).
      ego_yaw, ego_speed, ego_accel, ego_steer: (T,).
      specs: the A agents other than the ego, in slot order (uid, category, size, ...).
      center: (A, T, 2) box centres; yaw, speed: (A, T); active: (A, T) bool (present in the world).
      edit_time: log time the edits took effect (None for an unedited scene).
    """

    plan: ScenePlan
    time: np.ndarray
    ego_rear: np.ndarray
    ego_yaw: np.ndarray
    ego_speed: np.ndarray
    ego_accel: np.ndarray
    ego_steer: np.ndarray
    specs: list[AgentSpec]
    center: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    active: np.ndarray
    edit_time: float | None = None

    @property
    def uids(self) -> list[int]:
        return [s.uid for s in self.specs]

    def ego_pose_at(self, t: np.ndarray) -> np.ndarray:
        """(..., 3) ego rear-axle pose [x, y, yaw] at log times t (linear interpolation)."""
        x = np.interp(t, self.time, self.ego_rear[:, 0])
        y = np.interp(t, self.time, self.ego_rear[:, 1])
        return np.stack([x, y, _interp_angle(t, self.time, self.ego_yaw)], axis=-1)

    def agents_at(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Box centres (A, 2), yaws (A,) and presence (A,) at log time t.

        Between two steps an agent is present only if it is present at both.
        """
        i = int(np.clip(np.floor(t / DT + 1e-9), 0, len(self.time) - 2))
        f = float(np.clip((t - self.time[i]) / DT, 0.0, 1.0))
        xy = self.center[:, i] * (1 - f) + self.center[:, i + 1] * f
        dyaw = (self.yaw[:, i + 1] - self.yaw[:, i] + math.pi) % (2 * math.pi) - math.pi
        yaw = self.yaw[:, i] + f * dyaw
        present = self.active[:, i] & self.active[:, i + 1] if f > 1e-9 else self.active[:, i]
        return xy, yaw, present


def _interp_angle(t, times, angles):
    unwrapped = np.unwrap(angles)
    a = np.interp(t, times, unwrapped)
    return (a + math.pi) % (2 * math.pi) - math.pi


def simulate(plan: ScenePlan) -> SceneRecord:
    """Run a scene plan and record it."""
    return resimulate(plan, None, ())


def resimulate(plan: ScenePlan, t: float | None, edits: tuple[Edit, ...] | list[Edit], each_step=None) -> SceneRecord:
    """Re-run `plan`, applying `edits` to the world's state at log time `t`.

    Up to `t` the result equals `simulate(plan)` exactly; from `t` on it is the world's response
    to the edits. With no edits it equals `simulate(plan)` everywhere. `each_step(world, i)`, if
    given, is called at every recorded step i before its snapshot (after the edits), to disturb
    the world (the behaviour model's training data pushes agents; `drivesim.pipelines.behaviour`).
    """
    n_steps = int(round(plan.duration / DT))
    warm = int(round(plan.warmup / DT))
    edit_step = None
    if t is not None and edits:
        if not 0.0 <= t <= plan.duration:
            raise ValueError(f"edit time {t} s is outside the scene (0 .. {plan.duration} s)")
        edit_step = int(round(t / DT))
    world = Traffic(plan)
    for _ in range(warm):
        world.step()
    snaps = []
    for i in range(n_steps + 1):
        if i == edit_step:
            apply_edits(world, edits)
        if each_step is not None:
            each_step(world, i)
        snaps.append(world.snapshot())
        if i < n_steps:
            world.step()
    return _record(plan, world, snaps, None if edit_step is None else edit_step * DT)


def apply_edits(world: Traffic, edits) -> None:
    """Apply edits to a running world, in order; a bad edit raises ValueError naming it."""
    for edit in edits:
        if isinstance(edit, RemoveAgent | MoveAgent | SetSpeed):
            try:
                k = world.slot_of(edit.uid)
            except KeyError:
                raise ValueError(f"{edit}: there is no agent with id {edit.uid}") from None
            if edit.uid == 0:
                raise ValueError(f"{edit}: agent 0 is the ego; use EgoTrajectory or EgoCommand")
            if not world.active[k]:
                raise ValueError(f"{edit}: agent {edit.uid} is not in the scene at the edit time")
        if isinstance(edit, RemoveAgent):
            world.remove(edit.uid)
        elif isinstance(edit, MoveAgent):
            world.move(edit.uid, edit.x, edit.y, edit.yaw)
        elif isinstance(edit, SetSpeed):
            world.set_speed(edit.uid, edit.speed)
        elif isinstance(edit, InsertAgent):
            world.add(_inserted_spec(world, edit))
        elif isinstance(edit, EgoTrajectory):
            poses = np.asarray(edit.poses, dtype=np.float64).reshape(-1, 3)
            if not np.all(np.isfinite(poses)):
                raise ValueError("EgoTrajectory: the poses contain NaN or infinity")
            world.override_ego(poses)
        elif isinstance(edit, EgoCommand):
            world.command_ego(edit.kind, edit.value)
        else:
            raise TypeError(f"not an edit: {edit!r}")


def _inserted_spec(world: Traffic, edit: InsertAgent) -> AgentSpec:
    size = edit.size or DEFAULT_SIZES.get(edit.category)
    if size is None:
        raise ValueError(f"InsertAgent: give a size for category {edit.category!r}")
    # Inserted agents take ids from their own range, so that the ids (and so the random streams)
    # of the traffic that enters later are the same as without the edit.
    uid = INSERTED_UID_BASE + sum(spec.uid >= INSERTED_UID_BASE for spec in world.specs)
    seed = world.plan.seed
    if edit.behaviour == "static" or edit.category.startswith(("movable_object", "static_object")):
        return AgentSpec(uid, "static", edit.category, size, seed, pose=(edit.x, edit.y, edit.yaw))
    if edit.category.startswith("human") or edit.behaviour == "straight" and not edit.category.startswith("vehicle"):
        c, s = math.cos(edit.yaw), math.sin(edit.yaw)
        path = ((edit.x, edit.y), (edit.x + 80.0 * c, edit.y + 80.0 * s))
        return AgentSpec(
            uid, "pedestrian", edit.category, size, seed, path=path, desired_speed=edit.speed,
            speed=edit.speed, on_crosswalk_only=False,
        )  # fmt: skip
    if edit.behaviour not in ("lane", "straight"):
        raise ValueError(f"InsertAgent: unknown behaviour {edit.behaviour!r}; use lane, straight or static")
    return AgentSpec(
        uid, "vehicle", edit.category, size, seed, pose=(edit.x, edit.y, edit.yaw), speed=edit.speed,
        desired_speed=max(edit.speed, 1.0), random_lane_changes=False,
    )  # fmt: skip


def _record(plan: ScenePlan, world: Traffic, snaps, edit_time) -> SceneRecord:
    n_agents = world.n - 1  # slot 0 is the ego
    steps = len(snaps)
    center = np.zeros((n_agents, steps, 2))
    yaw = np.zeros((n_agents, steps))
    speed = np.zeros((n_agents, steps))
    active = np.zeros((n_agents, steps), bool)
    for i, snap in enumerate(snaps):
        m = len(snap.active) - 1
        center[:m, i] = snap.center[1:]
        yaw[:m, i] = snap.yaw[1:]
        speed[:m, i] = snap.speed[1:]
        active[:m, i] = snap.active[1:]
    return SceneRecord(
        plan=plan,
        time=np.arange(steps) * DT,
        ego_rear=np.array([s.ego_rear for s in snaps]),
        ego_yaw=np.array([s.yaw[0] for s in snaps]),
        ego_speed=np.array([s.speed[0] for s in snaps]),
        ego_accel=np.array([s.accel[0] for s in snaps]),
        ego_steer=np.array([s.steer[0] for s in snaps]),
        specs=list(world.specs[1:]),
        center=center,
        yaw=yaw,
        speed=speed,
        active=active,
        edit_time=edit_time,
    )

"""Counterfactual edits of a log ("what if?"): the edit kinds, their CLI grammar, and what they do.

An edit changes the world from log step `t0` on. Agent edits (remove, insert, move, change speed, a
pedestrian crossing) rewrite the agent tracks of the `Log`, which the non-reactive reference engine
then replays and the world model is conditioned on. Ego edits (brake, accelerate, keep, swerve,
waypoints) leave the log alone: `ego_poses` gives the commanded ego path and the caller drives the
ego along it. `drivesim.pipelines.world_edits.to_synth_edits` turns the same edits into the synthetic
world's edits (another vocabulary, mapped there), so that `drivesim.synth.world.resimulate` gives the
true counterfactual of a synthetic scene.

Poses that users type are in the ego frame at t0 (x forward, y left, metres, from the middle of the
rear axle; headings relative to the ego's). Agents are named by their slot in the log or by the
first characters (at least 6) of their instance token, as `list_agents` shows them.

Edits compose: they are applied in order, each to the world the previous ones left, and each is
checked against that world. An edit that makes no sense is refused with an `EditError` saying why.

Everything here runs on the host, in numpy (once per counterfactual, before anything is compiled).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from drivesim.data.classes import AGENT_CLASS_NAMES, DEFAULT_SIZES, NUSCENES_CATEGORIES, VEHICLE, agent_class_of
from drivesim.data.geometry import overlap_one_to_many
from drivesim.data.types import EGO_REAR_AXLE_TO_CENTER, Log, LogInfo
from drivesim.errors import ConfigError, DataError
from drivesim.metrics.pdms import DRIVABLE_CLASSES

GRAMMAR = """\
--edit SPEC (repeatable; edits apply in order from t0):
  ego=brake[:DECEL]             brake at DECEL m/s^2 (default 4) along the logged path, to a stop
  ego=accelerate[:ACCEL]        speed up at ACCEL m/s^2 (default 2) along the logged path
  ego=keep                      hold the speed at t0 along the logged path
  ego=swerve_left[:OFFSET]      hold the speed and move OFFSET m (default 3.5) to the left over 3 s
  ego=swerve_right[:OFFSET]     ... to the right
  ego=waypoints:FILE            follow ego-frame waypoints, one every 0.5 s: rows x, y[, yaw]
                                (.json, .npy, .csv or .txt, as for `--ego FILE`)
  remove=ID                     the agent vanishes from t0
  insert=CATEGORY@X,Y[,YAW[,SPEED[,BEHAVIOUR]]]
                                a new agent, box centre at (X, Y) m, heading YAW degrees, both in
                                the ego frame at t0; SPEED m/s (default 0); BEHAVIOUR lane (follow
                                the nearest lane, the default), straight or static
  move=ID@X,Y[,YAW]             the agent's future track, shifted (and turned to YAW degrees) so
                                that it starts at (X, Y) in the ego frame
  speed=ID@V                    the agent goes along its logged path at V m/s (0: it stops)
  cross[=AHEAD[,SPEED[,SIDE]]]  a pedestrian steps off the road edge AHEAD m (15) ahead of the ego,
                                on its SIDE (right|left, default right), and walks across at SPEED
                                m/s (1.4)
ID: an agent's slot number, or the first 6 or more characters of its instance token (--list-agents).
Ego frame: x forward, y left, metres from the middle of the rear axle at t0.
CATEGORY: a nuScenes category with a default size (vehicle.car, vehicle.truck, vehicle.bus.rigid,
vehicle.bicycle, vehicle.motorcycle, human.pedestrian.adult, human.pedestrian.child,
movable_object.trafficcone, movable_object.barrier) or car, truck, bus, bicycle, motorcycle,
pedestrian, child, cone, barrier.
"""

EGO_KINDS = ("brake", "accelerate", "keep", "swerve_left", "swerve_right", "waypoints")
BEHAVIOURS = ("lane", "straight", "static")
CATEGORY_ALIASES = {
    "car": "vehicle.car",
    "truck": "vehicle.truck",
    "bus": "vehicle.bus.rigid",
    "bicycle": "vehicle.bicycle",
    "motorcycle": "vehicle.motorcycle",
    "pedestrian": "human.pedestrian.adult",
    "child": "human.pedestrian.child",
    "cone": "movable_object.trafficcone",
    "barrier": "movable_object.barrier",
}
PEDESTRIAN_CATEGORY = "human.pedestrian.adult"
"""The category of the pedestrian of `PedestrianCrosses`."""

BRAKE = 4.0
"""Default deceleration of `ego=brake` (m/s^2), as the synthetic world's EgoCommand."""
ACCELERATE = 2.0
"""Default acceleration of `ego=accelerate` (m/s^2)."""
SWERVE_OFFSET = 3.5
"""Default sideways offset of a swerve (m): one lane."""
SWERVE_SECONDS = 3.0
"""Duration of the sideways move of a swerve (s)."""
SWERVE_MIN_SPEED = 1.0
"""A swerve needs the ego moving at least this fast at t0 (m/s)."""
WAYPOINT_DT = 0.5
"""Seconds between the waypoints of a waypoint file."""
LANE_SNAP = 5.0
"""An inserted lane follower must stand within this distance (m) of a lane going its way."""
LANE_BLEND = 10.0
"""An inserted lane follower joins its lane's centreline over this distance (m)."""
MAX_SPEED = 40.0
"""Speeds above this (m/s) are refused."""
MIN_TOKEN_PREFIX = 6

_EXTEND = 1.0e4  # tracks continue straight this far (m) past the end of a path


class EditError(ConfigError):
    """An edit that cannot be parsed or that makes no sense in its scene."""


# -------------------------------------------------------------------------- edits

AgentRef = int | str
"""An agent: its slot in the log (int) or a prefix (>= 6 characters) of its instance token (str)."""


@dataclasses.dataclass(frozen=True)
class EgoEdit:
    """Override the ego's motion from t0.

    kind: brake | accelerate | keep | swerve_left | swerve_right | waypoints.
    value: deceleration / acceleration (m/s^2) for brake / accelerate, sideways offset (m) for a
      swerve; None for the default.
    path: the waypoint file of `waypoints`.
    """

    kind: str
    value: float | None = None
    path: str | None = None


@dataclasses.dataclass(frozen=True)
class Remove:
    """The agent vanishes from t0."""

    agent: AgentRef


@dataclasses.dataclass(frozen=True)
class Insert:
    """A new agent from t0.

    category: a nuScenes category name (with a default size, or give `size`).
    x, y: box centre in the ego frame at t0 (m); yaw: heading relative to the ego's (rad).
    speed: m/s.
    behaviour: "lane" (follow the nearest lane going its way at constant speed), "straight"
      (constant speed along its heading) or "static". Pedestrians never follow lanes (lane means
      straight for them) and movable objects are always static, as in the synthetic world.
    size: (length, width, height) m; None: the category's default.
    """

    category: str
    x: float
    y: float
    yaw: float = 0.0
    speed: float = 0.0
    behaviour: str = "lane"
    size: tuple[float, float, float] | None = None


@dataclasses.dataclass(frozen=True)
class Move:
    """The agent's future track, moved to start at box centre (x, y) in the ego frame at t0, and
    turned about that centre to heading `yaw` (rad, relative to the ego's) if given."""

    agent: AgentRef
    x: float
    y: float
    yaw: float | None = None


@dataclasses.dataclass(frozen=True)
class ChangeSpeed:
    """The agent goes along its logged path at a constant `speed` (m/s) from t0 (0: it stops)."""

    agent: AgentRef
    speed: float


@dataclasses.dataclass(frozen=True)
class PedestrianCrosses:
    """A pedestrian steps out from the road edge beside the ego's path, `ahead` metres ahead of the
    ego (along its logged path), on `side` ("left" | "right"), and walks straight across the road
    at `speed` m/s, from t0."""

    ahead: float = 15.0
    speed: float = 1.4
    side: str = "right"


Edit = EgoEdit | Remove | Insert | Move | ChangeSpeed | PedestrianCrosses

# -------------------------------------------------------------------------- the grammar

_FORMS = {
    "ego": "ego=brake[:DECEL] | accelerate[:ACCEL] | keep | swerve_left[:M] | swerve_right[:M] | waypoints:FILE",
    "remove": "remove=ID",
    "insert": "insert=CATEGORY@X,Y[,YAW_DEG[,SPEED[,lane|straight|static]]]",
    "move": "move=ID@X,Y[,YAW_DEG]",
    "speed": "speed=ID@V",
    "cross": "cross[=AHEAD[,SPEED[,left|right]]]",
}


def _bad(spec: str, key: str | None, why: str) -> EditError:
    form = _FORMS[key] if key in _FORMS else "ego=..., remove=ID, insert=..., move=..., speed=ID@V or cross"
    return EditError(f"--edit {spec!r}: {why}; expected {form} (see --help)")


def _number(spec: str, key: str, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(spec, key, f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _bad(spec, key, f"{what} {text!r} is not a finite number")
    return value


def _agent_ref(spec: str, key: str, text: str) -> AgentRef:
    text = text.strip()
    if text.isdigit() and len(text) < MIN_TOKEN_PREFIX:
        return int(text)
    if len(text) >= MIN_TOKEN_PREFIX and text.isalnum():
        return text.lower()
    raise _bad(
        spec, key, f"agent {text!r} is neither a slot number nor the first {MIN_TOKEN_PREFIX}+ characters of a token"
    )


def _category(spec: str, key: str, text: str) -> str:
    name = CATEGORY_ALIASES.get(text, text)
    if name not in DEFAULT_SIZES:
        known = ", ".join(list(CATEGORY_ALIASES) + list(DEFAULT_SIZES))
        raise _bad(spec, key, f"unknown category {text!r} (use one of {known})")
    return name


def parse_edit(spec: str) -> Edit:
    """One `--edit SPEC` (see `GRAMMAR`) -> an edit. Bad syntax raises `EditError`."""
    text = spec.strip()
    key, eq, arg = text.partition("=")
    key = key.strip().lower()
    arg = arg.strip()
    if key == "cross":
        parts = [p.strip() for p in arg.split(",")] if eq else []
        if len(parts) > 3 or any(not p for p in parts):
            raise _bad(spec, key, "too many or empty fields")
        ahead = _number(spec, key, parts[0], "AHEAD") if len(parts) > 0 else 15.0
        speed = _number(spec, key, parts[1], "SPEED") if len(parts) > 1 else 1.4
        side = parts[2].lower() if len(parts) > 2 else "right"
        if side not in ("left", "right"):
            raise _bad(spec, key, f"SIDE must be left or right (got {parts[2]!r})")
        if ahead <= 0 or speed <= 0 or speed > MAX_SPEED:
            raise _bad(spec, key, f"AHEAD and SPEED must be positive (got {ahead:g} m, {speed:g} m/s)")
        return PedestrianCrosses(ahead=ahead, speed=speed, side=side)
    if key not in _FORMS or not eq or not arg:
        raise _bad(spec, key if key in _FORMS else None, "not a known edit" if key not in _FORMS else "missing value")
    if key == "ego":
        kind, colon, value = arg.partition(":")
        kind = kind.strip().lower()
        if kind not in EGO_KINDS:
            raise _bad(spec, key, f"unknown ego edit {kind!r} (use one of {', '.join(EGO_KINDS)})")
        if kind == "waypoints":
            if not value.strip():
                raise _bad(spec, key, "waypoints needs a file")
            return EgoEdit("waypoints", path=value.strip())
        if kind == "keep":
            if colon:
                raise _bad(spec, key, "keep takes no value")
            return EgoEdit("keep")
        if not colon:
            return EgoEdit(kind)
        v = _number(spec, key, value.strip(), "the value")
        if v <= 0:
            raise _bad(spec, key, f"the value of {kind} must be positive (got {v:g})")
        return EgoEdit(kind, value=v)
    if key == "remove":
        return Remove(_agent_ref(spec, key, arg))
    head, at, rest = arg.partition("@")
    if not at or not head.strip() or not rest.strip():
        raise _bad(spec, key, "missing '@'" if not at else "missing field")
    fields = [f.strip() for f in rest.split(",")]
    if any(not f for f in fields):
        raise _bad(spec, key, "empty field")
    if key == "speed":
        if len(fields) != 1:
            raise _bad(spec, key, "give one speed")
        v = _number(spec, key, fields[0], "V")
        if not 0 <= v <= MAX_SPEED:
            raise _bad(spec, key, f"V must be between 0 and {MAX_SPEED:g} m/s (got {v:g})")
        return ChangeSpeed(_agent_ref(spec, key, head), v)
    if key == "move":
        if len(fields) not in (2, 3):
            raise _bad(spec, key, f"give X,Y or X,Y,YAW (got {len(fields)} fields)")
        x, y = (_number(spec, key, f, n) for f, n in zip(fields[:2], ("X", "Y"), strict=True))
        yaw = math.radians(_number(spec, key, fields[2], "YAW")) if len(fields) == 3 else None
        return Move(_agent_ref(spec, key, head), x, y, yaw)
    # insert
    if not 2 <= len(fields) <= 5:
        raise _bad(spec, key, f"give 2 to 5 fields after '@' (got {len(fields)})")
    nums = [_number(spec, key, f, n) for f, n in zip(fields[:4], ("X", "Y", "YAW", "SPEED"), strict=False)]
    x, y = nums[0], nums[1]
    yaw = math.radians(nums[2]) if len(nums) > 2 else 0.0
    speed = nums[3] if len(nums) > 3 else 0.0
    if not 0 <= speed <= MAX_SPEED:
        raise _bad(spec, key, f"SPEED must be between 0 and {MAX_SPEED:g} m/s (got {speed:g})")
    behaviour = fields[4].lower() if len(fields) > 4 else "lane"
    if behaviour not in BEHAVIOURS:
        raise _bad(spec, key, f"unknown behaviour {fields[4]!r} (use lane, straight or static)")
    return Insert(_category(spec, key, head.strip()), x, y, yaw, speed, behaviour)


def spec_of(edit: Edit) -> str:
    """The `--edit` spec of an edit (the inverse of `parse_edit`, up to number formatting)."""
    g = lambda v: f"{v:g}"  # noqa: E731
    if isinstance(edit, EgoEdit):
        if edit.kind == "waypoints":
            return f"ego=waypoints:{edit.path}"
        return f"ego={edit.kind}" + ("" if edit.value is None else f":{g(edit.value)}")
    if isinstance(edit, Remove):
        return f"remove={edit.agent}"
    if isinstance(edit, Insert):
        return (
            f"insert={edit.category}@{g(edit.x)},{g(edit.y)},{g(math.degrees(edit.yaw))},{g(edit.speed)},"
            f"{edit.behaviour}"
        )
    if isinstance(edit, Move):
        yaw = "" if edit.yaw is None else f",{g(math.degrees(edit.yaw))}"
        return f"move={edit.agent}@{g(edit.x)},{g(edit.y)}{yaw}"
    if isinstance(edit, ChangeSpeed):
        return f"speed={edit.agent}@{g(edit.speed)}"
    if isinstance(edit, PedestrianCrosses):
        return f"cross={g(edit.ahead)},{g(edit.speed)},{edit.side}"
    raise TypeError(f"not an edit: {edit!r}")


# -------------------------------------------------------------------------- frames and paths


def _wrap(a):
    return (np.asarray(a) + math.pi) % (2 * math.pi) - math.pi


def _ego_pose(log: Log, t0: int) -> tuple[np.ndarray, float]:
    return np.asarray(log.ego.xy[t0], np.float64), float(log.ego.yaw[t0])


def ego_to_global(log: Log, t0: int, x: float, y: float, yaw: float = 0.0) -> tuple[float, float, float]:
    """A pose in the ego frame at log step t0 -> the global frame (x, y, yaw)."""
    exy, eyaw = _ego_pose(log, t0)
    c, s = math.cos(eyaw), math.sin(eyaw)
    return float(exy[0] + c * x - s * y), float(exy[1] + s * x + c * y), float(_wrap(eyaw + yaw))


def global_to_ego(log: Log, t0: int, xy: np.ndarray) -> np.ndarray:
    """Global points (..., 2) -> the ego frame at log step t0."""
    exy, eyaw = _ego_pose(log, t0)
    d = np.asarray(xy, np.float64) - exy
    c, s = math.cos(eyaw), math.sin(eyaw)
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


@dataclasses.dataclass(frozen=True)
class _Path:
    """A polyline in arc length, with a heading per point, continuing straight past its end."""

    xy: np.ndarray  # (N, 2)
    s: np.ndarray  # (N,)
    yaw: np.ndarray  # (N,) unwrapped

    @staticmethod
    def of(xy: np.ndarray, yaw: np.ndarray | None, heading: float) -> _Path:
        """Points (N >= 1, 2) with headings (N,) (None: the path's tangent); `heading` is the
        direction of a path without length."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        keep = np.concatenate([[True], np.hypot(*np.diff(xy, axis=0).T) > 1e-3])
        xy = xy[keep]
        if yaw is None:
            if len(xy) > 1:
                d = np.gradient(xy, axis=0)
                yaw = np.arctan2(d[:, 1], d[:, 0])
            else:
                yaw = np.full(1, heading)
        else:
            yaw = np.asarray(yaw, np.float64)[keep]
        yaw = np.unwrap(yaw)
        if len(xy) > 1:
            d = xy[-1] - xy[-2]
            end_dir = math.atan2(d[1], d[0])
        else:
            end_dir = heading
        end_dir = yaw[-1] + float(_wrap(end_dir - yaw[-1]))
        u = np.array([math.cos(end_dir), math.sin(end_dir)])
        xy = np.concatenate([xy, [xy[-1] + u * 1.0, xy[-1] + u * _EXTEND]])
        yaw = np.concatenate([yaw, [end_dir, end_dir]])
        s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
        return _Path(xy, s, yaw)

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (K, 2) and headings (K,) at arc lengths s (K,)."""
        s = np.asarray(s, np.float64)
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        return np.stack([x, y], axis=-1), _wrap(np.interp(s, self.s, self.yaw))

    def project(self, p: np.ndarray) -> tuple[float, float]:
        """Arc length and signed lateral offset (left +) of the nearest path point to p (2,)."""
        a, b = self.xy[:-1], self.xy[1:]
        ab = b - a
        l2 = np.maximum((ab**2).sum(-1), 1e-12)
        f = np.clip(((p - a) * ab).sum(-1) / l2, 0.0, 1.0)
        foot = a + f[:, None] * ab
        d2 = ((p - foot) ** 2).sum(-1)
        i = int(np.argmin(d2))
        cross = ab[i, 0] * (p[1] - a[i, 1]) - ab[i, 1] * (p[0] - a[i, 0])
        return float(self.s[i] + f[i] * math.sqrt(l2[i])), float(math.copysign(math.sqrt(d2[i]), cross))


def _logged_ego_path(log: Log, t0: int) -> _Path:
    valid = np.asarray(log.ego.valid)
    steps = np.flatnonzero(valid[t0:]) + t0
    return _Path.of(np.asarray(log.ego.xy)[steps], np.asarray(log.ego.yaw)[steps], float(log.ego.yaw[t0]))


def _velocity(xy: np.ndarray, dt: float) -> np.ndarray:
    return np.gradient(xy, dt, axis=0) if len(xy) > 1 else np.zeros_like(xy)


# -------------------------------------------------------------------------- the ego


def ego_poses(edit: EgoEdit, log: Log, t0: int, horizon_steps: int) -> np.ndarray:
    """The commanded ego path: (horizon_steps, 3) float64 global rear-axle poses [x, y, yaw].

    Row k is the pose (k + 1) steps (0.1 s at 10 Hz) after t0, as in `Trajectory`; the pose at t0
    is the logged one. brake / accelerate: constant deceleration (to a stop, never reversing) /
    acceleration from the speed at t0, along the logged ego path (straight on past its end);
    keep: the speed at t0 along the logged path; swerve_left / _right: keep, plus a smooth
    (cosine) sideways offset of `value` m (3.5) over 3 s; waypoints: the file's ego-frame poses
    (one per 0.5 s, the pose at t0 implied) through a cubic spline that starts at the ego's
    velocity, straight on at the last velocity past the last waypoint.
    """
    _check_t0(log, t0)
    if horizon_steps < 1:
        raise EditError(f"the horizon must be at least one step (got {horizon_steps})")
    _check_ego_edit(edit, log, t0)
    dt = log.dt
    t = (np.arange(horizon_steps) + 1) * dt
    v0 = float(np.linalg.norm(np.asarray(log.ego.velocity[t0], np.float64)))
    if edit.kind == "waypoints":
        return _waypoint_poses(edit, log, t0, t, v0)
    if edit.kind == "brake":
        a = BRAKE if edit.value is None else edit.value
        tc = np.minimum(t, v0 / a)
        s = v0 * tc - 0.5 * a * tc**2
    elif edit.kind == "accelerate":
        a = ACCELERATE if edit.value is None else edit.value
        s = v0 * t + 0.5 * a * t**2
    else:
        s = v0 * t
    path = _logged_ego_path(log, t0)
    xy, yaw = path.at(s)
    if edit.kind.startswith("swerve"):
        sign = 1.0 if edit.kind.endswith("left") else -1.0
        offset = SWERVE_OFFSET if edit.value is None else edit.value
        frac = np.clip(t / SWERVE_SECONDS, 0.0, 1.0)
        lateral = sign * offset * 0.5 * (1.0 - np.cos(math.pi * frac))
        rate = np.where(
            t < SWERVE_SECONDS, sign * offset * 0.5 * math.pi / SWERVE_SECONDS * np.sin(math.pi * frac), 0.0
        )
        normal = np.stack([-np.sin(yaw), np.cos(yaw)], axis=-1)
        xy = xy + lateral[:, None] * normal
        yaw = _wrap(yaw + np.arctan2(rate, v0))
    return np.concatenate([xy, yaw[:, None]], axis=1)


def _waypoint_poses(edit: EgoEdit, log: Log, t0: int, t: np.ndarray, v0: float) -> np.ndarray:
    from scipy.interpolate import CubicSpline

    motions = _load_waypoints(edit)
    poses = np.zeros((len(motions) + 1, 3))
    for i, (dx, dy, dyaw) in enumerate(motions):
        x, y, yaw = poses[i]
        c, s = math.cos(yaw), math.sin(yaw)
        poses[i + 1] = (x + c * dx - s * dy, y + s * dx + c * dy, yaw + dyaw)
    knots = np.arange(len(poses)) * WAYPOINT_DT
    spline = CubicSpline(knots, poses[:, :2], bc_type=((1, np.array([v0, 0.0])), (2, np.zeros(2))))
    inside = np.minimum(t, knots[-1])
    local = spline(inside)
    end_velocity = spline(knots[-1], 1)
    local = local + np.maximum(t - knots[-1], 0.0)[:, None] * end_velocity
    yaw = np.interp(inside, knots, poses[:, 2])
    exy, eyaw = _ego_pose(log, t0)
    c, s = math.cos(eyaw), math.sin(eyaw)
    gx = exy[0] + c * local[:, 0] - s * local[:, 1]
    gy = exy[1] + s * local[:, 0] + c * local[:, 1]
    return np.stack([gx, gy, _wrap(eyaw + yaw)], axis=1)


def _load_waypoints(edit: EgoEdit) -> np.ndarray:
    """(F, 3) motions of a waypoint file (`drivesim.model.ego_plans.load_waypoints`)."""
    from drivesim.model.ego_plans import load_waypoints

    try:
        return load_waypoints(edit.path)
    except DataError as e:
        msg = str(e).replace(f"--ego {edit.path}: ", "")
        raise EditError(f"--edit 'ego=waypoints:{edit.path}': {msg}") from None


def _check_ego_edit(edit: EgoEdit, log: Log, t0: int) -> None:
    where = f"--edit {spec_of(edit)!r}"
    if edit.kind not in EGO_KINDS:
        raise EditError(f"{where}: unknown ego edit {edit.kind!r}; use one of {', '.join(EGO_KINDS)}")
    if edit.kind == "waypoints":
        if not edit.path:
            raise EditError(f"{where}: give the waypoint file (ego=waypoints:FILE)")
        _load_waypoints(edit)
        return
    if edit.value is not None and not (math.isfinite(edit.value) and edit.value > 0):
        raise EditError(f"{where}: the value must be a positive number (got {edit.value})")
    if edit.kind.startswith("swerve"):
        v0 = float(np.linalg.norm(np.asarray(log.ego.velocity[t0], np.float64)))
        if v0 < SWERVE_MIN_SPEED:
            raise EditError(
                f"{where}: the ego is (almost) stopped at t0 = {_seconds(log, t0)} ({v0:.1f} m/s); a swerve needs "
                f"at least {SWERVE_MIN_SPEED:g} m/s (pick a later t0, or give waypoints)"
            )


# -------------------------------------------------------------------------- the agents


def _seconds(log: Log, t0: int) -> str:
    return f"{float(np.asarray(log.time)[t0]):.1f} s"


def _check_t0(log: Log, t0: int) -> None:
    T = log.num_steps
    if not 0 <= t0 < T or not bool(np.asarray(log.ego.valid)[t0]):
        raise EditError(f"t0 step {t0} is outside the log (steps 0 .. {T - 1} with a logged ego)")


def list_agents(log: Log, info: LogInfo | None, t0: int) -> list[dict]:
    """The agents of a log as seen at step t0, for `--list-agents`: one dict per used slot with
    slot, token (8-character prefix), category (nuScenes name, or the coarse class), x, y (box
    centre, ego frame at t0, m), yaw (deg, relative to the ego), speed (m/s) and valid (present at
    t0; only those can be edited). Sorted by distance from the ego, those present first."""
    _check_t0(log, t0)
    ag = log.agents
    valid = np.asarray(ag.valid)
    A = valid.shape[0]
    tokens = info.agent_tokens if info is not None else ("",) * A
    names = info.agent_categories if info is not None else ("",) * A
    local = global_to_ego(log, t0, np.asarray(ag.xy[:, t0], np.float64))
    yaw = np.degrees(_wrap(np.asarray(ag.yaw[:, t0], np.float64) - float(log.ego.yaw[t0])))
    speed = np.linalg.norm(np.asarray(ag.velocity[:, t0], np.float64), axis=-1)
    rows = []
    for a in range(A):
        if not tokens[a] and not valid[a].any():
            continue
        now = bool(valid[a, t0])
        rows.append(
            {
                "slot": a,
                "token": tokens[a][:8],
                "category": names[a] or AGENT_CLASS_NAMES[int(ag.category[a])],
                "x": float(local[a, 0]) if now else float("nan"),
                "y": float(local[a, 1]) if now else float("nan"),
                "yaw": float(yaw[a]) if now else float("nan"),
                "speed": float(speed[a]) if now else float("nan"),
                "valid": now,
            }
        )
    rows.sort(key=lambda r: (not r["valid"], math.hypot(r["x"], r["y"]) if r["valid"] else 0.0, r["slot"]))
    return rows


def resolve_agent(log: Log, info: LogInfo | None, t0: int, agent: AgentRef) -> int:
    """The slot of an agent reference that is present at t0, or an `EditError` saying why not."""
    valid = np.asarray(log.agents.valid)
    A = valid.shape[0]
    absent = f"is not in the scene at t0 = {_seconds(log, t0)}; --list-agents shows those that are"
    if isinstance(agent, bool) or not isinstance(agent, int | str):
        raise EditError(f"agent {agent!r}: give a slot number or a token prefix")
    if isinstance(agent, int):
        if not 0 <= agent < A or not valid[agent, t0]:
            raise EditError(f"agent {agent} {absent}")
        return agent
    prefix = agent.lower()
    if len(prefix) < MIN_TOKEN_PREFIX:
        raise EditError(f"agent {agent!r}: give at least {MIN_TOKEN_PREFIX} characters of its token")
    tokens = info.agent_tokens if info is not None else ()
    hits = [a for a, tok in enumerate(tokens) if tok and tok.lower().startswith(prefix)]
    if len(hits) > 1:
        names = ", ".join(f"{tokens[a][:10]} (slot {a})" for a in hits)
        raise EditError(f"agent {agent!r} matches {len(hits)} agents ({names}); give more characters")
    if not hits or not valid[hits[0], t0]:
        raise EditError(f"agent {agent!r} {absent}")
    return hits[0]


def _category_name(edit: Insert) -> str:
    name = CATEGORY_ALIASES.get(edit.category, edit.category)
    if name not in NUSCENES_CATEGORIES:
        raise EditError(f"--edit {spec_of(edit)!r}: unknown category {edit.category!r}")
    if edit.size is None and name not in DEFAULT_SIZES:
        raise EditError(
            f"--edit {spec_of(edit)!r}: category {name!r} has no default size; use one of {', '.join(DEFAULT_SIZES)}"
        )
    return name


def _effective_behaviour(name: str, behaviour: str) -> str:
    """As the synthetic world treats them: movable objects stand, pedestrians walk straight."""
    if behaviour == "static" or name.startswith(("movable_object", "static_object")):
        return "static"
    if name.startswith("human") or name == "animal":
        return "straight"
    return behaviour


@functools.cache
def _lane_path():
    from drivesim.sim.paths import lane_path

    return jax.jit(lane_path, static_argnames=("n_segments",))


class _Editor:
    """The log being edited: host copies of the agent tracks, changed edit by edit."""

    def __init__(self, log: Log, info: LogInfo | None, t0: int):
        self.log = jax.tree.map(np.asarray, log)
        self.info = info
        self.t0 = t0
        ag = self.log.agents
        self.xy = np.array(ag.xy, np.float64)
        self.z = np.array(ag.z, np.float32)
        self.yaw = np.array(ag.yaw, np.float64)
        self.vel = np.array(ag.velocity, np.float64)
        self.size = np.array(ag.size, np.float32)
        self.category = np.array(ag.category, np.int32)
        self.valid = np.array(ag.valid, bool)
        A, T = self.valid.shape
        self.tokens = info.agent_tokens if info is not None else ("",) * A
        self.used = self.valid.any(axis=1) | np.array([bool(t) for t in self.tokens])
        self.dt = self.log.dt
        self.t = np.arange(T - t0) * self.dt  # seconds since t0 of steps t0 .. T-1
        self.touched: dict[int, str] = {}  # slot -> what an earlier edit did to it

    # ---- output
    def result(self) -> Log:
        ag = self.log.agents.replace(
            xy=np.where(self.valid[..., None], self.xy, 0.0).astype(np.float32),
            z=np.where(self.valid, self.z, 0.0).astype(np.float32),
            yaw=np.where(self.valid, _wrap(self.yaw), 0.0).astype(np.float32),
            velocity=np.where(self.valid[..., None], self.vel, 0.0).astype(np.float32),
            size=self.size,
            category=self.category,
            valid=self.valid,
        )
        return self.log.replace(agents=ag)

    # ---- checks
    def where(self, edit) -> str:
        return f"--edit {spec_of(edit)!r}"

    def agent(self, edit) -> int:
        a = resolve_agent(self.log, self.info, self.t0, edit.agent)
        if self.touched.get(a) == "removed":
            raise EditError(f"{self.where(edit)}: agent {edit.agent} was removed by an earlier edit")
        if not self.valid[a, self.t0]:
            raise EditError(f"{self.where(edit)}: agent {edit.agent} is no longer in the scene after the earlier edits")
        return a

    def check_place(self, edit, xy: np.ndarray, yaw: float, size, cls: int, skip: int = -1) -> None:
        """On the map (vehicles on drivable ground) and clear of the ego and of agents at t0."""
        where = self.where(edit)
        m = self.log.map
        res = float(m.raster_resolution)
        raster = np.asarray(m.raster)
        ij = np.floor((xy - np.asarray(m.raster_origin, np.float64)) / res).astype(int)
        local = global_to_ego(self.log, self.t0, xy)
        at = f"({local[0]:.1f}, {local[1]:.1f}) in the ego frame"
        if not (0 <= ij[0] < raster.shape[1] and 0 <= ij[1] < raster.shape[0]):
            raise EditError(f"{where}: {at} is off the map around this scene; place it nearer the ego")
        if cls == VEHICLE and raster[ij[1], ij[0]] not in DRIVABLE_CLASSES:
            raise EditError(f"{where}: {at} is off the road; a vehicle must stand on the drivable area")
        # the ego's box first, then every agent present at t0 (but the one being placed)
        exy, eyaw = _ego_pose(self.log, self.t0)
        ego_center = exy + EGO_REAR_AXLE_TO_CENTER * np.array([math.cos(eyaw), math.sin(eyaw)])
        others = np.flatnonzero(self.valid[:, self.t0] & (np.arange(self.valid.shape[0]) != skip))
        centers = np.concatenate([ego_center[None], self.xy[others, self.t0]]) - xy  # relative: float32 is exact enough
        yaws = np.concatenate([[eyaw], self.yaw[others, self.t0]])
        sizes = np.concatenate([np.asarray(self.log.ego.size, np.float32)[None, :2], self.size[others, :2]])
        hit = np.asarray(
            overlap_one_to_many(
                np.zeros(2, np.float32),
                np.float32(yaw),
                np.asarray(size[:2], np.float32),
                centers.astype(np.float32),
                yaws.astype(np.float32),
                sizes,
            )
        )
        if hit[0]:
            raise EditError(f"{where}: the box at {at} overlaps the ego at t0 = {_seconds(self.log, self.t0)}")
        if hit[1:].any():
            a = int(others[np.flatnonzero(hit[1:])[0]])
            tok = f" ({self.tokens[a][:8]})" if self.tokens[a] else ""
            raise EditError(
                f"{where}: the box at {at} overlaps agent {a}{tok} at t0 = {_seconds(self.log, self.t0)}; "
                "pick a free spot (--list-agents shows where the agents are)"
            )

    # ---- writing tracks
    def write(self, a: int, xy: np.ndarray, yaw: np.ndarray) -> None:
        """Agent a's track from t0 on: (T - t0, 2) positions and headings; present throughout."""
        t0 = self.t0
        self.xy[a, t0:] = xy
        self.yaw[a, t0:] = _wrap(yaw)
        self.vel[a, t0:] = _velocity(xy, self.dt)
        self.valid[a, t0:] = True

    # ---- the edits
    def remove(self, edit: Remove) -> None:
        a = self.agent(edit)
        self.valid[a, self.t0 :] = False
        self.touched[a] = "removed"

    def move(self, edit: Move) -> None:
        a = self.agent(edit)
        t0 = self.t0
        yaw_rel = float(self.yaw[a, t0] - self.log.ego.yaw[t0]) if edit.yaw is None else edit.yaw
        gx, gy, gyaw = ego_to_global(self.log, t0, edit.x, edit.y, yaw_rel)
        new = np.array([gx, gy])
        self.check_place(edit, new, gyaw, self.size[a], int(self.category[a]), skip=a)
        turn = float(_wrap(gyaw - self.yaw[a, t0])) if edit.yaw is not None else 0.0
        c, s = math.cos(turn), math.sin(turn)
        rot = np.array([[c, -s], [s, c]])
        rel = self.xy[a, t0:] - self.xy[a, t0]
        self.xy[a, t0:] = new + rel @ rot.T
        self.vel[a, t0:] = self.vel[a, t0:] @ rot.T
        self.yaw[a, t0:] = self.yaw[a, t0:] + turn
        self.touched[a] = "moved"

    def set_speed(self, edit: ChangeSpeed) -> None:
        if not (math.isfinite(edit.speed) and 0 <= edit.speed <= MAX_SPEED):
            raise EditError(f"{self.where(edit)}: the speed must be between 0 and {MAX_SPEED:g} m/s")
        a = self.agent(edit)
        t0 = self.t0
        future = np.flatnonzero(self.valid[a, t0:]) + t0
        path = _Path.of(self.xy[a, future], self.yaw[a, future], float(self.yaw[a, t0]))
        xy, yaw = path.at(edit.speed * self.t)
        self.write(a, xy, yaw)
        self.touched[a] = "re-timed"

    def insert(self, edit: Insert) -> int:
        name = _category_name(edit)
        where = self.where(edit)
        if edit.behaviour not in BEHAVIOURS:
            raise EditError(f"{where}: unknown behaviour {edit.behaviour!r}; use lane, straight or static")
        if not (math.isfinite(edit.speed) and 0 <= edit.speed <= MAX_SPEED):
            raise EditError(f"{where}: the speed must be between 0 and {MAX_SPEED:g} m/s")
        size = np.asarray(edit.size or DEFAULT_SIZES[name], np.float32)
        cls = agent_class_of(name)
        gx, gy, gyaw = ego_to_global(self.log, self.t0, edit.x, edit.y, edit.yaw)
        start = np.array([gx, gy])
        self.check_place(edit, start, gyaw, size, cls)
        free = np.flatnonzero(~self.used)
        if len(free) == 0:
            raise EditError(
                f"{where}: no free agent slot is left (all {len(self.used)} are in use); load the log with more "
                "agent slots (LoadConfig.max_agents)"
            )
        a = int(free[0])
        behaviour = _effective_behaviour(name, edit.behaviour)
        distance = edit.speed * self.t if behaviour != "static" else np.zeros_like(self.t)
        if behaviour == "lane":
            xy, yaw = self._lane_track(edit, start, gyaw, distance)
        else:
            xy, yaw = _Path.of(start[None], None, gyaw).at(distance)
            yaw = np.full_like(distance, gyaw)
        self.used[a] = True
        self.size[a] = size
        self.category[a] = cls
        self.z[a] = size[2] / 2
        self.valid[a] = False
        self.write(a, xy, yaw)
        self.touched[a] = "inserted"
        return a

    def _lane_track(self, edit, start: np.ndarray, yaw0: float, distance: np.ndarray):
        m = self.log.map
        lane_valid = np.asarray(m.lane_valid)
        if not lane_valid.any():
            raise EditError(f"{self.where(edit)}: the map has no lanes here; use behaviour straight or static")
        # enough lane segments to cover the distance driven (a power of two: few compilations)
        d = np.diff(np.asarray(m.lane_xy, np.float64)[lane_valid], axis=1)
        seg_len = max(float(np.median(np.hypot(d[..., 0], d[..., 1]).sum(axis=1))), 1.0)
        reach = float(distance[-1]) + 2 * LANE_BLEND
        n_segments = int(2 ** math.ceil(math.log2(max(8.0, reach / seg_len + 2))))
        route, _ = _lane_path()(
            jax.tree.map(jnp.asarray, m), jnp.asarray(start, jnp.float32), jnp.float32(yaw0),
            jnp.zeros((1, 2), jnp.float32), jnp.zeros(1, bool), n_segments,
        )  # fmt: skip
        n = int(max(np.asarray(route.valid).sum(), 1))
        pts = np.asarray(route.xy, np.float64)[:n]
        path = _Path.of(pts, None, yaw0)
        s0, lat0 = path.project(start)
        _, tangent0 = path.at(np.array([s0]))
        dyaw0 = float(_wrap(yaw0 - tangent0[0]))
        if abs(lat0) > LANE_SNAP:
            raise EditError(
                f"{self.where(edit)}: no lane within {LANE_SNAP:g} m going its way (the nearest is {abs(lat0):.1f} m "
                "off); place it on a lane, or use behaviour straight or static"
            )
        if abs(dyaw0) > math.radians(60):
            raise EditError(
                f"{self.where(edit)}: the nearest lane runs {math.degrees(abs(dyaw0)):.0f} degrees off its heading; "
                "turn it to the lane's direction, or use behaviour straight or static"
            )
        blend = 0.5 * (1.0 + np.cos(math.pi * np.clip(distance / LANE_BLEND, 0.0, 1.0)))
        xy, tangent = path.at(s0 + distance)
        normal = np.stack([-np.sin(tangent), np.cos(tangent)], axis=-1)
        return xy + (lat0 * blend)[:, None] * normal, tangent + dyaw0 * blend

    def crossing(self, edit: PedestrianCrosses) -> int:
        x, y, yaw = crossing_pose(self.log, self.t0, edit)
        local = global_to_ego(self.log, self.t0, np.array([x, y]))
        rel_yaw = float(_wrap(yaw - float(self.log.ego.yaw[self.t0])))
        insert = Insert(PEDESTRIAN_CATEGORY, float(local[0]), float(local[1]), rel_yaw, edit.speed, "straight")
        try:
            return self.insert(insert)
        except EditError as e:
            raise EditError(str(e).replace(self.where(insert), self.where(edit))) from None

    def apply(self, edit: Edit) -> None:
        if isinstance(edit, EgoEdit):
            _check_ego_edit(edit, self.log, self.t0)
        elif isinstance(edit, Remove):
            self.remove(edit)
        elif isinstance(edit, Move):
            self.move(edit)
        elif isinstance(edit, ChangeSpeed):
            self.set_speed(edit)
        elif isinstance(edit, Insert):
            self.insert(edit)
        elif isinstance(edit, PedestrianCrosses):
            self.crossing(edit)
        else:
            raise TypeError(f"not an edit: {edit!r}")


def crossing_pose(log: Log, t0: int, edit: PedestrianCrosses) -> tuple[float, float, float]:
    """Global start pose (x, y, yaw) of the pedestrian of a `PedestrianCrosses`: just off the road
    edge beside the point `ahead` m along the ego's logged path, facing across the road."""
    where = f"--edit {spec_of(edit)!r}"
    if not (edit.ahead > 0 and 0 < edit.speed <= MAX_SPEED and edit.side in ("left", "right")):
        raise EditError(f"{where}: give ahead > 0 m, a speed > 0 m/s and a side (left or right)")
    (p,), (heading,) = _logged_ego_path(log, t0).at(np.array([edit.ahead]))
    sign = 1.0 if edit.side == "left" else -1.0
    out = sign * np.array([-math.sin(heading), math.cos(heading)])  # towards the pedestrian's side
    m = log.map
    res = float(m.raster_resolution)
    raster = np.asarray(m.raster)
    origin = np.asarray(m.raster_origin, np.float64)
    r = np.arange(0.0, 40.0, res / 2)
    pts = p + r[:, None] * out
    ij = np.floor((pts - origin) / res).astype(int)
    inside = (ij >= 0).all(axis=1) & (ij[:, 0] < raster.shape[1]) & (ij[:, 1] < raster.shape[0])
    cls = np.where(
        inside, raster[np.clip(ij[:, 1], 0, raster.shape[0] - 1), np.clip(ij[:, 0], 0, raster.shape[1] - 1)], 255
    )
    on_road = np.isin(cls, DRIVABLE_CLASSES)
    if not on_road[0]:
        raise EditError(f"{where}: the ego's path {edit.ahead:g} m ahead is not on the road; try another distance")
    off = np.flatnonzero(~on_road)
    if len(off) == 0 or not inside[off[0]]:
        raise EditError(
            f"{where}: no road edge within 40 m on the {edit.side} of the ego's path {edit.ahead:g} m ahead"
        )
    half = 0.5 * max(DEFAULT_SIZES[PEDESTRIAN_CATEGORY][:2])
    start = p + (r[off[0]] + half + 0.1) * out
    yaw = math.atan2(-out[1], -out[0])
    return float(start[0]), float(start[1]), yaw


def validate(log: Log, info: LogInfo | None, t0: int, edits: Sequence[Edit], horizon_steps: int | None = None) -> None:
    """Refuse (`EditError`, one line) the first edit that makes no sense in this log at t0.

    Checks, each against the world the earlier edits left: t0 lies in the log (and t0 + horizon,
    if given); agents exist and are present at t0 (slot or unique token prefix); positions are on
    the map, vehicles on drivable ground; a placed box overlaps neither the ego nor any agent at t0;
    a free slot is left for each insert; at most one ego edit, with sane values.
    """
    _edit_log(log, info, t0, edits, horizon_steps)


def apply_to_log(log: Log, info: LogInfo | None, t0: int, edits: Sequence[Edit], horizon_steps: int) -> Log:
    """The log with its agent tracks edited from step t0 on (host numpy in and out, same shapes).

    What the non-reactive reference engine replays: remove -> invalid from t0; move -> the future
    track shifted (and turned about the new centre) to start at the new pose; speed -> the logged
    future path at the new constant speed (straight on past its end); insert -> the lowest free
    slot, present from t0: static, straight at constant speed along its heading, or along the
    nearest lane's centreline at constant speed (joining it over `LANE_BLEND` m); pedestrian
    crosses -> an inserted pedestrian walking straight across the road from its edge. Edited and
    inserted agents stay present to the end of the log. Ego edits do not change the log (see
    `ego_poses`). `horizon_steps`: the rollout's length; t0 + horizon_steps must lie in the log.
    """
    return _edit_log(log, info, t0, edits, horizon_steps)


def _edit_log(log, info, t0, edits, horizon_steps) -> Log:
    _check_t0(log, t0)
    T = log.num_steps
    if horizon_steps is not None and (horizon_steps < 1 or t0 + horizon_steps > T - 1):
        end = float(np.asarray(log.time)[T - 1])
        raise EditError(
            f"t0 = {_seconds(log, t0)} plus a horizon of {horizon_steps} steps runs past the end of the log "
            f"({end:.1f} s); pick an earlier t0 or a shorter horizon"
        )
    egos = [e for e in edits if isinstance(e, EgoEdit)]
    if len(egos) > 1:
        raise EditError(f"{len(egos)} ego edits ({', '.join(spec_of(e) for e in egos)}); give at most one")
    editor = _Editor(log, info, t0)
    for edit in edits:
        editor.apply(edit)
    return editor.result()

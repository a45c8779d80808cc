"""Scenario selection: start times taken from logs, tagged by what happens after them.

A scenario is (log, start step t0, horizon). Starts are taken every `stride` steps where the log
has `history` steps before and `horizon` steps after. Tags come from the logged future, so that a
benchmark can report per scenario type:

- following: a vehicle is ahead in the ego's corridor (within 30 m) for half the horizon or more;
- stop: the ego comes to a stop (below 0.3 m/s) after moving (above 2 m/s), or stands still;
- turn: the ego's heading changes by more than 35 degrees;
- lane_change: the ego moves sideways by more than 2.5 m relative to its start heading while
  turning less than 20 degrees;
- pedestrian_crossing: a pedestrian is in front of the ego (within 25 m ahead, 4 m sideways);
- red_light: the stop line of a red light of the ego's direction is in front of it (within 40 m
  ahead, 2 m sideways) with no vehicle in between, at some step: the light, not a queue, is what
  stops the ego (only where the data has light states).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from drivesim.data.classes import PEDESTRIAN, VEHICLE
from drivesim.data.types import Log

TAGS = ("following", "stop", "turn", "lane_change", "pedestrian_crossing", "red_light")


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One benchmark scenario."""

    log_index: int
    """Index of the log in the list the scenarios were selected from."""
    scene: str
    t0: int
    """Start step in the log (10 Hz)."""
    horizon: int
    """Steps to simulate."""
    tags: tuple[str, ...]


def _ego_frame(points, xy, yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    d = points - xy
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


def tag_scenario(log: Log, t0: int, horizon: int) -> tuple[str, ...]:
    """Tags of the logged future [t0, t0 + horizon] (see the module docstring)."""
    ego_xy = np.asarray(log.ego.xy, np.float64)
    ego_yaw = np.asarray(log.ego.yaw, np.float64)
    speed = np.linalg.norm(np.asarray(log.ego.velocity), axis=-1)
    steps = np.arange(t0, t0 + horizon + 1)
    tags = []
    ag = log.agents
    xy = np.asarray(ag.xy, np.float64)[:, steps]
    valid = np.asarray(ag.valid)[:, steps]
    cat = np.asarray(ag.category)
    ahead = np.zeros(len(steps), bool)
    ped = False
    for i, t in enumerate(steps):
        local = _ego_frame(xy[:, i], ego_xy[t], ego_yaw[t])
        front = valid[:, i] & (local[:, 0] > 2.0)
        ahead[i] = np.any(front & (cat == VEHICLE) & (local[:, 0] < 30.0) & (np.abs(local[:, 1]) < 2.0))
        ped |= bool(np.any(front & (cat == PEDESTRIAN) & (local[:, 0] < 25.0) & (np.abs(local[:, 1]) < 4.0)))
    if ahead.mean() >= 0.5:
        tags.append("following")
    v = speed[steps]
    moving_then_stop = (v.max() > 2.0) and np.any(v[np.argmax(v > 2.0) :] < 0.3)
    if moving_then_stop or v.max() < 0.3:
        tags.append("stop")
    dyaw = (ego_yaw[steps[-1]] - ego_yaw[t0] + np.pi) % (2 * np.pi) - np.pi
    if abs(dyaw) > np.radians(35):
        tags.append("turn")
    lateral = _ego_frame(ego_xy[steps], ego_xy[t0], ego_yaw[t0])[:, 1]
    if abs(dyaw) < np.radians(20) and np.abs(lateral).max() > 2.5:
        tags.append("lane_change")
    if ped:
        tags.append("pedestrian_crossing")
    if _red_light_ahead(log, steps, ego_xy, ego_yaw, xy, valid & (cat == VEHICLE)[:, None]):
        tags.append("red_light")
    return tuple(tags)


def _red_light_ahead(log: Log, steps, ego_xy, ego_yaw, vehicle_xy, vehicle_valid) -> bool:
    """A red stop line of the ego's direction within 40 m ahead in its lane, with no vehicle (xy
    (A, n, 2), valid (A, n) over `steps`) between the ego and the line, at some step."""
    sig = log.signals
    if not bool(np.asarray(sig.known)):
        return False
    centre = np.asarray(sig.centre, np.float64)
    facing = np.cos(np.asarray(sig.yaw, np.float64)[None, :] - ego_yaw[steps][:, None]) > 0.5  # (n, S)
    red = np.asarray(sig.red)[steps] & np.asarray(sig.valid)[None, :] & facing
    for i, t in enumerate(steps):
        if not red[i].any():
            continue
        local = _ego_frame(centre[red[i]], ego_xy[t], ego_yaw[t])
        near = (local[:, 0] > 0.0) & (local[:, 0] < 40.0) & (np.abs(local[:, 1]) < 2.0)
        if not near.any():
            continue
        line = local[near, 0].min()
        cars = _ego_frame(vehicle_xy[vehicle_valid[:, i], i], ego_xy[t], ego_yaw[t])
        if not np.any((cars[:, 0] > 0.0) & (cars[:, 0] < line) & (np.abs(cars[:, 1]) < 2.0)):
            return True
    return False


def select_scenarios(
    logs: list[Log], scenes: list[str], horizon: int = 80, history: int = 20, stride: int = 20
) -> list[Scenario]:
    """Scenarios from logs at 10 Hz: every `stride` steps with `history` before and `horizon` after."""
    out = []
    for i, (log, scene) in enumerate(zip(logs, scenes, strict=True)):
        valid = np.asarray(log.ego.valid)
        T = int(valid.sum())
        for t0 in range(history, T - horizon, stride):
            if valid[t0 : t0 + horizon + 1].all():
                out.append(Scenario(i, scene, t0, horizon, tag_scenario(log, t0, horizon)))
    return out

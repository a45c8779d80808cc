"""The map from log edits (`drivesim.sim.edits`) to the synthetic world's edits
(`drivesim.synth.world`), so that `resimulate(plan, float(log.time[t0]), ...)` gives the true
counterfactual of a synthetic scene.

The two vocabularies differ because they speak of different things. A log edit names an agent by
its slot or token in the `Log` and places things in the ego frame at t0, as a user types them; the
world's edits name an agent by its uid in the simulation and place things in the global frame:

| log edit (`drivesim.sim.edits`) | world edit (`drivesim.synth.world`) |
|---|---|
| `Remove(agent)` | `RemoveAgent(uid)` |
| `Insert(category, x, y, yaw, speed, behaviour, size)` | `InsertAgent(category, X, Y, YAW, speed, behaviour, size)` |
| `Move(agent, x, y, yaw)` | `MoveAgent(uid, X, Y, YAW)` |
| `ChangeSpeed(agent, speed)` | `SetSpeed(uid, speed)` |
| `PedestrianCrosses(ahead, speed, side)` | `InsertAgent("human.pedestrian.adult", ..., "straight")` |
| `EgoEdit(kind, ...)` | `EgoTrajectory(poses)` (the commanded path, global) |
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from drivesim.data.types import Log, LogInfo
from drivesim.sim.edits import (
    PEDESTRIAN_CATEGORY,
    ChangeSpeed,
    Edit,
    EditError,
    EgoEdit,
    Insert,
    Move,
    PedestrianCrosses,
    Remove,
    _category_name,
    _ego_pose,
    crossing_pose,
    ego_to_global,
    resolve_agent,
)
from drivesim.sim.edits import ego_poses as commanded_poses
from drivesim.synth import world

_UID_SEARCH = 100_000
_uid_tables: dict[str, dict[str, int]] = {}


def synth_uid(info: LogInfo, slot: int) -> int:
    """The synthetic world's uid of an agent slot of a log loaded from a drivesim synthetic
    dataroot. The writer names instances `token("instance", scene_token, uid)` (an md5), so the
    uid is found by hashing candidate uids (traffic uids count up from 0)."""
    from drivesim.synth.map_expansion import token

    tok = info.agent_tokens[slot] if 0 <= slot < len(info.agent_tokens) else ""
    if not tok:
        raise EditError(f"agent slot {slot} has no instance token in {info.scene_name}")
    table = _uid_tables.setdefault(info.scene_token, {})
    if tok not in table:
        start = len(table)
        for uid in range(start, _UID_SEARCH):
            t = token("instance", info.scene_token, uid)
            table[t] = uid
            if t == tok:
                break
        else:
            raise EditError(
                f"agent {tok[:8]} of {info.scene_name} is not a drivesim synthetic agent (no uid below "
                f"{_UID_SEARCH} has its token); only synthetic scenes can be re-simulated"
            )
    return table[tok]


def to_synth_edits(
    edits: Sequence[Edit],
    log: Log,
    info: LogInfo | None,
    t0: int,
    ego_poses: np.ndarray | None = None,
    *,
    uids: Sequence[int] | None = None,
) -> list:
    """The same edits for the synthetic world, so that `resimulate(plan, float(log.time[t0]), ...)`
    gives the true counterfactual of a synthetic scene.

    Agents become uids (from `uids`, the uid of each slot as `drivesim.synth.truth.record_log`
    returns them, or else from the instance tokens in `info`); ego-frame poses become global ones
    (the synthetic world's frame is the log's global frame); an ego edit becomes an
    `EgoTrajectory` through the pose at t0 and `ego_poses` ((H, 3) as `ego_poses` returns; None:
    computed to the end of the log), so the true ego follows the commanded path exactly. Validate
    the edits first (`validate`): this only translates them.

    The synthetic world's agents react (IDM): a moved or re-timed vehicle drives on in its new lane
    at its new desired speed, where the edited log replays a fixed track, and an inserted vehicle
    always follows a lane there (even with behaviour "straight").
    """

    if abs(log.dt - 0.1) > 1e-4:
        raise EditError(f"the synthetic world runs at 10 Hz; load the log at 10 Hz (it has steps of {log.dt:g} s)")

    def uid(ref) -> int:
        a = resolve_agent(log, info, t0, ref)
        if uids is not None:
            if uids[a] < 0:
                raise EditError(f"agent slot {a} has no synthetic uid")
            return int(uids[a])
        if info is None:
            raise EditError("to_synth_edits needs the log's info (instance tokens) or uids")
        return synth_uid(info, a)

    out = []
    for edit in edits:
        if isinstance(edit, Remove):
            out.append(world.RemoveAgent(uid(edit.agent)))
        elif isinstance(edit, Move):
            a = resolve_agent(log, info, t0, edit.agent)
            yaw_rel = 0.0 if edit.yaw is None else edit.yaw
            x, y, yaw = ego_to_global(log, t0, edit.x, edit.y, yaw_rel)
            out.append(world.MoveAgent(uid(a), x, y, None if edit.yaw is None else yaw))
        elif isinstance(edit, ChangeSpeed):
            out.append(world.SetSpeed(uid(edit.agent), float(edit.speed)))
        elif isinstance(edit, Insert):
            name = _category_name(edit)
            x, y, yaw = ego_to_global(log, t0, edit.x, edit.y, edit.yaw)
            out.append(world.InsertAgent(name, x, y, yaw, float(edit.speed), edit.behaviour, edit.size))
        elif isinstance(edit, PedestrianCrosses):
            x, y, yaw = crossing_pose(log, t0, edit)
            out.append(world.InsertAgent(PEDESTRIAN_CATEGORY, x, y, yaw, float(edit.speed), "straight"))
        elif isinstance(edit, EgoEdit):
            poses = (
                commanded_poses(edit, log, t0, log.num_steps - 1 - t0)
                if ego_poses is None
                else np.asarray(ego_poses, np.float64).reshape(-1, 3)
            )
            exy, eyaw = _ego_pose(log, t0)
            full = np.concatenate([[[exy[0], exy[1], eyaw]], poses])
            out.append(world.EgoTrajectory(tuple(tuple(float(v) for v in row) for row in full)))
        else:
            raise TypeError(f"not an edit: {edit!r}")
    return out

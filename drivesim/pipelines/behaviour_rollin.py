"""Roll-in scenes for the behaviour model (DAgger): states the model drives itself into, labelled by
the world's own drivers.

A sampled behaviour model drifts into states the world's logs never show: a car closing on a
stopped one at a gap no driver of the world keeps, a car still standing after the light ahead
turned green. Logs of the world cannot teach it to recover from them; the world can. For each scene
(`rollin_scene`):

1. the world runs as it writes its logs (`simulate`);
2. from a random keyframe t0 the behaviour model drives every agent present (the ego replays the
   log, as in `drivesim.pipelines.behaviour_eval`) for k keyframes (1 to 6 s) in the kinematic
   engine: the roll-in;
3. the world is re-simulated, and at t0 + k every rolled-in agent is put where the model took it
   (box centre, heading, speed; vehicles snap to their lane); from there the world's drivers
   drive on by their own rules (`resimulate`'s `each_step`);
4. the training arrays are the re-simulated world's 2 Hz log with the keyframes between t0 and
   t0 + k replaced by the roll-in's, so the history an example shows is the one the model made;
   the agents' labels of the roll-in (the model's own motion, not the world's) are dropped, and
   the labels from t0 + k on are the world's reaction to the states the model reached.

`edited=True` starts the roll-in at a sudden ego manoeuvre (`behaviour.ego_edit`: a hard brake, a
lane change, a speed-up), the states where the model's reactions matter most.

This is DAgger's loop (roll in with the learner, label with the expert) with the synthetic world as
the expert; `AgentPushes` is its hand-made forerunner (random speed pushes).
"""

from __future__ import annotations

import dataclasses

import numpy as np

ROLLIN_HORIZON = 60
"""Sim steps every roll-in runs (one compiled shape); the teleport reads step 5 k <= 60."""
ROLLIN_KEYS = (2, 13)
"""Roll-in length in keyframes: drawn from [2, 13), i.e. 1 to 6 s (the benchmark runs 8 s)."""
FIRST_KEY = 4
"""The earliest roll-in start (keyframe): 2 s of history before it."""

_WORKER: dict = {}
"""Per-process cache: the loaded model and its compiled roll-in (workers are reused)."""


def rollin_plan(recipe, keyframes: int, edit_time: float | None = None) -> tuple[int, int]:
    """(t0 keyframe, roll-in length in keyframes) of a scene, deterministic in its seed. With an ego
    edit at `edit_time` (s) the roll-in starts at the keyframe of the edit or the one before it, so
    that the model drives the agents through the edit."""
    rng = np.random.default_rng([recipe.seed, 5151])
    k = int(rng.integers(*ROLLIN_KEYS))
    if edit_time is None:
        t0 = int(rng.integers(FIRST_KEY, max(FIRST_KEY + 1, keyframes - k - 4)))
    else:
        t0 = max(FIRST_KEY, int(edit_time / 0.5) - int(rng.integers(0, 2)))
    return t0, max(1, min(k, keyframes - 2 - t0))


def _rollin_fn(model_path: str):
    """(handle, compiled function (log, t0, key) -> agents' xy, yaw, speed, valid over the roll-in)."""
    if _WORKER.get("path") != model_path:
        import jax

        from drivesim.model.behaviour_file import load_behaviour
        from drivesim.planners.builtin import BUILTIN
        from drivesim.sim.engine import SimConfig, reset, rollout
        from drivesim.sim.learned_agents import BehaviourHandle

        handle = BehaviourHandle.of(load_behaviour(model_path))
        sim = SimConfig(agents="learned")

        @jax.jit
        def run(handle, log, t0, key):
            st = reset(log, t0, key, sim, handle)
            _, tr = rollout(st, BUILTIN["expert"], None, ROLLIN_HORIZON, key, sim)
            a = tr.agents
            return a.xy, a.yaw, a.speed, a.valid

        _WORKER.update(path=model_path, handle=handle, run=run)
    return _WORKER["handle"], _WORKER["run"]


def _teleport(at_step: int, states: dict):
    """`resimulate`'s `each_step`: at `at_step`, put each agent uid -> (x, y, yaw, speed) there."""
    moved: list[int] = []

    def hook(world, i: int) -> None:
        if i != at_step:
            return
        for uid, (x, y, yaw, speed) in states.items():
            try:
                k = world.slot_of(uid)
            except KeyError:
                continue
            if not world.active[k]:
                continue
            world.move(uid, x, y, yaw)
            world.v[k] = max(float(speed), 0.0)
            moved.append(uid)

    hook.moved = moved
    return hook


def rollin_scene(recipe, stride: int, model_path: str, seed: int = 0, edited: bool = False) -> dict:
    """The training arrays of one roll-in scene (`scene_arrays` keys, plus `rollin`: (t0, k, agents
    moved, their mean displacement from the world's own positions at t0 + k in metres)). With
    `edited` the ego does something sudden (`behaviour.ego_edit`) and the roll-in starts there:
    the model's agents meet the edit, and the world says how its drivers would have recovered."""
    import jax

    from drivesim.model.behaviour_task import scene_arrays
    from drivesim.pipelines.behaviour import TRAFFIC_LOAD, edited_world
    from drivesim.pipelines.behaviour_eval import EVAL_LOAD
    from drivesim.synth.dataset import plan_for
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import resimulate, simulate

    plan = plan_for(recipe)
    steps = int(round((recipe.seconds - 0.5) * 10)) + 1
    load10 = dataclasses.replace(EVAL_LOAD, max_steps=steps)
    edit_time, edits = None, ()
    if edited:
        edit_time, edits, orig = edited_world(plan, recipe)
    else:
        orig = simulate(plan)
    log10, uids10 = record_log(orig, load10)
    keyframes = (steps - 1) // 5 + 1
    t0k, k = rollin_plan(recipe, keyframes, edit_time)
    handle, run = _rollin_fn(model_path)
    key = jax.random.fold_in(jax.random.key(seed), recipe.seed % 2**31)
    xy, yaw, speed, valid = (np.asarray(a) for a in run(handle, log10, 5 * t0k, key))  # (H + 1, A, ...)

    at = 5 * (t0k + k)
    states, history = {}, {}
    for a, uid in enumerate(uids10):
        if uid < 0 or not valid[0, a] or not valid[5 * k, a]:
            continue
        states[uid] = (*(float(v) for v in xy[5 * k, a]), float(yaw[5 * k, a]), float(speed[5 * k, a]))
        history[uid] = [(xy[5 * j, a], yaw[5 * j, a], speed[5 * j, a]) for j in range(1, k)]
    hook = _teleport(at, states)
    record = resimulate(plan, edit_time, edits, each_step=hook)
    slot_o = {u: s for s, u in enumerate(orig.uids)}
    drift = [
        float(np.hypot(*(np.array(states[u][:2]) - orig.center[slot_o[u], at]))) for u in hook.moved if u in slot_o
    ]

    log2, uids2 = record_log(record, TRAFFIC_LOAD)
    ag = log2.agents
    axy, ayaw, avel = np.array(ag.xy), np.array(ag.yaw), np.array(ag.velocity)
    avalid = np.asarray(ag.valid)
    for row, uid in enumerate(uids2):
        for j, (p, h, v) in enumerate(history.get(uid, ()), start=1):
            t = t0k + j
            if t < avalid.shape[1] and avalid[row, t]:
                axy[row, t], ayaw[row, t] = p, h
                avel[row, t] = v * np.array([np.cos(h), np.sin(h)])
    log2 = log2.replace(agents=ag.replace(xy=axy, yaw=ayaw, velocity=avel))
    arrays = scene_arrays(log2, stride)
    # the roll-in's motion is the model's, not the world's: no labels for any agent there
    arrays["target_valid"][1:, t0k : t0k + k] = False
    arrays["controls"][1:, t0k : t0k + k] = 0.0
    arrays["tokens"][1:, t0k : t0k + k] = 0
    arrays["rollin"] = np.array([t0k, k, len(hook.moved), np.mean(drift) if drift else 0.0], np.float32)
    return arrays

"""How well simulated agents match the synthetic world: open-loop accuracy, physical plausibility,
realism and reactivity, for the learned behaviour model and its two stand-ins.

Agent models compared (`drivesim.sim.engine.SimConfig.agents`): "learned" (the behaviour model,
`samples` sampled futures), "cv" (constant velocity) and "idm" (the reference IDM lane followers
for the vehicles it controls; the others at constant velocity, so that no row reads the log's
future). Every rollout runs in the kinematic engine at 10 Hz with the ego replaying the log (the
expert planner), from scenario starts of held-out synthetic scenes, never seen in training.

- accuracy: minADE over the samples at 3 s and 8 s (keyframes, 0.5 s apart) and miss rate
  (min final displacement > 2 m), against the logged agents; all agents present at the start;
- plausibility: the share of agents that collide with another agent (pairs that did not overlap
  at the start) and of vehicles that leave the drivable area, against the truth's own rates;
- realism: Jensen-Shannon divergence (base 2) of the distributions of speed, acceleration, yaw
  rate, distance to the nearest object and time to collision, against the truth (in the spirit
  of the Waymo Sim Agents metrics);
- reactivity (`reactivity`): the ego is edited (hard brake, stop, cut-in) and the scene
  re-simulated by the truth world; for the agents the edit affects, displacement from the true
  re-simulation, against log replay's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from drivesim.data.classes import OCC_CROSSING, OCC_DRIVABLE, OCC_LANE_MARKING, VEHICLE
from drivesim.data.geometry import overlap_in_frame
from drivesim.data.loader import LoadConfig
from drivesim.progress import bar

EVAL_LOAD = LoadConfig(rate_hz=10.0, max_agents=64, max_lane_segments=256, raster_size=1600, max_steps=None)
MODES = ("learned", "cv", "idm")
KEY_STEPS = 5  # sim steps per keyframe


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Held-out synthetic scenes (traffic only), scenario starts and horizon."""

    seeds: tuple[int, ...] = (900, 901)
    """World seeds never used in training (training uses 100..129)."""
    scenes_per_seed: int = 8
    seconds: float = 16.0
    starts: tuple[int, ...] = (20, 60)
    """Scenario starts (10 Hz log steps; 2 s of history before the first)."""
    horizon: int = 80
    """Sim steps (0.1 s) per rollout."""


def _simulate(args):
    from drivesim.synth.dataset import plan_for
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import simulate

    recipe, load = args
    log, _ = record_log(simulate(plan_for(recipe)), load)
    return log, recipe


def heldout_logs(h: HeldOut, progress: bool = True):
    """(logs at 10 Hz with equal shapes, their recipes) of the held-out scenes."""
    from drivesim.synth.dataset import SynthConfig, scene_recipes

    recipes = [
        r for s in h.seeds for r in scene_recipes(SynthConfig(scenes=h.scenes_per_seed, seconds=h.seconds, seed=s))
    ]
    steps = int(round((h.seconds - 0.5) * 10)) + 1
    load = dataclasses.replace(EVAL_LOAD, max_steps=steps)
    out = []
    with bar(not progress, "held-out scenes", len(recipes)) as tick:
        for r in recipes:
            out.append(_simulate((r, load)))
            tick()
    return [o[0] for o in out], [o[1] for o in out]


def _stack(logs):
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *logs)


def rollouts(
    logs, starts, mode: str, behaviour, samples: int, horizon: int, seed: int = 0, batch: int = 8,
    temperature: float = 1.0, agent_every: int = 1,
):  # fmt: skip
    """Agent rollouts with the ego replaying the log. Returns a dict of host arrays with a leading
    (scenario, sample) pair of axes: xy (S, K, H + 1, A, 2), yaw, speed, valid (S, K, H + 1, A),
    controlled (S, K, A) (IDM mode: the agents IDM drives)."""
    from drivesim.planners.builtin import BUILTIN
    from drivesim.sim.engine import SimConfig, reset, rollout

    sim = SimConfig(agents=mode, temperature=temperature, agent_every=agent_every)
    planner = BUILTIN["expert"]
    handle = behaviour if mode == "learned" else None

    def one(log, t0, key):
        def sample(k):
            st = reset(log, t0, k, sim, handle)
            _, tr = rollout(st, planner, None, horizon, k, sim)
            a = tr.agents
            return {"xy": a.xy, "yaw": a.yaw, "speed": a.speed, "valid": a.valid, "controlled": st.idm.controlled}

        return jax.vmap(sample)(jax.random.split(key, samples))

    fn = jax.jit(jax.vmap(one))
    pairs = [(i, t0) for i in range(len(logs)) for t0 in starts]
    outs = []
    for b in range(0, len(pairs), batch):
        chunk = pairs[b : b + batch]
        pad = chunk + [chunk[-1]] * (batch - len(chunk))
        log = _stack([logs[i] for i, _ in pad])
        t0 = np.array([t for _, t in pad], np.int32)
        keys = jax.vmap(lambda j: jax.random.fold_in(jax.random.key(seed), j))(jnp.arange(b, b + batch))
        res = jax.device_get(fn(log, t0, keys))
        n = len(chunk)
        outs.append(jax.tree.map(lambda a, n=n: a[:n], res))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs), pairs


def truth_windows(logs, pairs, horizon: int) -> dict:
    """The logged agents over each scenario's horizon: xy (S, H + 1, A, 2), yaw, speed, valid
    (S, H + 1, A), size (S, A, 3), category (S, A), the ego's box centre ego (S, H + 1, 2) and the
    map (raster per scenario)."""
    from drivesim.data.types import EGO_REAR_AXLE_TO_CENTER

    keys = ("xy", "yaw", "speed", "valid", "size", "category", "ego", "raster", "origin", "res")
    out = {k: [] for k in keys}
    for i, t0 in pairs:
        ag = logs[i].agents
        sl = slice(t0, t0 + horizon + 1)
        eyaw = np.asarray(logs[i].ego.yaw)[sl]
        out["ego"].append(
            np.asarray(logs[i].ego.xy)[sl] + EGO_REAR_AXLE_TO_CENTER * np.stack([np.cos(eyaw), np.sin(eyaw)], -1)
        )
        out["xy"].append(np.swapaxes(np.asarray(ag.xy)[:, sl], 0, 1))
        out["yaw"].append(np.asarray(ag.yaw)[:, sl].T)
        out["speed"].append(np.linalg.norm(np.asarray(ag.velocity)[:, sl], axis=-1).T)
        out["valid"].append(np.asarray(ag.valid)[:, sl].T)
        out["size"].append(np.asarray(ag.size))
        out["category"].append(np.asarray(ag.category))
        out["raster"].append(np.asarray(logs[i].map.raster))
        out["origin"].append(np.asarray(logs[i].map.raster_origin))
        out["res"].append(float(logs[i].map.raster_resolution))
    return {k: np.stack(v) for k, v in out.items()}


def with_cv_fallback(idm: dict, cv: dict) -> dict:
    """IDM rows: the agents IDM does not drive (it would replay the log) at constant velocity."""
    ctrl = idm["controlled"][:, :, None, :]  # (S, K, 1, A)
    out = dict(idm)
    for k in ("xy", "yaw", "speed", "valid"):
        c = ctrl[..., None] if idm[k].ndim == 5 else ctrl
        out[k] = np.where(c, idm[k], cv[k])
    return out


# ------------------------------------------------------------------------------ metrics
ANNOTATION_RANGE = 60.0
"""The truth annotates agents this close to the ego (m); simulated agents are judged likewise."""


def in_range(pred: dict, truth: dict) -> np.ndarray:
    """(S, K, H + 1, A) simulated agents that are present and within the annotation range of the
    ego (the truth's own rule), so that plausibility and realism compare like with like."""
    d = np.linalg.norm(pred["xy"] - truth["ego"][:, None, :, None], axis=-1)
    return pred["valid"] & (d < ANNOTATION_RANGE)


def displacement(pred: dict, truth: dict, horizons=(30, 80), miss: float = 2.0) -> dict:
    """minADE / minFDE / miss rate at each horizon (sim steps), over agents present at the start,
    at keyframes (every 0.5 s)."""
    out = {}
    start = truth["valid"][:, 0]  # (S, A)
    for h in horizons:
        ks = np.arange(KEY_STEPS, h + 1, KEY_STEPS)
        d = np.linalg.norm(pred["xy"][:, :, ks] - truth["xy"][:, None, ks], axis=-1)  # (S, K, n, A)
        m = truth["valid"][:, ks] & start[:, None]  # (S, n, A)
        cnt = m.sum(1)  # (S, A)
        ade = (d * m[:, None]).sum(2) / np.maximum(cnt[:, None], 1)  # (S, K, A)
        has = cnt > 0
        fde = d[:, :, -1]  # (S, K, A)
        end = m[:, -1]
        min_ade = ade.min(1)[has]
        min_fde = fde.min(1)[end]
        out[f"minADE@{h / 10:g}s"] = float(min_ade.mean()) if min_ade.size else float("nan")
        out[f"minFDE@{h / 10:g}s"] = float(min_fde.mean()) if min_fde.size else float("nan")
        out[f"miss@{h / 10:g}s"] = float((min_fde > miss).mean()) if min_fde.size else float("nan")
        out[f"agents@{h / 10:g}s"] = int(has.sum())
    return out


def _pair_overlaps(xy, yaw, size, valid):
    """(A, A) bool: boxes overlapping (one step)."""
    d = xy[None, :] - xy[:, None]
    c, s = jnp.cos(yaw)[:, None], jnp.sin(yaw)[:, None]
    off = jnp.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1)
    rel = yaw[None, :] - yaw[:, None]
    half = 0.5 * size[:, :2]
    ov = jax.vmap(jax.vmap(overlap_in_frame, (0, 0, None, 0)), (0, 0, 0, None))(off, rel, half, half)
    A = xy.shape[0]
    return ov & valid[:, None] & valid[None, :] & ~jnp.eye(A, dtype=bool)


@jax.jit
def _collided(xy, yaw, size, valid):
    """(A,) bool per agent: overlaps at some keyframe another agent it did not overlap at step 0.
    xy (n, A, 2), yaw / valid (n, A), size (A, 3)."""
    ov = jax.vmap(lambda a, b, v: _pair_overlaps(a, b, size, v))(xy, yaw, valid)  # (n, A, A)
    new = ov[1:] & ~ov[0][None]
    return jnp.any(new, axis=(0, 2))


def _drivable(raster, origin, res, xy):
    R = raster.shape[-1]
    cell = np.floor((xy - origin) / res).astype(int)
    ok = np.all((cell >= 0) & (cell < R), axis=-1)
    cls = raster[np.clip(cell[..., 1], 0, R - 1), np.clip(cell[..., 0], 0, R - 1)]
    return ~ok | np.isin(cls, (OCC_DRIVABLE, OCC_CROSSING, OCC_LANE_MARKING))


def plausibility(pred: dict, truth: dict) -> dict:
    """Collision rate between agents and off-road rate of vehicles (shares of agents), for the
    prediction (averaged over samples) and the truth."""
    ks = np.arange(0, pred["xy"].shape[2], KEY_STEPS)
    S, K = pred["xy"].shape[:2]
    start = truth["valid"][:, 0]
    seen = in_range(pred, truth)
    col_p, col_t, off_p, off_t = [], [], [], []
    for s in range(S):
        size = truth["size"][s]
        tv = truth["valid"][s, ks] & start[s][None]
        col_t.append(np.asarray(_collided(truth["xy"][s, ks], truth["yaw"][s, ks], size, tv))[start[s]])
        veh = start[s] & (truth["category"][s] == VEHICLE)
        on0 = _drivable(truth["raster"][s], truth["origin"][s], truth["res"][s], truth["xy"][s, 0])
        veh = veh & on0
        dr_t = _drivable(truth["raster"][s], truth["origin"][s], truth["res"][s], truth["xy"][s, ks])  # (n, A)
        off_t.append((~dr_t & tv).any(0)[veh])
        for k in range(K):
            pv = seen[s, k, ks] & start[s][None]
            col_p.append(np.asarray(_collided(pred["xy"][s, k, ks], pred["yaw"][s, k, ks], size, pv))[start[s]])
            dr_p = _drivable(truth["raster"][s], truth["origin"][s], truth["res"][s], pred["xy"][s, k, ks])
            off_p.append((~dr_p & pv).any(0)[veh])
    mean = lambda xs: float(np.concatenate(xs).mean()) if sum(len(x) for x in xs) else float("nan")  # noqa: E731
    return {
        "collision": mean(col_p),
        "collision_truth": mean(col_t),
        "offroad": mean(off_p),
        "offroad_truth": mean(off_t),
    }


def _kinematics(xy, yaw, speed, valid, size):
    """Per (keyframe, agent) features: speed, accel, yaw rate, nearest distance, TTC (capped 5 s).
    xy (n, A, 2), yaw / speed / valid (n, A) at keyframes."""
    dt = KEY_STEPS * 0.1
    both = valid[1:] & valid[:-1]
    accel = ((speed[1:] - speed[:-1]) / dt)[both]
    yaw_rate = (((yaw[1:] - yaw[:-1] + np.pi) % (2 * np.pi) - np.pi) / dt)[both]
    d = np.linalg.norm(xy[:, None] - xy[:, :, None], axis=-1)  # (n, A, A)
    pair = valid[:, None] & valid[:, :, None] & ~np.eye(xy.shape[1], dtype=bool)[None]
    near = np.where(pair, d, np.inf).min(-1)
    vel = speed[..., None] * np.stack([np.cos(yaw), np.sin(yaw)], -1)
    radius = 0.5 * np.hypot(size[:, 0], size[:, 1]) * 0.7
    ttc = np.full(valid.shape, 5.0)
    for t in np.arange(5.0, -0.01, -0.25):  # the earliest time centres come within the radii
        p = xy + t * vel
        dd = np.linalg.norm(p[:, None] - p[:, :, None], axis=-1)
        hit = (dd < radius[None, :, None] + radius[None, None, :]) & pair
        ttc = np.where(hit.any(-1), t, ttc)
    ok = valid & np.isfinite(near)
    return {
        "speed": speed[valid], "accel": accel, "yaw_rate": yaw_rate, "nearest": near[ok], "ttc": ttc[valid],
    }  # fmt: skip


BINS = {
    "speed": np.linspace(0, 20, 41), "accel": np.linspace(-8, 4, 49), "yaw_rate": np.linspace(-1.5, 1.5, 61),
    "nearest": np.linspace(0, 40, 41), "ttc": np.linspace(0, 5.01, 22),
}  # fmt: skip


def jsd(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, 0..1) of two samples' histograms (values clipped into
    the bins)."""
    lo, hi = bins[0], bins[-1]
    p = np.histogram(np.clip(a, lo, hi), bins)[0].astype(float) + 1e-9
    q = np.histogram(np.clip(b, lo, hi), bins)[0].astype(float) + 1e-9
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)
    kl = lambda x, y: float(np.sum(x * np.log2(x / y)))  # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def realism(pred: dict, truth: dict) -> dict:
    """JSD of each feature's distribution, prediction (all samples) vs truth."""
    ks = np.arange(0, pred["xy"].shape[2], KEY_STEPS)
    S, K = pred["xy"].shape[:2]
    seen = in_range(pred, truth)
    fp, ft = {k: [] for k in BINS}, {k: [] for k in BINS}
    for s in range(S):
        start = truth["valid"][s, 0]
        tv = truth["valid"][s, ks] & start[None]
        for k, v in _kinematics(
            truth["xy"][s, ks], truth["yaw"][s, ks], truth["speed"][s, ks], tv, truth["size"][s]
        ).items():
            ft[k].append(v)
        for j in range(K):
            pv = seen[s, j, ks] & start[None]
            feats = _kinematics(
                pred["xy"][s, j, ks], pred["yaw"][s, j, ks], pred["speed"][s, j, ks], pv, truth["size"][s]
            )
            for k, v in feats.items():
                fp[k].append(v)
    return {k: jsd(np.concatenate(fp[k]), np.concatenate(ft[k]), BINS[k]) for k in BINS}


def evaluate_agents(
    logs, h: HeldOut, behaviour, samples: int = 6, seed: int = 0, progress: bool = True, temperature: float = 1.0,
    agent_every: int = 1,
) -> dict:  # fmt: skip
    """Every metric of every agent model on held-out logs: {mode: {metric: value}}."""
    runs = {}
    with bar(not progress, "agent rollouts", len(MODES)) as tick:
        for mode in MODES:
            k = samples if mode == "learned" else 1
            runs[mode], pairs = rollouts(
                logs, h.starts, mode, behaviour, k, h.horizon, seed, temperature=temperature, agent_every=agent_every
            )
            tick()
    runs["idm"] = with_cv_fallback(runs["idm"], runs["cv"])
    truth = truth_windows(logs, pairs, h.horizon)
    out = {}
    for mode in MODES:
        pred = runs[mode]
        out[mode] = {
            **displacement(pred, truth), **plausibility(pred, truth),
            **{f"jsd_{k}": v for k, v in realism(pred, truth).items()},
            "samples": int(pred["xy"].shape[1]),
        }  # fmt: skip
    out["scenarios"] = len(pairs)
    return out


# ------------------------------------------------------------------------------ reactivity
EGO_EDITS = {
    "hard_brake": (("brake", 7.0),),
    "stop": (("brake", 3.0),),
    "cut_in": (("lane_change_left", None), ("lane_change_right", None)),
}
"""Ego edits of the reactivity test: name -> the world commands to try (the first that applies)."""


def edited_scenes(recipes, edit_step: int, load, min_shift: float = 1.0, progress: bool = True):
    """Re-simulate held-out scenes under each ego edit at log step `edit_step`.

    Returns a list of cases: dict(edit, log (the edited scene at 10 Hz, the truth), truth_xy and
    replay_xy (A, T, 2) per log slot: the edited and the original world's agents, valid (A, T)
    where both exist, affected (A,) the slots whose motion the edit changes by more than
    `min_shift` metres somewhere).
    """
    from drivesim.synth.dataset import plan_for
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import EgoCommand, resimulate, simulate

    cases = []
    with bar(not progress, "edited re-simulations", len(recipes) * len(EGO_EDITS)) as tick:
        for r in recipes:
            plan = plan_for(r)
            orig = simulate(plan)
            for name, commands in EGO_EDITS.items():
                tick()
                edited = None
                for kind, value in commands:
                    try:
                        edited = resimulate(plan, edit_step * 0.1, [EgoCommand(kind, value)])
                        break
                    except ValueError:
                        continue
                if edited is None:
                    continue
                log, uids = record_log(edited, load)
                T = log.time.shape[0]
                A = len(uids)
                truth = np.zeros((A, T, 2))
                replay = np.zeros((A, T, 2))
                valid = np.zeros((A, T), bool)
                steps = np.minimum(np.arange(T), len(orig.time) - 1)
                slot_o = {u: k for k, u in enumerate(orig.uids)}
                slot_e = {u: k for k, u in enumerate(edited.uids)}
                for a, u in enumerate(uids):
                    if u < 0 or u not in slot_o or u not in slot_e:
                        continue
                    ko, ke = slot_o[u], slot_e[u]
                    truth[a] = edited.center[ke, steps]
                    replay[a] = orig.center[ko, steps]
                    valid[a] = edited.active[ke, steps] & orig.active[ko, steps]
                shift = np.where(valid, np.linalg.norm(truth - replay, axis=-1), 0.0)
                affected = shift[:, edit_step:].max(axis=1) > min_shift
                cases.append(
                    {"edit": name, "scene": r.name, "log": log, "truth_xy": truth, "replay_xy": replay,
                     "valid": valid, "affected": affected}
                )  # fmt: skip
    return cases


def reactivity(
    cases, edit_step: int, horizon: int, behaviour, samples: int = 6, seed: int = 0, progress=True,
    temperature: float = 1.0, agent_every: int = 1,
) -> dict:  # fmt: skip
    """Displacement (m, mean over keyframes and samples) of the agents each edit affects, from the
    true re-simulation: every agent model and log replay, per edit and overall."""
    logs = [c["log"] for c in cases]
    runs = {}
    for mode in MODES:
        k = samples if mode == "learned" else 1
        runs[mode], _ = rollouts(
            logs, (edit_step,), mode, behaviour, k, horizon, seed, temperature=temperature, agent_every=agent_every
        )
    runs["idm"] = with_cv_fallback(runs["idm"], runs["cv"])
    ks = np.arange(edit_step + KEY_STEPS, edit_step + horizon + 1, KEY_STEPS)
    rows = {m: {} for m in (*MODES, "log_replay")}
    for i, c in enumerate(cases):
        # the agents the models simulate: those in the log at the edit
        present = np.asarray(c["log"].agents.valid)[:, edit_step]
        m = c["valid"][:, ks] & (c["affected"] & present)[:, None]  # (A, n)
        if not m.any():
            continue
        truth = c["truth_xy"][:, ks]
        errs = {"log_replay": np.linalg.norm(c["replay_xy"][:, ks] - truth, axis=-1)[None]}
        for mode in MODES:
            pred = np.swapaxes(runs[mode]["xy"][i][:, ks - edit_step], 1, 2)  # (K, A, n, 2)
            errs[mode] = np.linalg.norm(pred - truth[None], axis=-1)
        for mode, e in errs.items():
            per_agent = (e * m[None]).sum(-1) / np.maximum(m.sum(-1), 1)  # (K, A)
            vals = per_agent.mean(0)[m.any(-1)]
            rows[mode].setdefault(c["edit"], []).extend(vals.tolist())
    out = {}
    for mode, per_edit in rows.items():
        out[mode] = {e: float(np.mean(v)) for e, v in per_edit.items()}
        out[mode]["all"] = float(np.mean([x for v in per_edit.values() for x in v])) if per_edit else float("nan")
    out["affected_agents"] = {e: len(v) for e, v in rows["log_replay"].items()}
    out["cases"] = len(cases)
    return out

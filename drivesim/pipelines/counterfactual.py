"""Counterfactual scenarios ("what if?"): a scene from t0 under edits, through the world model.

`run_counterfactual` edits a log (`drivesim.sim.edits`), drives the ego (a commanded path, a
planner, or the log), and generates the future with the world-model engine, twice:
unedited and edited, `samples` futures each. Free-running (the default, `agents="learned"`) the
other agents are the behaviour model's, sampled per future and reacting to the edit and the ego;
"cv" puts them at constant velocity; "log" / "reactive" is the guided pass-through of the edited
log (or of reactive IDM). It scores the ego under both (the world-model engine's
PDMS terms, mean and worst over futures; and the reference engine's on the edited log) and, on a
synthetic dataroot, re-simulates the same edits in the synthetic world — the true counterfactual —
and measures the generation against it (occupancy IoU, agent IoU, camera PSNR per keyframe; the
mean displacement of the log's agents from their true positions).

The ego of the truth drives exactly the path the ego drove in the first sampled future, so the
fidelity numbers measure the world, not the ego.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from drivesim.errors import DataError
from drivesim.sim import edits as E
from drivesim.sim import wm_engine

SCORE_KEYS = ("pdms", "nc", "dac", "ttc", "ep", "c")


@dataclasses.dataclass
class Counterfactual:
    """What `run_counterfactual` returns. BEV grids are the model's (G, G) 1 m grids; images its
    64x32 views; K samples, F keyframes after t0 (0.5 s apart).

    Attributes:
      scene, t0 (s), edits (their specs), ego (how the ego drove), horizon (s).
      context_images (6, h, w, 3), context_bev (G, G): the last context keyframe.
      original_bev / edited_bev (K, F, G, G); original_images / edited_images (K, F, 6, h, w, 3).
      truth_bev (F, G, G), truth_images (F, 6, h, w, 3): the re-simulated truth (synthetic only).
      original_ego_xy / edited_ego_xy (K, F + 1, 2): the ego at t0 and each keyframe, in the ego
        frame at t0.
      scores: {"original", "edited"}: world-model engine PDMS terms {key: {"mean", "worst"}};
        "edited_reference": the reference engine's on the edited log.
      fidelity: per keyframe time {"occ_iou", "agent_iou", "psnr"} (mean over samples), plus
        "mean"; None without truth.
      reads: the perception probe's logits (..., G, G, 2) of every set of views ("context",
        "original", "edited", "truth"), for the pictures; None without a probe.
    """

    scene: str
    t0: float
    edits: list[str]
    ego: str
    horizon: float
    context_images: np.ndarray
    context_bev: np.ndarray
    original_bev: np.ndarray
    edited_bev: np.ndarray
    original_images: np.ndarray
    edited_images: np.ndarray
    truth_bev: np.ndarray | None
    truth_images: np.ndarray | None
    original_ego_xy: np.ndarray
    edited_ego_xy: np.ndarray
    scores: dict
    fidelity: dict | None
    reads: dict | None = None

    def summary(self) -> dict:
        """The JSON-able part (scores, fidelity, what was run)."""
        return {
            "scene": self.scene, "t0": self.t0, "edits": self.edits, "ego": self.ego, "horizon_s": self.horizon,
            "samples": int(self.edited_bev.shape[0]), "scores": self.scores, "fidelity": self.fidelity,
            "truth": self.truth_bev is not None,
        }  # fmt: skip


def load_scene(dataroot, version: str, scene: str):
    """(10 Hz Log, LogInfo) of a dataroot scene, padded as the benchmark loads it."""
    from drivesim.data.dataroot import open_nuscenes
    from drivesim.data.loader import load_log
    from drivesim.pipelines.benchmark import BenchConfig

    nusc = open_nuscenes(dataroot, version)
    recs = [s for s in nusc.scene if s["name"] == scene]
    if not recs:
        raise DataError(f"--scene {scene}: no such scene in {dataroot} ({version}); `drivesim scenes` lists them")
    steps = int(round((recs[0]["nbr_samples"] - 1) * 0.5 * 10)) + 1
    load = dataclasses.replace(BenchConfig().load, max_steps=steps)
    return load_log(nusc, scene, load)


@functools.lru_cache(maxsize=16)
def _run_fn(planner, horizon: int, cfg: wm_engine.WMConfig, metrics):
    """jit of reset -> K sampled world-model rollouts (vmap over keys) -> scores (cached per
    planner and settings: a second counterfactual of the same shapes does not recompile)."""
    from drivesim.sim.closed_loop import evaluate, wm_pdms_terms

    terms_fn = wm_pdms_terms(metrics)

    @jax.jit
    def run(handle, log, t0, context, params, keys, behaviour):
        def one(key):
            # each future draws its own simulated agents (learned / cv); other agents ignore the key
            state = wm_engine.reset(handle, log, t0, context, key, cfg, behaviour)
            _, tr = wm_engine.rollout(handle, state, planner, params, horizon, key, cfg, terms_fn)
            trace = tr.as_trace()
            return evaluate(state.base, trace, horizon, metrics), tr

        return jax.vmap(one)(keys)

    return run


def _run(handle, log, t0, context, planner, params, horizon, keys, cfg, metrics, behaviour=None):
    """K sampled world-model rollouts (one per key) and their scores; host arrays."""
    fn = _run_fn(planner, horizon, cfg, metrics)
    scores, tr = fn(handle, log, jnp.int32(t0), context, params, keys, behaviour)
    return jax.tree.map(np.asarray, scores), jax.tree.map(np.asarray, tr)


@functools.lru_cache(maxsize=16)
def _reference_fn(planner, horizon: int, sim_cfg, metrics):
    from drivesim.sim import engine
    from drivesim.sim.closed_loop import evaluate, pdms_terms

    @jax.jit
    def run(log, t0, params, behaviour):
        state = engine.reset(log, t0, jax.random.key(0), sim_cfg, behaviour)
        _, trace = engine.rollout(state, planner, params, horizon, jax.random.key(0), sim_cfg, pdms_terms(metrics))
        return evaluate(state, trace, horizon, metrics)

    return run


def _reference(log, t0, planner, params, horizon, sim_cfg, metrics, behaviour=None):
    scores = _reference_fn(planner, horizon, sim_cfg, metrics)(log, jnp.int32(t0), params, behaviour)
    return {k: float(np.asarray(getattr(scores, k))) for k in SCORE_KEYS}


def _stats(scores) -> dict:
    return {
        k: {"mean": float(np.mean(getattr(scores, k))), "worst": float(np.min(getattr(scores, k)))} for k in SCORE_KEYS
    }


def run_counterfactual(
    handle: wm_engine.ModelHandle,
    dataroot,
    version: str,
    scene: str,
    t0: float,
    edits: list,
    horizon: float = 4.0,
    samples: int = 2,
    planner=None,
    agents: str = "learned",
    seed: int = 0,
    behaviour=None,
    probe=None,
) -> Counterfactual:
    """Generate `scene` from `t0` (s, a keyframe) under `edits` (`drivesim.sim.edits`), beside the
    unedited generation and, on synthetic data, the true re-simulation (see the module docstring).

    The ego follows an ego edit's path if there is one, else `planner` (closed loop), else the log.
    `agents`: "learned" (free-running: the behaviour model's agents, `behaviour` its handle, react
    to the edit), "cv" (constant velocity), or the guided pass-through of the edited log ("log")
    or of reactive IDM ("reactive"). `probe`: the perception probe, whose reads of every set of
    views the pictures show.
    """
    from drivesim.metrics.pdms import MetricConfig
    from drivesim.planners.builtin import FollowPoses, LogReplay
    from drivesim.sim.engine import SimConfig

    model = handle.model()
    mcfg = model.cfg
    dataroot = Path(dataroot)
    log, info = load_scene(dataroot, version, scene)
    log = jax.tree.map(np.asarray, log)
    k0 = int(round(2 * t0))
    if abs(k0 / 2 - t0) > 1e-6:
        raise DataError(f"--t0 {t0}: not a keyframe time; use a multiple of 0.5 s")
    if k0 < mcfg.history - 1:
        raise DataError(
            f"--t0 {t0}: the world model needs {(mcfg.history - 1) / 2:g} s of history; use --t0 {(mcfg.history - 1) / 2:g} or later"
        )
    F = int(round(2 * horizon))
    if F < 1:
        raise DataError(f"--horizon {horizon}: at least 0.5 s")
    step0, steps = 5 * k0, 5 * F
    T = int(np.asarray(log.ego.valid).sum())
    if step0 + steps >= T:
        raise DataError(
            f"{scene} ends at {(T - 1) / 10:g} s: t0 + horizon must end before; use an earlier --t0 or a shorter --horizon"
        )
    if samples < 1:
        raise DataError(f"--samples {samples}: at least 1")
    ego_edits = [e for e in edits if isinstance(e, E.EgoEdit)]
    agent_edits = [e for e in edits if not isinstance(e, E.EgoEdit)]
    edited_log = E.apply_to_log(log, info, step0, edits, steps)
    if ego_edits:
        poses = E.ego_poses(ego_edits[0], log, step0, steps + 45)
        drive, params, ego_name = FollowPoses(), poses, E.spec_of(ego_edits[0])
    elif planner is not None:
        drive, params, ego_name = planner, planner.init(jax.random.key(seed)), f"planner:{planner.name}"
    else:
        drive, params, ego_name = LogReplay(), None, "log"

    from drivesim.pipelines.scenario_set import load_contexts
    from drivesim.sim.scenarios import Scenario

    sc = Scenario(scene=scene, log_index=0, t0=step0, horizon=steps, tags=())
    context = jax.tree.map(lambda a: a[0], load_contexts(dataroot, version, [sc], mcfg.frame_size, mcfg.history))
    sim_cfg = SimConfig(agents={"reactive": "idm"}.get(agents, agents))
    if sim_cfg.agents != "learned":
        behaviour = None
    elif behaviour is None:
        raise ValueError("agents='learned' needs the behaviour model (behaviour=BehaviourHandle.of(model))")
    # the views: the camera refiner's where the handle carries one, else the model's own latents decoded
    cameras = "refiner" if handle.camera_graphdef is not None else "latent"
    cfg = wm_engine.WMConfig(sim=sim_cfg, layout=True, cameras=cameras)
    metrics = MetricConfig()
    keys = jax.random.split(jax.random.key(seed), samples)
    orig_scores, orig = _run(handle, log, step0, context, LogReplay(), None, steps, keys, cfg, metrics, behaviour)
    edit_scores, edit = _run(handle, edited_log, step0, context, drive, params, steps, keys, cfg, metrics, behaviour)
    reference = _reference(edited_log, step0, drive, params, steps, sim_cfg, metrics, behaviour)

    def ego_frames(tr):
        xy = tr.key_xy  # (K, F + 1, 2)
        x0, yaw0 = log.ego.xy[step0], log.ego.yaw[step0]
        d = xy - x0
        c, s = math.cos(yaw0), math.sin(yaw0)
        return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)

    from drivesim.model.predict import model_view

    ctx_images, ctx_bev = model_view(context.frames[-1], context.occupancy[-1], mcfg)
    truth_bev = truth_images = fidelity = None
    truth = _truth(dataroot, scene, log, info, step0, agent_edits, edit, F, mcfg)
    if truth is not None:
        truth_images, truth_bev = model_view(truth["frames"], truth["occupancy"], mcfg)
        fidelity = _fidelity(edit.grids[:, 1:], edit.images[:, 1:], truth_bev, truth_images)
        fidelity["mean"]["agent_displacement"] = _displacement(
            edit.agents.xy, edit.agents.valid, truth["agents_xy"], truth["agents_valid"]
        )
    reads = None
    if probe is not None:
        from drivesim.model.probe import read_views

        reads = {"context": read_views(probe, ctx_images), "original": read_views(probe, orig.images[:, 1:]),
                 "edited": read_views(probe, edit.images[:, 1:]),
                 "truth": None if truth_images is None else read_views(probe, truth_images)}  # fmt: skip
    return Counterfactual(
        scene=scene, t0=t0, edits=[E.spec_of(e) for e in edits], ego=ego_name, horizon=F / 2, reads=reads,
        context_images=ctx_images, context_bev=ctx_bev,
        original_bev=orig.grids[:, 1:].astype(np.int32), edited_bev=edit.grids[:, 1:].astype(np.int32),
        original_images=orig.images[:, 1:], edited_images=edit.images[:, 1:],
        truth_bev=truth_bev, truth_images=truth_images,
        original_ego_xy=ego_frames(orig), edited_ego_xy=ego_frames(edit),
        scores={"original": _stats(orig_scores), "edited": _stats(edit_scores), "edited_reference": reference},
        fidelity=fidelity,
    )  # fmt: skip


def _truth(dataroot: Path, scene, log, info, step0, agent_edits, edit_trace, F, mcfg) -> dict | None:
    """The synthetic world's re-simulation of the edits, the ego on the first sample's path:
    keyframes k0 + 1 .. k0 + F as cache arrays; None for a dataroot that is not synthetic."""
    from drivesim.pipelines.forecast import record_window, synth_settings
    from drivesim.pipelines.world_edits import to_synth_edits
    from drivesim.synth.dataset import load_recipes, plan_for
    from drivesim.synth.world import resimulate

    synth = synth_settings(dataroot)
    if synth is None:
        return None
    recipes = {r.name: r for r in load_recipes(dataroot)}
    if scene not in recipes:
        return None
    ego = np.concatenate([edit_trace.ego.xy[0, 1:], edit_trace.ego.yaw[0, 1:, None]], axis=-1).astype(np.float64)
    synth_edits = to_synth_edits(list(agent_edits) + [E.EgoEdit("keep")], log, info, step0, ego_poses=ego)
    record = resimulate(plan_for(recipes[scene]), float(np.asarray(log.time)[step0]), synth_edits)
    k0 = step0 // 5
    w = record_window(record, k0 + 1, k0 + F + 1, mcfg.frame_size, int(synth.get("image_width", 160)),
                      int(synth.get("jpeg_quality", 90)))  # fmt: skip
    # the true positions of the log's agents present at t0, by slot, at the keyframes
    from drivesim.pipelines.world_edits import synth_uid

    A = np.asarray(log.agents.valid).shape[0]
    xy, valid = np.zeros((A, F, 2)), np.zeros((A, F), bool)
    slot_of = {u: k for k, u in enumerate(record.uids)}
    steps = np.minimum(step0 + 5 * np.arange(1, F + 1), len(record.time) - 1)
    for a in range(A):
        if not (np.asarray(log.agents.valid)[a, step0] and info.agent_tokens[a]):
            continue
        k = slot_of.get(synth_uid(info, a))
        if k is None:
            continue
        xy[a], valid[a] = record.center[k, steps], record.active[k, steps]
    w["agents_xy"], w["agents_valid"] = xy, valid
    return w


def _displacement(trace_xy, trace_valid, truth_xy, truth_valid) -> float:
    """Mean distance (m) between generated and true positions of the log's agents at the
    keyframes where both have them (trace_xy: (K, steps + 1, A', 2), trace_valid (K, steps + 1,
    A') at 10 Hz; truth: (A, F, 2) / (A, F)). An agent the generation dropped (a log-replayed
    agent whose track ends) is not counted as metres from the origin."""
    A, F = truth_valid.shape
    k = 5 * np.arange(1, F + 1)
    gen = np.asarray(trace_xy)[:, k][:, :, :A]  # (K, F, A, 2)
    d = np.linalg.norm(gen - np.swapaxes(truth_xy, 0, 1)[None], axis=-1)
    m = np.swapaxes(truth_valid, 0, 1)[None] & np.asarray(trace_valid)[:, k][:, :, :A]
    return float((d * m).sum() / max(m.sum(), 1))


def _fidelity(bev, images, truth_bev, truth_images) -> dict:
    """Per keyframe: occupancy IoU, agent IoU and PSNR of the generation against the truth."""
    from drivesim.metrics.prediction import IouAccumulator, psnr

    K, F = bev.shape[:2]
    out, occ_all, ag_all, ps_all = {}, [], [], []
    for k in range(F):
        occ, ag, ps = [], [], []
        for i in range(K):
            acc = IouAccumulator()
            acc.update(bev[i, k], truth_bev[k])
            r = acc.result()
            occ.append(r["occupied_iou"])
            ag.append(r["iou"])
            ps.append(float(np.mean(np.asarray(psnr(images[i, k], truth_images[k])))))
        out[f"{(k + 1) / 2:g}s"] = {"occ_iou": float(np.mean(occ)), "agent_iou": float(np.nanmean(ag)) if not np.all(np.isnan(ag)) else math.nan,
                                    "psnr": float(np.mean(ps))}  # fmt: skip
        occ_all += occ
        ag_all += ag
        ps_all += ps
    ag_ok = [a for a in ag_all if not math.isnan(a)]
    out["mean"] = {"occ_iou": float(np.mean(occ_all)), "agent_iou": float(np.mean(ag_ok)) if ag_ok else math.nan,
                   "psnr": float(np.mean(ps_all))}  # fmt: skip
    return out


# ------------------------------------------------------------------ the verb
def list_scene_agents(scene: str, t0: float, dataroot=None, version="v1.0-mini", quiet=False) -> list[dict]:
    """The agents of `scene` at `t0` (s) with their IDs, printed as a table (`--list-agents`) and returned."""
    from drivesim.pipelines.defaults import console, resolve_dataroot
    from drivesim.viz.counterfactual import agents_table

    log, info = load_scene(resolve_dataroot(dataroot, version, quiet), version, scene)
    rows = E.list_agents(log, info, int(round(t0 * 10)))
    console().print(agents_table(rows, scene, t0))
    return rows


def counterfactual(out, scene: str, t0: float, edits=(), ego_planner=None, dataroot=None, version="v1.0-mini",
                   agents="learned", samples=2, horizon=4.0, checkpoint=None, seed=0, quiet=False,
                   behaviour=None) -> dict:  # fmt: skip
    """`drivesim counterfactual`: `scene` from `t0` under `edits` (CLI specs); writes
    counterfactual.json, .gif and .png under `out` and returns the summary."""
    import time

    from drivesim.atomic import strict_json, write_json
    from drivesim.errors import DrivesimError
    from drivesim.pipelines.bench import load_planners
    from drivesim.pipelines.defaults import console, load_model_file, resolve_dataroot
    from drivesim.provenance import provenance
    from drivesim.viz.counterfactual import counterfactual_frames, counterfactual_strip, counterfactual_table
    from drivesim.viz.replay import save_animation

    root = resolve_dataroot(dataroot, version, quiet)
    if not edits and not ego_planner:
        raise DrivesimError("give at least one --edit SPEC (or --ego-planner NAME); --help-edits lists the forms")
    parsed = [E.parse_edit(spec) for spec in edits]
    planner = load_planners(ego_planner, None)[ego_planner] if ego_planner else None
    model, ckpt = load_model_file(checkpoint)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DrivesimError(f"--out {out} is a file; give a folder")
    tic = time.perf_counter()
    handle = None
    if agents == "learned":
        from drivesim.model.behaviour_file import load_behaviour
        from drivesim.pipelines.defaults import DEFAULT_BEHAVIOUR
        from drivesim.sim.learned_agents import BehaviourHandle

        handle = BehaviourHandle.of(load_behaviour(behaviour or DEFAULT_BEHAVIOUR))
    from drivesim.model.probe_file import load_camera_refiner, load_probe

    wm = wm_engine.ModelHandle.of(model, load_camera_refiner())  # the views: the camera refiner's
    cf = run_counterfactual(wm, root, version, scene, t0, parsed, horizon=horizon, samples=samples, planner=planner,
                            agents=agents, seed=seed, behaviour=handle, probe=load_probe())  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    summary = {**cf.summary(), "checkpoint": str(ckpt), "dataroot": str(root), "seconds": time.perf_counter() - tic}
    summary["provenance"] = provenance(checkpoint=ckpt, dataroot=root, version=version)
    written = [write_json(out / "counterfactual.json", strict_json(summary))]
    written += save_animation(counterfactual_frames(cf), out / "counterfactual.gif", fps=2)
    strip = counterfactual_strip(cf)
    tmp = out / ".counterfactual.tmp.png"
    strip.save(tmp)
    tmp.replace(out / "counterfactual.png")
    written.append(out / "counterfactual.png")
    console().print(counterfactual_table(summary))
    print("written: " + ", ".join(str(p) for p in written))
    return summary

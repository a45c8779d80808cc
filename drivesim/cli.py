"""`drivesim <verb>`: the command line.

Every verb turns bad input into a one-line error on stderr and a non-zero exit status (2), with no
traceback (set DRIVESIM_DEBUG=1 to see one). Outputs are written to temporary names and renamed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from drivesim.errors import DrivesimError
from drivesim.progress import bar

REPO_DATA = Path(__file__).resolve().parents[1] / "data"


def default_dataroot() -> Path:
    """The embedded synthetic set: $DRIVESIM_DATA, else data/synthetic in the repository."""
    return Path(os.environ.get("DRIVESIM_DATA", REPO_DATA / "synthetic"))


DEFAULT_VERSION = "v1.0-mini"


def _console():
    import shutil

    from rich.console import Console

    return Console(stderr=False, highlight=False, width=max(shutil.get_terminal_size((120, 40)).columns, 120))


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} GB"


# ---------------------------------------------------------------------- synth
def cmd_synth(args) -> int:
    from drivesim.synth.dataset import SynthConfig, generate

    cfg = SynthConfig(
        scenes=args.scenes,
        seconds=args.seconds,
        seed=args.seed,
        version=args.version,
        image_width=args.image_width,
        camera_hz=args.camera_hz,
    )
    report = generate(cfg, Path(args.out), overwrite=args.overwrite, progress=not args.quiet)
    con = _console()
    con.print(
        f"wrote {report['scenes']} scenes, {report['images']} camera images to {report['dataroot']} "
        f"({cfg.version}): {_human_bytes(report['bytes'])} on disk, in {report['seconds']:.1f} s"
    )
    return 0


def ensure_synthetic(dataroot: Path, version: str, quiet: bool = False) -> None:
    """Generate the default synthetic mini set at `dataroot` if it is not there."""
    if (dataroot / version / "scene.json").exists():
        return
    from drivesim.synth.dataset import SynthConfig, generate

    con = _console()
    con.print(f"[bold]building the synthetic mini set[/bold] at {dataroot} (one-off)")
    report = generate(SynthConfig(version=version), dataroot, overwrite=True, progress=not quiet)
    con.print(
        f"synthetic set: {report['scenes']} scenes, {report['images']} images, "
        f"{_human_bytes(report['bytes'])}, built in {report['seconds']:.1f} s"
    )


# ---------------------------------------------------------------------- replay
def cmd_replay(args) -> int:
    out = replay(
        Path(args.dataroot) if args.dataroot else None,
        args.version,
        args.scene,
        Path(args.out),
        frame=args.frame,
        hz=args.hz,
        quiet=args.quiet,
    )
    for path in out:
        print(f"replay written to {path.resolve()}")
    return 0


def replay(dataroot, version, scene, out: Path, frame=None, hz=2.0, quiet=False) -> list[Path]:
    """Render a scene (or one frame of it) to `out`; returns the files written."""
    import numpy as np

    from drivesim.data.dataroot import open_nuscenes, scene_names
    from drivesim.data.loader import LoadConfig, load_camera_frames, load_log
    from drivesim.data.occupancy import OccupancyConfig, log_occupancy
    from drivesim.viz.replay import render_replay, save_animation, save_still

    if dataroot is None:
        dataroot = default_dataroot()
        ensure_synthetic(dataroot, version, quiet)
    suffix = out.suffix.lower()
    if frame is None and suffix not in (".gif", ".mp4"):
        raise DrivesimError(f"--out {out}: an animation is written as .gif (and .mp4 beside it); use a .gif name")
    if frame is not None and suffix not in (".png", ".jpg", ".jpeg"):
        raise DrivesimError(f"--out {out}: a single --frame is written as an image; use a .png name")
    if not out.parent.exists():
        raise DrivesimError(f"--out {out}: folder {out.parent} does not exist")
    if hz <= 0 or hz > 12:
        raise DrivesimError(f"--hz {hz}: choose a rate between 0.5 and 12 frames per second")
    nusc = open_nuscenes(dataroot, version)
    if scene is None:
        scene = scene_names(nusc)[0]
    cfg = LoadConfig(rate_hz=hz, camera_source="keyframes" if hz <= 2 else "any")
    log, info = load_log(nusc, scene, cfg)
    steps = list(range(int(np.asarray(log.ego.valid).sum())))
    if frame is not None:
        if not 0 <= frame < len(steps):
            raise DrivesimError(f"--frame {frame}: scene {scene} has frames 0..{len(steps) - 1} at {hz:g} Hz")
        steps = [frame]
    occ_cfg = OccupancyConfig()
    occupancy = np.asarray(log_occupancy(log, occ_cfg).grid)
    cameras = load_camera_frames(info, steps=slice(min(steps), max(steps) + 1))
    cameras = np.concatenate([np.zeros((min(steps),) + cameras.shape[1:], np.uint8), cameras])
    with bar(quiet, f"replay {scene}", len(steps)) as tick:
        frames = render_replay(log, info, cameras, occupancy, occ_cfg.extent, occ_cfg.resolution, steps, on_frame=tick)
    if frame is not None:
        return [save_still(frames[0], out)]
    return save_animation(frames, out.with_suffix(".gif"), fps=max(hz, 1.0) * 2 if hz <= 2 else hz)


# ---------------------------------------------------------------------- scenes
def cmd_scenes(args) -> int:
    from drivesim.data.dataroot import open_nuscenes

    dataroot = Path(args.dataroot) if args.dataroot else default_dataroot()
    if args.dataroot is None:
        ensure_synthetic(dataroot, args.version, args.quiet)
    nusc = open_nuscenes(dataroot, args.version)
    for s in nusc.scene:
        log = nusc.get("log", s["log_token"])
        print(f"{s['name']}\t{log['location']}\t{s['nbr_samples']} samples\t{s['description']}")
    return 0


# ---------------------------------------------------------------------- cache
def cmd_cache(args) -> int:
    from drivesim.data.cache import CacheConfig, build_cache

    dataroot = Path(args.dataroot) if args.dataroot else default_dataroot()
    if args.dataroot is None:
        ensure_synthetic(dataroot, args.version, args.quiet)
    w, h = (int(v) for v in args.image_size.lower().split("x"))
    cfg = CacheConfig(clip_length=args.clip_length, stride=args.stride, image_size=(w, h))
    report = build_cache(dataroot, args.version, Path(args.out), cfg, workers=args.workers, progress=not args.quiet)
    print(
        f"cache at {report['out']}: {report['scenes']} scenes ({report['skipped']} already done), "
        f"{report['clips']} clips, {_human_bytes(report['bytes'])}, in {report['seconds']:.1f} s"
    )
    return 0


# ---------------------------------------------------------------------- bench
def load_planners(names: str | None, module: str | None) -> dict:
    """Built-in planners by comma-separated name (default: all), plus a user planner `pkg.mod:factory`."""
    import importlib

    from drivesim.planners.builtin import BUILTIN

    planners = {}
    wanted = list(BUILTIN) if not names else [n.strip() for n in names.split(",") if n.strip()]
    if module and not names:
        wanted = []
    for n in wanted:
        if n not in BUILTIN:
            raise DrivesimError(f"unknown planner {n!r}; built-in planners: {', '.join(BUILTIN)}")
        planners[n] = BUILTIN[n]
    if module:
        mod_name, _, attr = module.partition(":")
        if not attr:
            raise DrivesimError(f"--planner-module {module!r}: write it as package.module:factory")
        try:
            mod = importlib.import_module(mod_name)
        except Exception as e:
            raise DrivesimError(f"--planner-module: {mod_name} failed to import ({type(e).__name__}: {e})") from None
        factory = getattr(mod, attr, None)
        if factory is None:
            raise DrivesimError(f"--planner-module: {mod_name} has no {attr!r}")
        try:
            planner = factory()
        except Exception as e:
            raise DrivesimError(f"--planner-module: {module}() failed ({type(e).__name__}: {e})") from None
        planners[getattr(planner, "name", attr)] = planner
    if not planners:
        raise DrivesimError("no planner to benchmark; give --planners and/or --planner-module")
    return planners


def cmd_bench(args) -> int:
    import jax
    import numpy as np

    from drivesim.data.dataroot import open_nuscenes
    from drivesim.data.loader import load_log
    from drivesim.metrics.benchmark import BenchConfig, run_benchmark, stack_logs
    from drivesim.planners.base import check_planner
    from drivesim.sim.engine import SimConfig, observe, reset
    from drivesim.sim.scenarios import select_scenarios
    from drivesim.viz import benchmark as report

    if args.compare_reference and args.engine != "world-model":
        raise DrivesimError(
            "--compare-reference compares the world-model engine with the reference: add --engine world-model"
        )
    if args.samples < 1:
        raise DrivesimError(f"--samples {args.samples}: use at least 1")
    planners = load_planners(args.planners, args.planner_module)
    dataroot = Path(args.dataroot) if args.dataroot else default_dataroot()
    if args.dataroot is None:
        ensure_synthetic(dataroot, args.version, args.quiet)
    horizon = int(round(args.horizon * 10))
    if horizon < 10:
        raise DrivesimError(f"--horizon {args.horizon}: use at least 1 s")
    sim = SimConfig(agents={"reactive": "idm", "log": "log"}[args.agents], replan_every=args.replan_every)
    wm_cfg = None
    if args.engine == "world-model":
        from drivesim.sim.wm_engine import WMConfig

        try:
            wm_cfg = WMConfig(sim=sim, layout=args.layout == "guided")
        except ValueError as e:
            raise DrivesimError(f"--replan-every {args.replan_every}: {e}") from None
    cfg = BenchConfig(
        horizon=horizon, scenarios=args.scenarios, seed=args.seed, batch=args.batch, sim=sim, wm=wm_cfg,
        samples=args.samples, drivable=args.drivable,
    )  # fmt: skip
    out = Path(args.out)
    con = _console()
    nusc = open_nuscenes(dataroot, args.version)
    names = [s["name"] for s in nusc.scene]
    durations = [(s["nbr_samples"] - 1) * 0.5 for s in nusc.scene]
    steps = int(round(max(durations) * cfg.load.rate_hz)) + 1
    load_cfg = dataclasses.replace(cfg.load, max_steps=steps)
    logs = []
    with bar(args.quiet, "loading logs", len(names)) as tick:
        for n in names:
            logs.append(load_log(nusc, n, load_cfg)[0])
            tick()
    scenarios = select_scenarios(logs, names, horizon=horizon, history=cfg.history, stride=cfg.stride)
    if not scenarios:
        raise DrivesimError(
            f"--horizon {args.horizon} s: no log is long enough (longest scene {max(durations):.1f} s, "
            f"{cfg.history / 10:.0f} s of history needed); use a shorter horizon"
        )
    if cfg.scenarios and cfg.scenarios < len(scenarios):
        pick = np.linspace(0, len(scenarios) - 1, cfg.scenarios).round().astype(int)
        scenarios = [scenarios[i] for i in pick]
    stacked = stack_logs(logs)
    sample_obs = jax.eval_shape(
        lambda lg: observe(reset(lg, scenarios[0].t0, None, cfg.sim), cfg.sim), logs[scenarios[0].log_index]
    )
    for p in planners.values():
        try:
            check_planner(p, sample_obs)
        except (TypeError, ValueError) as e:
            raise DrivesimError(str(e)) from None
    model = contexts = None
    if wm_cfg is not None:
        from drivesim.model.experiment import load_world_model
        from drivesim.sim.wm_engine import ModelHandle, load_contexts

        checkpoint = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
        wm = load_world_model(checkpoint)
        model = ModelHandle.of(wm)
        with bar(args.quiet, "loading keyframes", len({s.scene for s in scenarios})) as tick:
            contexts = load_contexts(dataroot, args.version, scenarios, wm.cfg.frame_size, wm.cfg.history, tick)
    engine = args.engine + (f" ({args.layout}, DAC from the {args.drivable}, {args.samples} futures)" if wm_cfg else "")
    con.print(f"benchmarking {len(planners)} planners on {len(scenarios)} scenarios of {len(names)} logs "
              f"({args.horizon:g} s each, {args.agents} agents, {engine} engine)")  # fmt: skip
    total = len(planners) * len(scenarios) * (2 if args.compare_reference else 1)
    with bar(args.quiet, "bench", total) as tick:
        results = run_benchmark(stacked, scenarios, planners, cfg, progress=lambda m, name: [tick() for _ in range(m)],
                                model=model, contexts=contexts, compare_reference=args.compare_reference)  # fmt: skip
    results["config"].update({"dataroot": str(dataroot), "version": args.version})
    if wm_cfg is not None:
        results["config"]["checkpoint"] = str(checkpoint)
    con.print(report.leaderboard(results))
    for s in results["skipped"]:
        print(f"skipped {s['scene']} t0={s['t0'] / 10:.1f}s: {s['reason']}", file=sys.stderr)
    written = report.write_results(results, out)
    kept = [sc for sc in scenarios if not any(k["scene"] == sc.scene and k["t0"] == sc.t0 for k in results["skipped"])]
    written += [report.plot_metrics(results, out), report.plot_distribution(results, out),
                report.plot_worst(results, stacked, kept, out)]  # fmt: skip
    print("written: " + ", ".join(str(p) for p in written))
    return 0


# ---------------------------------------------------------------------- train
def load_experiment(path: str, quick: bool):
    """`get_config(quick=...)` of an experiment file (experiments/<name>.py)."""
    import importlib.util

    file = Path(path)
    if not file.exists():
        raise DrivesimError(f"--config {path}: no such file (experiment files live in experiments/)")
    spec = importlib.util.spec_from_file_location(f"drivesim_experiment_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise DrivesimError(f"--config {path} failed to load ({type(e).__name__}: {e})") from None
    if not hasattr(module, "get_config"):
        raise DrivesimError(f"--config {path} has no get_config()")
    return module.get_config(quick=quick)


def cmd_train(args) -> int:
    from drivesim.model.experiment import run

    exp = load_experiment(args.config, args.quick)
    out = run(exp, Path(args.workdir), resume=args.resume, progress=not args.quiet, base=args.base)
    print(f"trained world model written to {out.resolve()}")
    return 0


# ---------------------------------------------------------------------- world model
DEFAULT_CHECKPOINT = REPO_DATA / "world_model_small.npz"


def _load_model(checkpoint):
    from drivesim.model.experiment import load_world_model

    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if not path.exists() and checkpoint is None:
        raise DrivesimError(
            f"the shipped world model {path} is missing (a partial clone?); pass --checkpoint or train one: "
            "drivesim train --config experiments/wm_small.py --workdir runs/wm_small"
        )
    return load_world_model(path), path


def _finite(obj):
    """The report with NaN/inf as null (strict JSON)."""
    import math

    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def eval_cache(dataroot: Path, version: str, frame_size, cache: str | None, quiet: bool) -> Path:
    """The clip cache `eval-wm` reads: --cache, else one per dataroot under data/cache/ (built once)."""
    import hashlib

    from drivesim.data.cache import CacheConfig, build_cache

    if cache:
        out = Path(cache)
    else:
        key = hashlib.sha1(f"{Path(dataroot).resolve()}|{version}|{frame_size}".encode()).hexdigest()[:10]
        out = REPO_DATA / "cache" / f"eval-{version}-{key}"
    if not (out / "manifest.json").exists() or not cache:
        w, h = frame_size
        build_cache(dataroot, version, out, CacheConfig(image_size=(w, h)), workers=2, progress=not quiet)
    return out


def cmd_eval_wm(args) -> int:
    from drivesim.atomic import write_json
    from drivesim.model.evaluate import EDITS, EvalConfig, evaluate
    from drivesim.viz.prediction import forecast_figure
    from drivesim.viz.replay import save_still
    from drivesim.viz.world_model import eval_tables

    model, ckpt = _load_model(args.checkpoint)
    dataroot = Path(args.dataroot) if args.dataroot else default_dataroot()
    if args.dataroot is None:
        ensure_synthetic(dataroot, args.version, args.quiet)
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise DrivesimError(f"--out {out}: the report is JSON; use a .json name (the figure goes beside it)")
    edits = tuple(e.strip() for e in args.edits.split(",") if e.strip()) if args.edits else EDITS
    bad = [e for e in edits if e not in EDITS]
    if bad:
        raise DrivesimError(f"--edits {','.join(bad)}: unknown; choose from {', '.join(EDITS)}")
    if args.max_clips is not None and args.max_clips < 1:
        raise DrivesimError(f"--max-clips {args.max_clips}: use at least 1")
    cache = eval_cache(dataroot, args.version, model.cfg.frame_size, args.cache, args.quiet)
    ecfg = EvalConfig(
        max_clips=args.max_clips, seed=args.seed, controllability=not args.no_control, edits=edits,
        max_edit_scenes=args.edit_scenes, layout=not args.no_layout,
    )  # fmt: skip
    t0 = time.perf_counter()
    report, example = evaluate(model, cache, ecfg, dataroot=dataroot, progress=not args.quiet)
    report["checkpoint"] = str(ckpt)
    report["dataroot"], report["version"] = str(dataroot), args.version
    report["seconds"] = time.perf_counter() - t0
    con = _console()
    for table in eval_tables(report):
        con.print(table)
    written = [write_json(out, _finite(report))]
    title = f"{example['scene']} from keyframe {example['first_keyframe']}: {ckpt.name}, free-running"
    written.append(save_still(forecast_figure(example, title=title), out.with_suffix(".png")))
    print("written: " + ", ".join(str(p) for p in written))
    return 0


def cmd_counterfactual(args) -> int:
    from drivesim.atomic import write_json
    from drivesim.sim import edits as E
    from drivesim.sim.counterfactual import load_scene, run_counterfactual
    from drivesim.sim.wm_engine import ModelHandle
    from drivesim.viz.counterfactual import counterfactual_frames, counterfactual_strip
    from drivesim.viz.replay import save_animation

    dataroot = Path(args.dataroot) if args.dataroot else default_dataroot()
    if args.dataroot is None:
        ensure_synthetic(dataroot, args.version, args.quiet)
    if args.list_agents:
        log, info = load_scene(dataroot, args.version, args.scene)
        rows = E.list_agents(log, info, int(round(args.t0 * 10)))
        con = _console()
        from rich.table import Table

        t = Table(title=f"agents of {args.scene} at t0 = {args.t0:g} s (ego frame: x forward, y left)")
        for c in ("slot", "token", "category", "x", "y", "yaw", "speed", "present"):
            t.add_column(c, justify="right" if c in ("slot", "x", "y", "yaw", "speed") else "left")
        for r in rows:
            t.add_row(*(f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in r))
        con.print(t)
        return 0
    if not args.edit and not args.ego_planner:
        raise DrivesimError("give at least one --edit SPEC (or --ego-planner NAME); --help-edits lists the forms")
    edits = [E.parse_edit(spec) for spec in args.edit]
    planner = None
    if args.ego_planner:
        planner = load_planners(args.ego_planner, None)[args.ego_planner]
    model, ckpt = _load_model(args.checkpoint)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DrivesimError(f"--out {out} is a file; give a folder")
    t0 = time.perf_counter()
    cf = run_counterfactual(
        ModelHandle.of(model), dataroot, args.version, args.scene, args.t0, edits, horizon=args.horizon,
        samples=args.samples, planner=planner, agents=args.agents, seed=args.seed,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    summary = {**cf.summary(), "checkpoint": str(ckpt), "dataroot": str(dataroot), "seconds": time.perf_counter() - t0}
    written = [write_json(out / "counterfactual.json", _finite(summary))]
    written += save_animation(counterfactual_frames(cf), out / "counterfactual.gif", fps=2)
    strip = counterfactual_strip(cf)
    tmp = out / ".counterfactual.tmp.png"
    strip.save(tmp)
    tmp.replace(out / "counterfactual.png")
    written.append(out / "counterfactual.png")
    con = _console()
    con.print(counterfactual_table(summary))
    print("written: " + ", ".join(str(p) for p in written))
    return 0


def counterfactual_table(summary: dict):
    """Scores of the ego unedited / edited (world model, mean and worst over futures; reference
    engine) and the fidelity of the edited generation against the truth."""
    from rich.table import Table

    t = Table(title=f"{summary['scene']} t0 = {summary['t0']:g} s, edits: {' '.join(summary['edits']) or 'none'}, "
              f"ego: {summary['ego']} ({summary['samples']} futures)")  # fmt: skip
    t.add_column("ego scores")
    for k in ("pdms", "nc", "dac", "ttc", "ep", "c"):
        t.add_column(k.upper(), justify="right")
    sc = summary["scores"]
    for name, label in (("original", "unedited, world model"), ("edited", "edited, world model")):
        t.add_row(f"{label} (mean)", *(f"{sc[name][k]['mean']:.3f}" for k in ("pdms", "nc", "dac", "ttc", "ep", "c")))
        t.add_row(f"{label} (worst)", *(f"{sc[name][k]['worst']:.3f}" for k in ("pdms", "nc", "dac", "ttc", "ep", "c")))
    t.add_row(
        "edited, reference engine",
        *(f"{sc['edited_reference'][k]:.3f}" for k in ("pdms", "nc", "dac", "ttc", "ep", "c")),
    )
    fid = summary.get("fidelity")
    if fid:
        t.caption = "fidelity vs the true re-simulation: " + ", ".join(
            f"{k}: IoU {v['occ_iou']:.3f} / agents {v['agent_iou']:.3f} / PSNR {v['psnr']:.1f} dB"
            for k, v in fid.items()
        )
    return t


def cmd_predict(args) -> int:
    import numpy as np

    from drivesim.atomic import write_json
    from drivesim.metrics.prediction import IouAccumulator, psnr
    from drivesim.model.forecast import forecast
    from drivesim.model.predict import Predictor
    from drivesim.viz.prediction import prediction_frames
    from drivesim.viz.replay import save_animation

    model, ckpt = _load_model(args.checkpoint)
    dataroot = Path(args.dataroot) if args.dataroot else default_dataroot()
    if args.dataroot is None:
        ensure_synthetic(dataroot, args.version, args.quiet)
    if args.samples > 8:
        raise DrivesimError(f"--samples {args.samples}: at most 8 futures per call")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DrivesimError(f"--out {out} is a file; give a folder")
    t0 = time.perf_counter()
    fc = forecast(
        Predictor(model), dataroot, args.version, args.scene, args.t0, args.ego, samples=args.samples,
        horizon=args.horizon, seed=args.seed,
    )  # fmt: skip
    summary = {
        "scene": fc.scene, "t0": fc.t0, "ego": fc.ego, "samples": args.samples, "horizon_s": len(fc.plan) / 2,
        "checkpoint": str(ckpt), "dataroot": str(dataroot), "plan": fc.plan.tolist(), "truth": fc.truth_source,
    }  # fmt: skip
    if fc.truth_bev is not None:
        per = []
        for i in range(args.samples):
            row = {}
            for k in range(len(fc.plan)):
                acc = IouAccumulator()
                acc.update(fc.bev[i, k], fc.truth_bev[k])
                r = acc.result()
                row[f"{(k + 1) / 2:g}s"] = {
                    "occ_iou": r["occupied_iou"], "agent_iou": r["iou"],
                    "psnr": float(np.mean(np.asarray(psnr(fc.images[i, k], fc.truth_images[k])))),
                }  # fmt: skip
            per.append(row)
        summary["scores_vs_truth"] = per
    out.mkdir(parents=True, exist_ok=True)
    title = f"{fc.scene}  t0 = {fc.t0:g} s  ego: {Path(fc.ego).name}  ({ckpt.name})"
    frames = prediction_frames(
        fc.context_images, fc.context_bev, fc.images, fc.bev, fc.truth_images, fc.truth_bev, title=title
    )
    written = save_animation(frames, out / "prediction.gif", fps=2.0)
    tmp = out / ".prediction.npz.tmp.npz"
    np.savez_compressed(tmp, images=fc.images, bev=fc.bev, plan=fc.plan, context_images=fc.context_images,
                        context_bev=fc.context_bev)  # fmt: skip
    tmp.replace(out / "prediction.npz")
    written += [out / "prediction.npz", write_json(out / "summary.json", _finite(summary))]
    print(f"{args.samples} futures of {fc.scene} after t0 = {fc.t0:g} s under ego plan {fc.ego!r} "
          f"in {time.perf_counter() - t0:.1f} s" + (f"; truth: {fc.truth_source}" if fc.truth_source else ""))  # fmt: skip
    if fc.truth_bev is not None:
        last = f"{len(fc.plan) / 2:g}s"
        ious = ", ".join(f"{r[last]['occ_iou']:.3f}" for r in summary["scores_vs_truth"])
        print(f"occupancy IoU vs truth at {last}: {ious}")
    print("written: " + ", ".join(str(p) for p in written))
    return 0


# ---------------------------------------------------------------------- demo
DEMO_COUNTERFACTUAL = dict(
    scene="scene-0008", t0=4.0, edits=("insert=car@20,0,0,0,static",), ego_planner="idm", horizon=4.0, samples=2
)
"""The demo's "what if?": a car broken down 20 m ahead of the ego, which drives with the IDM planner."""
DEMO_BENCH = dict(scenarios=8, samples=1, horizon=8.0, layout="guided", drivable="map", planners=None)
"""The demo's benchmark: 8 held-out scenarios of 8 s, both engines, one sampled future each, in the
validated setting (layout-guided, the map's drivable area)."""


def cmd_demo(args) -> int:
    import json

    from drivesim.viz import report as rep

    t_start = time.perf_counter()
    dataroot = default_dataroot()
    ensure_synthetic(dataroot, DEFAULT_VERSION, args.quiet)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = _console()
    timing = {}

    def stage(name):
        con.rule(f"[bold]{name}")
        return time.perf_counter()

    tic = stage("1/4 replay a logged scene")
    written = replay(dataroot, DEFAULT_VERSION, None, out_dir / "replay.gif", quiet=args.quiet)
    written += replay(dataroot, DEFAULT_VERSION, None, out_dir / "replay_frame.png", frame=10, quiet=True)
    timing["replay"] = time.perf_counter() - tic
    sections = [
        rep.Section("Replay", "scene-0001 of the embedded synthetic set, replayed from its nuScenes-format files: "
                    "six cameras and the BEV occupancy.", images=("replay.gif", "replay_frame.png")),
    ]  # fmt: skip
    if not DEFAULT_CHECKPOINT.exists():
        print(f"the shipped world model {DEFAULT_CHECKPOINT} is missing: only the replay was made", file=sys.stderr)
    else:
        tic = stage("2/4 sample futures under braking")
        pred = out_dir / "predict_brake"
        cmd_predict(
            argparse.Namespace(
                checkpoint=None, dataroot=None, version=DEFAULT_VERSION, scene="scene-0003", t0=6.0, ego="brake",
                samples=3, horizon=3.0, out=str(pred), seed=0, quiet=args.quiet,
            )
        )  # fmt: skip
        written.append(pred / "prediction.gif")
        timing["predict"] = time.perf_counter() - tic
        sections.append(rep.Section(
            "Three sampled futures under braking", "The shipped world model (small) generates 3 s of scene-0003 "
            "after t0 = 6 s three times from the same 2 s of history, with the ego braking; the last row is the "
            "synthetic world's true re-simulation of the same braking.", images=("predict_brake/prediction.gif",)))  # fmt: skip

        tic = stage("3/4 counterfactual: a broken-down car ahead")
        d = DEMO_COUNTERFACTUAL
        cf_dir = out_dir / "counterfactual"
        cmd_counterfactual(argparse.Namespace(
            dataroot=None, version=DEFAULT_VERSION, scene=d["scene"], t0=d["t0"], edit=list(d["edits"]),
            ego_planner=d["ego_planner"], list_agents=False, agents="log", samples=d["samples"], horizon=d["horizon"], checkpoint=None,
            out=str(cf_dir), seed=0, quiet=args.quiet))  # fmt: skip
        written += [cf_dir / "counterfactual.gif", cf_dir / "counterfactual.png"]
        timing["counterfactual"] = time.perf_counter() - tic
        cf = json.loads((cf_dir / "counterfactual.json").read_text())
        rows = []
        for name, label in (("original", "unedited, world model"), ("edited", "edited, world model")):
            for stat in ("mean", "worst"):
                rows.append(
                    (
                        f"{label} ({stat})",
                        *(cf["scores"][name][k][stat] for k in ("pdms", "nc", "dac", "ttc", "ep", "c")),
                    )
                )
        rows.append(
            (
                "edited, reference engine",
                *(cf["scores"]["edited_reference"][k] for k in ("pdms", "nc", "dac", "ttc", "ep", "c")),
            )
        )
        tables = [rep.Table(f"ego scores (world model: mean and worst of {d['samples']} sampled futures)",
                            ("run", "PDMS", "NC", "DAC", "TTC", "EP", "C"), tuple(rows))]  # fmt: skip
        if cf.get("fidelity"):
            tables.append(rep.Table("edited generation vs the true re-simulation", ("after t0", "occupancy IoU", "agent IoU", "PSNR dB"),
                                    tuple((k, v["occ_iou"], v["agent_iou"], v["psnr"]) for k, v in cf["fidelity"].items())))  # fmt: skip
        sections.append(rep.Section(
            "What if a car had broken down ahead?",
            f"{d['scene']} from t0 = {d['t0']:g} s with `{' '.join(d['edits'])}` (a stopped car 20 m ahead in the ego "
            f"frame); the ego drives with the {d['ego_planner']} planner. Left: the unedited generation; middle: the "
            "edited one (layout-guided world model); right: the synthetic world's true re-simulation of the same edit, "
            "with the ego on the same path.", images=("counterfactual/counterfactual.gif", "counterfactual/counterfactual.png"),
            tables=tuple(tables)))  # fmt: skip

        tic = stage("4/4 benchmark the built-in planners under both engines")
        b = DEMO_BENCH
        bench_dir = out_dir / "bench"
        cmd_bench(argparse.Namespace(
            engine="world-model", compare_reference=True, samples=b["samples"], planners=b["planners"], planner_module=None,
            dataroot=None, version=DEFAULT_VERSION, horizon=b["horizon"], scenarios=b["scenarios"], seed=0, batch=8,
            agents="log", replan_every=1, layout=b["layout"], drivable=b["drivable"], checkpoint=None, out=str(bench_dir),
            quiet=args.quiet))  # fmt: skip
        timing["bench"] = time.perf_counter() - tic
        res = json.loads((bench_dir / "results.json").read_text())
        ag = res["agreement"]
        rows = tuple((i + 1, n, res["planners"][n]["pdms"], res["planners"][n]["pdms_reference"], res["planners"][n]["pdms_gap"],
                      res["ranking_reference"].index(n) + 1) for i, n in enumerate(res["ranking"]))  # fmt: skip
        sections.append(rep.Section(
            "Leaderboard under both engines",
            f"{res['config']['scenarios']} held-out scenarios of {b['horizon']:g} s, log-replay agents; the world-model "
            f"engine is layout-{b['layout']} with the drivable area from the {b['drivable']} and {b['samples']} sampled "
            "future per scenario. Rank agreement with the "
            f"reference (kinematic) engine: Kendall tau {ag['kendall_tau']:.3f} (95% bootstrap interval "
            f"{ag['kendall_tau_ci'][0]:.3f} .. {ag['kendall_tau_ci'][1]:.3f}), Spearman rho {ag['spearman_rho']:.3f}. "
            "A small demo sample: see the README for the full validity study.",
            images=tuple(f"bench/{p.name}" for p in sorted(bench_dir.glob("*.png"))),
            tables=(rep.Table("PDMS per planner", ("rank", "planner", "PDMS world model", "PDMS reference", "gap",
                                                    "reference rank"), rows),)))  # fmt: skip
    total = time.perf_counter() - t_start
    timing["total"] = total
    sections.append(rep.Section("Run", "\n".join(f"{k}: {v:.1f} s" for k, v in timing.items())))
    index = rep.write_report(out_dir, "drivesim demo", sections)
    written.append(index)
    print(f"demo finished in {total:.1f} s; outputs:")
    for path in written:
        print(f"  {path.resolve()}")
    return 0


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drivesim", description="JAX driving world-model simulator.")
    sub = p.add_subparsers(dest="verb", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    _add = sub.add_parser

    def add_parser(name, **kw):
        return _add(name, parents=[common], **kw)

    sub.add_parser = add_parser

    s = sub.add_parser("synth", help="write a synthetic nuScenes-format dataroot")
    s.add_argument("--out", required=True, help="dataroot folder to create")
    s.add_argument("--scenes", type=int, default=10)
    s.add_argument("--seconds", type=float, default=20.0, help="length of each scene")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--version", default=DEFAULT_VERSION, help="table folder name (default v1.0-mini)")
    s.add_argument("--image-width", type=int, default=160, help="camera image width (16:9)")
    s.add_argument("--camera-hz", type=int, default=12, help="camera rate; frames between keyframes are sweeps")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.set_defaults(func=cmd_synth)

    def data_args(q):
        q.add_argument("--dataroot", default=None, help="nuScenes dataroot (default: the embedded synthetic set)")
        q.add_argument("--version", default=DEFAULT_VERSION)

    r = sub.add_parser("replay", help="render a scene: six cameras beside the BEV occupancy")
    data_args(r)
    r.add_argument("--scene", default=None, help="scene name (default: the first)")
    r.add_argument(
        "--out", required=True, help="output .gif (an .mp4 is added when ffmpeg exists), or .png with --frame"
    )
    r.add_argument("--frame", type=int, default=None, help="render only this frame, as a still image")
    r.add_argument("--hz", type=float, default=2.0, help="frames per second of scene time (2 = keyframes, up to 12)")
    r.set_defaults(func=cmd_replay)

    sc = sub.add_parser("scenes", help="list the scenes of a dataroot")
    data_args(sc)
    sc.set_defaults(func=cmd_scenes)

    c = sub.add_parser("cache", help="preprocess a dataroot into a cache of training clips")
    data_args(c)
    c.add_argument("--out", required=True, help="cache folder (resumable: finished scenes are skipped)")
    c.add_argument("--clip-length", type=int, default=10, help="keyframes per clip")
    c.add_argument("--stride", type=int, default=2, help="keyframes between clip starts")
    c.add_argument("--image-size", default="64x36", help="camera frames are stored at WxH")
    c.add_argument("--workers", type=int, default=2, help="parallel worker processes")
    c.set_defaults(func=cmd_cache)

    b = sub.add_parser("bench", help="closed-loop planner benchmark (PDMS, CLS) with confidence intervals")
    data_args(b)
    b.add_argument("--planners", default=None, help="comma-separated built-in planners (default: all)")
    b.add_argument("--planner-module", default=None, help="your planner: package.module:factory")
    b.add_argument("--engine", default="kinematic", choices=["kinematic", "world-model"])
    b.add_argument("--agents", default="log", choices=["log", "reactive"], help="log replay or IDM agents")
    b.add_argument("--scenarios", type=int, default=None, help="at most this many scenarios (default: all)")
    b.add_argument("--horizon", type=float, default=8.0, help="seconds of closed loop per scenario")
    b.add_argument("--replan-every", type=int, default=1, help="simulator steps (0.1 s) between planner calls")
    b.add_argument("--batch", type=int, default=16, help="scenarios per compiled batch")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--checkpoint", default=None, help="world model (default: the shipped one)")
    b.add_argument(
        "--layout",
        default="guided",
        choices=["free", "guided"],
        help="world-model engine: the model renders the reference's agents (guided, the default: with --drivable "
        "map the setting whose ranking agrees with the reference's, experiments/results/wm_validity.json) or "
        "forecasts them itself (free)",
    )
    b.add_argument("--samples", type=int, default=2, help="world-model engine: sampled futures per scenario")
    b.add_argument(
        "--drivable",
        default="map",
        choices=["both", "prediction", "map"],
        help="world-model engine: drivable area from the map (the default, where the data has one), the "
        "prediction, or both",
    )
    b.add_argument(
        "--compare-reference",
        action="store_true",
        help="also run the reference engine on the same scenarios; report the rank agreement",
    )
    b.add_argument("--out", default="out/bench", help="output folder")
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("train", help="train a world model (tokenizers, dynamics, BEV refiner) from an experiment file")
    t.add_argument("--config", required=True, help="experiments/<name>.py")
    t.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, loss curves, world_model.npz")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoints")
    t.add_argument("--quick", action="store_true", help="the experiment's shrunk smoke-test version")
    t.add_argument(
        "--base", default=None, help="a trained model file: keep its tokenizers and dynamics, train only the refiner"
    )
    t.set_defaults(func=cmd_train)

    w = sub.add_parser("eval-wm", help="score a world model: forecasts vs baselines, controllability")
    data_args(w)
    w.add_argument(
        "--checkpoint", default=None, help="world model .npz (default: the shipped data/world_model_small.npz)"
    )
    w.add_argument("--out", default="out/eval_wm/eval_wm.json", help="JSON report (the figure is written beside it)")
    w.add_argument("--cache", default=None, help="clip cache of the dataroot (default: built once under data/cache/)")
    w.add_argument("--max-clips", type=int, default=None, help="at most this many forecasting clips (default: all)")
    w.add_argument("--edit-scenes", type=int, default=None, help="at most this many scenes for controllability")
    w.add_argument("--edits", default=None, help="comma-separated ego edits (default: all six)")
    w.add_argument("--no-control", action="store_true", help="skip the controllability re-simulations")
    w.add_argument("--no-layout", action="store_true", help="skip the layout-guided forecasts")
    w.add_argument("--seed", type=int, default=0)
    w.set_defaults(func=cmd_eval_wm)

    pr = sub.add_parser("predict", help="sample futures of a scene under an ego plan, beside the truth")
    data_args(pr)
    pr.add_argument("--scene", required=True, help="scene name (`drivesim scenes` lists them)")
    pr.add_argument("--t0", type=float, required=True, help="log time (s, a keyframe) of the last context frame")
    pr.add_argument("--ego", default="log", help="log | keep | brake | accelerate | left | right | "
                    "lane_change_left | lane_change_right | a waypoint file (.json/.npy/.csv/.txt)")  # fmt: skip
    pr.add_argument("--samples", type=int, default=3, help="futures to sample (each from its own noise)")
    pr.add_argument("--horizon", type=float, default=3.0, help="seconds to generate (commands and log)")
    pr.add_argument("--checkpoint", default=None, help="world model .npz (default: the shipped one)")
    pr.add_argument("--out", default="out/predict", help="output folder")
    pr.add_argument("--seed", type=int, default=0)
    pr.set_defaults(func=cmd_predict)

    cf = sub.add_parser("counterfactual", help="what if? a scene under edits through the world model, beside the truth")
    data_args(cf)
    cf.add_argument("--scene", required=True, help="scene name (`drivesim scenes` lists them)")
    cf.add_argument("--t0", type=float, required=True, help="log time (s, a keyframe) the edits take effect")
    cf.add_argument("--edit", action="append", default=[], metavar="SPEC",
                    help="an edit (repeatable, applied in order): ego=brake[:DECEL], ego=accelerate[:ACC], ego=keep, "
                         "ego=swerve_left|swerve_right[:M], ego=waypoints:FILE, remove=ID, "
                         "insert=CATEGORY@X,Y[,YAW_DEG[,SPEED[,lane|straight|static]]], move=ID@X,Y[,YAW_DEG], "
                         "speed=ID@V, cross[=AHEAD[,SPEED[,left|right]]] (poses in the ego frame at t0; IDs from --list-agents)")  # fmt: skip
    cf.add_argument(
        "--ego-planner", default=None, help="without an ego edit, the ego drives with this built-in planner"
    )
    cf.add_argument("--list-agents", action="store_true", help="list the agents at t0 (their IDs) and stop")
    cf.add_argument("--agents", default="log", choices=["log", "reactive"], help="the others: edited log replay or IDM")
    cf.add_argument("--samples", type=int, default=2, help="sampled futures")
    cf.add_argument("--horizon", type=float, default=4.0, help="seconds to generate")
    cf.add_argument("--checkpoint", default=None, help="world model .npz (default: the shipped one)")
    cf.add_argument("--out", default="out/counterfactual", help="output folder")
    cf.add_argument("--seed", type=int, default=0)
    cf.set_defaults(func=cmd_counterfactual)

    d = sub.add_parser("demo", help="the main job on the embedded synthetic data")
    d.add_argument("--out", default="out/demo", help="report folder")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DrivesimError as e:
        print(f"drivesim {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"drivesim {args.verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("DRIVESIM_DEBUG"):
            raise
        print(
            f"drivesim {args.verb}: internal error: {type(e).__name__}: {e} "
            "(set DRIVESIM_DEBUG=1 for a traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

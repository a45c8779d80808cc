"""`drivesim bench`: load the scenario set and the planners, run the benchmark under an engine,
print the leaderboard and write results.json, the CSV and the figures."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from drivesim.errors import DrivesimError
from drivesim.pipelines.defaults import DEFAULT_BEHAVIOUR, DEFAULT_CHECKPOINT, console, resolve_dataroot
from drivesim.progress import bar


def load_planners(names: str | None, module: str | None) -> dict:
    """Built-in planners by comma-separated name (default: all but the camera planners, which need
    cameras on), plus a user planner `pkg.mod:factory`."""
    import importlib

    from drivesim.planners.builtin import BUILTIN
    from drivesim.planners.camera import camera_planners

    known = {**BUILTIN, **camera_planners()}
    planners = {}
    wanted = list(BUILTIN) if not names else [n.strip() for n in names.split(",") if n.strip()]
    if module and not names:
        wanted = []
    for n in wanted:
        if n not in known:
            raise DrivesimError(f"unknown planner {n!r}; built-in planners: {', '.join(known)}")
        planners[n] = known[n]
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


COMPARE_ENGINES = ("truth", "kinematic")


def compare_engine(
    engine: str, compare: str | None, compare_reference: bool = False, agents: str = "log"
) -> str | None:
    """The engine `drivesim bench` compares `engine` with ("truth", "kinematic" or None), or a
    one-line error for option combinations that cannot run; checked before anything is loaded.

    `--compare-reference` is `--compare kinematic` (giving both with different engines is an
    error). Comparing an engine with itself is refused: both runs would give the same scores (the
    engines are deterministic for a seed), so its agreement would say nothing. Under `--engine
    truth` the agents are the world's; `--agents` then only picks the compared kinematic engine's.
    """
    if compare_reference:
        if compare not in (None, "kinematic"):
            raise DrivesimError(
                f"--compare-reference is --compare kinematic and contradicts --compare {compare}: give one of them"
            )
        compare = "kinematic"
    if compare is not None and compare not in COMPARE_ENGINES:
        raise DrivesimError(f"--compare {compare}: compare with one of {', '.join(COMPARE_ENGINES)}")
    if compare == engine:
        other = "kinematic" if engine == "truth" else "truth (synthetic dataroots), or --engine world-model"
        raise DrivesimError(
            f"--compare {compare} compares the {engine} engine with itself (the same scores twice): "
            f"use --compare {other}"
        )
    if engine == "truth" and agents != "log" and compare != "kinematic":
        raise DrivesimError(
            f"--agents {agents}: under --engine truth the agents are the synthetic world's own traffic "
            "(with --compare kinematic, --agents picks the compared kinematic engine's)"
        )
    return compare


def resolve_agents(engine: str, layout: str, agents: str | None) -> str:
    """The `--agents` setting for an engine and world-model layout (None: its default), or a
    one-line error for a combination that cannot run."""
    if layout not in LAYOUTS:
        raise DrivesimError(f"--layout {layout}: use one of {', '.join(LAYOUTS)}")
    if agents is not None and agents not in AGENTS:
        raise DrivesimError(f"--agents {agents}: use one of {', '.join(AGENTS)}")
    if engine != "world-model":
        return agents or "log"
    if layout == "free":
        agents = agents or "learned"
        if agents not in ("learned", "cv"):
            raise DrivesimError(
                f"--agents {agents}: the free-running world model simulates its agents (learned, or cv for the "
                "ablation); to render the log's or IDM agents use --layout guided (a pass-through)"
            )
        return agents
    agents = agents or "log"
    if layout == "guided" and agents not in ("log", "reactive"):
        raise DrivesimError(
            f"--agents {agents}: --layout guided passes the log's or IDM agents through; simulated agents "
            "are --layout free"
        )
    if layout == "grid" and agents != "log":
        raise DrivesimError("--layout grid reads the agents off the predicted BEV: it takes no --agents")
    return agents


AGENTS = ("log", "reactive", "learned", "cv")
LAYOUTS = ("free", "guided", "grid")


def bench(
    out, dataroot=None, version="v1.0-mini", planners=None, planner_module=None, engine="kinematic", agents=None,
    scenarios=None, horizon=8.0, replan_every=1, batch=16, seed=0, checkpoint=None, layout="free", samples=2,
    drivable="map", compare=None, compare_reference=False, quiet=False, behaviour=None, score="pdms", cameras=None,
    camera_refiner=None, camera_views="refiner",
) -> dict:  # fmt: skip
    """Benchmark planners in closed loop (arguments as `drivesim bench`'s options, `horizon` in s);
    writes results.json, results.csv and figures under `out` and returns the results.

    `compare` ("kinematic" or "truth") also runs that engine on the same scenarios and reports the
    rank agreement (see `compare_engine`); `compare_reference=True` is `compare="kinematic"`.
    `cameras`: give planners camera views (the truth engine renders the world, the world model
    draws them with its camera refiner); None: on where a chosen planner reads them.
    `camera_refiner`: its file (None: the shipped one); `camera_views` "warp": the world model's
    views are the ego warp alone (the ablation without the learned part).
    """
    import jax

    from drivesim import distributed
    from drivesim.pipelines.benchmark import BenchConfig, compared_config, run_benchmark
    from drivesim.pipelines.scenario_set import SceneContexts, load_scenario_set, require_synthetic, truth_scenes
    from drivesim.planners.base import check_planner
    from drivesim.sim.engine import SimConfig, observe, reset
    from drivesim.viz import benchmark as report

    lead = distributed.lead()  # under several processes only process 0 prints and writes
    quiet = quiet or not lead
    if score not in ("pdms", "epdms"):
        raise DrivesimError(f"--score {score}: use pdms or epdms")
    agents = resolve_agents(engine, layout, agents)
    compare = compare_engine(engine, compare, compare_reference, agents)
    if samples < 1:
        raise DrivesimError(f"--samples {samples}: use at least 1")
    if batch < 1 or batch % jax.device_count():
        raise DrivesimError(
            f"--batch {batch} does not split over the {jax.device_count()} devices of {jax.process_count()} "
            f"process(es); use a multiple of {jax.device_count()}"
        )
    chosen = load_planners(planners, planner_module)
    from drivesim.planners.camera import reads_cameras

    readers = [n for n, p in chosen.items() if reads_cameras(p)]
    cameras = bool(readers) if cameras is None else bool(cameras)
    if readers and not cameras:
        raise DrivesimError(f"--no-cameras: planner(s) {', '.join(readers)} read camera views; drop them or the option")
    if cameras and "kinematic" in (engine, compare):
        raise DrivesimError(
            "cameras: the kinematic engine draws no camera views; run the truth or the world-model engine "
            f"(and compare with truth){' for ' + ', '.join(readers) if readers else ''}"
        )
    if camera_views not in ("refiner", "warp"):
        raise DrivesimError(f"--camera-views {camera_views}: use refiner or warp")
    if cameras and engine == "world-model" and layout == "grid":
        raise DrivesimError("cameras: the camera refiner draws a layout's agents; use --layout free or guided")
    root = resolve_dataroot(dataroot, version, quiet)
    truth_cfg = None
    if "truth" in (engine, compare):
        from drivesim.sim.truth_engine import TruthConfig

        settings = require_synthetic(root)
        annotation_range = float(settings.get("annotation_range", 60.0))
        truth_cams = {"cameras": cameras, "image_width": int(settings.get("image_width", 160)),
                      "jpeg_quality": int(settings.get("jpeg_quality", 90))}  # fmt: skip
    steps = int(round(horizon * 10))
    if steps < 10:
        raise DrivesimError(f"--horizon {horizon}: use at least 1 s")
    sim = SimConfig(agents={"reactive": "idm"}.get(agents, agents), replan_every=replan_every)
    wm_cfg = None
    if engine == "world-model":
        from drivesim.sim.wm_engine import WMConfig

        try:
            wm_cfg = WMConfig(sim=sim, layout=layout != "grid", cameras=camera_views if cameras else "off")
        except ValueError as e:
            raise DrivesimError(f"--replan-every {replan_every}: {e}") from None
    if engine == "truth":
        truth_cfg = TruthConfig(sim=sim, annotation_range=annotation_range, **truth_cams)
    cfg = BenchConfig(horizon=steps, scenarios=scenarios, seed=seed, batch=batch, sim=sim, wm=wm_cfg,
                      samples=samples, drivable=drivable, truth=truth_cfg, score=score)  # fmt: skip
    compare_cfg = None
    if compare is not None:
        compare_cfg = compared_config(cfg, compare, annotation_range if compare == "truth" else 60.0)
        if compare == "truth":
            compare_cfg = dataclasses.replace(compare_cfg, truth=dataclasses.replace(compare_cfg.truth, **truth_cams))
    out = Path(out)
    sset = load_scenario_set(root, version, cfg, quiet=quiet)
    chosen_scenarios = sset.scenarios
    first = chosen_scenarios[0]
    handle = None
    if sim.agents == "learned":
        from drivesim.model.behaviour_file import load_behaviour
        from drivesim.sim.learned_agents import BehaviourHandle

        handle = BehaviourHandle.of(load_behaviour(Path(behaviour) if behaviour else DEFAULT_BEHAVIOUR))
    sample_obs = jax.eval_shape(
        lambda lg, h: observe(reset(lg, first.t0, None, cfg.sim, h), cfg.sim), sset.logs[first.log_index], handle
    )
    if cameras:  # the views every camera engine gives (the world model's crops)
        import jax.numpy as jnp

        from drivesim.data.types import CameraView
        from drivesim.sim.truth_engine import TruthConfig as _Views

        w, h = _Views().image_size
        sample_obs = sample_obs.replace(cameras=CameraView(
            images=jax.ShapeDtypeStruct((6, h, w, 3), jnp.uint8), xy=sample_obs.ego.xy, yaw=sample_obs.ego.yaw
        ))  # fmt: skip
    for p in chosen.values():
        try:
            check_planner(p, sample_obs)
        except (TypeError, ValueError) as e:
            raise DrivesimError(str(e)) from None
    model = contexts = None
    ckpt = None
    if wm_cfg is not None:
        from drivesim.model.model_file import load_world_model
        from drivesim.sim.wm_engine import ModelHandle

        ckpt = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
        wm = load_world_model(ckpt)
        refiner = None
        if wm_cfg.cameras in ("refiner", "warp"):
            from drivesim.model.probe_file import load_camera_refiner

            refiner = load_camera_refiner(camera_refiner)
        model = ModelHandle.of(wm, refiner)
        # read as the batches need them: each process reads only the scenarios it runs
        contexts = SceneContexts(root, version, chosen_scenarios, wm.cfg.frame_size, wm.cfg.history)
    scenes = truth_scenes(sset) if "truth" in (engine, compare) else None
    label = engine + (f" ({layout}, DAC from the {drivable}, {samples} futures)" if wm_cfg else "")
    who = "the world's own" if truth_cfg is not None else agents
    versus = f", compared with the {compare} engine" if compare else ""
    con = console(quiet=not lead)
    con.print(f"benchmarking {len(chosen)} planners on {len(chosen_scenarios)} scenarios of {len(sset.names)} logs "
              f"({horizon:g} s each, {who} agents, {label} engine{versus})")  # fmt: skip
    total = len(chosen) * len(chosen_scenarios) * (2 if compare else 1)
    with bar(quiet, "bench", total) as tick:
        results = run_benchmark(sset.stacked, chosen_scenarios, chosen, cfg,
                                progress=lambda m, name: [tick() for _ in range(m)],
                                model=model, contexts=contexts, compare=compare_cfg, truth=scenes,
                                behaviour=handle)  # fmt: skip
    results["config"].update({"dataroot": str(root), "version": version, "processes": jax.process_count(),
                              "devices": jax.device_count()})  # fmt: skip
    if not lead:
        return results
    if handle is not None:
        results["config"]["behaviour"] = str(behaviour or DEFAULT_BEHAVIOUR)
    if ckpt is not None:
        results["config"]["checkpoint"] = str(ckpt)
    if cameras:
        from drivesim.model.probe_file import DEFAULT as DEFAULT_PROBE
        from drivesim.model.probe_file import DEFAULT_CAMERA

        results["config"]["cameras"] = {
            "world_model": wm_cfg.cameras if wm_cfg is not None else None,
            "camera_refiner": str(camera_refiner or DEFAULT_CAMERA) if wm_cfg is not None else None,
            "probe": str(DEFAULT_PROBE), "truth": "rendered" if "truth" in (engine, compare) else None,
        }  # fmt: skip
    con.print(report.leaderboard(results))
    for s in results["skipped"]:
        print(f"skipped {s['scene']} t0={s['t0'] / 10:.1f}s: {s['reason']}", file=sys.stderr)
    written = report.write_results(results, out)
    kept = [sc for sc in chosen_scenarios
            if not any(k["scene"] == sc.scene and k["t0"] == sc.t0 for k in results["skipped"])]  # fmt: skip
    written += [report.plot_metrics(results, out), report.plot_distribution(results, out),
                report.plot_worst(results, sset.stacked, kept, out)]  # fmt: skip
    print("written: " + ", ".join(str(p) for p in written))
    return results

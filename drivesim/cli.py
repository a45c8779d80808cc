"""`drivesim <verb>`: the command line. It parses arguments and calls a pipeline
(`drivesim.pipelines`); nothing else imports it.

Every verb turns bad input into a one-line error on stderr and a non-zero exit status (2), with no
traceback (set DRIVESIM_DEBUG=1 to see one). Outputs are written to temporary names and renamed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from drivesim import provenance
from drivesim.errors import DrivesimError
from drivesim.pipelines.defaults import DEFAULT_VERSION

CLUSTER_OPTIONS = ("distributed", "coordinator", "num_processes", "process_id", "init_timeout", "heartbeat_timeout")
_CLUSTER_FLAGS = {"--distributed": False, "--coordinator": True, "--num-processes": True, "--process-id": True,
                  "--init-timeout": True, "--heartbeat-timeout": True}  # fmt: skip


def _kwargs(args, *drop: str) -> dict:
    """The parsed options as keyword arguments of a pipeline (without the verb's own fields)."""
    return {k: v for k, v in vars(args).items() if k not in ("func", "verb") + drop}


def cmd_synth(args) -> int:
    from drivesim.pipelines.datasets import synth

    synth(**_kwargs(args))
    return 0


def cmd_replay(args) -> int:
    from drivesim.pipelines.datasets import replay

    for path in replay(**_kwargs(args)):
        print(f"replay written to {path.resolve()}")
    return 0


def cmd_scenes(args) -> int:
    from drivesim.pipelines.datasets import scenes

    for name, location, samples, description in scenes(**_kwargs(args)):
        print(f"{name}\t{location}\t{samples} samples\t{description}")
    return 0


def cmd_cache(args) -> int:
    from drivesim.pipelines.datasets import cache

    cache(**_kwargs(args))
    return 0


def cmd_bench(args) -> int:
    from drivesim.pipelines.bench import bench

    bench(**_kwargs(args, *CLUSTER_OPTIONS))
    return 0


def cmd_train(args) -> int:
    from pathlib import Path

    from drivesim.pipelines.behaviour import BehaviourExperiment, train_behaviour
    from drivesim.pipelines.defaults import load_experiment
    from drivesim.pipelines.experiment import run

    exp = load_experiment(args.config, args.quick)
    from drivesim.pipelines.probe import CameraRefineExperiment, ProbeExperiment, train_frames

    if isinstance(exp, ProbeExperiment | CameraRefineExperiment):
        out = train_frames(exp, Path(args.workdir), resume=args.resume, progress=not args.quiet)
        print(
            f"trained {'perception probe' if isinstance(exp, ProbeExperiment) else 'camera refiner'} written to {out.resolve()}"
        )
        return 0
    if isinstance(exp, BehaviourExperiment):
        out = train_behaviour(exp, Path(args.workdir), resume=args.resume, progress=not args.quiet)
        print(f"trained behaviour model written to {out.resolve()}")
        return 0
    out = run(exp, Path(args.workdir), resume=args.resume, progress=not args.quiet, base=args.base)
    print(f"trained world model written to {out.resolve()}")
    return 0


def cmd_eval_wm(args) -> int:
    from drivesim.pipelines.eval_wm import eval_wm

    eval_wm(**_kwargs(args))
    return 0


def cmd_counterfactual(args) -> int:
    from drivesim.pipelines.counterfactual import counterfactual, list_scene_agents

    if args.list_agents:
        list_scene_agents(args.scene, args.t0, args.dataroot, args.version, args.quiet)
        return 0
    counterfactual(**_kwargs(args, "list_agents", "edit"), edits=args.edit)
    return 0


def cmd_predict(args) -> int:
    from drivesim.pipelines.forecast import predict

    predict(**_kwargs(args))
    return 0


def cmd_launch(args) -> int:
    from drivesim.pipelines.launch import launch_local

    argv = list(args.command)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    return launch_local(args.local_processes, argv, args.devices_per_process, args.init_timeout,
                        args.heartbeat_timeout, args.pin_cpus)  # fmt: skip


def cmd_demo(args) -> int:
    from drivesim.pipelines.demo import demo

    demo(**_kwargs(args))
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
    s.add_argument("--workers", type=int, default=1, help="scenes made in parallel by this many processes")
    s.set_defaults(func=cmd_synth)

    def timeout_args(q):
        q.add_argument("--init-timeout", type=int, default=60, help="seconds for every process to join")
        q.add_argument("--heartbeat-timeout", type=int, default=10,
                       help="seconds of silence before a process is declared dead and the run stopped")  # fmt: skip

    def cluster_args(q):
        g = q.add_argument_group("several processes (see docs/distributed.md; locally: drivesim launch)")
        g.add_argument(
            "--distributed",
            action="store_true",
            help="join a multi-process run, detecting the cluster (SLURM, Open MPI, Kubernetes, Cloud TPU)",
        )
        g.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="process 0's address (explicit set-up)")
        g.add_argument("--num-processes", type=int, default=None, metavar="N")
        g.add_argument("--process-id", type=int, default=None, metavar="I")
        timeout_args(g)  # fmt: skip

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

    b = sub.add_parser("bench", help="closed-loop planner benchmark (PDMS, EPDMS, CLS) with confidence intervals")
    data_args(b)
    b.add_argument("--planners", default=None, help="comma-separated built-in planners (default: all)")
    b.add_argument("--planner-module", default=None, help="your planner: package.module:factory")
    b.add_argument(
        "--engine",
        default="kinematic",
        choices=["kinematic", "world-model", "truth"],
        help="kinematic (reference), world-model, or truth: the planner drives inside the synthetic world itself, "
        "whose traffic reacts (synthetic dataroots only)",
    )
    b.add_argument(
        "--agents",
        default=None,
        choices=["log", "reactive", "learned", "cv"],
        help="the other road users: log replay, reactive IDM, learned (the behaviour model) or cv (constant "
        "velocity, its stand-in). Default: log for the kinematic engine, learned for the world model's free "
        "layout, log for its guided pass-through (under --engine truth: only the --compare kinematic engine's)",
    )
    b.add_argument("--behaviour", default=None, help="behaviour model for learned agents (default: the shipped one)")
    b.add_argument("--scenarios", type=int, default=None, help="at most this many scenarios (default: all)")
    b.add_argument("--horizon", type=float, default=8.0, help="seconds of closed loop per scenario")
    b.add_argument("--replan-every", type=int, default=1, help="simulator steps (0.1 s) between planner calls")
    b.add_argument("--batch", type=int, default=16, help="scenarios per compiled batch")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--checkpoint", default=None, help="world model (default: the shipped one)")
    b.add_argument(
        "--layout",
        default="free",
        choices=["free", "guided", "grid"],
        help="world-model engine: free (the default) renders the behaviour model's agents (--agents learned, or cv "
        "for the ablation); guided is a debugging pass-through: the model renders the log's (or reactive IDM) "
        "agents and the scores see them as given; grid reads the agents off the predicted BEV (the earlier free mode)",
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
        "--compare",
        default=None,
        choices=["truth", "kinematic"],
        help="also run this engine on the same scenarios (seed, horizon, cadence); report its PDMS per planner and "
        "the rank agreement (Kendall tau with a bootstrap interval, Spearman rho). truth: synthetic dataroots only",
    )
    b.add_argument(
        "--compare-reference",
        action="store_true",
        help="the same as --compare kinematic (kept for old scripts)",
    )
    b.add_argument(
        "--cameras",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give planners the six camera views: the truth engine renders the world, the world model draws them "
        "with its camera refiner (default: on when a chosen planner reads them, e.g. camera_pdm)",
    )
    b.add_argument(
        "--camera-refiner", default=None, help="world-model engine: camera refiner file (default: the shipped one)"
    )
    b.add_argument(
        "--camera-views",
        default="refiner",
        choices=["refiner", "warp"],
        help="world-model engine: the views planners see: the camera refiner's (the default), or the ego warp alone "
        "(the ablation without the learned part)",
    )
    b.add_argument(
        "--score",
        default="pdms",
        choices=["pdms", "epdms"],
        help="the headline score that ranks the planners and that --compare agrees on: pdms (NAVSIM v1, the "
        "default) or epdms (NAVSIM v2: adds driving direction, traffic lights, lane keeping, history and extended "
        "comfort). Both are always reported",
    )
    b.add_argument("--out", default="out/bench", help="output folder")
    cluster_args(b)
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser(
        "train",
        help="train a world model or a behaviour model (experiments/behaviour_small.py) from an experiment file",
    )
    t.add_argument("--config", required=True, help="experiments/<name>.py")
    t.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, loss curves, world_model.npz")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoints")
    t.add_argument("--quick", action="store_true", help="the experiment's shrunk smoke-test version")
    t.add_argument(
        "--base", default=None, help="a trained model file: keep its tokenizers and dynamics, train only the refiner"
    )
    cluster_args(t)
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
    w.add_argument("--probe", default=None, help="perception probe file (default: the shipped data/probe_small.npz)")
    w.add_argument("--no-probe", action="store_true", help="skip the perception probe's reads")
    w.add_argument("--camera", default=None, help="camera refiner file (default: the shipped data/camera_small.npz)")
    w.add_argument("--no-camera", action="store_true", help="skip the camera refiner's rows")
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
    cf.add_argument(
        "--agents",
        default="learned",
        choices=["learned", "cv", "log", "reactive"],
        help="the others: learned (the default: the behaviour model, free-running, they react to the edit), cv "
        "(constant velocity), or the guided pass-through of the edited log or of reactive IDM",
    )
    cf.add_argument("--behaviour", default=None, help="behaviour model (default: the shipped one)")
    cf.add_argument("--samples", type=int, default=2, help="sampled futures")
    cf.add_argument("--horizon", type=float, default=4.0, help="seconds to generate")
    cf.add_argument("--checkpoint", default=None, help="world model .npz (default: the shipped one)")
    cf.add_argument("--out", default="out/counterfactual", help="output folder")
    cf.add_argument("--seed", type=int, default=0)
    cf.set_defaults(func=cmd_counterfactual)

    la = sub.add_parser(
        "launch",
        help="run a verb (train, bench) as N local processes of one JAX program",
        description="Start N local processes of `drivesim VERB ARGS` joined by jax.distributed on a free port; "
        "process 0 writes the outputs. Ctrl-C stops them all; when one fails the others are stopped.",
    )
    la.add_argument("--local-processes", type=int, required=True, help="how many processes")
    la.add_argument(
        "--devices-per-process", type=int, default=None, help="CPU: host devices per process (default: one)"
    )
    la.add_argument("--pin-cpus", action=argparse.BooleanOptionalAction, default=True,
                    help="give each process its own equal share of the CPU cores (default; --no-pin-cpus: "
                    "every process may use every core, and their thread pools contend)")  # fmt: skip
    timeout_args(la)
    la.add_argument("command", nargs=argparse.REMAINDER, help="-- VERB ARGS, e.g. -- bench --scenarios 64")
    la.set_defaults(func=cmd_launch)

    d = sub.add_parser("demo", help="the main job on the embedded synthetic data")
    d.add_argument("--out", default="out/demo", help="report folder")
    d.set_defaults(func=cmd_demo)
    return p


def _cluster(args):
    """The `Cluster` of a verb's options (None for verbs that run on one process)."""
    if not hasattr(args, "distributed"):
        return None
    from drivesim.distributed import Cluster

    return Cluster(auto=args.distributed, coordinator=args.coordinator, num_processes=args.num_processes,
                   process_id=args.process_id, init_timeout=args.init_timeout,
                   heartbeat_timeout=args.heartbeat_timeout)  # fmt: skip


def _without_cluster_flags(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in _CLUSTER_FLAGS:
            skip = _CLUSTER_FLAGS[name] and "=" not in a
            continue
        out.append(a)
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    provenance.set_command(shlex.join(["drivesim"] + argv))
    try:
        cluster = _cluster(args)
        if cluster is not None:
            from drivesim import distributed

            if cluster.enabled:  # this process supervises its own drivesim, which joins the run
                from drivesim.pipelines.launch import supervise_self

                cluster.validate()
                return supervise_self(cluster, _without_cluster_flags(argv), args.verb)
            distributed.initialize(cluster)  # the supervised child: joins through $DRIVESIM_CLUSTER
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

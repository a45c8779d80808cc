"""Held-out evaluation of the behaviour model beside its stand-ins (constant velocity, IDM).

    .venv/bin/python experiments/behaviour_eval.py                    # experiments/results/behaviour.json
    .venv/bin/python experiments/behaviour_eval.py --quick            # a smoke run of a few minutes
    .venv/bin/python experiments/behaviour_eval.py --model runs/behaviour_mixture/behaviour.npz \
        --out experiments/results/ablations/behaviour_mixture.json    # the head ablation

Held-out data: synthetic scenes of world seeds 900 and 901 (training uses 100..144), 16 s each,
simulated on the fly (traffic only). Open loop (the ego replays the log): 32 scenarios of 8 s,
6 sampled futures of the learned agents. Reactivity: the scenes of seeds 900..903 with the ego
edited at 4 s (hard brake, stop, cut-in), re-simulated by the truth world. Metrics: see
`drivesim.pipelines.behaviour_eval`.
"""

import argparse
import dataclasses
import time

from drivesim.pipelines.behaviour_eval import HeldOut


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    heldout: HeldOut = HeldOut()
    samples: int = 6
    edit_step: int = 40
    seed: int = 0
    reactivity_seeds: tuple[int, ...] = (900, 901, 902, 903)
    """World seeds of the reactivity test (more scenes than open loop: few agents follow the ego)."""


VALIDATION_SEEDS = (180, 181, 182, 183)
"""World seeds for choosing settings (the sampling temperature): neither training (100..169) nor
held-out (900..903) seeds."""


def get_config(quick: bool = False, validation: bool = False) -> EvalConfig:
    if quick:
        return EvalConfig(heldout=HeldOut(seeds=(950,), scenes_per_seed=2), samples=2, reactivity_seeds=(950,))
    if validation:
        return EvalConfig(heldout=HeldOut(seeds=VALIDATION_SEEDS[:2]), reactivity_seeds=VALIDATION_SEEDS)
    return EvalConfig()


def main() -> None:
    from pathlib import Path

    from drivesim.atomic import write_json
    from drivesim.model.behaviour_file import load_behaviour
    from drivesim.pipelines.behaviour_eval import EVAL_LOAD, edited_scenes, evaluate_agents, heldout_logs, reactivity
    from drivesim.provenance import provenance, set_command
    from drivesim.sim.learned_agents import BehaviourHandle
    from drivesim.synth.dataset import SynthConfig, scene_recipes

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="data/behaviour_small.npz")
    p.add_argument("--out", default="experiments/results/behaviour.json")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the learned agents")
    p.add_argument(
        "--agent-every",
        type=int,
        default=None,
        help="sim steps between the agents' decisions, 1 or 5 (default: the engine's)",
    )
    p.add_argument(
        "--validation", action="store_true", help="the validation seeds (for choosing settings), not the held-out ones"
    )
    args = p.parse_args()
    if args.agent_every is None:
        from drivesim.sim.engine import SimConfig

        args.agent_every = SimConfig().agent_every
    set_command(
        "python experiments/behaviour_eval.py "
        + " ".join(f"{k} {v}" for k, v in (("--model", args.model), ("--out", args.out)))
        + (f" --temperature {args.temperature:g}" if args.temperature != 1.0 else "")
        + f" --agent-every {args.agent_every}"
        + (" --quick" if args.quick else "")
        + (" --validation" if args.validation else "")
    )
    cfg = get_config(args.quick, args.validation)
    h = cfg.heldout
    handle = BehaviourHandle.of(load_behaviour(args.model))
    t0 = time.time()
    logs, recipes = heldout_logs(h)
    open_loop = evaluate_agents(
        logs, h, handle, cfg.samples, cfg.seed, temperature=args.temperature, agent_every=args.agent_every
    )
    t1 = time.time()
    steps = int(round((h.seconds - 0.5) * 10)) + 1
    load = dataclasses.replace(EVAL_LOAD, max_steps=steps)
    recipes = [
        r
        for s in cfg.reactivity_seeds
        for r in scene_recipes(SynthConfig(scenes=h.scenes_per_seed, seconds=h.seconds, seed=s))
    ]
    cases = edited_scenes(recipes, cfg.edit_step, load)
    react = reactivity(
        cases,
        cfg.edit_step,
        h.horizon,
        handle,
        cfg.samples,
        cfg.seed,
        temperature=args.temperature,
        agent_every=args.agent_every,
    )
    out = {
        "config": {
            "heldout": dataclasses.asdict(h),
            "samples": cfg.samples,
            "edit_step": cfg.edit_step,
            "reactivity_seeds": list(cfg.reactivity_seeds),
            "temperature": args.temperature,
            "agent_every": args.agent_every,
        },  # fmt: skip
        "open_loop": open_loop,
        "reactivity": react,
        "seconds": {"open_loop": round(t1 - t0, 1), "reactivity": round(time.time() - t1, 1)},
        "provenance": provenance(checkpoint=Path(args.model)),
    }
    write_json(Path(args.out), out)
    _print(out)


def _print(out) -> None:
    from rich.console import Console
    from rich.table import Table

    ol = out["open_loop"]
    t = Table(title=f"held-out agents ({ol['scenarios']} scenarios)")
    keys = [
        "minADE@3s",
        "minADE@8s",
        "miss@8s",
        "collision",
        "offroad",
        "jsd_speed",
        "jsd_accel",
        "jsd_yaw_rate",
        "jsd_nearest",
        "jsd_ttc",
    ]
    t.add_column("agents")
    for k in keys:
        t.add_column(k)
    for m in ("learned", "cv", "idm"):
        t.add_row(m, *(f"{ol[m][k]:.3f}" for k in keys))
    t.add_row("truth", "", "", "", f"{ol['learned']['collision_truth']:.3f}", f"{ol['learned']['offroad_truth']:.3f}")
    Console().print(t)
    r = out["reactivity"]
    t = Table(title="displacement from the true re-simulation, agents the ego edit affects (m)")
    edits = [e for e in r["log_replay"] if e != "all"] + ["all"]
    t.add_column("agents")
    for e in edits:
        t.add_column(e)
    for m in ("learned", "cv", "idm", "log_replay"):
        t.add_row(m, *(f"{r[m].get(e, float('nan')):.2f}" for e in edits))
    Console().print(t)


if __name__ == "__main__":
    main()

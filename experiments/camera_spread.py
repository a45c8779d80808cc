"""Do sampled futures differ where the future is uncertain? The per-pixel spread of the world
model's camera views over sampled futures, in the agents' areas against the static background.

In the world-model engine (free-running, the behaviour model's agents, the camera refiner's
views) each key draws its own future: the agents' motion is sampled, the ego drives the same
planner (IDM) in each. For every keyframe the per-pixel standard deviation of the views over the
samples is split by where any sample's layout puts an agent in the view (the ray-cast boxes of
`drivesim.model.camera_refine.render_boxes`, over all samples: where an agent is in one future
and not in another is what is uncertain) against the rest (road, buildings, sky), and reported by
horizon. The same with constant-velocity agents (`--agents cv`: one future, no spread) is the
stand-in row. Writes experiments/results/camera_spread.json (with provenance).

    .venv/bin/python experiments/camera_spread.py --dataroot data/heldout/cam_seed23
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataroot", required=True)
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--scenarios", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--agents", choices=("learned", "cv"), default="learned")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "camera_spread.json"))
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from drivesim.model.behaviour_file import load_behaviour
    from drivesim.model.camera_refine import pixel_rays, render_boxes
    from drivesim.model.ego_warp import crop_offset
    from drivesim.model.model_file import load_world_model
    from drivesim.model.probe_file import load_camera_refiner
    from drivesim.pipelines.benchmark import BenchConfig
    from drivesim.pipelines.defaults import DEFAULT_BEHAVIOUR, DEFAULT_CHECKPOINT
    from drivesim.pipelines.scenario_set import load_contexts, load_scenario_set
    from drivesim.planners.builtin import IdmPlanner
    from drivesim.provenance import provenance
    from drivesim.sim import wm_engine
    from drivesim.sim.engine import SimConfig
    from drivesim.sim.learned_agents import BehaviourHandle

    steps = int(round(args.seconds * 10))
    sim = SimConfig(agents=args.agents)
    cfg = wm_engine.WMConfig(sim=sim, layout=True, cameras="refiner")
    sset = load_scenario_set(args.dataroot, args.version, BenchConfig(horizon=steps, sim=sim), count=args.scenarios)
    model = load_world_model(DEFAULT_CHECKPOINT)
    refiner = load_camera_refiner()
    handle = wm_engine.ModelHandle.of(model, refiner)
    behaviour = BehaviourHandle.of(load_behaviour(DEFAULT_BEHAVIOUR)) if args.agents == "learned" else None
    ctxs = load_contexts(args.dataroot, args.version, sset.scenarios, model.cfg.frame_size, model.cfg.history)
    planner = IdmPlanner()
    rcfg = refiner.cfg
    origin, direction = pixel_rays(refiner.rig(), rcfg.image_size, crop_offset(rcfg.frame_size, rcfg.image_size))

    def one(log, t0, ctx, key):
        state = wm_engine.reset(handle, log, t0, ctx, key, cfg, behaviour)
        final, tr = wm_engine.rollout(handle, state, planner, None, steps, key, cfg)
        # each keyframe's layout, in its ego frame: the agents at the keyframe steps
        ks = jnp.arange(1, tr.key_xy.shape[0]) * cfg.keyframe_steps
        A = log.agents.size.shape[0]  # the simulated agents' slots (then the made-up blocks)
        ag = jax.tree.map(lambda a: a[ks, :A], tr.agents)
        lays = jax.vmap(lambda a, x, y: wm_engine.layout_boxes(a, log.agents.size, log.agents.category, x, y).packed())(
            ag, tr.key_xy[1:], tr.key_yaw[1:]
        )
        hit = jax.vmap(lambda lay: render_boxes(origin, direction, lay)[..., 0] > 0)(lays)
        return tr.images[1:], hit

    run = jax.jit(jax.vmap(one, in_axes=(None, None, None, 0)))
    agent_sd = {}
    back_sd = {}
    for i, sc in enumerate(sset.scenarios):
        log = jax.tree.map(lambda a, k=sc.log_index: jnp.asarray(a[k]), sset.stacked)
        ctx = jax.tree.map(lambda a, k=i: jnp.asarray(np.asarray(a)[k]), ctxs)
        keys = jax.random.split(jax.random.key(1000 + i), args.samples)
        images, hit = jax.device_get(run(log, sc.t0, ctx, keys))  # (S, F, 6, h, w, 3), (S, F, 6, h, w)
        sd = images.astype(np.float32).std(axis=0).mean(-1)  # (F, 6, h, w) grey levels
        where = hit.any(axis=0)
        for f in range(sd.shape[0]):
            agent_sd.setdefault(f, []).append(float(sd[f][where[f]].mean()) if where[f].any() else np.nan)
            back_sd.setdefault(f, []).append(float(sd[f][~where[f]].mean()))
        print(f"scenario {i + 1}/{len(sset.scenarios)} {sc.scene} t0={sc.t0}: agent areas {np.nanmean(sd[where]):.2f}, "
              f"background {sd[~where].mean():.2f}", flush=True)  # fmt: skip
    rows = {}
    for f in sorted(agent_sd):
        rows[f"{(f + 1) * 0.5:g}s"] = {
            "agent_areas": float(np.nanmean(agent_sd[f])),
            "background": float(np.mean(back_sd[f])),
        }
    out = {
        "what": "per-pixel standard deviation (grey levels 0-255) of the world model's camera views over sampled futures",
        "agents": args.agents, "samples": args.samples, "scenarios": len(sset.scenarios),
        "dataroot": str(args.dataroot), "by_horizon": rows,
        "provenance": provenance(
            command=" ".join(["python", "experiments/camera_spread.py", *(argv or sys.argv[1:])]),
            checkpoint=DEFAULT_CHECKPOINT, dataroot=args.dataroot, version=args.version,
        ),
    }  # fmt: skip
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)
    for k, r in rows.items():
        print(f"{k}: agent areas {r['agent_areas']:.2f}, background {r['background']:.2f}")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

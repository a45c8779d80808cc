"""Behaviour model v6: v5 (`experiments/results/ablations/behaviour_v5.npz`) fine-tuned on roll-in
scenes (DAgger).

    .venv/bin/drivesim train --config experiments/behaviour_rollin.py --workdir runs/behaviour_rollin
    .venv/bin/python experiments/behaviour_eval.py --model runs/behaviour_rollin/behaviour.npz --validation

A sampled model drifts into states the world's logs never show (a car closing on a stopped one, a
car left standing at a green light); the roll-in scenes (`drivesim.pipelines.behaviour_rollin`)
let v5 drive every agent for 1 to 6 s from a random keyframe, put the world's agents where it took
them and label what the world's drivers do from there. Data: 600 roll-in scenes of 16 s (world
seeds 200..214, rolled in by v5 from a random keyframe), 400 rolled in from a sudden ego edit
(215..224: a hard brake, a lane change, a speed-up) and, against forgetting, 800 of v5's own kinds
(plain 100..109, ego edits 130..134, pushed 145..149), never the validation (180..183, 8) or
evaluation (900..903, 7, 21, 23, 24) seeds. Training: 3,000 steps of 32 from v5's parameters.
`get_config(quick=True)` shrinks everything for a smoke run.
"""

import dataclasses

from drivesim.model.behaviour import BehaviourConfig
from drivesim.pipelines.behaviour import BehaviourExperiment, TrafficData
from drivesim.train import TrainConfig

V5 = "experiments/results/ablations/behaviour_v5.npz"
"""Model v5 (a copy of the model shipped before v6): it rolls in and v6 starts from it."""


def get_config(quick: bool = False) -> BehaviourExperiment:
    exp = BehaviourExperiment(
        model=BehaviourConfig(head="tokens", signals=4, past_dropout=0.5),
        data=TrafficData(
            seeds=tuple(range(100, 110)), edited_seeds=tuple(range(130, 135)), pushed_seeds=tuple(range(145, 150)),
            rollin_seeds=tuple(range(200, 215)), rollin_edited_seeds=tuple(range(215, 225)),
            rollin_model=V5,
        ),
        train=TrainConfig(
            steps=3000, batch_size=32, learning_rate=3e-4, warmup_steps=100, weight_decay=1e-4,
            log_every=50, checkpoint_every=500,
        ),
        init_from=V5,
    )  # fmt: skip
    if quick:
        exp = dataclasses.replace(
            exp,
            data=dataclasses.replace(
                exp.data,
                seeds=(100,),
                edited_seeds=(),
                pushed_seeds=(),
                rollin_seeds=(200,),
                scenes_per_seed=4,
                cache="data/train/behaviour_quick",
            ),
            train=dataclasses.replace(exp.train, steps=20, log_every=10, checkpoint_every=10, warmup_steps=5),
        )
    return exp

"""Behaviour model v5 (`experiments/results/ablations/behaviour_v5.npz`): reactive agents. The shipped
model, v6 (`data/behaviour_small.npz`), is v5 fine-tuned on roll-in scenes
(`experiments/behaviour_rollin.py`).

    .venv/bin/drivesim train --config experiments/behaviour_small.py --workdir runs/behaviour_small
    cp runs/behaviour_small/behaviour.npz experiments/results/ablations/behaviour_v5.npz   # (+ .json)
    .venv/bin/python experiments/behaviour_eval.py --model experiments/results/ablations/behaviour_v5.npz \
        --out experiments/results/ablations/behaviour_eval_v5.json

Data: the traffic-only fast path of the synthetic world (`drivesim.pipelines.behaviour`), 2,800
scenes of 16 s, none from the validation (180..183) or evaluation (900..903) seeds: 1,200 plain
ones on 30 world seeds (100..129: 120 maps); 1,000 on 25 seeds (130..144, 160..169) in which the
ego does something sudden at a random time (a hard brake or a stop, a lane change, a speed-up;
`ego_edit`) and the world's traffic reacts; 600 on 15 seeds (145..159) whose cars are pushed toward
the car ahead (`AgentPushes`) and recover by the world's rules. Simulated without cameras in about
35 minutes on the 2-core CPU and cached under data/train/behaviour. Training: 8,000 steps of 32
examples.
The agents see the 4 stop lines of traffic lights nearest them, red or amber now (`signals`).
Each agent's own past is hidden in half the training examples (`past_dropout`), so that the
model learns to read the car ahead rather than copy its own braking (docs/behaviour.md, "the
copycat shortcut"). It runs seeing its own past (`own_past`, chosen on validation seeds: the
benchmark's validity); `own_past=False` is the ablation. Training: 21 minutes alone.
Head: motion tokens (`drivesim.model.motion_tokens`); the mixture head is the ablation
(experiments/behaviour_mixture.py, compared in docs/behaviour.md).
`get_config(quick=True)` shrinks everything for a smoke run of a minute.
"""

import dataclasses

from drivesim.model.behaviour import BehaviourConfig
from drivesim.pipelines.behaviour import BehaviourExperiment, TrafficData
from drivesim.train import TrainConfig


def get_config(quick: bool = False, head: str = "tokens") -> BehaviourExperiment:
    exp = BehaviourExperiment(
        model=BehaviourConfig(head=head, signals=4, past_dropout=0.5),
        data=TrafficData(edited_seeds=tuple(range(130, 145)) + tuple(range(160, 170)), pushed_seeds=tuple(range(145, 160))),
        train=TrainConfig(
            steps=8000, batch_size=32, learning_rate=1e-3, warmup_steps=200, weight_decay=1e-4,
            log_every=50, checkpoint_every=500,
        ),
    )  # fmt: skip
    if quick:
        exp = dataclasses.replace(
            exp,
            data=dataclasses.replace(exp.data, seeds=(100,), scenes_per_seed=8, cache="data/train/behaviour_quick"),
            train=dataclasses.replace(exp.train, steps=30, log_every=10, checkpoint_every=15, warmup_steps=5),
        )
    return exp

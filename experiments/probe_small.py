"""The shipped perception probe (`data/probe_small.npz`): six true camera views -> BEV agents and
drivable area, frozen, to judge generated frames (`drivesim eval-wm`).

    .venv/bin/drivesim train --config experiments/probe_small.py --workdir runs/probe_small
    cp runs/probe_small/probe.npz data/probe_small.npz   # (+ .json): what drivesim ships

Data: the true rendered keyframes of the world model's training world (150 synthetic scenes of
20 s, seed 1; `drivesim.pipelines.experiment.TrainingData`), never a generated frame; scored after
training on the validation world (12 scenes, seed 2). The evaluation set (seed 0) and the held-out
seeds are never seen. `get_config(quick=True)` shrinks it for a smoke run.
"""

import dataclasses

from drivesim.model.probe import ProbeConfig
from drivesim.pipelines.experiment import TrainingData
from drivesim.pipelines.probe import ProbeExperiment
from drivesim.train import TrainConfig


def get_config(quick: bool = False) -> ProbeExperiment:
    exp = ProbeExperiment(
        model=ProbeConfig(),
        data=TrainingData(),
        train=TrainConfig(
            steps=2500, batch_size=8, learning_rate=2e-3, warmup_steps=100, weight_decay=1e-4,
            log_every=50, checkpoint_every=500,
        ),
        validation=TrainingData(cache="data/val/cache", dataroot="data/val/synth", scenes=12, seconds=20.0, seed=2),
    )  # fmt: skip
    if quick:
        exp = dataclasses.replace(
            exp,
            data=TrainingData(cache="data/train/probe_quick/cache", dataroot="data/train/probe_quick/synth", scenes=2,
                              seconds=6.0, seed=1),
            train=dataclasses.replace(exp.train, steps=6, log_every=2, checkpoint_every=3, warmup_steps=2),
            validation=None,
        )  # fmt: skip
    return exp

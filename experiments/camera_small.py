"""The shipped camera refiner (`data/camera_small.npz`): the ego-warped last frame corrected by a
network that sees the predicted layout rendered into each view (`drivesim.model.camera_refine`).

    .venv/bin/drivesim train --config experiments/camera_small.py --workdir runs/camera_small
    cp runs/camera_small/camera.npz data/camera_small.npz   # (+ .json): what drivesim ships

Data: the world model's training world (150 synthetic scenes of 20 s, seed 1): pairs of a last
keyframe and a future keyframe 0.5..3 s later, with the true future boxes; scored after training
on the validation world (seed 2). `get_config(layout=False)` is the ablation without the layout
(a learned correction of the warp alone); `get_config(quick=True)` is a smoke run.
"""

import dataclasses

from drivesim.model.camera_refine import CameraRefineConfig
from drivesim.pipelines.experiment import TrainingData
from drivesim.pipelines.probe import CameraRefineExperiment
from drivesim.train import TrainConfig


def get_config(quick: bool = False, layout: bool = True) -> CameraRefineExperiment:
    exp = CameraRefineExperiment(
        model=CameraRefineConfig(layout=layout),
        data=TrainingData(),
        train=TrainConfig(
            steps=1000, batch_size=8, learning_rate=2e-3, warmup_steps=50, weight_decay=1e-4,
            log_every=50, checkpoint_every=250,
        ),
        validation=TrainingData(cache="data/val/cache", dataroot="data/val/synth", scenes=12, seconds=20.0, seed=2),
    )  # fmt: skip
    if quick:
        exp = dataclasses.replace(
            exp,
            data=TrainingData(cache="data/train/probe_quick/cache", dataroot="data/train/probe_quick/synth", scenes=2,
                              seconds=6.0, seed=1),
            train=dataclasses.replace(exp.train, steps=4, log_every=2, checkpoint_every=2, warmup_steps=1),
            validation=None,
        )  # fmt: skip
    return exp

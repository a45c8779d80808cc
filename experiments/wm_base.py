"""The `base` world model, for a GPU (an H100 trains it in well under an hour).

    .venv/bin/drivesim train --config experiments/wm_base.py --workdir runs/wm_base

Wider tokenizers and a deeper, wider dynamics transformer on 600 synthetic scenes; bf16 compute on
GPU ("auto"). `get_config(quick=True)` shrinks the schedule for a smoke run.
"""

import dataclasses

from drivesim.model.config import WorldModelConfig
from drivesim.pipelines.experiment import Experiment, TrainingData
from drivesim.train import TrainConfig


def get_config(quick: bool = False) -> Experiment:
    exp = Experiment(
        model=WorldModelConfig(
            cam_channels=(64, 128, 192), cam_latent=8, occ_channels=(64, 128, 192), occ_latent=16,
            d_model=384, heads=6, layers=8, mlp_ratio=4, sample_steps=8,
        ),
        data=TrainingData(scenes=600, cache="data/train/cache_base", dataroot="data/train/synth_base"),
        tokenizer=TrainConfig(steps=20000, batch_size=128, learning_rate=5e-4, warmup_steps=500, log_every=100,
                              checkpoint_every=2000, compute_dtype="auto"),
        dynamics=TrainConfig(steps=50000, batch_size=64, learning_rate=3e-4, warmup_steps=1000, log_every=100,
                             checkpoint_every=2000, compute_dtype="auto"),
    )  # fmt: skip
    if quick:
        exp = dataclasses.replace(
            exp,
            tokenizer=dataclasses.replace(exp.tokenizer, steps=200),
            dynamics=dataclasses.replace(exp.dynamics, steps=200),
        )
    return exp

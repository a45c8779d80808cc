"""A tiny world model for tests and smoke runs: builds, trains a few steps and samples in well under
a minute on a CPU.

    .venv/bin/drivesim train --config experiments/wm_tiny.py --workdir runs/wm_tiny
"""

from drivesim.model.config import WorldModelConfig
from drivesim.pipelines.experiment import Experiment, TrainingData
from drivesim.train import TrainConfig

TINY = WorldModelConfig(
    cam_channels=(8, 16, 16), cam_latent=4, occ_channels=(8, 16, 16), occ_latent=8,
    d_model=32, heads=2, layers=1, mlp_ratio=2, sample_steps=2, occ_refine=True, refine_channels=(8, 16, 16),
)  # fmt: skip


def get_config(quick: bool = True) -> Experiment:
    return Experiment(
        model=TINY,
        data=TrainingData(scenes=3, seconds=8.0, cache="data/train/cache_tiny", dataroot="data/train/synth_tiny"),
        tokenizer=TrainConfig(
            steps=6, batch_size=4, learning_rate=1e-3, warmup_steps=2, log_every=2, checkpoint_every=6
        ),
        dynamics=TrainConfig(
            steps=6, batch_size=4, learning_rate=1e-3, warmup_steps=2, log_every=2, checkpoint_every=6
        ),
        refiner=TrainConfig(steps=4, batch_size=4, learning_rate=1e-3, warmup_steps=1, log_every=2, checkpoint_every=4),
        refiner_clips=8,
    )

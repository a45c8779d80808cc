"""A tiny world model for tests and smoke runs: builds, trains a few steps and samples in well under
a minute on a CPU.

    .venv/bin/drivesim train --config experiments/wm_tiny.py --workdir runs/wm_tiny
"""

from drivesim.model.config import WorldModelConfig
from drivesim.pipelines.experiment import Experiment, TrainingData
from drivesim.train import TrainConfig

TINY = WorldModelConfig.tiny(occ_refine=True)


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

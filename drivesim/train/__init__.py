"""Training: the generic data-parallel loop, its mesh and its checkpoints (model-agnostic).

A model plugs in as a `Task` (see `loop.Task`); `train(task, TrainConfig(...), workdir)` does the
rest, and `load_model(task, workdir)` gets the trained model back for inference.
"""

from drivesim.train.loop import Task, TrainConfig, TrainState, load_model, train

__all__ = ["Task", "TrainConfig", "TrainState", "load_model", "train"]

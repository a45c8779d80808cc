"""The exported behaviour-model file: one .npz (config and parameters) and a .json record beside it
(config, the .npz's sha256, how it was trained, provenance), as `drivesim.model.model_file`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from flax import nnx

from drivesim.model.behaviour import BehaviourConfig, BehaviourModel
from drivesim.model.model_file import load_module_file, record_path, save_module_file
from drivesim.provenance import sha256_file

FORMAT = 1
KIND = "behaviour"


def save_behaviour(model: BehaviourModel, path, record: dict | None = None) -> Path:
    """Write the model as one .npz, atomically, and its .json record beside it."""
    return save_module_file(model, path, KIND, FORMAT, record)


def load_behaviour(path) -> BehaviourModel:
    """The behaviour model stored at `path` (written by `save_behaviour`)."""
    return load_module_file(
        path, KIND, FORMAT, "behaviour model",
        "train one (`drivesim train --config experiments/behaviour_small.py`) or pass --behaviour",
        lambda cfg: BehaviourModel(BehaviourConfig(**cfg), rngs=nnx.Rngs(0)),
    )  # fmt: skip


def reconfigure(path, out, **changes) -> Path:
    """Write the model at `path` to `out` with inference-only config fields changed (e.g.
    `own_past=False`); the parameters are the same, so only fields that do not change their
    shapes may change. The record notes where it came from."""
    allowed = {"own_past"}
    if not set(changes) <= allowed:
        raise ValueError(f"only {sorted(allowed)} can change after training (got {sorted(changes)})")
    model = load_behaviour(path)
    model.cfg = dataclasses.replace(model.cfg, **changes)
    record = json.loads(record_path(Path(path)).read_text()) if record_path(Path(path)).exists() else {}
    record = {k: v for k, v in record.items() if k not in ("format", "kind", "config", "sha256", "provenance")}
    record["reconfigured_from"] = {"path": str(path), "sha256": sha256_file(path), "changes": changes}
    return save_behaviour(model, out, record)

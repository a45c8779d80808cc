"""The shipped perception probe's file: one .npz (config, parameters and the rig it was trained
with) and a .json record beside it, as `drivesim.model.model_file`."""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from drivesim.model.model_file import fill_params, open_module_file, save_module_file
from drivesim.model.probe import Probe, ProbeConfig

FORMAT = 1
KIND = "perception_probe"
DEFAULT = Path(__file__).resolve().parents[2] / "data" / "probe_small.npz"
"""The shipped probe (`experiments/probe_small.py`)."""


def save_probe(model: Probe, path, record: dict | None = None) -> Path:
    return save_module_file(model, path, KIND, FORMAT, record)


def load_probe(path=None) -> Probe:
    """The probe at `path` (default: the shipped one)."""
    path = Path(path) if path is not None else DEFAULT
    meta, data = open_module_file(
        path,
        KIND,
        FORMAT,
        "perception probe",
        "train one (`drivesim train --config experiments/probe_small.py`) or pass --probe",
    )
    cfg = ProbeConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["config"].items()})
    model = nnx.eval_shape(lambda: Probe(cfg, rngs=nnx.Rngs(0)))
    return fill_params(model, data, path)

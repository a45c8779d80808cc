"""The shipped frame modules' files - the perception probe and the camera refiner: one .npz
(config, parameters and the rig it was trained with) and a .json record beside it, as
`drivesim.model.model_file`."""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from drivesim.model.model_file import load_module_file, save_module_file

FORMAT = 1
DATA = Path(__file__).resolve().parents[2] / "data"
DEFAULT = DATA / "probe_small.npz"
"""The shipped probe (`experiments/probe_small.py`)."""
DEFAULT_CAMERA = DATA / "camera_small.npz"
"""The shipped camera refiner (`experiments/camera_small.py`)."""
KINDS = {"Probe": "perception_probe", "CameraRefiner": "camera_refiner"}


def save_frame_module(model, path, record: dict | None = None) -> Path:
    """Write a `Probe` or a `CameraRefiner` (its kind recorded in the file)."""
    return save_module_file(model, path, KINDS[type(model).__name__], FORMAT, record)


def load_probe(path=None):
    """The perception probe at `path` (default: the shipped one)."""
    from drivesim.model.probe import Probe, ProbeConfig

    return load_module_file(
        Path(path) if path is not None else DEFAULT, KINDS["Probe"], FORMAT, "perception probe",
        "train one (`drivesim train --config experiments/probe_small.py`) or pass --probe",
        lambda cfg: Probe(ProbeConfig(**cfg), rngs=nnx.Rngs(0)),
    )  # fmt: skip


def load_camera_refiner(path=None):
    """The camera refiner at `path` (default: the shipped one)."""
    from drivesim.model.camera_refine import CameraRefineConfig, CameraRefiner

    return load_module_file(
        Path(path) if path is not None else DEFAULT_CAMERA, KINDS["CameraRefiner"], FORMAT, "camera refiner",
        "train one (`drivesim train --config experiments/camera_small.py`) or pass --camera",
        lambda cfg: CameraRefiner(CameraRefineConfig(**cfg), rngs=nnx.Rngs(0)),
    )  # fmt: skip

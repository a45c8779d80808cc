"""Where things are when the user does not say: the embedded synthetic set, the shipped world model,
experiment files; and the console every pipeline prints to."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from drivesim.errors import DrivesimError

REPO_DATA = Path(__file__).resolve().parents[2] / "data"
"""The repository's data/ folder: the embedded default data and the shipped checkpoint."""

DEFAULT_VERSION = "v1.0-mini"
"""Table folder of the embedded synthetic set."""

DEFAULT_CHECKPOINT = REPO_DATA / "world_model_small.npz"
"""The shipped world model (its record, with the sha256 the loader checks, is the .json beside it)."""

DEFAULT_BEHAVIOUR = REPO_DATA / "behaviour_small.npz"
"""The shipped behaviour model (learned agents; `experiments/behaviour_small.py`)."""


def default_dataroot() -> Path:
    """The embedded synthetic set: $DRIVESIM_DATA, else data/synthetic in the repository."""
    return Path(os.environ.get("DRIVESIM_DATA", REPO_DATA / "synthetic"))


def console(quiet: bool = False):
    """A rich console at least 120 columns wide (tables stay readable in narrow terminals);
    `quiet` prints nothing (the non-lead processes of a multi-process run)."""
    import shutil

    from rich.console import Console

    return Console(
        stderr=False, highlight=False, quiet=quiet, width=max(shutil.get_terminal_size((120, 40)).columns, 120)
    )


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} GB"


def ensure_synthetic(dataroot: Path, version: str, quiet: bool = False) -> None:
    """Generate the default synthetic mini set at `dataroot` if it is not there."""
    if (dataroot / version / "scene.json").exists():
        return
    import jax

    from drivesim import distributed
    from drivesim.synth.dataset import SynthConfig, generate

    if not distributed.lead():  # several processes: the lead writes it, the others wait
        distributed.barrier("default data")
        return

    con = console()
    con.print(f"[bold]building the synthetic mini set[/bold] at {dataroot} (one-off)")
    report = generate(SynthConfig(version=version), dataroot, overwrite=True, progress=not quiet)
    con.print(
        f"synthetic set: {report['scenes']} scenes, {report['images']} images, "
        f"{human_bytes(report['bytes'])}, built in {report['seconds']:.1f} s"
    )
    if jax.process_count() > 1:
        distributed.barrier("default data")


def resolve_dataroot(dataroot, version: str, quiet: bool = False) -> Path:
    """`dataroot` as given, or the embedded synthetic set (generated first if missing).

    Only the embedded set's own version is generated on demand: an unknown `version` without a
    dataroot is an error, not a new data set.
    """
    if dataroot is not None:
        return Path(dataroot)
    root = default_dataroot()
    if version != DEFAULT_VERSION and not (root / version / "scene.json").exists():
        raise DrivesimError(
            f"--version {version}: the embedded synthetic set at {root} has no such version (it is "
            f"{DEFAULT_VERSION}); pass --dataroot for another set, or make one with `drivesim synth --version {version}`"
        )
    ensure_synthetic(root, version, quiet)
    return root


def load_model_file(checkpoint=None):
    """(model, path): the world model at `checkpoint`, or the shipped one."""
    from drivesim.model.model_file import load_world_model

    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if not path.exists() and checkpoint is None:
        raise DrivesimError(
            f"the shipped world model {path} is missing (a partial clone?); pass --checkpoint or train one: "
            "drivesim train --config experiments/wm_small.py --workdir runs/wm_small"
        )
    return load_world_model(path), path


def load_experiment(path: str, quick: bool):
    """`get_config(quick=...)` of an experiment file (experiments/<name>.py)."""
    file = Path(path)
    if not file.exists():
        raise DrivesimError(f"--config {path}: no such file (experiment files live in experiments/)")
    spec = importlib.util.spec_from_file_location(f"drivesim_experiment_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise DrivesimError(f"--config {path} failed to load ({type(e).__name__}: {e})") from None
    if not hasattr(module, "get_config"):
        raise DrivesimError(f"--config {path} has no get_config()")
    return module.get_config(quick=quick)

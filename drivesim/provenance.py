"""Where a result came from: the "provenance" block every JSON drivesim writes carries.

    {"commit": "<git HEAD>" | null, "dirty": bool | null,       # null: not a git checkout
     "command": "drivesim bench ...",                            # sys.argv, or the caller's command
     "checkpoint_sha256": "<hex>" | null,                        # the world-model file used, if any
     "dataset": {"dataroot": str | null, "version": str | null,
                 "seed": int | null},                            # seed: drivesim synthetic sets only
     "machine": {"platform", "python", "cpu", "cpu_count",
                 "jax", "jax_backend", "device_count", "device_kinds"}}

A utility module: it imports nothing from drivesim, and jax only inside `machine()`. Nothing here
raises for a missing git, repository or recipe: a pip-installed copy writes nulls instead. The
machine is described without its hostname.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

# The recipe file of a drivesim synthetic dataroot (drivesim.synth.dataset.RECIPE_FILE, which this
# layer may not import; a test keeps the two equal).
RECIPE_FILE = "drivesim_synth.json"

KEYS = ("commit", "dirty", "command", "checkpoint_sha256", "dataset", "machine")

_GIT_TIMEOUT_S = 5.0
_SHA_CACHE: dict[tuple, str] = {}
_COMMAND: list[str | None] = [None]


def set_command(command: str | None) -> None:
    """The command this process runs, as the user typed it (the CLI sets it from its argv, so a
    verb called as `main([...])` records itself, not its caller); None: `sys.argv`."""
    _COMMAND[0] = command


def provenance(
    command: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    dataroot: str | os.PathLike | None = None,
    version: str | None = None,
    *,
    seed: int | None = None,
) -> dict:
    """The provenance block (keys: `KEYS`) of a result made now by this process.

    `command`: the command that made it (default: this process's `sys.argv`). `checkpoint`: the
    world-model file it used (hashed; cached, so repeated calls are cheap). `dataroot`/`version`:
    the dataset; the seed is read from a synthetic dataroot's recipe, or given as `seed` (a set
    being written has no recipe yet).
    """
    root = Path(__file__).resolve().parents[1]
    # only a checkout of this repository: an installed copy inside some other work tree (a venv in
    # a project folder) must not report that project's commit
    git = git_state(root) if (root / ".git").exists() else {"commit": None, "dirty": None}
    return {
        **git,
        "command": command if command is not None else (_COMMAND[0] or shlex.join(sys.argv)),
        "checkpoint_sha256": _checkpoint_sha(checkpoint),
        "dataset": _dataset(dataroot, version, seed),
        "machine": machine(),
    }


def git_state(root: str | os.PathLike) -> dict:
    """{"commit": HEAD's hash, "dirty": uncommitted changes (untracked files included)} of the git
    work tree at `root`; nulls when git, the repository or a commit is missing."""
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "dirty": None}
    # --no-optional-locks: a status taken while another process commits must not lock the index
    status = _git(root, "--no-optional-locks", "status", "--porcelain")
    return {"commit": head.strip(), "dirty": None if status is None else bool(status.strip())}


def _git(root, *args: str) -> str | None:
    # the repository is the one at `root`, whatever GIT_DIR / GIT_INDEX_FILE a calling git hook or
    # script has set
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, env=env, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 of a file (hex), read in chunks; remembered per (path, mtime, size), and inode and
    ctime, which a file replaced by a rename or rewritten in place changes too."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _checkpoint_sha(checkpoint) -> str | None:
    if checkpoint is None:
        return None
    try:
        return sha256_file(checkpoint)
    except OSError:  # a checkpoint named but not a file (a folder of stages, a deleted file)
        return None


def _dataset(dataroot, version: str | None, seed: int | None) -> dict:
    if dataroot is not None and seed is None:
        recipe = _recipe_config(Path(dataroot))
        seed = recipe.get("seed")
        version = version if version is not None else recipe.get("version")
    return {"dataroot": None if dataroot is None else str(dataroot), "version": version, "seed": seed}


def _recipe_config(dataroot: Path) -> dict:
    """The synthetic set's config from its recipe file; {} for any other dataroot (real nuScenes)."""
    try:
        config = json.loads((dataroot / RECIPE_FILE).read_text()).get("config", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return config if isinstance(config, dict) else {}


def machine() -> dict:
    """The machine and software a result was made on (no hostname). Initialises jax's backend."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "jax": None,
        "jax_backend": None,
        "device_count": None,
        "device_kinds": None,
    }
    try:
        import jax

        info["jax"] = jax.__version__
        devices = jax.devices()
        info["jax_backend"] = jax.default_backend()
        info["device_count"] = len(devices)
        info["device_kinds"] = sorted({d.device_kind for d in devices})
    except Exception:  # no jax, or no backend: the rest still describes the machine
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

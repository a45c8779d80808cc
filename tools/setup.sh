#!/usr/bin/env bash
# Make (or refresh) the project's environment in .venv/ at the repository root.
# Needs only python3 (3.11+) and pip. Re-running is cheap: it reinstalls only when
# pyproject.toml or this script changed since the last successful install.
#
# nuscenes-devkit 1.2.0 pins numpy<2 while jax needs numpy 2; the devkit runs fine on
# numpy 2.x, so we install its real runtime needs (listed in pyproject.toml) and then
# the devkit itself with --no-deps.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "drivesim needs Python 3.11 or newer; found $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
  exit 1
}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
stamp=".venv/.drivesim-installed"
want="$(cat pyproject.toml tools/setup.sh | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c 'import drivesim, nuscenes' 2>/dev/null; then
  exit 0
fi
echo "[setup] installing drivesim and its dependencies into .venv (a few minutes the first time)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -m pip install --quiet --no-deps "nuscenes-devkit==1.2.0"
.venv/bin/python -c 'import jax, flax, nuscenes.nuscenes, nuscenes.map_expansion.map_api, drivesim' || {
  echo "[setup] the environment was installed but does not import; see the messages above." >&2
  exit 1
}
echo "$want" > "$stamp"
echo "[setup] environment ready: .venv/bin/drivesim"

#!/usr/bin/env bash
# The README's run command: make/refresh .venv, then run the main job on the embedded
# default data (`drivesim demo`). Extra arguments go to `drivesim demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh
exec .venv/bin/drivesim demo "$@"

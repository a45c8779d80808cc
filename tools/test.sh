#!/usr/bin/env bash
# The README's test command: make/refresh .venv, then run the test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected no tests (e.g. a -k filter matched nothing): not a failure.
if [ "$rc" -eq 5 ]; then
  echo "[test] no tests were collected"
  exit 0
fi
exit "$rc"

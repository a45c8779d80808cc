#!/usr/bin/env bash
# The README's test command: make/refresh .venv, then run the test suite (all of it; `--fast`: the
# tests not marked slow, a few minutes). Other arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh
# The report render test needs headless Chromium; try to get it, but never fail the run over it.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  apt-get install -y -qq chromium >/dev/null 2>&1 \
    || echo "note: headless Chromium not installed; the report render test will be skipped"
fi
# The tests are spread over the machine's cores by pytest-xdist (at most 4 workers; 2 on the CI
# machine; `-n 0` runs them in one process). --fast: the quick subset (tests not marked `slow`: no
# training, demo, device meshes or eval runs).
args=(-n auto --maxprocesses 4)
for a in "$@"; do
  if [ "$a" = "--fast" ]; then args+=(-m "not slow"); else args+=("$a"); fi
done
set +e
.venv/bin/python -m pytest "${args[@]}"
rc=$?
set -e
# pytest exits 5 when it collected no tests (e.g. a -k filter matched nothing): not a failure.
if [ "$rc" -eq 5 ]; then
  echo "[test] no tests were collected"
  exit 0
fi
exit "$rc"

#!/usr/bin/env bash
# Set up Portner in ./.venv (once, and again when pyproject.toml changes), then run a job:
#   bash dev.sh demo [ARGS]   the main job: a municipality's day on SQLite and simulated locks
#   bash dev.sh test [ARGS]   the whole test suite
#   bash dev.sh bench [ARGS]  the benchmark figures
#   bash dev.sh portner ARGS  any portner command
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "dev.sh: Portner needs Python 3.11 or newer as '$PYTHON' (set PYTHON=...)" >&2
  exit 2
fi

stamp=.venv/.portner-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "dev.sh: setting up .venv (first run or pyproject.toml changed)..." >&2
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  echo "$want" > "$stamp"
fi

job=${1:-demo}
shift || true
case "$job" in
  demo) exec .venv/bin/portner demo "$@" ;;
  bench) exec .venv/bin/portner bench "$@" ;;
  portner) exec .venv/bin/portner "$@" ;;
  test)
    # pytest exits 5 when it collected no test: that is a failure, never a pass.
    set +e
    .venv/bin/python -m pytest "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then echo "dev.sh: no tests ran" >&2; exit 1; fi
    exit "$rc"
    ;;
  *) echo "dev.sh: unknown job '$job' (demo, test, bench, portner)" >&2; exit 2 ;;
esac

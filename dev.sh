#!/usr/bin/env bash
# Set up Portner in ./.venv (once, and again when pyproject.toml changes), then run a job:
#   bash dev.sh demo [ARGS]   the main job: a municipality's day on SQLite and simulated locks
#   bash dev.sh serve [ARGS]  the API and the web apps on the demo municipality (development)
#   bash dev.sh test [ARGS]   the whole test suite (also installs what the browser tests need)
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

# What the browser and sign-in tests need besides Python: the Node packages in tests/node (an
# OpenID provider and axe-core, from the npm registry, pinned by package-lock.json) and Debian's
# Chromium (Playwright drives it; it never downloads a browser of its own).
setup_test_tools() {
  if [ ! -f tests/node/package-lock.json ]; then
    :
  elif command -v npm >/dev/null 2>&1; then
    local lock_stamp=tests/node/node_modules/.portner-installed
    local want_lock
    want_lock=$(sha256sum tests/node/package-lock.json | cut -d' ' -f1)
    if [ "$(cat "$lock_stamp" 2>/dev/null)" != "$want_lock" ]; then
      echo "dev.sh: installing tests/node (npm ci)..." >&2
      npm ci --prefix tests/node --no-audit --no-fund --loglevel=error >&2
      echo "$want_lock" > "$lock_stamp"
    fi
  else
    echo "dev.sh: no npm here; the OpenID and accessibility tests will say they were skipped" >&2
  fi
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "dev.sh: installing Debian's chromium for the browser tests..." >&2
      apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    else
      echo "dev.sh: no /usr/bin/chromium (install Debian's chromium as root); browser tests will be skipped" >&2
    fi
  fi
}

job=${1:-demo}
shift || true
case "$job" in
  demo) exec .venv/bin/portner demo "$@" ;;
  serve) exec .venv/bin/portner serve "$@" ;;
  bench) exec .venv/bin/portner bench "$@" ;;
  portner) exec .venv/bin/portner "$@" ;;
  test)
    setup_test_tools
    # pytest exits 5 when it collected no test: that is a failure, never a pass.
    set +e
    .venv/bin/python -m pytest "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then echo "dev.sh: no tests ran" >&2; exit 1; fi
    exit "$rc"
    ;;
  *) echo "dev.sh: unknown job '$job' (demo, serve, test, bench, portner)" >&2; exit 2 ;;
esac

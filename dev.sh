#!/usr/bin/env bash
# The project's one entry point. On first use it creates .venv and installs the package with
# its test tools, so a fresh clone needs only Python 3.11 and pip.
#   ./dev.sh run [args]    the main job (the `bptt` command line)
#   ./dev.sh test [args]   the whole test suite (pytest arguments pass through)
#   ./dev.sh bench         the benchmarks
#   ./dev.sh setup         only create / refresh .venv
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY="$VENV/bin/python"

setup() {
  if [ ! -x "$PY" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
    echo "setting up $VENV (first run only)..." >&2
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -e ".[dev,plots]"
    touch "$VENV/.installed"
  fi
}

cmd="${1:-run}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  run) setup; exec "$VENV/bin/bptt" "$@" ;;
  test)
    setup
    set +e
    "$PY" -m pytest "$@"
    rc=$?
    set -e
    # pytest exits 5 when it collected no tests: that is a failure, not a pass.
    if [ "$rc" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
    exit "$rc" ;;
  bench) setup; exec "$PY" -m benchmarks "$@" ;;
  *) echo "usage: ./dev.sh {run|test|bench|setup} [args]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Set up everything on a fresh machine and run the whole test suite, then (when no arguments narrow the
# run) the wheel check: the built wheel installed in a clean virtualenv serves, pushes, pulls and merges.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/python -m pytest -q --durations=20 "$@"
if [ "$#" -eq 0 ]; then
  bash scripts/check_wheel.sh
fi

#!/usr/bin/env bash
# Build the wheel, install it with the `server` extra into a clean virtualenv outside the checkout,
# and run scripts/wheel_smoke.py with it there: `adapter-registry serve`, push and pull an adapter,
# and a merge job on `adapter-registry worker`. Part of scripts/test.sh (so of CI); takes a few
# minutes, most of them pip unpacking torch (from pip's cache or the local index, pinned as in setup.sh).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/adapter-hub-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "wheel check: building the wheel in $WORK"
SECONDS=0
"$REPO/.venv/bin/python" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$REPO"
WHEEL="$(ls "$WORK"/dist/adapter_hub-*.whl)"
"$PY" -m venv "$WORK/venv"
# --no-compile: no byte-compiling of every installed module (most are never imported here)
"$WORK/venv/bin/python" -m pip install --quiet --no-compile "torch==2.13.0" "${WHEEL}[server]"
echo "wheel check: built and installed in ${SECONDS}s"
cd "$WORK"  # nothing of the checkout on the path
env -u PYTHONPATH "$WORK/venv/bin/python" "$REPO/scripts/wheel_smoke.py" "$WORK"
echo "wheel check: done in ${SECONDS}s"

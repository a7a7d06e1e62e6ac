#!/usr/bin/env bash
# Set up everything on a fresh machine and run the main job (for now: the SDK demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
exec .venv/bin/python -m sdk.demo "$@"

#!/usr/bin/env bash
# Set up (if needed) and start the app on a bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec pixelchain "$@"

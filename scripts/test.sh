#!/usr/bin/env bash
# Set up (if needed), lint, type-check the engine and run the whole test suite.
# Arguments go to pytest (e.g. `bash scripts/test.sh -k made`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export QT_QPA_PLATFORM=offscreen
python -m ruff check .
python -m mypy
python -m pytest -q -p no:cacheprovider "$@"

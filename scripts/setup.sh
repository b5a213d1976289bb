#!/usr/bin/env bash
# Create .venv and install pixelchain with its test extras (CPU build of torch unless one is present).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
  # Name the version so pip takes the CPU wheel on this kind of machine instead of a multi-GB CUDA build.
  python -m pip install -q "torch==${PIXELCHAIN_TORCH_VERSION:-2.13.0}" || python -m pip install -q torch
fi
python -m pip install -q -e ".[test]"

#!/usr/bin/env bash
# Create .venv and install pixelchain with its test extras.
#
# torch: without a working NVIDIA GPU (no `nvidia-smi`), the CPU build from PyTorch's CPU wheel index
# (about 200 MB instead of the CUDA build's ~530 MB wheel plus ~3 GB of CUDA libraries), falling back
# quickly to the ordinary package index where that one cannot be reached; with a GPU, the default
# build. PIXELCHAIN_TORCH=cpu|cuda|skip overrides the choice (skip: install no torch of its own, use
# the one in the venv or whatever the package index gives as a dependency).
#
# A stamp in .venv (a hash of pyproject.toml and this script) makes a second run a no-op, so
# scripts/run-app.sh starts the app without running pip again; delete .venv/.pixelchain-stamp to
# force a reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${PIXELCHAIN_TORCH_VERSION:-2.13.0}
CPU_INDEX=https://download.pytorch.org/whl/cpu
STAMP=.venv/.pixelchain-stamp

stamp() {
  cat pyproject.toml scripts/setup.sh | "$PY" -c "import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"
  echo "torch=${PIXELCHAIN_TORCH:-auto} ${TORCH_VERSION}"
}

want=$(stamp)
if [ -x .venv/bin/pixelchain ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0  # installed from these very files: nothing to do
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
fi
. .venv/bin/activate

choice=${PIXELCHAIN_TORCH:-}
if [ -z "$choice" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then choice=cuda; else choice=cpu; fi
fi
case "$choice" in
  cpu|cuda|skip) ;;
  *) echo "setup.sh: PIXELCHAIN_TORCH must be cpu, cuda or skip, not '$choice'" >&2; exit 2 ;;
esac

if [ "$choice" != skip ] && ! python -c "import torch" >/dev/null 2>&1; then
  if [ "$choice" = cpu ]; then
    echo "installing the CPU build of torch ${TORCH_VERSION} (no NVIDIA GPU found; PIXELCHAIN_TORCH=cuda for the default build)"
    log=$(mktemp)
    # one short try at PyTorch's CPU index; where it cannot be reached, the ordinary index (quietly)
    if ! python -m pip install -q --retries 0 --timeout 10 --index-url "$CPU_INDEX" "torch==${TORCH_VERSION}" >"$log" 2>&1; then
      echo "  (PyTorch's CPU wheel index cannot be reached: installing torch from the package index)"
      python -m pip install -q "torch==${TORCH_VERSION}"
    fi
    rm -f "$log"
  else
    echo "installing torch ${TORCH_VERSION} (the default build, with CUDA)"
    python -m pip install -q "torch==${TORCH_VERSION}"
  fi
fi
python -m pip install -q -e ".[test]"
echo "$want" >"$STAMP"

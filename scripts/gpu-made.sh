#!/usr/bin/env bash
# Large order-agnostic MADEs (8000-unit layers; the sizes in RUNS), trained, measured and bundled on a
# lent GPU in one call of at most 10 minutes (the device machine keeps nothing between leases, and
# its ~1.2 GB resumable state per 8000-8000 run cannot come back, so each run is whole in one call).
#
#   bash scripts/gpu-made.sh prepare    # here, once: copies the data into .gpu-data/ (git-ignored;
#                                       # the ../shared beside the checkout does not travel)
#   bash scripts/gpu-made.sh run        # on the device machine: carry .gpu-data, timeout_s 600
#
# run: the GPU tests (tests/engine/test_gpu.py), then every run of RUNS at the same time, each in its
# own process for MINUTES minutes with the learning-rate schedule fitted to that limit, then each
# run's test NLL alone and as an ensemble of MASKS members, then scripts/bundle.py on the device. What
# comes back lands in $OUT (the device tool's folder; ./out here): logs, eval JSON, and each bundled
# checkpoint that fits the 16 MiB a returned file may have (a one-layer 8000-unit MADE does in int8).
# A last table sums up. Settings (environment): RUNS="8000 8000,8000" (hidden sizes, one run each),
# MINUTES=5.5, ORDER_SET=scans, MASKS=32, BATCH=250, LR=2e-3, DEVICE=cuda, PYTHON=python3,
# MAX_TRAIN/MAX_VALID (quick checks), EXTRA (more `pixelchain train` flags), DEST (where bundle.py
# writes; resources/checkpoints), OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${PIXELCHAIN_DATA:-$ROOT/.gpu-data}

if [ "${1:-}" = prepare ]; then
  src=${2:-$ROOT/../shared/data/binarized_mnist}
  dest=${GPU_DATA:-$ROOT/.gpu-data}
  mkdir -p "$dest"
  cp "$src"/binarized_mnist_{train,valid,test}.amat* "$dest/" || exit 1
  ls -l "$dest"
  exit 0
fi
if [ "${1:-}" != run ]; then
  echo "usage: bash scripts/gpu-made.sh prepare [DATA_DIR] | run" >&2
  exit 2
fi

PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-"8000 8000,8000"}
MINUTES=${MINUTES:-5.5}
MASKS=${MASKS:-32}
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT" runs/gpu
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PIXELCHAIN_DATA=$DATA
limits=()
[ -n "${MAX_TRAIN:-}" ] && limits+=(--max-train "$MAX_TRAIN")
[ -n "${MAX_VALID:-}" ] && limits+=(--max-valid "$MAX_VALID")

echo "== machine"
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$PY" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())" || exit 1
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "DEVICE=cuda but torch sees no CUDA device" >&2
  exit 1
fi
ls "$DATA"/binarized_mnist_test.amat* >/dev/null 2>&1 || { echo "no data in $DATA: run 'bash scripts/gpu-made.sh prepare' here and carry .gpu-data" >&2; exit 1; }

if [ "$DEVICE" = cuda ]; then
  echo "== GPU tests"
  # the device's own python and packages: the project's pytest settings (Qt plugins) are left out
  timeout 150 "$PY" -m pytest -q -p no:cacheprovider -c /dev/null --rootdir "$ROOT" tests/engine/test_gpu.py > "$OUT/gpu-tests.log" 2>&1
  echo "exit $?: $(tail -n 1 "$OUT/gpu-tests.log")"
fi

echo "== training ${RUNS} for ${MINUTES} min each, at the same time"
pids=()
for h in $RUNS; do
  tag=made-${h//,/x}
  "$PY" -m engine train --model made --hidden "$h" --direct --order-agnostic --order-set "${ORDER_SET:-scans}" \
    --num-masks "$MASKS" --epochs 5000 --batch-size "${BATCH:-250}" --lr "${LR:-2e-3}" --lr-min-factor 0.02 \
    --ema 0.999 --l1 3e-5 --max-minutes "$MINUTES" --fit-schedule --state-every 0 --device "$DEVICE" \
    "${limits[@]}" ${EXTRA:-} --out "runs/gpu/$tag.safetensors" > "$OUT/train-$tag.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

echo "== test NLL and bundling"
rows=()
for h in $RUNS; do
  tag=made-${h//,/x}
  ck=runs/gpu/$tag.safetensors
  tail -n 3 "$OUT/train-$tag.log"
  [ -f "$ck" ] || { rows+=("| $tag | no checkpoint (see train-$tag.log) | | |"); continue; }
  "$PY" -m engine eval "$ck" --device "$DEVICE" --json > "$OUT/eval-$tag.json" 2>> "$OUT/train-$tag.log"
  "$PY" -m engine eval "$ck" --device "$DEVICE" --json --ensemble "$MASKS" > "$OUT/eval-$tag-ens$MASKS.json" 2>> "$OUT/train-$tag.log"
  "$PY" scripts/bundle.py --device "$DEVICE" --dest "${DEST:-resources/checkpoints}" "$ck:$tag:$MASKS" > "$OUT/bundle-$tag.md" 2>&1
  b=${DEST:-resources/checkpoints}/$tag.safetensors
  size=$(stat -c %s "$b" 2>/dev/null || echo 0)
  if [ "$size" -gt 0 ] && [ "$size" -le $((16 << 20)) ]; then cp "$b" "$OUT/"; where="in \$OUT"; else where="too large to return ($((size >> 20)) MiB)"; fi
  one=$("$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"{d['test_nll_nats']:.2f}\")" "$OUT/eval-$tag.json" 2>/dev/null || echo "?")
  ens=$("$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"{d['test_nll_nats']:.2f}\")" "$OUT/eval-$tag-ens$MASKS.json" 2>/dev/null || echo "?")
  epochs=$(grep -c "^epoch" "$OUT/train-$tag.log")
  rows+=("| $tag | $epochs | $one | $ens | $where |")
done
echo
echo "| run | epochs | test NLL (member 0) | ensemble of $MASKS | bundled |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"

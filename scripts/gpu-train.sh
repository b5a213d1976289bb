#!/usr/bin/env bash
# Every bundled family's larger model trained, measured and bundled on a lent GPU in one call of at
# most 10 minutes (the device machine keeps nothing between leases, so each run is whole in one call).
#
#   bash scripts/gpu-train.sh prepare    # here, once: copies the data into .gpu-data/ (git-ignored;
#                                        # the ../shared beside the checkout does not travel): the
#                                        # binarized files, and the grey MNIST files into .gpu-data/mnist/
#   bash scripts/gpu-train.sh run        # on the device machine: carry .gpu-data, timeout_s 600
#
# run: the GPU tests (tests/engine/test_gpu.py), then every recipe of RUNS at the same time, each in
# its own process for MINUTES minutes with the learning-rate schedule fitted to that limit, then each
# run's test NLL (raster; order-agnostic MADEs also as an ensemble of MASKS members, order-agnostic
# sequence models also in random:1), then scripts/bundle.py on the device into DEST. What comes back
# lands in $OUT (the device tool's folder; ./out here): logs, eval JSON, and each bundled checkpoint
# that fits the 16 MiB a returned file may have. A last table sums up; back here, a returned model
# replaces the bundled one of its name only if its validation NLL is better
# (`pixelchain eval CKPT --split valid`).
#
# Recipes (RUNS, default all the binary ones): pixelcnn-raster lmconv-any lstm-raster transformer-any
# made-scans made-scans-deep; and pixelcnn-grey256-c10 (issue #27's grey model: the bundled one grown
# to 64 channels and 16 layers, `--init-from` keeps its conditionals, then trained on the GPU; run it
# alone, RUNS=pixelcnn-grey256-c10 MINUTES=8, and bundle what comes back only if its validation NLL
# beats the bundled one's). Settings (environment): MINUTES=6, SIZE=full (tiny: a few units each, for the
# end-to-end check on the CPU), MASKS=32, DEVICE=cuda, PYTHON=python3, MAX_TRAIN/MAX_VALID (quick
# checks), MAX_EVAL (quick checks: measure and bundle on the first N images of each split only),
# EXTRA (more `pixelchain train` flags for every run), DEST ($OUT/checkpoints), OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${PIXELCHAIN_DATA:-$ROOT/.gpu-data}

if [ "${1:-}" = prepare ]; then
  src=${2:-$ROOT/../shared/data/binarized_mnist}
  grey=${3:-$(dirname "$src")/mnist}
  dest=${GPU_DATA:-$ROOT/.gpu-data}
  mkdir -p "$dest"
  cp "$src"/binarized_mnist_{train,valid,test}.amat* "$dest/" || exit 1
  if [ -d "$grey" ]; then
    mkdir -p "$dest/mnist"
    cp "$grey"/{train,t10k}-{images-idx3,labels-idx1}-ubyte* "$dest/mnist/" || exit 1
  else
    echo "no grey MNIST folder at $grey: the binarized files only (pixelcnn-grey256-c10 needs the grey ones)" >&2
  fi
  ls -lR "$dest"
  exit 0
fi
if [ "${1:-}" != run ]; then
  echo "usage: bash scripts/gpu-train.sh prepare [BINARIZED_DIR [MNIST_DIR]] | run" >&2
  exit 2
fi

PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-"pixelcnn-raster lmconv-any lstm-raster transformer-any made-scans made-scans-deep"}
MINUTES=${MINUTES:-6}
SIZE=${SIZE:-full}
MASKS=${MASKS:-32}
OUT=${OUT:-$ROOT/out}
DEST=${DEST:-$OUT/checkpoints}
mkdir -p "$OUT" "$DEST" runs/gpu
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PIXELCHAIN_DATA=$DATA
limits=()
[ -n "${MAX_TRAIN:-}" ] && limits+=(--max-train "$MAX_TRAIN")
[ -n "${MAX_VALID:-}" ] && limits+=(--max-valid "$MAX_VALID")
measured=()
[ -n "${MAX_EVAL:-}" ] && measured+=(--max-images "$MAX_EVAL")

ORDERINGS='["raster","snake","column","column-snake","hilbert","diagonal","spiral-in","spiral-out"]'
# the LMConv's: the same curves, raster three times (the ordering it is measured in)
LM_ORDERINGS='["raster","raster","raster","snake","column","column-snake","hilbert","diagonal","spiral-in","spiral-out"]'
# the Transformer's: the same curves, raster twice (the ordering it is measured in) and random ones
TF_ORDERINGS='["raster","raster","snake","column","column-snake","hilbert","diagonal","spiral-in","spiral-out","random"]'
# recipe NAME: the `pixelchain train` flags of a run (SIZE=tiny: the same families, a few units each)
recipe() {
  local full=1; [ "$SIZE" = tiny ] && full=0
  case $1 in
    pixelcnn-raster)
      [ $full = 1 ] && c='{"channels":64,"layers":8,"head":128}' || c='{"channels":4,"layers":1,"head":8}'
      echo "--model pixelcnn --config $c --batch-size 128 --lr 2e-3 --lr-min-factor 0.05 --ema 0.999" ;;
    lmconv-any)
      [ $full = 1 ] && c="{\"channels\":64,\"layers\":6,\"head\":128,\"context\":128,\"order_agnostic\":true,\"train_orderings\":$LM_ORDERINGS}" \
                    || c="{\"channels\":4,\"layers\":1,\"head\":8,\"context\":4,\"order_agnostic\":true,\"train_orderings\":$LM_ORDERINGS}"
      echo "--model lmconv --config $c --batch-size 128 --lr 2e-3 --lr-min-factor 0.05 --ema 0.999" ;;
    lstm-raster)
      [ $full = 1 ] && c='{"hidden":256,"layers":2,"embed":64}' || c='{"hidden":8,"layers":1,"embed":4}'
      echo "--model lstm --config $c --batch-size 128 --lr 2e-3 --lr-min-factor 0.05 --ema 0.999 --grad-clip 1" ;;
    transformer-any)
      [ $full = 1 ] && c="{\"d_model\":256,\"layers\":6,\"heads\":8,\"order_agnostic\":true,\"train_orderings\":$TF_ORDERINGS}" \
                    || c="{\"d_model\":8,\"layers\":1,\"heads\":2,\"order_agnostic\":true,\"train_orderings\":$TF_ORDERINGS}"
      echo "--model transformer --config $c --batch-size 128 --lr 1e-3 --lr-min-factor 0.05 --ema 0.999 --grad-clip 1" ;;
    pixelcnn-grey256-c10)
      if [ $full = 1 ]; then
        echo "--model pixelcnn --config {\"channels\":64,\"layers\":16,\"head\":64} --init-from resources/checkpoints/pixelcnn-grey256-c10.safetensors --dataset mnist --levels 256 --head categorical --classes 10 --batch-size 64 --lr 5e-4 --warmup 500 --lr-min-factor 0.05 --ema 0.999"
      else
        echo "--model pixelcnn --config {\"channels\":4,\"layers\":1,\"head\":8} --dataset mnist --levels 256 --head categorical --classes 10 --batch-size 64 --lr 2e-3 --warmup 2 --lr-min-factor 0.05 --ema 0.999"
      fi ;;
    made-scans | made-scans-deep)
      if [ $full = 1 ]; then h=8000; [ "$1" = made-scans-deep ] && h=8000,8000; else h=16; [ "$1" = made-scans-deep ] && h=8,8; fi
      echo "--model made --hidden $h --direct --order-agnostic --order-set scans --num-masks $MASKS --batch-size 250 --lr 2e-3 --lr-min-factor 0.02 --ema 0.999 --l1 3e-5" ;;
    *) return 1 ;;
  esac
}
for name in $RUNS; do
  recipe "$name" >/dev/null || { echo "unknown recipe $name (known: pixelcnn-raster lmconv-any lstm-raster transformer-any made-scans made-scans-deep pixelcnn-grey256-c10)" >&2; exit 2; }
done

echo "== machine"
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$PY" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())" || exit 1
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "DEVICE=cuda but torch sees no CUDA device" >&2
  exit 1
fi
# the binarized files in $DATA or in its binarized_mnist/ (as in ../shared/data)
compgen -G "$DATA/binarized_mnist_test.amat*" >/dev/null || compgen -G "$DATA/binarized_mnist/binarized_mnist_test.amat*" >/dev/null \
  || { echo "no data in $DATA: run 'bash scripts/gpu-train.sh prepare' here and carry .gpu-data" >&2; exit 1; }

if [ "$DEVICE" = cuda ]; then
  echo "== GPU tests"
  # the device's own python and packages: the project's pytest settings (Qt plugins) are left out
  timeout 150 "$PY" -m pytest -q -p no:cacheprovider -c /dev/null --rootdir "$ROOT" tests/engine/test_gpu.py > "$OUT/gpu-tests.log" 2>&1
  echo "exit $?: $(tail -n 1 "$OUT/gpu-tests.log")"
fi

echo "== training ${RUNS} for ${MINUTES} min each, at the same time"
pids=()
for name in $RUNS; do
  # shellcheck disable=SC2046  # the recipe's flags split on spaces; its JSON has none
  "$PY" -m engine train $(recipe "$name") --epochs 5000 --max-minutes "$MINUTES" --fit-schedule --state-every 0 \
    --device "$DEVICE" "${limits[@]}" ${EXTRA:-} --overwrite --out "runs/gpu/$name.safetensors" > "$OUT/train-$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

# nll FILE: the NLL an eval JSON holds, two decimals
nll() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"{d[d['split'] + '_nll_nats']:.2f}\")" "$1" 2>/dev/null || echo "?"; }
echo "== test NLL and bundling"
rows=()
for name in $RUNS; do
  ck=runs/gpu/$name.safetensors
  tail -n 3 "$OUT/train-$name.log"
  [ -f "$ck" ] || { rows+=("| $name | no checkpoint (see train-$name.log) | | | |"); continue; }
  "$PY" -m engine eval "$ck" --device "$DEVICE" "${measured[@]}" --json > "$OUT/eval-$name.json" 2>> "$OUT/train-$name.log"
  "$PY" -m engine eval "$ck" --device "$DEVICE" "${measured[@]}" --json --split valid > "$OUT/eval-$name-valid.json" 2>> "$OUT/train-$name.log"
  spec=$ck:$name other="-"
  case $name in
    made-*)
      "$PY" -m engine eval "$ck" --device "$DEVICE" "${measured[@]}" --json --ensemble "$MASKS" > "$OUT/eval-$name-ens$MASKS.json" 2>> "$OUT/train-$name.log"
      spec=$ck:$name:$MASKS other="ensemble of $MASKS: $(nll "$OUT/eval-$name-ens$MASKS.json")" ;;
    *-any)
      "$PY" -m engine eval "$ck" --device "$DEVICE" "${measured[@]}" --json --ordering random:1 > "$OUT/eval-$name-random1.json" 2>> "$OUT/train-$name.log"
      other="random:1: $(nll "$OUT/eval-$name-random1.json")" ;;
  esac
  "$PY" scripts/bundle.py --device "$DEVICE" "${measured[@]}" --dest "$DEST" "$spec" > "$OUT/bundle-$name.md" 2>&1
  b=$DEST/$name.safetensors
  size=$(stat -c %s "$b" 2>/dev/null || echo 0)
  if [ "$size" -gt 0 ] && [ "$size" -le $((16 << 20)) ]; then
    case $DEST/ in "$OUT"/*) ;; *) cp "$b" "$OUT/" ;; esac
    where="in \$OUT"
  else
    where="too large to return ($((size >> 20)) MiB)"
  fi
  epochs=$(grep -c "^epoch" "$OUT/train-$name.log")
  rows+=("| $name | $epochs | $(nll "$OUT/eval-$name-valid.json") | $(nll "$OUT/eval-$name.json") | $other | $where |")
done
echo
echo "| run | epochs | valid NLL | test NLL (raster) | other | bundled |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"

#!/usr/bin/env bash
# The cross-validated accuracy table of README "More accuracy from the same backbone" on the
# 2,000 shared photos: extract the stores (skipped when they exist), then one bench over them on
# the same folds by image id. Prints the CPU model and load average next to the figures.
#
#   scripts/bench_accuracy.sh [STORES_DIR] [OUT_DIR]     (default /work/stores, STORES_DIR/bench)
#
# Long: on 2 shared CPU cores the extractions take one to two hours; run it under nice. The
# fine-tunes of the README's table are separate commands (listed there).
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTOS=${FEATURESTORE_PHOTOS:-../shared/datasets/cats_vs_dogs}
STORES=${1:-/work/stores}
OUT=${2:-$STORES/bench}
FS=${FEATURESTORE:-.venv/bin/featurestore}
PY=${PYTHON:-.venv/bin/python}

machine() { echo "CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) x$(nproc); load average $(cut -d' ' -f1-3 /proc/loadavg)"; }

extract() {  # STORE OPTIONS...: extract unless the store holds every photo already
  local store=$1
  shift
  [ -f "$store/manifest.json" ] && "$FS" info "$store" | grep -q "^store .*: 2000 images" && return 0
  "$FS" extract "$PHOTOS" --store "$store" --precision float32 --json "$@"
}

machine
extract "$STORES/cvd150f" --flip-views               # the classic 150 px, with mirrored views
extract "$STORES/cvd224" --input-size 224            # the resolution preset
[ -d "$STORES/cvd150f16" ] || "$PY" scripts/store_as_float16.py "$STORES/cvd150f" "$STORES/cvd150f16"

machine
# every head at 150 px; then flips and test-time flips for the cheap classifiers
"$FS" bench "$STORES/cvd150f" --out "$OUT/s150" --classifiers logreg,rbf-svm,stack,dense,gap
"$FS" bench "$STORES/cvd150f" --out "$OUT/s150" --classifiers logreg,rbf-svm --flips both --tta both
machine
# the feature sets on the same folds: 150 vs 224 px, float32 vs float16
"$FS" bench "$STORES/cvd150f" "$STORES/cvd224" "$STORES/cvd150f16" --out "$OUT/stores" \
  --classifiers logreg,rbf-svm,stack
"$FS" bench "$STORES/cvd150f" "$STORES/cvd224" --out "$OUT/s150" --classifiers gap
machine
# flips at 224 px, and cached augmented views at 150 px (stores with block4 maps, for fine-tuning)
extract "$STORES/cvd224b4" --input-size 224 --extra-layer block4_pool --flip-views
extract "$STORES/cvd150v4" --extra-layer block4_pool --flip-views --views 4
machine
"$FS" bench "$STORES/cvd224b4" --out "$OUT/s224f" --classifiers logreg,rbf-svm --flips both --tta both
"$FS" bench "$STORES/cvd150v4" --out "$OUT/s150v4" --classifiers logreg,rbf-svm --views both
"$FS" bench "$STORES/cvd150v4" --out "$OUT/s150v4" --classifiers logreg,rbf-svm --views yes --flips yes --tta both
machine
# resolution past 224 px, and float16 at 288 px
extract "$STORES/cvd288" --input-size 288
extract "$STORES/cvd384" --input-size 384
[ -d "$STORES/cvd288f16" ] || "$PY" scripts/store_as_float16.py "$STORES/cvd288" "$STORES/cvd288f16"
machine
"$FS" bench "$STORES/cvd224b4" "$STORES/cvd288" "$STORES/cvd384" --out "$OUT/resolution" --classifiers logreg,rbf-svm
"$FS" bench "$STORES/cvd288" "$STORES/cvd288f16" --out "$OUT/s288f16" --classifiers logreg,rbf-svm
machine
# test-time views: each scored image averaged over it and its 4 cached views, at 150 and 224 px;
# flips and test-time flips at 288 px
"$FS" bench "$STORES/cvd150v4" --out "$OUT/s150tv" --classifiers logreg,rbf-svm --views both --tta none,views
extract "$STORES/cvd224v4b4" --input-size 224 --extra-layer block4_pool --views 4
extract "$STORES/cvd288b4" --input-size 288 --extra-layer block4_pool --flip-views --precision auto  # as measured
extract "$STORES/cvd288v4" --input-size 288 --views 4 --precision auto  # mixed_bfloat16 where native
machine
"$FS" bench "$STORES/cvd224v4b4" --out "$OUT/s224tv" --classifiers logreg,rbf-svm --views both --tta none,views
"$FS" bench "$STORES/cvd288b4" --out "$OUT/s288f" --classifiers logreg,rbf-svm --flips both --tta both
"$FS" bench "$STORES/cvd288v4" --out "$OUT/s288tv" --classifiers logreg,rbf-svm --views both --tta none,views
machine
# fine-tuning by cross-validation on bench's folds: per fold a dense head, then block5 from cached
# block4 maps drawing among the stored views, both scored on the held-out images
"$FS" finetune-cv "$STORES/cvd224v4b4" --out "$OUT/ft224cv" --epochs 10 --patience 3
"$FS" finetune-cv "$STORES/cvd150v4" --out "$OUT/ft150cv" --epochs 10 --patience 3
machine
# the same from images, augmented on the fly (37 min at 150 px, 68 min at 224 px on 2 CPU cores)
"$FS" finetune-cv "$STORES/cvd150v4" --out "$OUT/ft150cvimg" --from-images --epochs 10 --patience 3
"$FS" finetune-cv "$STORES/cvd224v4b4" --out "$OUT/ft224cvimg" --from-images --epochs 10 --patience 3
# the same from a logreg warm start (65 min at 224 px)
"$FS" finetune-cv "$STORES/cvd224v4b4" --out "$OUT/ft224cvlr" --from-images --head logreg --epochs 10 --patience 3
# half the learning rate (61 min), and block4 unfrozen too (67 min)
"$FS" finetune-cv "$STORES/cvd224v4b4" --out "$OUT/ft224cvlr5e6" --from-images --head logreg --lr 5e-6 --epochs 8 --patience 3
"$FS" finetune-cv "$STORES/cvd224v4b4" --out "$OUT/ft224cvlrb4" --from-images --head logreg --unfreeze block4 --epochs 10 --patience 3
machine

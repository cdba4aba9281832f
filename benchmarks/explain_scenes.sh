#!/usr/bin/env bash
# "Do attention modules make a model look at the object?" (issue 9). Trains, then explains:
#  A. single-item scenes (fashion-mnist-scenes-single): resnet20 (small) with each attention module;
#  B. multi-item scenes (fashion-mnist-scenes): GAP vs CSRA vs Query2Label heads, the recipe of
#     benchmarks/scenes_heads.sh.
#   bash benchmarks/explain_scenes.sh [seed ...]        (default seed: 0; ATTNS / HEADS pick a subset)
# Full recipe: 15 epochs (A) / 20 epochs (B) on all 55,000 training scenes; the CPU recipe of
# docs/results.md: OMP_NUM_THREADS=1 EPOCHS_A=3 EPOCHS_B=4 TRAIN_SUBSET=10000 PRECISION=32-true
# (one thread per process, so that training and explaining share 2 cores without oversubscription).
# TRAIN_ONLY=1 skips the explain step.
# Trains into runs/explain-*<tag>/<name>-s<seed>/ (resuming an interrupted run), copies metrics.json
# and log.csv to docs/runs/, then writes `attnvision explain` over the whole test split into the
# run's explain/ folder and copies its scores.json and pairs.pt beside the metrics (explained runs
# are skipped). Tables: benchmarks/explain_table.py; figure: benchmarks/explain_gallery.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/train_kept.sh
PRECISION=${PRECISION:-bf16-mixed}
subset=()
[ -n "${TRAIN_SUBSET:-}" ] && subset=(--train-subset "$TRAIN_SUBSET")
tag_a="$([ -n "${EPOCHS_A:-}" ] && echo "-e$EPOCHS_A")${TRAIN_SUBSET:+-n$TRAIN_SUBSET}"
tag_b="$([ -n "${EPOCHS_B:-}" ] && echo "-e$EPOCHS_B")${TRAIN_SUBSET:+-n$TRAIN_SUBSET}"
ATTNS=${ATTNS:-"none se eca cbam bam eca_cbam"}
HEADS=${HEADS:-"gap csra1 query2label"}
declare -A HEAD_ARGS=([gap]="--head gap" [csra1]="--head csra --heads 1 --lam 0.1" [query2label]="--head query2label")

explain_kept() {  # explain_kept RUN KEPT FAITHFULNESS_IMAGES: Grad-CAM and own maps over the test split
  local run=$1 kept=$2
  [ -f "$kept/explain-scores.json" ] && return 0
  .venv/bin/attnvision explain --checkpoint "$run/best.pt" --split test --images all --figures 8 \
    --faithfulness-images "$3" --out "$run/explain"
  cp "$run/explain/pairs.pt" "$kept/explain-pairs.pt"
  cp "$run/explain/scores.json" "$kept/explain-scores.json"
}

for seed in ${@:-0}; do
  for attn in $ATTNS; do
    args=()
    [ "$attn" != none ] && args=(--attn "$attn")
    run="runs/explain-single$tag_a/$attn-s$seed" kept="docs/runs/explain-single$tag_a/$attn-s$seed"
    train_kept "$run" "$kept" --data fashion-mnist-scenes-single --model resnet20 "${args[@]}" \
      --epochs "${EPOCHS_A:-15}" --batch-size 128 --lr 0.1 --warmup-epochs 1 --precision "$PRECISION" \
      "${subset[@]}" --seed "$seed"
    [ "${TRAIN_ONLY:-0}" = 1 ] || explain_kept "$run" "$kept" 128
  done
  for name in $HEADS; do
    run="runs/explain-multi$tag_b/$name-s$seed" kept="docs/runs/explain-multi$tag_b/$name-s$seed"
    # shellcheck disable=SC2086
    train_kept "$run" "$kept" --task multilabel --data fashion-mnist-scenes --model resnet20 ${HEAD_ARGS[$name]} \
      --lr 0.05 --head-lr 0.5 --batch-size 128 --epochs "${EPOCHS_B:-20}" --warmup-epochs 1 --schedule cosine \
      --precision "$PRECISION" "${subset[@]}" --seed "$seed"
    # 64 multi-label scenes hold ~160 (image, class) pairs, about the 128 pairs of the single part
    [ "${TRAIN_ONLY:-0}" = 1 ] || explain_kept "$run" "$kept" 64
  done
done

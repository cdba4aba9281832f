#!/usr/bin/env bash
# Recurrent attention on Fashion-MNIST scenes (issue 18): DRAM (glimpses, REINFORCE) and resnet20 with the
# show-attend-tell label decoder, against resnet20 + GAP and + CSRA (8 heads, λ = 0.1), on the recipe of
# scenes_heads.sh (the same scenes, split, optimiser, schedule and augmentation; a head gets 10× the LR).
#   bash benchmarks/recurrent_attention.sh [seed ...]        (default seeds: 0 1 2)
# The CPU-budget recipe of docs/results.md:
#   EPOCHS=4 TRAIN_SUBSET=10000 PRECISION=32-true bash benchmarks/recurrent_attention.sh
# Writes runs/recurrent<tag>/<name>-s<seed>/ and keeps each finished run's metrics.json and log.csv in
# docs/runs/recurrent<tag>/ (runs already there are skipped); summarise with
#   .venv/bin/python benchmarks/results_table.py docs/runs/recurrent<tag>
# GAP and CSRA are trained again (rather than read from docs/runs/scenes-heads-e4-n10000) because their kept
# runs predate the exact-set accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/train_kept.sh
short_recipe 20
declare -A MODEL_ARGS=(
  [sat]="--model resnet20 --head sat --head-lr 0.5"
  [dram]="--model dram"
  [gap]="--model resnet20 --head gap --head-lr 0.5"
  [csra8]="--model resnet20 --head csra --heads 8 --lam 0.1 --head-lr 0.5"
)
for seed in ${@:-0 1 2}; do
  for name in ${NAMES:-sat dram gap csra8}; do
    # shellcheck disable=SC2086
    train_kept "runs/recurrent$tag/$name-s$seed" "docs/runs/recurrent$tag/$name-s$seed" \
      --task multilabel --data fashion-mnist-scenes ${MODEL_ARGS[$name]} --lr 0.05 --batch-size 128 \
      --epochs "$EPOCHS" --warmup-epochs 1 --schedule cosine --precision "$PRECISION" "${subset[@]}" --seed "$seed"
  done
done

#!/usr/bin/env bash
# Multi-label heads on Fashion-MNIST scenes (issue 4): GAP vs CSRA (H = 1, 4, 8) vs Query2Label on
# resnet20 (small), one recipe (the CSRA paper's: head LR 10× the backbone's, warm-up, step decay).
#   bash benchmarks/scenes_heads.sh [seed ...]        (default seeds: 0 1 2)
# Writes runs/scenes-heads/<head>-s<seed>/ and copies each finished run's metrics.json and log.csv to
# docs/runs/scenes-heads/ (runs already there are skipped); summarise with
#   .venv/bin/python benchmarks/results_table.py docs/runs/scenes-heads
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/train_kept.sh
declare -A HEAD_ARGS=(
  [gap]="--head gap"
  [csra1]="--head csra --heads 1 --lam 0.1"
  [csra4]="--head csra --heads 4 --lam 0.1"
  [csra8]="--head csra --heads 8 --lam 0.1"
  [query2label]="--head query2label"
)
for seed in ${@:-0 1 2}; do
  for name in gap csra1 csra4 csra8 query2label; do
    # shellcheck disable=SC2086
    train_kept "runs/scenes-heads/$name-s$seed" "docs/runs/scenes-heads/$name-s$seed" \
      --task multilabel --data fashion-mnist-scenes --model resnet20 ${HEAD_ARGS[$name]} --lr 0.01 --head-lr 0.1 \
      --batch-size 128 --epochs 20 --warmup-epochs 1 --schedule step --step-epochs 8 --precision bf16-mixed \
      --seed "$seed"
  done
done

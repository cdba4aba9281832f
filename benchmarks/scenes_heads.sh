#!/usr/bin/env bash
# Multi-label heads on Fashion-MNIST scenes (issue 4): GAP vs CSRA (H = 1, 4, 8) vs Query2Label on
# resnet20 (small), one recipe for all: the CSRA paper's head LR 10× the backbone's and warm-up, with
# backbone LR 0.05 instead of its 0.01 (ours trains from scratch, the paper's is ImageNet-pretrained)
# and cosine decay instead of its step decay (so that a shortened EPOCHS keeps the schedule's shape).
#   bash benchmarks/scenes_heads.sh [seed ...]        (default seeds: 0 1 2)
# The recipe is 20 epochs on all 55,000 training scenes in bf16-mixed; a shorter one for a CPU budget:
#   EPOCHS=4 TRAIN_SUBSET=10000 PRECISION=32-true bash benchmarks/scenes_heads.sh
# (float32 is the faster precision on CPUs without AMX). Writes runs/scenes-heads<tag>/<head>-s<seed>/,
# where <tag> names a shortened recipe (e.g. -e4-n10000), and copies each finished run's metrics.json
# and log.csv to docs/runs/ (runs already there are skipped); summarise with
#   .venv/bin/python benchmarks/results_table.py docs/runs/scenes-heads<tag>
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/train_kept.sh
short_recipe 20
declare -A HEAD_ARGS=(
  [gap]="--head gap"
  [csra1-lam0]="--head csra --heads 1 --lam 0"  # ablation: GAP with CSRA's bias-free normalised classifier
  [csra1]="--head csra --heads 1 --lam 0.1"
  [csra4]="--head csra --heads 4 --lam 0.1"
  [csra8]="--head csra --heads 8 --lam 0.1"
  [query2label]="--head query2label"
)
for seed in ${@:-0 1 2}; do
  for name in gap csra1-lam0 csra1 csra4 csra8 query2label; do
    # shellcheck disable=SC2086
    train_kept "runs/scenes-heads$tag/$name-s$seed" "docs/runs/scenes-heads$tag/$name-s$seed" \
      --task multilabel --data fashion-mnist-scenes --model resnet20 ${HEAD_ARGS[$name]} --lr 0.05 --head-lr 0.5 \
      --batch-size 128 --epochs "$EPOCHS" --warmup-epochs 1 --schedule cosine --precision "$PRECISION" \
      "${subset[@]}" --seed "$seed"
  done
done

#!/usr/bin/env bash
# The EVA paper's Table 1 comparison on Fashion-MNIST (issue 3): ResNet-20 vs SANet-20 vs EVANet-20,
# [2,2,2] BasicBlocks, option-A shortcuts, one recipe for all three.
#   bash benchmarks/eva_table1.sh [small|large] [seed ...]      (defaults: small, seeds 0 1 2)
# The recipe is 30 epochs on the whole training split in bf16-mixed; a shorter one for a CPU budget:
#   EPOCHS=10 TRAIN_SUBSET=15000 PRECISION=32-true bash benchmarks/eva_table1.sh small
# (float32 is the faster precision on CPUs without AMX). Writes runs/eva-table1-<width><tag>/<model>-s<seed>/,
# where <tag> names a shortened recipe (e.g. -e10-n15000), and copies each finished run's metrics.json
# and log.csv to docs/runs/ (runs already there are skipped); summarise with
#   .venv/bin/python benchmarks/results_table.py docs/runs/eva-table1-<width><tag>
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/train_kept.sh
width=${1:-small}
shift || true
short_recipe 30
for seed in ${@:-0 1 2}; do
  for model in resnet20 sanet20 evanet20; do
    train_kept "runs/eva-table1-$width$tag/$model-s$seed" "docs/runs/eva-table1-$width$tag/$model-s$seed" \
      --data fashion-mnist --model "$model" --width "$width" --model-kw '{"layers": [2, 2, 2], "shortcut": "A"}' \
      --optimizer adamw --lr 1e-3 --weight-decay 0.05 --batch-size 150 --epochs "$EPOCHS" --warmup-epochs 1 \
      --precision "$PRECISION" "${subset[@]}" --seed "$seed"
  done
done

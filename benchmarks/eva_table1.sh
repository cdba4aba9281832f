#!/usr/bin/env bash
# The EVA paper's Table 1 comparison on Fashion-MNIST (issue 3): ResNet-20 vs SANet-20 vs EVANet-20,
# [2,2,2] BasicBlocks, option-A shortcuts, one recipe for all three.
#   bash benchmarks/eva_table1.sh [small|large] [seed ...]      (defaults: small, seeds 0 1 2)
# Writes runs/eva-table1-<width>/<model>-s<seed>/; summarise with
#   .venv/bin/python benchmarks/results_table.py runs/eva-table1-<width>
set -euo pipefail
cd "$(dirname "$0")/.."
width=${1:-small}
shift || true
for seed in ${@:-0 1 2}; do
  for model in resnet20 sanet20 evanet20; do
    out=runs/eva-table1-$width/$model-s$seed
    [ -f "$out/metrics.json" ] && continue
    if [ -f "$out/last.pt" ]; then resume=(--resume "$out"); else resume=(); fi
    .venv/bin/attnvision train --data fashion-mnist --model "$model" --width "$width" \
      --model-kw '{"layers": [2, 2, 2], "shortcut": "A"}' --optimizer adamw --lr 1e-3 --weight-decay 0.05 \
      --batch-size 150 --epochs 30 --warmup-epochs 1 --precision bf16-mixed --seed "$seed" --no-progress \
      --out "$out" "${resume[@]}"
  done
done

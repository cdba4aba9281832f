#!/usr/bin/env bash
# The issue-2 results grid: resnet20 (small) on Fashion-MNIST, one recipe, with each attention module.
#   bash benchmarks/fmnist_attention.sh [seed ...]         (default seed: 0)
# Writes runs/fmnist-attention/<attn>-s<seed>/; `python benchmarks/results_table.py runs/fmnist-attention`
# turns them into the table in docs/results.md. About 15 min per run on 2 CPU cores with AMX (bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
ATTNS=${ATTNS:-"none se eca cbam bam eca_cbam eca_cbam_parallel"}
for seed in "${@:-0}"; do
  for attn in $ATTNS; do
    out=runs/fmnist-attention/$attn-s$seed
    [ -f "$out/metrics.json" ] && continue
    args=()
    [ "$attn" != none ] && args=(--attn "$attn")
    if [ -f "$out/last.pt" ]; then resume=(--resume "$out"); else resume=(); fi
    .venv/bin/attnvision train --data fashion-mnist --model resnet20 "${args[@]}" --epochs 30 --batch-size 128 \
      --lr 0.1 --weight-decay 5e-4 --warmup-epochs 1 --precision bf16-mixed --seed "$seed" --no-progress \
      --out "$out" "${resume[@]}"
  done
done

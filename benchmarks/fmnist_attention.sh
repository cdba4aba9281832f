#!/usr/bin/env bash
# The issue-2 results grid: resnet20 (small) on Fashion-MNIST, one recipe, with each attention module.
#   bash benchmarks/fmnist_attention.sh [seed ...]         (default seed: 0; ATTNS="se cbam" to pick modules)
# PRECISION=32-true trains in float32 instead of bf16-mixed: faster on CPUs without AMX.
# Trains into runs/fmnist-attention/<attn>-s<seed>/ (resuming an interrupted run) and copies each
# finished run's metrics.json and log.csv to docs/runs/fmnist-attention/, which the table in
# docs/results.md is made from (runs already there are skipped):
#   .venv/bin/python benchmarks/results_table.py docs/runs/fmnist-attention
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/train_kept.sh
ATTNS=${ATTNS:-"none se eca cbam bam eca_cbam eca_cbam_parallel"}
PRECISION=${PRECISION:-bf16-mixed}
for seed in ${@:-0}; do
  for attn in $ATTNS; do
    args=()
    [ "$attn" != none ] && args=(--attn "$attn")
    train_kept "runs/fmnist-attention/$attn-s$seed" "docs/runs/fmnist-attention/$attn-s$seed" \
      --data fashion-mnist --model resnet20 "${args[@]}" --epochs 30 --batch-size 128 --lr 0.1 \
      --weight-decay 5e-4 --warmup-epochs 1 --precision "$PRECISION" --seed "$seed"
  done
done

#!/usr/bin/env bash
# Query2Label on MS-COCO 2014 (Liu, Zhang, Yang, Su & Zhu, "Query2Label: A Simple Transformer Way to
# Multi-Label Classification", 2021): ResNet-101 (ImageNet-pretrained) with a 2-layer transformer decoder
# of one learnable query per class, at 448². Its README gives 84.9 mAP (Q2L-R101-448).
#   DATA_DIR=/data/coco WEIGHTS=resnet101-63fe2227.pth bash benchmarks/q2l_coco.sh
# (settings from the environment: benchmarks/paper_recipe.sh). Needs GPUs: 80 epochs of 77,081 images at 448².
# Recipe (Q2L's README command and docs/research notes): AdamW, LR 1e-4, weight decay 1e-2, one-cycle
# schedule, 80 epochs, batch 128, asymmetric loss, weight EMA 0.9997, Cutout ½ + RandAugment without flips
# (--augment q2l --no-hflip), decoder width 2048, 4 heads, feed-forward 8192, no decoder self-attention.
# Deviations: our asymmetric loss keeps ASL's defaults (γ− = 4, clip 0.05; Q2L: γ− = 2, clip 0); Q2L's
# one transformer encoder layer, frozen BatchNorm and frozen stem + layer1 are not reproduced; Q2L picks
# its epoch on val2014 (the test set), we pick it on 5,000 held-out train2014 images.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/paper_recipe.sh
paper_recipe q2l-coco 80 128
train_recipe q2l --data coco2014 --model resnet101 --head query2label --augment q2l --crop-pad 0 --no-hflip \
  --optimizer adamw --lr 1e-4 --weight-decay 1e-2 --schedule onecycle --warmup-epochs 0 --loss asl \
  --ema-decay 0.9997 \
  --model-kw '{"head_kw": {"hidden_dim": 2048, "num_layers": 2, "num_heads": 4, "ffn_dim": 8192, "self_attn": false}}'
beside_paper q2l 84.9 "Query2Label README (Q2L-R101-448)"

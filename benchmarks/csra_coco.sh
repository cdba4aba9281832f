#!/usr/bin/env bash
# CSRA on MS-COCO 2014 (Zhu & Wu, ICCV 2021): ResNet-101 (ImageNet-pretrained) + CSRA with H = 6, λ = 0.5
# against the same backbone with global average pooling. Table 4 gives 83.5 mAP for CSRA and 79.4 for the
# baseline (CSRA's README reports 83.3 for its released H = 4 checkpoint).
#   DATA_DIR=/data/coco WEIGHTS=resnet101-63fe2227.pth bash benchmarks/csra_coco.sh
# (settings from the environment: benchmarks/paper_recipe.sh). Needs a GPU: 30 epochs of 77,081 images at
# 448², which do not fit in memory decoded (49 GB): the images stream from their files (--stream).
# The recipe of csra_voc07.sh, with CSRA's main.py decay every 5 epochs (COCO) instead of 4.
# Deviations: those of csra_voc07.sh; the validation split is 5,000 train2014 images.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/paper_recipe.sh
paper_recipe csra-coco 30 16
csra_recipe coco2014 5 6 0.5
beside_paper csra 83.5 "CSRA paper, Table 4 (ResNet-101 + CSRA)"
beside_paper baseline 79.4 "CSRA paper, Table 4 (ResNet-101)"

# Sourced by the paper-table recipes (csra_voc07.sh, csra_coco.sh, q2l_coco.sh): the settings every one
# of them shares, read from the environment, and the line that puts our number beside the paper's.
#   DATA_DIR   the dataset's folder (official layout; see src/attnvision/data/voc.py, coco.py)
#   WEIGHTS    torchvision's ImageNet ResNet-101 weight file (resnet101-63fe2227.pth), given by path
#   OUT        the folder the runs go into (default runs/<recipe>)
#   PRECISION  32-true (default; the papers train in fp32) or bf16-mixed on a GPU that has it
#   DRY_RUN=1  2 training steps of one image at 64² on the CPU: what the tests run on fixtures
# Runs resume where they stopped (the trainer's --resume), so an interrupted recipe is rerun as is.
paper_recipe() {
  : "${DATA_DIR:?set DATA_DIR to the dataset folder}"
  : "${WEIGHTS:?set WEIGHTS to the torchvision ImageNet resnet101 weight file (resnet101-63fe2227.pth)}"
  OUT=${OUT:-runs/$1}
  PRECISION=${PRECISION:-32-true}
  if [ -n "${DRY_RUN:-}" ]; then
    size=(--data-kw '{"img_size": 64}' --epochs 1 --train-subset 2 --batch-size 1 --val-size 2 --accelerator cpu --workers 0)
  else
    size=(--data-kw '{"img_size": 448}' --epochs "$2" --batch-size "$3")
  fi
}

# train_recipe RUN ARGS...: trains (or resumes) runs $OUT/RUN with the shared settings.
train_recipe() {
  local run=$OUT/$1
  shift
  if [ -f "$run/metrics.json" ]; then return 0; fi
  if [ -f "$run/last.pt" ]; then
    .venv/bin/attnvision train --resume "$run" --no-progress
  else
    .venv/bin/attnvision train --data-dir "$DATA_DIR" --weights "$WEIGHTS" --stream --precision "$PRECISION" \
      "${size[@]}" "$@" --no-progress --out "$run"
  fi
}

# csra_recipe DATA DECAY_EPOCHS HEADS LAMBDA: CSRA and its GAP baseline on ResNet-101 by the CSRA paper's §4
# recipe (csra_voc07.sh and csra_coco.sh say where each setting comes from), into $OUT/csra and $OUT/baseline.
csra_recipe() {
  local common=(--data "$1" --model resnet101 --augment csra --crop-pad 0 --hflip --optimizer sgd --momentum 0.9
                --weight-decay 1e-4 --warmup-epochs 2 --schedule step --step-epochs "$2" --step-gamma 0.1)
  train_recipe csra "${common[@]}" --head csra --heads "$3" --lam "$4" --lr 0.01 --head-lr 0.1
  train_recipe baseline "${common[@]}" --head gap --lr 0.01
}

# beside_paper RUN PAPER_MAP SOURCE: one line, our test mAP (best-validation epoch) next to the paper's.
beside_paper() {
  .venv/bin/python benchmarks/beside_paper.py "$OUT/$1" "$2" "$3"
}

# Sourced by the experiment scripts: train_kept OUT KEPT TRAIN_ARGS... and short_recipe FULL_EPOCHS.
# Skips the run when KEPT/metrics.json exists; otherwise trains into OUT with `attnvision train`
# (resuming from OUT/last.pt, with the options saved there, when an earlier attempt was interrupted)
# and copies the finished run's metrics.json and log.csv to KEPT, the folder under docs/runs/ that the
# results tables are made from.
train_kept() {
  local out=$1 kept=$2
  shift 2
  [ -f "$kept/metrics.json" ] && return 0
  if [ -f "$out/last.pt" ]; then
    .venv/bin/attnvision train --resume "$out" --no-progress
  else
    .venv/bin/attnvision train "$@" --no-progress --out "$out"
  fi
  mkdir -p "$kept" && cp "$out/metrics.json" "$out/log.csv" "$kept/"
}

# short_recipe FULL_EPOCHS: sets EPOCHS (default FULL_EPOCHS) and PRECISION (default bf16-mixed)
# from the environment, `subset` to the --train-subset arguments when TRAIN_SUBSET is set, and `tag`
# to the run-folder suffix that names a shortened recipe (e.g. -e4-n10000; empty for the full one).
short_recipe() {
  EPOCHS=${EPOCHS:-$1}
  PRECISION=${PRECISION:-bf16-mixed}
  tag=""
  [ "$EPOCHS" != "$1" ] && tag="$tag-e$EPOCHS"
  subset=()
  if [ -n "${TRAIN_SUBSET:-}" ]; then subset=(--train-subset "$TRAIN_SUBSET"); tag="$tag-n$TRAIN_SUBSET"; fi
}

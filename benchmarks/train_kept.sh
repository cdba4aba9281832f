# Sourced by the experiment scripts: train_kept OUT KEPT TRAIN_ARGS...
# Skips the run when KEPT/metrics.json exists; otherwise trains into OUT with `attnvision train`
# (resuming from OUT/last.pt when an earlier attempt was interrupted) and copies the finished run's
# metrics.json and log.csv to KEPT, the folder under docs/runs/ that the results tables are made from.
train_kept() {
  local out=$1 kept=$2
  shift 2
  [ -f "$kept/metrics.json" ] && return 0
  local resume=()
  [ -f "$out/last.pt" ] && resume=(--resume "$out")
  .venv/bin/attnvision train "$@" --no-progress --out "$out" "${resume[@]}"
  mkdir -p "$kept" && cp "$out/metrics.json" "$out/log.csv" "$kept/"
}

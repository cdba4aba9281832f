# Accuracy against training budget: the converged recipes trained for several epoch budgets (each
# budget its own run, since a linear-to-zero schedule ends at its budget), one run at a time on
# OMP_NUM_THREADS threads (1: two streams share the 2 cores). Resumable: a kept run is skipped, an
# interrupted one resumes from its last.pt.
#   OMP_NUM_THREADS=1 bash benchmarks/recipe_budget.sh fashion-mnist SEED EPOCHS...
#   OMP_NUM_THREADS=1 bash benchmarks/recipe_budget.sh scenes SEED EPOCHS...
# fashion-mnist: the recipe file at each budget, then the control `cos-ls` (cosine, label smoothing
# 0.1, batch 128: the recipe of the 10-epoch number in the project guide) when the budget is 10.
# scenes: the localisation recipe on single-item scenes with clutter (the packaged recipe scenes-converged).
set -euo pipefail
source benchmarks/train_kept.sh
which=$1 seed=$2
shift 2
threads=${OMP_NUM_THREADS:-1}
for epochs in "$@"; do
  case $which in
    fashion-mnist)
      train_kept "runs/recipe-search/lin-tta-e$epochs-s$seed" "docs/runs/recipe-search/lin-tta-e$epochs-s$seed" \
        --config fashion-mnist-converged --epochs "$epochs" --seed "$seed" --threads "$threads"
      if [ "$epochs" = 10 ]; then
        train_kept "runs/recipe-search/cos-ls-s$seed" "docs/runs/recipe-search/cos-ls-s$seed" \
          --data fashion-mnist --model resnet20 --epochs 10 --label-smoothing 0.1 --precision 32-true \
          --seed "$seed" --threads "$threads"
      fi ;;
    scenes)
      train_kept "runs/scenes-recipe/e$epochs-s$seed" "docs/runs/scenes-recipe/e$epochs-s$seed" \
        --config scenes-converged --epochs "$epochs" --seed "$seed" --threads "$threads" ;;
    *) echo "usage: recipe_budget.sh fashion-mnist|scenes SEED EPOCHS..." >&2; exit 2 ;;
  esac
done

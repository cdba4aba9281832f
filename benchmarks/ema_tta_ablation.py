"""What a run's weight moving average (EMA) and test-time flip averaging (TTA) buy, without retraining.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ema_tta_ablation.py runs/recipe-search/lin-ema-tta-s{0,1,2}

For each run folder trained with ``--ema-decay`` (its ``last.pt`` holds both the trained weights and
their moving average), evaluates the last epoch's raw and averaged weights on the validation and test
splits, each with and without flip averaging, and prints a markdown table. The moving average is a
shadow copy updated after each optimizer step; it never feeds back into training, so the raw weights
of ``last.pt`` are exactly those a run without ``--ema-decay`` would end with (same seed, same
batches), and their row is that run's last epoch. Select on validation; the test column is reported,
not chosen on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from attnvision.evaluate import build_loss, evaluate, load_model_state, load_run, split_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders trained with --ema-decay")
    args = parser.parse_args()
    print("| run | epoch | weights | val acc (%) | val acc, flip TTA (%) | test acc (%) | test acc, flip TTA (%) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for run in args.runs:
        path = run / "last.pt"
        cfg, bundle, model, fabric, state = load_run(path)
        if "ema" not in state:
            raise SystemExit(f"{path} has no moving average (trained without --ema-decay)")
        loss_fn = build_loss(cfg, bundle.task)
        loaders = {split: split_loader(cfg, bundle, split, fabric) for split in ("val", "test")}
        for weights in ("model", "ema"):
            load_model_state(model, state[weights], path)
            model.eval()
            accs = [evaluate(fabric, model, loaders[split], loss_fn, bundle.task, tta)["acc"]
                    for split in ("val", "test") for tta in (False, True)]
            name = "raw" if weights == "model" else f"EMA {cfg.ema_decay}"
            print(f"| {run.name} | {state['epoch']} | {name} | " + " | ".join(f"{a:.2f}" for a in accs) + " |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()

"""The training-free max-pooling boost of CSRA (Zhu & Wu, ICCV 2021, Fig. 1 and Table 1).

For a trained model whose head is GAP + a linear classifier (W, b), apply the classifier at every
location of the feature map x ∈ R^{d×h×w} to get class score maps, then

    y_raw[c, k] = W_c · x_k + b_c           (B, C, h·w)
    y_avg = mean_k y_raw,   y_max = max_k y_raw
    score = y_avg + λ · y_max               (λ = 0 is the trained model's own output)

λ is chosen on the validation split (the paper's "varying λ" column, which tuned λ per experiment;
here the choice never sees the test split), and reported next to the paper's "fixed λ" column:
0.02 for ResNets, 0.2 for every other model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .heads.gap import GAPHead
from .evaluate import load_run, selection_metric, split_loader, task_metrics

LAMBDAS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


@torch.no_grad()
def avg_max_scores(fabric, model: torch.nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y_avg (N, C), y_max (N, C) and targets over a split, from the model's own classifier."""
    if not isinstance(model.head, GAPHead):
        raise ValueError(f"boost needs a GAP + linear head; this model's head is {type(model.head).__name__}")
    fc = model.head.fc
    avg, mx, targets = [], [], []
    for x, y in loader:
        with fabric.autocast():
            features = model.forward_features(x)
        y_raw = torch.einsum("bdn,cd->bcn", features.float().flatten(2), fc.weight.float()) + fc.bias.float()[:, None]
        avg.append(y_raw.mean(2))
        mx.append(y_raw.amax(2))
        targets.append(y)
    return torch.cat(avg), torch.cat(mx), torch.cat(targets)


def fixed_lambda(model_name: str) -> float:
    """The paper's fixed λ: 0.02 for the ResNet family, 0.2 for all other models."""
    return 0.02 if model_name.startswith("resnet") else 0.2


def boost(checkpoint: str | Path, lambdas: tuple[float, ...] = LAMBDAS, data_dir: str | None = None) -> dict:
    """Baseline vs boosted test score of a checkpoint, λ chosen on the validation split.
    The sweep always includes 0 (the baseline) and the paper's fixed λ."""
    cfg, bundle, model, fabric, _ = load_run(checkpoint, data_dir)
    fixed = fixed_lambda(cfg.model)
    lambdas = tuple(sorted({0.0, fixed, *lambdas}))
    metric = selection_metric(bundle.task)

    def sweep(split: str) -> dict[float, float]:
        y_avg, y_max, targets = avg_max_scores(fabric, model, split_loader(cfg, bundle, split, fabric))
        return {lam: task_metrics(bundle.task, y_avg + lam * y_max, targets)[metric] for lam in lambdas}

    val, test = sweep("val"), sweep("test")
    chosen = max(lambdas, key=lambda lam: (val[lam], -lam))  # ties → the smaller λ
    return {
        "checkpoint": str(checkpoint), "model": cfg.model, "attn": cfg.attn, "data": cfg.data, "metric": metric,
        "baseline": test[0.0],
        "chosen_lambda": chosen, "boosted": test[chosen], "difference": test[chosen] - test[0.0],
        "fixed_lambda": fixed, "fixed": test[fixed], "fixed_difference": test[fixed] - test[0.0],
        "val_sweep": {str(k): v for k, v in val.items()}, "test_sweep": {str(k): v for k, v in test.items()},
    }


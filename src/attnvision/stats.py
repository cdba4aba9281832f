"""Paired significance tests for comparing two models on the same test items.

- ``mcnemar_exact``: McNemar's exact test for paired binary outcomes (correct / not, hit / miss):
  only discordant items count; under H0 each is equally likely to favour A or B, so
  p = min(1, 2·P[X ≤ min(b, c)]) with X ~ Binomial(b + c, 1/2) (two-sided).
- ``paired_bootstrap``: the mean of per-item differences and a percentile bootstrap 95% interval
  over items (resampling items with replacement, seeded).
"""

from __future__ import annotations

import math

import torch


def mcnemar_exact(a: torch.Tensor, b: torch.Tensor) -> dict:
    """a, b: bool (N,) outcomes of two models on the same items. Returns {"only_a", "only_b", "p"}."""
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same items, got {tuple(a.shape)} and {tuple(b.shape)}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return {"only_a": 0, "only_b": 0, "p": 1.0}
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return {"only_a": only_a, "only_b": only_b, "p": min(1.0, 2 * tail)}


def paired_bootstrap(diff: torch.Tensor, samples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of per-item differences diff (N,) with a percentile bootstrap interval over items:
    {"mean", "low", "high"}."""
    diff = diff.double().flatten()
    g = torch.Generator().manual_seed(seed)
    means = torch.stack([diff[torch.randint(len(diff), (len(diff),), generator=g)].mean() for _ in range(samples)])
    low, high = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.double)).tolist()
    return {"mean": float(diff.mean()), "low": low, "high": high}

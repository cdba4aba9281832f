"""Paired significance tests for comparing two models on the same test items.

- ``mcnemar_exact``: McNemar's exact test for paired binary outcomes (correct / not, hit / miss):
  only discordant items count; under H0 each is equally likely to favour A or B, so
  p = min(1, 2·P[X ≤ min(b, c)]) with X ~ Binomial(b + c, 1/2) (two-sided).
- ``paired_bootstrap``: the mean of per-item differences and a percentile bootstrap 95% interval
  over items (resampling items with replacement, seeded).
- ``paired_t``: the paired t interval and two-sided t test of per-unit differences (here: seeds),
  mean ± t_{(1+level)/2, n−1}·s/√n. Student's t distribution is computed exactly for integer
  degrees of freedom by the finite series of Abramowitz & Stegun 26.7.3-4 (``t_central``), its
  quantile by bisection on it (``t_quantile``): no scipy in the package (tests check both
  against scipy).
- ``holm``: Holm's step-down adjustment of a family of p-values (family-wise error rate).
- ``POWER_FACTOR`` = z_{0.975} + z_{0.80} ≈ 2.8: a difference of 2.8 standard errors is detected by
  a two-sided test at α = 0.05 with 80% power (normal approximation).
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


POWER_FACTOR = 2.8  # z_{0.975} + z_{0.80} = 1.960 + 0.842


def t_central(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with ``df`` ≥ 1 degrees of freedom (integer), exactly: with
    θ = atan(|t|/√df), c = cos θ, A&S 26.7.3 (df odd)
        2/π·(θ + sin θ·(c + 2/3·c³ + … + (2·4···(df−3))/(1·3···(df−2))·c^(df−2)))
    and 26.7.4 (df even)
        sin θ·(1 + 1/2·c² + … + (1·3···(df−3))/(2·4···(df−2))·c^(df−2))."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:
        term, total = math.cos(theta), 0.0
        for j in range(1, (df - 1) // 2 + 1):  # powers c^1, c^3, …, c^(df−2)
            total += term
            term *= c2 * (2 * j) / (2 * j + 1)
        return min(1.0, 2 / math.pi * (theta + math.sin(theta) * total))
    term, total = 1.0, 0.0
    for j in range(df // 2):  # powers c^0, c^2, …, c^(df−2)
        total += term
        term *= c2 * (2 * j + 1) / (2 * j + 2)
    return min(1.0, math.sin(theta) * total)


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile (0.5 < q < 1) of Student's t with ``df`` degrees of freedom: bisection on
    ``t_central`` (P(T ≤ t) = (1 + P(|T| ≤ t))/2) to 1e-12 relative precision."""
    if not 0.5 < q < 1:
        raise ValueError(f"q must lie in (0.5, 1), got {q}")
    central = 2 * q - 1
    low, high = 0.0, 1.0
    while t_central(high, df) < central:
        low, high = high, 2 * high
    while high - low > 1e-12 * high:
        middle = (low + high) / 2
        low, high = (middle, high) if t_central(middle, df) < central else (low, middle)
    return (low + high) / 2


def paired_t(diffs: list[float], level: float = 0.95) -> dict | None:
    """Paired t statistics of per-unit differences: {"n", "mean", "sd", "low", "high", "p"}, the
    interval mean ± t_{(1+level)/2, n−1}·sd/√n and the two-sided p of H0: mean 0; None for n < 2.
    With sd = 0 the interval is the mean itself and p is 0 (mean ≠ 0) or 1."""
    n = len(diffs)
    if n < 2:
        return None
    mean = math.fsum(diffs) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    if sd == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = 1.0 - t_central(mean / (sd / math.sqrt(n)), n - 1)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "p": max(p, 0.0)}


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (same keys): with p_(1) ≤ … ≤ p_(m), the i-th smallest gets
    max over j ≤ i of min(1, (m − j + 1)·p_(j)). Rejecting where the adjusted p < α keeps the
    family-wise error rate at α."""
    order = sorted(p_values, key=p_values.get)
    m, running, adjusted = len(order), 0.0, {}
    for j, key in enumerate(order):
        running = max(running, min(1.0, (m - j) * p_values[key]))
        adjusted[key] = running
    return adjusted

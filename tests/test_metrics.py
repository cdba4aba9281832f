"""Multi-label metrics against scikit-learn, torchmetrics and hand computations; accuracy."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, precision_score, recall_score
from torchmetrics.functional.classification import multilabel_average_precision

from attnvision.metrics import accuracy, average_precision, multilabel_metrics

KEYS = ["mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"] + [f"top3_{k}" for k in ["CP", "CR", "CF1", "OP", "OR", "OF1"]]


def sklearn_ap(scores: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per-class sklearn AP over non-ignored entries; NaN where a class has no positive."""
    out = []
    for c in range(scores.shape[1]):
        keep = targets[:, c] != -1
        y, s = targets[keep, c].numpy(), scores[keep, c].double().numpy()
        out.append(average_precision_score(y, s) if (y == 1).any() else math.nan)
    return out


def prec_at_k_ap(scores: np.ndarray, y: np.ndarray) -> float:
    """The textbook non-interpolated AP, (1/|P|) Σ_{k: y_k = 1} Prec@k, for distinct scores."""
    order = np.argsort(-scores)
    hits = y[order] == 1
    precision_at_k = np.cumsum(hits) / np.arange(1, len(y) + 1)
    return precision_at_k[hits].mean()


def random_problem(n: int, c: int, seed: int, ignore: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    targets = (torch.rand(n, c, generator=g) < 0.3).long()
    targets[torch.rand(n, c, generator=g) < ignore] = -1
    targets[0] = 1  # every class has a positive
    logits = torch.randn(n, c, generator=g) + 1.5 * targets.clamp(min=0)
    return logits, targets


def test_ap_matches_prec_at_k_and_sklearn_without_ties():
    logits, targets = random_problem(60, 4, seed=0)
    ap = average_precision(logits, targets)
    assert ap.dtype == torch.float64 and ap.shape == (4,)
    for c in range(4):
        assert ap[c].item() == pytest.approx(prec_at_k_ap(logits[:, c].numpy(), targets[:, c].numpy()), abs=1e-12)
    assert ap.tolist() == pytest.approx(sklearn_ap(logits, targets), abs=1e-12)


def test_ap_ties_by_hand():
    # Thresholds 0.9, 0.8 (one positive and one negative tied), 0.1:
    # AP = 1/3·1 + 1/3·(2/3) + 1/3·(3/4) = 29/36; a stable sort that put the tied positive
    # first would give (1 + 1 + 3/4)/3 = 33/36 instead.
    scores = torch.tensor([[0.9], [0.8], [0.8], [0.1]])
    targets = torch.tensor([[1], [1], [0], [1]])
    assert average_precision(scores, targets).item() == pytest.approx(29 / 36, abs=1e-12)
    swapped = [0, 2, 1, 3]  # the tied negative now comes first: same AP, the order of ties is irrelevant
    assert average_precision(scores[swapped], targets[swapped]).item() == pytest.approx(29 / 36, abs=1e-12)


def test_ap_with_ties_matches_sklearn_and_torchmetrics():
    logits, targets = random_problem(200, 5, seed=1)
    probs = (logits.sigmoid() * 8).round() / 8  # 9 distinct values: heavy ties
    ap = average_precision(probs, targets)
    assert ap.tolist() == pytest.approx(sklearn_ap(probs, targets), abs=1e-12)
    tm = multilabel_average_precision(probs, targets, num_labels=5, average=None, thresholds=None)
    assert ap.tolist() == pytest.approx(tm.double().tolist(), abs=1e-6)


def test_ignored_entries_are_dropped_from_ap():
    logits, targets = random_problem(120, 4, seed=2, ignore=0.2)
    assert (targets == -1).any()
    ap = average_precision(logits, targets)
    assert ap.tolist() == pytest.approx(sklearn_ap(logits, targets), abs=1e-12)
    tm = multilabel_average_precision(logits.sigmoid(), targets, num_labels=4, average=None, thresholds=None,
                                      ignore_index=-1)
    assert ap.tolist() == pytest.approx(tm.double().tolist(), abs=1e-6)
    # Changing an ignored entry's score changes nothing.
    moved = logits.clone()
    moved[targets == -1] = 100.0
    assert average_precision(moved, targets).tolist() == pytest.approx(ap.tolist(), abs=1e-12)


def test_class_without_positives_is_excluded_and_listed():
    logits, targets = random_problem(50, 4, seed=3)
    targets[:, 2] = 0
    targets[:5, 2] = -1
    ap = average_precision(logits, targets)
    assert math.isnan(ap[2].item()) and not ap[[0, 1, 3]].isnan().any()
    m = multilabel_metrics(logits, targets)
    assert m["classes_without_positives"] == [2]
    assert m["mAP"] == pytest.approx(100 * ap[[0, 1, 3]].mean().item())
    kept = multilabel_metrics(logits[:, [0, 1, 3]], targets[:, [0, 1, 3]])
    for key in ["CP", "CR", "CF1"]:  # class-averaged metrics ignore the empty class
        assert m[key] == pytest.approx(kept[key])
    # The empty class's false positives still count in the overall precision.
    pred_fp = ((logits[:, 2].sigmoid() >= 0.5) & (targets[:, 2] == 0)).sum().item()
    assert pred_fp > 0 and m["OP"] < kept["OP"]


def test_no_class_with_positives_gives_nan_not_a_crash():
    m = multilabel_metrics(torch.randn(6, 3), torch.zeros(6, 3, dtype=torch.long))
    assert math.isnan(m["mAP"]) and math.isnan(m["CP"]) and math.isnan(m["CF1"])
    assert m["classes_without_positives"] == [0, 1, 2]


def test_precision_recall_match_sklearn_and_csra_cf1_definition():
    logits, targets = random_problem(300, 6, seed=4)
    logits[:, 5] -= 3  # a class that is rarely predicted, to make CF1 ≠ mean of per-class F1
    m = multilabel_metrics(logits, targets, threshold=0.5)
    y, pred = targets.numpy(), (logits.sigmoid() >= 0.5).numpy().astype(int)
    cp = 100 * precision_score(y, pred, average="macro", zero_division=0)
    cr = 100 * recall_score(y, pred, average="macro", zero_division=0)
    assert m["CP"] == pytest.approx(cp) and m["CR"] == pytest.approx(cr)
    assert m["CF1"] == pytest.approx(2 * cp * cr / (cp + cr))
    assert m["CF1"] != pytest.approx(100 * f1_score(y, pred, average="macro", zero_division=0), abs=0.1)
    assert m["OP"] == pytest.approx(100 * precision_score(y, pred, average="micro"))
    assert m["OR"] == pytest.approx(100 * recall_score(y, pred, average="micro"))
    assert m["OF1"] == pytest.approx(100 * f1_score(y, pred, average="micro"))
    assert set(KEYS) <= set(m) and all(isinstance(m[k], float) for k in KEYS)


def test_exact_set_accuracy_is_sklearn_subset_accuracy_and_skips_ignored_entries():
    logits, targets = random_problem(300, 4, seed=7)
    y, pred = targets.numpy(), (logits.sigmoid() >= 0.5).numpy().astype(int)
    assert multilabel_metrics(logits, targets)["exact"] == pytest.approx(100 * accuracy_score(y, pred))
    probs = torch.tensor([[0.9, 0.2, 0.7], [0.9, 0.6, 0.1], [0.1, 0.1, 0.1]])
    targets = torch.tensor([[1, 0, -1], [1, 0, 0], [0, 0, 0]])  # right (ignored entry skipped), wrong, right
    assert multilabel_metrics(probs, targets, from_logits=False)["exact"] == pytest.approx(200 / 3)


def test_top3_requires_top3_and_threshold():
    probs = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.2],   # top-3 = 0,1,2; class 3 ≥ 0.5 but not top-3
                          [0.9, 0.4, 0.3, 0.2, 0.1]])  # only class 0 passes the threshold
    targets = torch.tensor([[1, 0, 0, 1, 0],
                            [1, 1, 0, 0, 1]])
    m = multilabel_metrics(probs, targets, from_logits=False)
    # top-3 predictions: image 0 → {0, 1, 2}, image 1 → {0}: TP = 2, Np = 4, Ng = 5
    assert m["top3_OP"] == pytest.approx(50.0) and m["top3_OR"] == pytest.approx(40.0)
    # per class (classes 0, 1, 3, 4 have positives): P = 1, 0, 0, 0; R = 1, 0, 0, 0
    assert m["top3_CP"] == pytest.approx(25.0) and m["top3_CR"] == pytest.approx(25.0)
    # all predictions at 0.5: image 0 → {0, 1, 2, 3}: TP = 3 of Np = 5
    assert m["OP"] == pytest.approx(60.0) and m["OR"] == pytest.approx(60.0)


def test_ignored_entries_are_dropped_from_counts():
    probs = torch.tensor([[0.9, 0.9], [0.9, 0.1], [0.2, 0.8]])
    targets = torch.tensor([[1, -1], [-1, 0], [0, 1]])
    m = multilabel_metrics(probs, targets, from_logits=False)
    # class 0: one TP (row 0), its other prediction is ignored; class 1: TP row 2, ignored FP row 0
    assert m["OP"] == pytest.approx(100.0) and m["OR"] == pytest.approx(100.0) and m["CP"] == pytest.approx(100.0)


def test_logits_and_probabilities_agree_and_ranking_uses_logits():
    logits, targets = random_problem(80, 5, seed=5)
    a = multilabel_metrics(logits, targets)
    b = multilabel_metrics(logits.sigmoid(), targets, from_logits=False)
    assert a.pop("classes_without_positives") == b.pop("classes_without_positives") == []
    assert a == pytest.approx(b)
    # Logits above ~16.6 all map to 1.0 under a float32 sigmoid; AP on the logits keeps their order.
    big = torch.tensor([[30.0], [25.0], [20.0], [18.0]])
    y = torch.tensor([[1], [1], [0], [0]])
    assert multilabel_metrics(big, y)["mAP"] == pytest.approx(100.0)
    assert average_precision(big.sigmoid(), y).item() == pytest.approx(0.5)
    # fp16 logits are handled in float32.
    assert multilabel_metrics(logits.half(), targets)["mAP"] == pytest.approx(a["mAP"], abs=0.5)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 4), st.integers(0, 10_000), st.floats(0.05, 0.95))
def test_random_small_problems_match_reference(n, c, seed, threshold):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(-1, 2, (n, c), generator=g)
    scores = torch.randint(0, 5, (n, c), generator=g).float() / 4  # ties on purpose
    ap = average_precision(scores, targets)
    ref = sklearn_ap(scores, targets)
    for a, r in zip(ap.tolist(), ref):
        assert (math.isnan(a) and math.isnan(r)) or a == pytest.approx(r, abs=1e-12)
    m = multilabel_metrics(scores, targets, threshold=threshold, from_logits=False)
    # Direct loop implementation of the CSRA counts, ignoring -1 entries and empty classes.
    tp = np_ = ng = 0
    cps, crs = [], []
    for j in range(c):
        t_j = tp_j = p_j = g_j = 0
        for i in range(n):
            if targets[i, j] == -1:
                continue
            pred = scores[i, j].item() >= threshold
            t_j += pred and targets[i, j] == 1
            p_j += pred
            g_j += targets[i, j] == 1
        tp, np_, ng = tp + t_j, np_ + p_j, ng + g_j
        if g_j:
            cps.append(t_j / max(p_j, 1))
            crs.append(t_j / g_j)
    assert m["OP"] == pytest.approx(100 * tp / max(np_, 1))
    assert m["OR"] == pytest.approx(100 * tp / max(ng, 1))
    if cps:
        assert m["CP"] == pytest.approx(100 * sum(cps) / len(cps))
        assert m["CR"] == pytest.approx(100 * sum(crs) / len(crs))
    else:
        assert math.isnan(m["CP"])


@pytest.mark.parametrize("scores,targets,match", [
    (torch.rand(4, 3), torch.zeros(4, 2), "must both be"),
    (torch.rand(4, 3), torch.full((4, 3), 2), "must be 1"),
    (torch.tensor([[float("nan")]]), torch.ones(1, 1), "NaN"),
    (torch.rand(0, 3), torch.zeros(0, 3), "no samples"),
])
def test_bad_input_raises_clear_errors(scores, targets, match):
    with pytest.raises(ValueError, match=match):
        multilabel_metrics(scores, targets)


def test_probabilities_outside_unit_interval_and_bad_threshold():
    with pytest.raises(ValueError, match="from_logits=True"):
        multilabel_metrics(torch.randn(4, 3) * 5, torch.ones(4, 3), from_logits=False)
    with pytest.raises(ValueError, match="threshold"):
        multilabel_metrics(torch.randn(4, 3), torch.ones(4, 3), threshold=2.0)


def test_accuracy():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 2, 1, 1])) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="class indices"):
        accuracy(logits, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="class indices"):
        accuracy(logits, torch.zeros(5, dtype=torch.long))


def test_mcnemar_exact_and_paired_bootstrap():
    from attnvision.stats import mcnemar_exact, paired_bootstrap

    a = torch.tensor([True] * 10 + [False] * 2 + [True] * 5)
    b = torch.tensor([False] * 10 + [True] * 2 + [True] * 5)
    result = mcnemar_exact(a, b)
    # 10 vs 2 discordant: p = 2 · P[Binomial(12, 1/2) ≤ 2] = 2 · 79 / 4096
    assert result["only_a"] == 10 and result["only_b"] == 2
    assert result["p"] == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(a, a)["p"] == 1.0
    diff = torch.full((500,), 0.2) + torch.linspace(-0.1, 0.1, 500)
    ci = paired_bootstrap(diff)
    assert ci["low"] < 0.2 < ci["high"] and ci["mean"] == pytest.approx(0.2)
    assert ci["high"] - ci["low"] < 0.02


def test_t_distribution_matches_scipy():
    from scipy import stats as scipy_stats

    from attnvision.stats import t_central, t_quantile

    for df in (1, 2, 3, 4, 5, 9, 10, 29, 30):
        for t in (0.0, 0.3, 1.0, 2.1, 4.5, 60.0):
            assert t_central(t, df) == pytest.approx(1 - 2 * scipy_stats.t.sf(t, df), abs=1e-12)
        for q in (0.6, 0.9, 0.975, 0.995):
            assert t_quantile(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), rel=1e-9)
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)  # the 5-seed interval's factor
    with pytest.raises(ValueError, match="positive integer"):
        t_central(1.0, 0)


def test_paired_t_interval_and_p_match_scipy():
    from scipy import stats as scipy_stats

    from attnvision.stats import paired_t

    diffs = [0.4, 1.1, -0.2, 0.9, 0.6]
    result = paired_t(diffs)
    expected = scipy_stats.ttest_1samp(diffs, 0.0)
    low, high = expected.confidence_interval(0.95)
    assert result["p"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert (result["low"], result["high"]) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert result["mean"] == pytest.approx(0.56) and result["n"] == 5
    assert paired_t([0.5]) is None  # one seed: no between-seed interval
    same = paired_t([0.3, 0.3, 0.3])
    assert same["low"] == same["high"] == pytest.approx(0.3) and same["p"] == 0.0
    assert paired_t([0.0, 0.0])["p"] == 1.0


def test_holm_adjusts_step_down():
    from attnvision.stats import holm

    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5})
    # sorted 0.01, 0.03, 0.04, 0.5: × 4, 3, 2, 1, each at least the one before
    assert adjusted == pytest.approx({"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5})
    assert holm({"a": 0.3, "b": 0.6}) == pytest.approx({"a": 0.6, "b": 0.6})
    assert holm({"a": 0.02}) == {"a": 0.02} and holm({}) == {}

"""Evaluation metrics: multi-label mAP and precision/recall/F1 (all and top-3), single-label accuracy.

Multi-label conventions (the choices that silently change published numbers between CSRA, ASL,
ML-GCN, Query2Label, scikit-learn and torchmetrics):

- **Targets** are (N, C) with 1 = positive, 0 = negative, -1 = ignored (e.g. VOC "difficult",
  WIDER "unspecified"). Ignored entries are dropped from AP *and* from every precision/recall
  count, as CSRA does on VOC07 test. (ML-GCN counts VOC-difficult as negative in P/R; CSRA
  counts WIDER-unspecified as negative in P/R: relabel -1 → 0 before calling to get those.)
- **AP** per class is non-interpolated, AP = (1/|P|) Σ_{k: y_k=1} Prec@k (CSRA, ASL, ML-GCN),
  with tied scores grouped: AP = Σ_n (R_n − R_{n−1}) P_n over the distinct scores, so every
  positive inside a group of equal scores gets the precision at the group's end. This equals
  sklearn's ``average_precision_score`` and torchmetrics' (``thresholds=None``) exactly, ties
  included, and equals the Prec@k formula when there are no ties. It does not depend on how a
  sort orders equal scores. mAP is the macro mean over classes.
- **Classes without a positive** (among non-ignored entries) have no AP: ``average_precision``
  gives NaN for them, and they are left out of every class-averaged metric (mAP, CP, CR) and
  listed under ``"classes_without_positives"``. (sklearn and torchmetrics ≥ 1.4 score them 0 and
  keep them, which lowers mAP by up to 100/C per class; CSRA crashes.) Overall metrics (OP, OR)
  still count their false positives.
- **CP/CR/CF1** follow CSRA and ML-GCN: CP = mean_c TP_c / max(Np_c, 1), CR = mean_c TP_c / Ng_c,
  CF1 = 2·CP·CR / (CP + CR), *not* the mean of per-class F1 (ASL ``validate.py``, sklearn
  ``f1_score(average="macro")``). OP = ΣTP / ΣNp, OR = ΣTP / ΣNg, OF1 = 2·OP·OR / (OP + OR).
  A label is predicted positive when its probability is ≥ ``threshold`` (CSRA: 0.5).
- **Top-3** (CSRA's ``json_metric_top3``; ML-GCN's "logit ≥ 0" is the same rule at threshold
  0.5): a label is predicted positive when it is among the image's 3 highest-scoring labels
  *and* its probability is ≥ ``threshold`` (not a pure top-3 rule), so an image may have fewer
  than 3 predicted labels. The top 3 are chosen among all C labels (ignored ones included: the
  model does not know which are ignored), equal scores going to the lower class index.
- **Exact-set accuracy** (``exact``, "subset accuracy"): the share of images whose predicted set
  (probability ≥ ``threshold``) equals the true set on the non-ignored entries. It is what a
  model that emits a set of labels (``label_sequence.py``) is judged by first: one wrong or
  missing label makes the whole image wrong.
- **Numerics**: probabilities come from a float32 (or float64) sigmoid, never fp16, which
  saturates at 1.0 above logit ≈ 8.3. Rankings (AP, top-3) use the scores as given: pass
  logits, because even a float32 sigmoid maps every logit above ≈ 16.6 to exactly 1.0 and so
  creates ties that the logits do not have (sigmoid is monotone, so otherwise the ranking is
  the same).

Why not torchmetrics' ``MultilabelAveragePrecision``: it loops over classes in Python, applies
its own sigmoid to inputs outside [0, 1] (creating the saturation ties above), and scores empty
classes 0; the tests check that both agree wherever those differences do not arise.
"""

from __future__ import annotations

import torch

IGNORE = -1


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16/int → float32; float64 stays float64 (rounding it to float32 could create ties)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check_multilabel(scores: torch.Tensor, targets: torch.Tensor) -> None:
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"scores and targets must both be (N, C), got {tuple(scores.shape)} and {tuple(targets.shape)}; "
            "for single-label class indices use accuracy()"
        )
    if scores.shape[0] == 0:
        raise ValueError("no samples: scores has N = 0 rows")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; check the model output (a diverged run?)")
    bad = (targets != 1) & (targets != 0) & (targets != IGNORE)
    if bad.any():
        raise ValueError(
            f"targets must be 1 (positive), 0 (negative) or -1 (ignored), found {targets[bad][0].item()}"
        )


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class non-interpolated average precision, as a fraction in [0, 1].

    scores: (N, C) logits or probabilities (only their order matters; prefer logits).
    targets: (N, C) in {1, 0, -1 (ignored)}.
    Returns float64 (C,); NaN for classes without a positive. Ties are grouped (module docstring).
    One sort per column, no loop over classes.
    """
    _check_multilabel(scores, targets)
    s, order = _at_least_float32(scores.detach()).sort(dim=0, descending=True)  # (N, C)
    t = targets.gather(0, order)
    tp = (t == 1).double().cumsum(0)
    fp = (t == 0).double().cumsum(0)
    # A threshold sits only after the last of a run of equal scores: group ends.
    end = torch.ones_like(s, dtype=torch.bool)
    end[:-1] = s[:-1] != s[1:]
    precision = tp / (tp + fp).clamp(min=1)
    # TP count at the previous group end (tp is non-decreasing, so a running max finds it).
    tp_at_end = torch.where(end, tp, torch.zeros_like(tp))
    tp_before = torch.cat([torch.zeros_like(tp[:1]), tp_at_end.cummax(0).values[:-1]])
    n_pos = tp[-1]
    ap = torch.where(end, (tp - tp_before) * precision, torch.zeros_like(tp)).sum(0) / n_pos.clamp(min=1)
    return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan")))


def _f1(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Harmonic mean; 0 when both are 0, NaN stays NaN."""
    return 2 * p * r / (p + r) if p + r != 0 else torch.zeros_like(p)


def _precision_recall(pred: torch.Tensor, targets: torch.Tensor, has_pos: torch.Tensor) -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 in percent from boolean predictions (N, C); ignored entries skipped."""
    valid = targets != IGNORE
    pos = targets == 1
    tp = (pred & pos).sum(0).double()
    n_pred = (pred & valid).sum(0).double()
    n_gt = pos.sum(0).double()
    cp = (tp / n_pred.clamp(min=1))[has_pos].mean()
    cr = (tp / n_gt.clamp(min=1))[has_pos].mean()
    op = tp.sum() / n_pred.sum().clamp(min=1)
    orec = tp.sum() / n_gt.sum().clamp(min=1)
    values = {"CP": cp, "CR": cr, "CF1": _f1(cp, cr), "OP": op, "OR": orec, "OF1": _f1(op, orec)}
    return {k: 100 * v.item() for k, v in values.items()}


def exact_set_hits(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """pred: bool (N, C) predicted sets; targets: (N, C) in {1, 0, -1 (ignored)}. Returns bool (N,):
    whether each image's predicted set equals its label set (ignored labels count as agreeing)."""
    return ((pred == (targets == 1)) | (targets == IGNORE)).all(1)


def multilabel_metrics(scores: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5,
                       from_logits: bool = True) -> dict:
    """mAP, CP, CR, CF1, OP, OR, OF1, exact-set accuracy (``exact``) and top3_CP … top3_OF1, in
    percent (conventions: module docstring).

    scores: (N, C) logits (``from_logits=True``, the model's output) or probabilities in [0, 1]
    (``from_logits=False``). targets: (N, C) in {1, 0, -1 (ignored)}. ``threshold`` applies to
    probabilities. Also returns ``"classes_without_positives"``: the list of class indices left
    out of mAP/CP/CR (every other value is a float; mAP, CP, CR, CF1 are NaN when no class has one).
    """
    _check_multilabel(scores, targets)
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold applies to probabilities and must lie in [0, 1], got {threshold}")
    scores = _at_least_float32(scores.detach())
    targets = targets.detach()
    if from_logits:
        probs = scores.sigmoid()
    else:
        if scores.min() < 0 or scores.max() > 1:
            raise ValueError("scores lie outside [0, 1] but from_logits=False; pass from_logits=True for logits")
        probs = scores
    ap = average_precision(scores, targets)
    has_pos = ~ap.isnan()
    out: dict = {"mAP": 100 * ap[has_pos].mean().item()}
    pred = probs >= threshold
    out.update(_precision_recall(pred, targets, has_pos))
    out["exact"] = 100 * exact_set_hits(pred, targets).double().mean().item()
    k = min(3, scores.shape[1])
    top = scores.argsort(dim=1, descending=True, stable=True)[:, :k]  # stable: ties → lower index
    in_top = torch.zeros_like(pred).scatter_(1, top, True)
    out.update({f"top3_{name}": v for name, v in _precision_recall(pred & in_top, targets, has_pos).items()})
    out["classes_without_positives"] = (~has_pos).nonzero().flatten().tolist()
    return out


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy in percent. logits: (N, C); targets: (N,) class indices."""
    if logits.ndim != 2 or targets.ndim != 1 or len(logits) != len(targets):
        raise ValueError(
            f"accuracy needs logits (N, C) and class indices (N,), got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}; for multi-label targets use multilabel_metrics()"
        )
    if len(targets) == 0:
        raise ValueError("no samples: logits has N = 0 rows")
    return 100 * (logits.argmax(1) == targets).double().mean().item()

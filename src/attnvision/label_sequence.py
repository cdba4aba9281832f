"""Label sets as sequences: how a model that emits one label per step (DRAM, the show-attend-tell
decoder) trains on multi-hot targets and is scored by the multi-label metrics like any other.

Vocabulary: the C classes, then ``END = C``, the stop token. A decoder that feeds its previous
label back as input also uses ``START = C + 1`` (an input only, never emitted). A model with
T steps emits at most T − 1 labels: step T − 1 can only be END.

Which true label is step t's target (``order``):

- ``"predicted"`` (default): the true label not yet targeted that the model gives the highest
  probability at step t; END once every true label has been targeted (predicted label
  alignment, Yazici, Gonzalez-Garcia, Ramisa, Twardowski & van de Weijer, "Orderless Recurrent
  Models for Multi-label Classification", CVPR 2020). Any order of the set is right, so the
  model may look at the objects in whatever order it finds them.
- ``"class"``: ascending class index (a fixed rule such as Wang et al.'s CNN-RNN frequency
  order; on Fashion-MNIST scenes every class is equally frequent, so frequency order is none).

Deviation from Ba et al. and Xu et al.: their sequences have a natural order (digits left to
right; words). Our batches carry multi-hot targets (B, C), not boxes, so the left-to-right order
of the items is not available to the loss; ``"predicted"`` is the order-free equivalent. A
multi-hot target has no counts: two items of one class are one label. Ignored entries (−1) are
neither targets nor errors.

Steps after the one whose target is END get target −1 (ignored by ``sequence_loss``).

Per-class output (what ``evaluate``, the metrics, the study and TTA see): greedy decoding stops
at the first step whose most probable token is END (or after T steps); the *emitted* set is the
argmax classes of the steps before it. With m_c = max over the decoded steps t (up to and
including the stopping step) of p_t(c), the score is

    s_c = ½ (1[c emitted] + m_c) ∈ [0, 1],    logit_c = log s_c − log(1 − s_c)

so that thresholding at 0.5 (the metrics' rule) gives exactly the emitted set (a class that is
not emitted has m_c ≤ ½: it never was a step's most probable token), and mAP ranks the emitted
labels first, then by probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ORDERS = ("predicted", "class")
IGNORED_STEP = -1
SCORE_EPS = 1e-6  # keeps the logits finite where s_c is 0 or 1


def check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"unknown label order '{order}'; valid: {', '.join(ORDERS)}")


def check_steps(steps: int, targets: torch.Tensor) -> None:
    """Every image's label set must fit in ``steps`` − 1 labels plus END."""
    most = int((targets == 1).sum(1).max()) if len(targets) else 0
    if most > steps - 1:
        raise ValueError(f"an image has {most} labels but the model emits at most {steps - 1} (steps={steps}); "
                         f"pass steps ≥ {most + 1}")


def start_targets(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The state of the alignment before step 0: (remaining (B, C) bool: the true labels not yet
    targeted, done (B,) bool: END already targeted)."""
    return targets == 1, torch.zeros(len(targets), dtype=torch.bool, device=targets.device)


def next_targets(step_logits: torch.Tensor, remaining: torch.Tensor, done: torch.Tensor,
                 order: str = "predicted") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step t's targets and the updated state.

    step_logits: (B, C + 1) the model's scores at this step (only their order within the true
    labels matters, for ``"predicted"``); remaining, done: from ``start_targets`` or the previous
    call. Returns (target (B,) int64 in [0, C] or −1 after END, remaining, done)."""
    num_classes = remaining.shape[1]
    if order == "predicted":
        ranked = step_logits[:, :num_classes].detach().float().masked_fill(~remaining, float("-inf"))
        label = ranked.argmax(1)
    else:
        label = remaining.int().argmax(1)  # the first remaining class (argmax returns the first maximum)
    has_label = remaining.any(1)
    target = torch.where(has_label, label, torch.full_like(label, num_classes))
    target = torch.where(done, torch.full_like(target, IGNORED_STEP), target)
    remaining = remaining & ~F.one_hot(label, num_classes).bool() & has_label[:, None]
    return target, remaining, done | ~has_label


def sequence_loss(step_logits: torch.Tensor, step_targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy −log p_t(y_t) over the steps that have a target.
    step_logits: (B, T, C + 1); step_targets: (B, T) int64 with −1 for ignored steps → scalar."""
    return F.cross_entropy(step_logits.float().flatten(0, 1), step_targets.flatten(), ignore_index=IGNORED_STEP)


def decoded_steps(step_logits: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the steps greedy decoding takes, up to and including the first whose most
    probable token is END (all T when none is)."""
    end = step_logits.shape[2] - 1
    is_end = (step_logits.argmax(2) == end).int()  # an int cumsum: ONNX's CumSum takes no booleans
    ended_before = (is_end.cumsum(1) - is_end) > 0
    return ~ended_before


def decoded_tokens(step_logits: torch.Tensor) -> torch.Tensor:
    """(B, T) int64: each step's most probable token, END (= C) at the steps greedy decoding does
    not take."""
    return step_logits.argmax(2).masked_fill(~decoded_steps(step_logits), step_logits.shape[2] - 1)


def emitted(step_logits: torch.Tensor) -> torch.Tensor:
    """(B, C) bool: the classes greedy decoding emits (the argmax of a decoded step other than END)."""
    num_classes = step_logits.shape[2] - 1
    return F.one_hot(decoded_tokens(step_logits), num_classes + 1)[:, :, :num_classes].any(1)


def set_logits(step_logits: torch.Tensor) -> torch.Tensor:
    """Per-class logits (B, C) of a decoded sequence (module docstring: s_c = ½(1[emitted] + m_c)).
    step_logits: (B, T, C + 1)."""
    probs = step_logits.float().softmax(2)[:, :, :-1]
    best = probs.masked_fill(~decoded_steps(step_logits)[:, :, None], 0).amax(1)
    score = ((emitted(step_logits).float() + best) / 2).clamp(SCORE_EPS, 1 - SCORE_EPS)
    return score.log() - (1 - score).log()


def takes_targets(model: torch.nn.Module) -> bool:
    """Whether ``model`` trains on its own objective: ``model(x, targets)`` in training mode returns
    (logits (B, C), loss) instead of logits for an external loss."""
    return bool(getattr(model, "takes_targets", False))

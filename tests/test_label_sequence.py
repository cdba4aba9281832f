"""Label sets as sequences (label_sequence.py): target alignment, the stop token, the loss and the
per-class scores that the multi-label metrics read."""

from __future__ import annotations

import pytest
import torch

from attnvision.label_sequence import (IGNORED_STEP, check_order, check_steps, decoded_steps, emitted, next_targets,
                                       sequence_loss, set_logits, start_targets)
from attnvision.metrics import multilabel_metrics

TARGETS = torch.tensor([[1, 0, 1, 0.], [0, 0, 0, 1], [1, 1, -1, 0], [0, 0, 0, 0]])


def align(step_logits: torch.Tensor, targets: torch.Tensor, order: str) -> torch.Tensor:
    remaining, done = start_targets(targets)
    steps = []
    for t in range(step_logits.shape[1]):
        target, remaining, done = next_targets(step_logits[:, t], remaining, done, order)
        steps.append(target)
    return torch.stack(steps, 1)


def test_class_order_is_ascending_then_end_then_ignored_and_skips_ignored_labels():
    steps = align(torch.randn(4, 4, 5), TARGETS, "class")
    assert steps.tolist() == [[0, 2, 4, -1], [3, 4, -1, -1], [0, 1, 4, -1], [4, -1, -1, -1]]


def test_predicted_order_takes_the_true_label_the_model_scores_highest_at_each_step():
    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 2] = 3  # step 0 prefers class 2 (a true label) over 0
    logits[0, 0, 1] = 9  # a false label scored higher still is not a target
    logits[0, 1, 2] = 5  # step 1 prefers 2 again, but it is taken: 0 is left
    steps = align(logits, TARGETS[:1], "predicted")
    assert steps.tolist() == [[2, 0, 4, IGNORED_STEP]]


def test_every_order_targets_each_true_label_once_then_end():
    targets = (torch.rand(64, 6) < 0.4).float()
    for order in ("predicted", "class"):
        steps = align(torch.randn(64, 7, 7), targets, order)
        k = targets.sum(1).long()
        for row, n in zip(steps, k):  # n labels, then END, then ignored steps
            assert (row[:n] < 6).all() and row[n] == 6 and (row[n + 1:] == IGNORED_STEP).all()
        hits = torch.nn.functional.one_hot(torch.where(steps < 0, 7, steps), 8)[:, :, :6].sum(1)
        assert torch.equal(hits.float(), targets)  # each true label exactly once


def test_sequence_loss_ignores_steps_after_end():
    logits = torch.randn(2, 3, 4, dtype=torch.float64)
    targets = torch.tensor([[1, 3, -1], [3, -1, -1]])
    expected = -(logits.log_softmax(2)[0, 0, 1] + logits.log_softmax(2)[0, 1, 3] + logits.log_softmax(2)[1, 0, 3]) / 3
    assert sequence_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def one_hot_steps(tokens: list[list[int]], vocabulary: int, strength: float = 8.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(tokens), vocabulary).float() * strength


def test_decoding_stops_at_the_first_end_and_emits_the_steps_before_it():
    logits = one_hot_steps([[1, 2, 4, 0], [4, 1, 2, 3], [0, 0, 1, 3]], 5)  # END = 4
    assert decoded_steps(logits).tolist() == [[True, True, True, False], [True, False, False, False], [True] * 4]
    assert emitted(logits).tolist() == [[False, True, True, False], [False] * 4, [True, True, False, True]]


def test_set_logits_threshold_gives_exactly_the_emitted_set():
    logits = torch.randn(200, 5, 7) * 2
    scores = set_logits(logits)
    assert torch.equal(scores.sigmoid() >= 0.5, emitted(logits))
    targets = emitted(logits).float()
    metrics = multilabel_metrics(scores, targets)
    assert metrics["exact"] == 100 and metrics["OF1"] == pytest.approx(100)


def test_set_logits_rank_emitted_labels_above_others_then_by_probability():
    logits = torch.zeros(3, 2, 4)
    logits[0, 0, 0] = 5  # image 0 emits class 0 with high probability, then END (zero logits: a tie, argmax 0)
    logits[0, 1, 3] = 5
    logits[1, 0, 0] = 1.2  # image 1 emits class 0 with a lower probability
    logits[1, 1, 3] = 5
    logits[2, 0, 3] = 5  # image 2 emits nothing; class 0 is not emitted
    s = set_logits(logits)[:, 0]
    assert s[0] > s[1] > 0 > s[2]


def test_bad_order_and_too_few_steps_are_clear_errors():
    with pytest.raises(ValueError, match="valid: predicted, class"):
        check_order("left-to-right")
    with pytest.raises(ValueError, match="pass steps ≥ 4"):
        check_steps(3, torch.tensor([[1, 1, 1, 0.]]))

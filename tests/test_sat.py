"""Show-attend-tell label decoder head (heads/sat.py): shapes and gradients, the attention and gate
ranges, the doubly stochastic penalty, greedy stopping at END, teacher forcing on the aligned
targets, a tiny training run, option errors and the attention maps."""

from __future__ import annotations

import pytest
import torch

from attnvision import create_head, create_model, list_heads
from attnvision.explain import attention_maps
from attnvision.heads.sat import ShowAttendTellHead, doubly_stochastic_penalty
from attnvision.label_sequence import IGNORED_STEP, decoded_steps, emitted, sequence_loss

D, C = 8, 6
TARGETS = torch.tensor([[1, 0, 0, 0, 0, 0.], [0, 1, 1, 0, 0, 0], [1, 0, 1, 0, 1, -1], [0, 1, 1, 1, 1, 0]])


def features(b: int = 4, h: int = 5, w: int = 3, d: int = D, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, d, h, w, generator=torch.Generator().manual_seed(seed))


def small_head(**kw) -> ShowAttendTellHead:
    torch.manual_seed(0)
    return ShowAttendTellHead(D, C, **{"hidden_dim": 16, "embed_dim": 8, "attn_dim": 8, **kw})


# ---------------------------------------------------------------- shapes and gradients

@pytest.mark.parametrize("b, h, w", [(4, 5, 3), (1, 3, 7), (2, 1, 1)])
def test_eval_forward_gives_finite_per_class_logits(b, h, w):
    logits = small_head().eval()(features(b, h, w))
    assert logits.shape == (b, C) and torch.isfinite(logits).all()


def test_training_forward_returns_logits_and_a_loss_with_finite_gradients_for_every_parameter():
    head = small_head().train()
    logits, loss = head(features(), TARGETS)  # 1 to 4 labels per image, one ignored entry
    assert logits.shape == (4, C) and loss.ndim == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_through_a_model_in_eval_and_in_training():
    torch.manual_seed(0)
    assert "sat" in list_heads()
    model = create_model("resnet20", 10, head="sat", in_chans=1)
    assert model.takes_targets
    x = torch.randn(2, 1, 33, 29)
    assert model.eval()(x).shape == (2, 10)
    targets = torch.zeros(2, 10)
    targets[0, [1, 4]] = 1
    targets[1, 7] = 1
    logits, loss = model.train()(x, targets)
    assert logits.shape == (2, 10) and torch.isfinite(loss)
    loss.backward()


# ---------------------------------------------------------------- the paper's quantities

def test_doubly_stochastic_penalty_matches_a_plain_computation():
    gen = torch.Generator().manual_seed(1)
    alphas = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64).softmax(2)
    counted = torch.tensor([[True, True, False, False], [True, True, True, True], [True, False, False, False]])
    expected = torch.zeros(3, dtype=torch.float64)
    for b in range(3):
        for i in range(6):
            total = sum(alphas[b, t, i] for t in range(4) if counted[b, t])
            expected[b] += (1 - total) ** 2
    torch.testing.assert_close(doubly_stochastic_penalty(alphas, counted), expected)


@pytest.mark.parametrize("lam", [0.0, 1.0, 3.0])
def test_loss_is_the_step_cross_entropy_plus_lambda_times_the_penalty_per_target_step(lam):
    head = small_head(dropout=0.0, lam=lam).train()
    x = features()
    _, loss = head(x, TARGETS)
    run = head.teacher_force(x, TARGETS)  # deterministic without dropout: the same run
    counted = run.step_targets != IGNORED_STEP
    steps_per_image = counted.sum().item() / len(counted)  # 2, 3, 4, 5 target steps → 3.5
    expected = (sequence_loss(run.step_logits, run.step_targets)
                + lam * doubly_stochastic_penalty(run.alphas, counted).mean() / steps_per_image)
    assert steps_per_image == 3.5
    torch.testing.assert_close(loss, expected)


def test_alpha_sums_to_one_over_locations_and_beta_lies_in_0_1_at_every_step():
    head = small_head().eval()
    x = features(h=4, w=5)
    for run in (head.decode(x), head.teacher_force(x, TARGETS)):
        assert run.alphas.shape == (4, head.steps, 20) and (run.alphas >= 0).all()
        torch.testing.assert_close(run.alphas.sum(2), torch.ones(4, head.steps))
        assert run.betas.shape == (4, head.steps) and ((run.betas > 0) & (run.betas < 1)).all()


# ---------------------------------------------------------------- decoding

def forced_head(steps: int = 4) -> ShowAttendTellHead:
    """A head whose output depends only on its input label: START → class 1, class 1 → END."""
    head = ShowAttendTellHead(D, 3, steps=steps, hidden_dim=8, embed_dim=4, attn_dim=4, dropout=0.0).eval()
    with torch.no_grad():
        for p in (head.embed.weight, head.out.weight, head.out.bias, head.out_state.weight, head.out_context.weight):
            p.zero_()
        head.embed.weight[head.start, 0] = 1
        head.embed.weight[1, 1] = 1
        head.out.weight[1, 0] = 10
        head.out.weight[head.end, 1] = 10
    return head


def test_end_at_step_0_emits_nothing_and_every_class_scores_below_one_half():
    head = small_head().eval()
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.zero_()
        head.out.bias[head.end] = 10
    x = features()
    run = head.decode(x)
    assert run.step_logits.shape == (4, head.steps, C + 1)
    assert decoded_steps(run.step_logits).sum(1).tolist() == [1] * 4 and not emitted(run.step_logits).any()
    assert (head(x).sigmoid() < 0.5).all()
    maps = head.attention_maps(x, torch.empty(0, 2))
    assert not maps["classes"].any() and not maps["steps"][:, 1:].any()


def test_greedy_decoding_feeds_its_argmax_back_and_stops_at_end():
    head = forced_head(steps=4)
    x = features(b=2)
    run = head.decode(x)
    assert run.step_logits.argmax(2)[:, :2].tolist() == [[1, head.end]] * 2  # class 1 fed back → END
    assert decoded_steps(run.step_logits).tolist() == [[True, True, False, False]] * 2
    assert ((head(x).sigmoid() >= 0.5) == torch.tensor([False, True, False])).all()


def test_decoding_never_exceeds_steps_when_end_never_wins():
    head = small_head(steps=3).eval()
    with torch.no_grad():
        head.out.bias[head.end] = -1e4
    run = head.decode(features())
    assert run.step_logits.shape[1] == 3 and decoded_steps(run.step_logits).all()


def test_teacher_forcing_feeds_each_steps_aligned_target_to_the_next_step():
    head = small_head(order="class").train()
    fed = []
    head.embed.register_forward_hook(lambda module, inputs, output: fed.append(inputs[0].clone()))
    run = head.teacher_force(features(), TARGETS)
    end = head.end
    assert run.step_targets.tolist() == [[0, end, -1, -1, -1], [1, 2, end, -1, -1], [0, 2, 4, end, -1],
                                         [1, 2, 3, 4, end]]  # ascending classes, END, ignored
    fed = torch.stack(fed, 1)  # (B, T): the label embedded at each step
    assert (fed[:, 0] == head.start).all()
    previous = run.step_targets[:, :-1]
    torch.testing.assert_close(fed[:, 1:], torch.where(previous == IGNORED_STEP, end, previous))


def test_predicted_order_targets_every_true_label_once_then_end():
    run = small_head().train().teacher_force(features(), TARGETS)
    for row, target in zip(run.step_targets.tolist(), TARGETS):
        labels = set(torch.nonzero(target == 1).flatten().tolist())
        k = len(labels)
        assert set(row[:k]) == labels and row[k] == C and all(t == IGNORED_STEP for t in row[k + 1:])


def spot_data(n: int = 64, classes: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature maps (n, 8, 5, 5): class c is present iff channel c has a bright spot; 1–3 labels."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(n, D, 5, 5, generator=gen)
    targets = torch.zeros(n, classes)
    for image in range(n):
        count = int(torch.randint(1, 4, (1,), generator=gen))
        for c in torch.randperm(classes, generator=gen)[:count].tolist():
            targets[image, c] = 1
            y, xx = torch.randint(0, 5, (2,), generator=gen).tolist()
            x[image, c, y, xx] = 3.0
    return x, targets


def test_a_tiny_training_run_lowers_the_loss_and_learns_the_label_sets():
    x, targets = spot_data()
    torch.manual_seed(0)
    head = ShowAttendTellHead(D, 6, steps=4, hidden_dim=32, embed_dim=16, attn_dim=16, dropout=0.0)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        _, loss = head.train()(x, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses
    with torch.no_grad():
        predicted = head.eval()(x).sigmoid() >= 0.5
    assert (predicted == targets.bool()).float().mean() > 0.9


# ---------------------------------------------------------------- options and maps

@pytest.mark.parametrize("kw, message", [
    ({"steps": 1}, "steps=k\\+1"),
    ({"steps": 2.5}, "steps"),
    ({"dropout": 1.0}, "dropout=0"),
    ({"dropout": -0.1}, "dropout"),
    ({"lam": -1.0}, "lam=0"),
    ({"order": "left-to-right"}, "valid: predicted, class"),
    ({"hidden_dim": 0}, "hidden_dim must be a positive integer"),
    ({"embed_dim": -3}, "embed_dim"),
    ({"attn_dim": 1.5}, "attn_dim"),
])
def test_bad_options_are_clear_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        ShowAttendTellHead(D, C, **kw)


def test_bad_inputs_are_clear_errors():
    head = small_head(steps=3)
    with pytest.raises(ValueError, match=f"expects features \\(B, {D}, h, w\\)"):
        head(torch.randn(2, D + 1, 4, 4))
    with pytest.raises(ValueError, match="pass steps ≥ 5"):
        head(features(), TARGETS)  # an image has 4 labels: 3 steps hold 2
    with pytest.raises(ValueError, match="it takes"):
        create_head("sat", D, C, heads=2)


def test_attention_maps_show_where_each_emitted_label_was_looked_for():
    head = forced_head(steps=4)
    x = features(b=2, h=3, w=5)
    maps = head.attention_maps(x, torch.empty(0, 2))
    run = head.decode(x)
    assert maps["steps"].shape == (2, 4, 3, 5) and maps["classes"].shape == (2, 3, 3, 5)
    alphas = run.alphas.unflatten(2, (3, 5))
    torch.testing.assert_close(maps["steps"][:, :2], alphas[:, :2])
    assert not maps["steps"][:, 2:].any()  # after END
    torch.testing.assert_close(maps["classes"][:, 1], alphas[:, 0])  # class 1 was emitted at step 0
    assert not maps["classes"][:, [0, 2]].any()
    torch.testing.assert_close(head.class_maps(x), maps["classes"])


def test_explain_captures_the_heads_maps_through_a_model():
    torch.manual_seed(0)
    model = create_model("resnet20", 4, in_chans=1, head="sat").train()
    maps = attention_maps(model, torch.randn(2, 1, 32, 32))
    assert maps["head.steps"].shape == (2, 5, 8, 8) and maps["head.classes"].shape == (2, 4, 8, 8)
    assert model.training

"""CSRA and Query2Label heads: paper identities, shapes, gradients, parameter counts."""

import math

import pytest
import torch

from attnvision import create_head, create_model, list_heads
from attnvision.heads.csra import CSRA, CSRAHead
from attnvision.heads.gap import GAPHead
from attnvision.heads.query2label import GroupWiseLinear, Query2LabelHead, sine_position_encoding

D, C = 16, 5


def features(b: int = 2, h: int = 5, w: int = 3, d: int = D, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, d, h, w, generator=torch.Generator().manual_seed(seed))


def location_scores(branch: CSRA, x: torch.Tensor) -> torch.Tensor:
    """s_ik = x_k^T m_i straight from the 1×1 conv, (B, C, L), normalised by ‖m_i‖ if asked."""
    s = branch.classifier(x).flatten(2)
    if branch.normalize:
        s = s / branch.classifier.weight.flatten(1).norm(dim=1)[:, None]
    return s


# ---------------------------------------------------------------- CSRA

@pytest.mark.parametrize("normalize", [True, False])
def test_csra_lambda_zero_is_gap_plus_fc(normalize):
    head = CSRAHead(D, C, heads=1, lam=0.0, normalize=normalize)
    gap = GAPHead(D, C)
    with torch.no_grad():
        gap.fc.weight.copy_(head.branches[0].class_weights())
        gap.fc.bias.zero_()
    x = features()
    torch.testing.assert_close(head(x), gap(x))


@pytest.mark.parametrize("normalize", [True, False])
def test_csra_infinite_temperature_is_avg_plus_lambda_max(normalize):
    lam = 0.3
    branch = CSRA(D, C, math.inf, lam, normalize)
    x = features()
    s = location_scores(branch, x)  # the paper's Fig. 1: y_raw = FC(x).flatten(2)
    torch.testing.assert_close(branch(x), s.mean(2) + lam * s.max(2).values)


def test_csra_large_temperature_converges_monotonically_to_max():
    x = features(b=3)
    lam = 1.0
    ref = CSRA(D, C, math.inf, lam)
    target = ref(x)
    gaps = []
    for t in (1.0, 2.0, 4.0, 16.0, 64.0, 1e4):
        branch = CSRA(D, C, t, lam)
        branch.load_state_dict(ref.state_dict())
        gaps.append((target - branch(x)).detach())
    for smaller, larger in zip(gaps, gaps[1:]):  # Σ softmax(T s)·s is non-decreasing in T
        assert (larger <= smaller + 1e-5).all()
    assert (gaps[0] > 0).all() and gaps[-1].abs().max() < 1e-3


def test_csra_matches_paper_eq12_feature_form():
    """f^i = Σ_k (1/L + λ s^i_k) x_k and y_i = m_i^T f^i (Eqs. 10–12): the linearity shortcut is exact."""
    lam, t = 0.4, 2.0
    branch = CSRA(D, C, t, lam)
    x = features(b=1)
    xs = x.flatten(2)[0]  # (d, L)
    m = branch.class_weights()  # (C, d)
    attn = torch.softmax(t * (m @ xs), dim=1)  # (C, L)
    f = (1 / xs.shape[1] + lam * attn) @ xs.T  # (C, d): one feature per class
    torch.testing.assert_close(branch(x)[0], (m * f).sum(1))


def test_csra_normalisation_makes_classifier_scale_irrelevant():
    branch = CSRA(D, C, 1.0, 0.2, normalize=True)
    x = features()
    out = branch(x)
    with torch.no_grad():
        branch.classifier.weight.mul_(7.0)
    torch.testing.assert_close(branch(x), out)


PAPER_TEMPERATURES = {1: [1], 2: [1, math.inf], 4: [1, 2, 4, math.inf], 6: [1, 2, 3, 4, 5, math.inf],
                      8: [1, 2, 3, 4, 5, 6, 7, math.inf]}  # §3.4


@pytest.mark.parametrize("heads", [1, 2, 4, 6, 8])
def test_csra_multihead_sums_branches_with_paper_temperatures(heads):
    head = CSRAHead(D, C, heads=heads, lam=0.5)
    assert [b.temperature for b in head.branches] == PAPER_TEMPERATURES[heads]
    assert all(b.lam == 0.5 for b in head.branches)
    x = features()
    torch.testing.assert_close(head(x), sum(b(x) for b in head.branches))
    assert sum(p.numel() for p in head.parameters()) == heads * C * D  # bias-free classifiers only


def test_csra_shapes_batch_one_and_gradients():
    head = create_head("csra", D, C, heads=4, lam=0.1)
    out = head.eval()(features(b=1, h=7, w=3))
    assert out.shape == (1, C)
    head.train()
    x = features(h=3, w=5).requires_grad_()
    head(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for p in head.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert head(features(h=1, w=1)).shape == (2, C)  # one location: attention = that location


def test_csra_registry_call_and_errors():
    head = create_head("csra", 2048, 20, heads=4, lam=0.1)
    assert head(torch.randn(2, 2048, 3, 2)).shape == (2, 20)
    with pytest.raises(ValueError, match="heads in"):
        CSRAHead(D, C, heads=3)
    with pytest.raises(ValueError, match="temperature"):
        CSRA(D, C, 0.0, 0.1)
    with pytest.raises(ValueError, match="d=16"):
        CSRAHead(D, C)(torch.randn(1, 8, 3, 3))


# ---------------------------------------------------------------- Query2Label

def small_q2l(**kw) -> Query2LabelHead:
    torch.manual_seed(0)
    return Query2LabelHead(D, C, **{"hidden_dim": 32, "num_heads": 4, "ffn_dim": 64, **kw})


def test_q2l_shapes_batch_one_and_gradients():
    head = small_q2l()
    assert head.eval()(features(b=1, h=5, w=3)).shape == (1, C)
    head.train()
    x = features(h=3, w=7).requires_grad_()
    head(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_q2l_invariant_to_permuting_positions_with_their_encodings():
    head = small_q2l().eval()
    x = features(b=2, h=5, w=3)
    memory = head.input_proj(x).flatten(2).transpose(1, 2)  # (B, L, d)
    pos = sine_position_encoding(5, 3, 32)
    perm = torch.randperm(15, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = head.decode(memory, pos)
        torch.testing.assert_close(head(x), ref)
        torch.testing.assert_close(head.decode(memory[:, perm], pos[perm]), ref)
        # Moving the features but not their encodings changes the answer: positions are used.
        assert not torch.allclose(head.decode(memory[:, perm], pos), ref, atol=1e-4)


def test_group_wise_linear_equals_loop():
    fc = GroupWiseLinear(C, 8)
    q = torch.randn(3, C, 8)
    loop = torch.stack([torch.stack([fc.weight[c] @ q[b, c] + fc.bias[c] for c in range(C)]) for b in range(3)])
    torch.testing.assert_close(fc(q), loop)


def test_q2l_without_self_attention_decodes_each_label_independently():
    x = features()
    for self_attn in (True, False):
        head = small_q2l(self_attn=self_attn, num_layers=2).eval()
        with torch.no_grad():
            out = head(x)
            head.query_embed[1] += 1.0  # change label 1's query only
            changed = head(x)
        others = [0, 2, 3, 4]
        assert self_attn == (not torch.allclose(changed[:, others], out[:, others], atol=1e-5))
        assert not torch.allclose(changed[:, 1], out[:, 1], atol=1e-5)
        assert (head.layers[0].self_attn is None) == (not self_attn)


def test_q2l_parameter_count():
    d, f, layers, d0 = 32, 64, 2, D
    mha = 4 * d * d + 4 * d
    per_layer = 2 * mha + (d * f + f + f * d + d) + 3 * 2 * d
    expected = (d0 * d + d) + C * d + layers * per_layer + 2 * d + (C * d + C)
    assert sum(p.numel() for p in small_q2l(num_layers=layers).parameters()) == expected
    no_self = layers * (mha + 2 * d)
    assert sum(p.numel() for p in small_q2l(num_layers=layers, self_attn=False).parameters()) == expected - no_self


def test_q2l_input_projection_option():
    head = Query2LabelHead(D, C, input_proj=False, num_heads=2)
    assert isinstance(head.input_proj, torch.nn.Identity)
    assert head(features()).shape == (2, C)
    with pytest.raises(ValueError, match="input_proj=False"):
        Query2LabelHead(D, C, hidden_dim=32, input_proj=False)
    with pytest.raises(ValueError, match="divisible"):
        Query2LabelHead(D, C, hidden_dim=30)
    with pytest.raises(ValueError, match=r"\(B, 16, h, w\)"):
        small_q2l()(torch.randn(1, 8, 3, 3))


def test_sine_position_encoding_values():
    h, w, d = 4, 3, 16
    pos = sine_position_encoding(h, w, d).view(h, w, d)
    k = torch.arange(h, dtype=torch.float32)
    u = 2 * math.pi * (k + 1) / h
    torch.testing.assert_close(pos[:, 0, 0], u.sin())  # y, lowest frequency, sin
    torch.testing.assert_close(pos[:, 0, 1], u.cos())
    torch.testing.assert_close(pos[:, 0, 2], (u / 10000 ** 0.25).sin())  # next frequency: 10000^(1/(d/4))
    assert torch.equal(pos[:, 0, : d // 2], pos[:, 2, : d // 2])  # y features constant along x
    j = torch.arange(w, dtype=torch.float32)
    torch.testing.assert_close(pos[0, :, d // 2], (2 * math.pi * (j + 1) / w).sin())
    with pytest.raises(ValueError, match="divisible by 4"):
        sine_position_encoding(2, 2, 18)


def test_heads_registered_and_usable_in_a_model():
    assert {"csra", "query2label", "gap"} <= set(list_heads())
    x = torch.randn(1, 1, 16, 16)
    for head, kw in (("csra", {"heads": 2, "lam": 0.2}), ("query2label", {"hidden_dim": 32})):
        model = create_model("resnet20", 6, head=head, head_kw=kw, in_chans=1).eval()
        assert model(x).shape == (1, 6)

"""Attention modules: a generic contract for every registered name, then per-module identities."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from attnvision import create_attn, list_attn
from attnvision.attention import KINDS, describe_attn
from attnvision.attention.cbam import ChannelGate, SpatialGate
from attnvision.attention.eca import EfficientChannelAttention, eca_kernel_size

C = 64  # every registered module must build with create_attn(name, 64)


def build(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_attn(name, C, **kw)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- generic contract, every name

@pytest.mark.parametrize("name", list_attn())
@pytest.mark.parametrize("size", [(7, 9), (5, 5), (1, 1)])
def test_shape_kept_train_and_eval_batch1(name, size):
    m = build(name)
    assert isinstance(m.placement, str)
    x = torch.randn(2, C, *size)
    assert m(x).shape == x.shape
    m.eval()
    with torch.no_grad():
        assert m(x[:1]).shape == (1, C, *size)


@pytest.mark.parametrize("name", list_attn())
def test_gradients_finite_for_input_and_every_parameter(name):
    m = build(name)
    x = torch.randn(2, C, 7, 9, requires_grad=True)
    # a random projection, not .sum(): BN-normalised outputs can have an identically zero sum-gradient
    (m(x) * torch.randn(2, C, 7, 9)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", list_attn())
def test_deterministic_in_eval(name):
    m = build(name).eval()
    x = torch.randn(2, C, 7, 9)
    with torch.no_grad():
        assert torch.equal(m(x), m(x))


def test_create_attn_falsy_name_gives_none():
    assert create_attn(None, C) is None
    assert create_attn("", C) is None


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown attention module 'nope'") as e:
        create_attn("nope", C)
    assert all(name in str(e.value) for name in list_attn())


def test_placements():
    expected = {"se": "block", "eca": "block", "cbam": "block", "bam": "stage",
                "eca_cbam": "block", "eca_cbam_parallel": "block", "adaptive_pool": "block",
                "nonlocal": "stage", "ran": "stage", "sasa": "conv", "aa": "conv"}
    assert {name: build(name).placement for name in expected} == expected


@pytest.mark.parametrize("name", list_attn())
def test_every_module_states_paper_kind_and_placement(name):
    row = describe_attn(name)
    assert row["placement"] in ("block", "stage", "conv")
    assert row["kind"] in KINDS
    assert re.search(r"(19|20)\d\d", row["paper"]), f"{name}: paper should read 'Authors, Venue Year'"
    assert row["parameter_free"] == (n_params(build(name)) == 0)


# ---------------------------------------------------------------- parameter counts by hand

def se_count(c: int, h: int) -> int:  # two 1×1 convs with bias
    return c * h + h + h * c + c


def cbam_count(c: int, h: int, k: int = 7) -> int:  # SE-sized shared MLP + 2→1 k×k conv (no bias) + BN(1)
    return se_count(c, h) + 2 * k * k + 2


def bam_count(c: int, h: int) -> int:
    channel = c * h + h + 2 * h + h * c + c  # Linear, BN1d(h), Linear
    spatial = (c * h + h + 2 * h) + 2 * (9 * h * h + h + 2 * h) + (h + 1)  # 1×1+BN, 2×(3×3+BN), 1×1 → 1
    return channel + spatial


@pytest.mark.parametrize("name, channels, kw, expected", [
    ("se", 64, {}, se_count(64, 4)),
    ("se", 64, {"rd_channels": 8}, se_count(64, 8)),
    ("se", 16, {}, se_count(16, 1)),  # CIFAR's first stage: at least one hidden unit
    ("eca", 64, {}, 3),
    ("eca", 2048, {}, 7),
    ("eca", 64, {"kernel_size": 9}, 9),
    ("cbam", 64, {}, cbam_count(64, 4)),
    ("cbam", 256, {"rd_ratio": 1 / 8, "spatial_kernel_size": 3}, cbam_count(256, 32, 3)),
    ("bam", 64, {}, bam_count(64, 4)),
    ("bam", 256, {}, bam_count(256, 16)),
    ("bam", 256, {"rd_channels": 8}, bam_count(256, 8)),
    ("eca_cbam", 256, {}, 5 + 2 * 49 + 2),
    ("eca_cbam_parallel", 64, {"kernel_size": 5, "spatial_kernel_size": 3}, 5 + 2 * 9 + 2),
])
def test_parameter_counts(name, channels, kw, expected):
    assert n_params(create_attn(name, channels, **kw)) == expected


# ---------------------------------------------------------------- SE

def test_se_matches_hand_computation():
    m = build("se")
    x = torch.randn(2, C, 5, 7)
    w1, b1 = m.fc1.weight.flatten(1), m.fc1.bias
    w2, b2 = m.fc2.weight.flatten(1), m.fc2.bias
    z = x.mean((2, 3))
    s = torch.sigmoid(torch.relu(z @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(m(x), x * s[:, :, None, None])


# ---------------------------------------------------------------- ECA

@pytest.mark.parametrize("channels, k", [
    (1, 1), (2, 1), (4, 1), (8, 3), (16, 3), (32, 3), (64, 3), (128, 5),
    (256, 5), (512, 5), (1024, 5), (2048, 7), (4096, 7),  # ResNet-50's stages: 5, 5, 5, 7
])
def test_eca_kernel_formula(channels, k):
    assert eca_kernel_size(channels) == k


def test_eca_kernel_formula_gamma_b_and_bad_values():
    assert eca_kernel_size(256, gamma=1, b=0) == 9  # t = 8 (even) → 9
    assert eca_kernel_size(256, gamma=3, b=1) == 3  # t = 3
    with pytest.raises(ValueError, match="channels >= 1"):
        eca_kernel_size(0)


def test_eca_kernel_override_and_validation():
    assert create_attn("eca", 2048).conv.kernel_size == (7,)
    assert create_attn("eca", 2048, kernel_size=3).conv.kernel_size == (3,)
    with pytest.raises(ValueError, match="odd"):
        create_attn("eca", 256, kernel_size=4)


def test_eca_is_local_cross_channel_interaction():
    """ω_i = σ(Σ_j w_j · y_{i+j-r}), zero outside [0, C): a banded C×C matrix with k shared weights."""
    m = create_attn("eca", C, kernel_size=5)
    assert m.conv.bias is None
    w = torch.randn(5)
    with torch.no_grad():
        m.conv.weight.copy_(w.view(1, 1, 5))
    band = sum(w[j] * torch.diag(torch.ones(C - abs(j - 2)), j - 2) for j in range(5))  # band[i, i+j-2] = w_j
    x = torch.randn(3, C, 4, 6)
    omega = torch.sigmoid(x.mean((2, 3)) @ band.T)
    torch.testing.assert_close(m.gate(x), omega[:, :, None, None])
    torch.testing.assert_close(m(x), x * omega[:, :, None, None])


# ---------------------------------------------------------------- CBAM

def test_cbam_channel_gate_is_one_shared_mlp_on_avg_and_max():
    torch.manual_seed(0)
    g = ChannelGate(C)
    x = torch.randn(2, C, 5, 7)
    w1, b1 = g.mlp[0].weight.flatten(1), g.mlp[0].bias
    w2, b2 = g.mlp[2].weight.flatten(1), g.mlp[2].bias

    def mlp(z):
        return torch.relu(z @ w1.T + b1) @ w2.T + b2

    expected = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    torch.testing.assert_close(g(x), expected[:, :, None, None])


def test_cbam_spatial_pooling_order_is_max_then_mean():
    g = SpatialGate().eval()  # BN with running mean 0, var 1, γ 1, β 0
    x = torch.zeros(1, C, 5, 5)
    x[0, 0] = torch.arange(25.0).view(5, 5) / 5  # one channel carries everything: max = 16 × mean
    scale = (1 + g.bn.eps) ** -0.5
    for tap, expected in ((0, x.amax(1, keepdim=True)), (1, x.mean(1, keepdim=True))):
        with torch.no_grad():
            g.conv.weight.zero_()
            g.conv.weight[0, tap, 3, 3] = 1  # the centre tap of input channel `tap` only
            torch.testing.assert_close(g(x), torch.sigmoid(expected * scale))
    assert not torch.allclose(x.amax(1), x.mean(1))  # so the two checks above tell the orders apart


def test_cbam_spatial_conv_and_bn_layout():
    g = SpatialGate()
    assert g.conv.bias is None and g.conv.in_channels == 2 and g.conv.padding == (3, 3)
    with pytest.raises(ValueError, match="odd"):
        SpatialGate(kernel_size=6)


def test_cbam_is_channel_then_spatial_without_residual():
    m = build("cbam")
    x = torch.randn(2, C, 5, 7)
    x1 = x * m.channel(x)
    torch.testing.assert_close(m(x), x1 * m.spatial(x1))
    assert not torch.allclose(m(x), x * m.channel(x) * m.spatial(x))


def test_cbam_zero_init_bn_option():
    assert torch.equal(build("cbam").spatial.bn.weight, torch.ones(1))
    m = build("cbam", zero_init_bn=True).eval()
    assert torch.equal(m.spatial.bn.weight, torch.zeros(1))
    x = torch.randn(2, C, 5, 7)
    torch.testing.assert_close(m.spatial(x), torch.full((2, 1, 5, 7), 0.5))


# ---------------------------------------------------------------- BAM

def bam_by_hand(m, x: torch.Tensor, combine: str) -> torch.Tensor:
    """BAM in eval mode from its parameters with functional ops (d = 4, padding = d)."""
    def bn(t, layer):
        return F.batch_norm(t, layer.running_mean, layer.running_var, layer.weight, layer.bias, eps=layer.eps)

    fc0, bn0, _, fc1 = m.channel
    m_c = F.linear(torch.relu(bn(F.linear(x.mean((2, 3)), fc0.weight, fc0.bias), bn0)), fc1.weight, fc1.bias)
    c0, b0, _, c1, b1, _, c2, b2, _, c3 = m.spatial
    s = torch.relu(bn(F.conv2d(x, c0.weight, c0.bias), b0))
    s = torch.relu(bn(F.conv2d(s, c1.weight, c1.bias, padding=4, dilation=4), b1))
    s = torch.relu(bn(F.conv2d(s, c2.weight, c2.bias, padding=4, dilation=4), b2))
    m_s = F.conv2d(s, c3.weight, c3.bias)  # (B, 1, H, W)
    m_c = m_c[:, :, None, None]
    logits = m_c + m_s if combine == "sum" else m_c * m_s
    return x * (1 + torch.sigmoid(logits))


def test_bam_sum_and_product_match_hand_computation_and_differ():
    summed = build("bam")
    product = build("bam", combine="product")
    summed(torch.randn(4, C, 9, 7))  # one training step moves the BN running statistics off (0, 1)
    product.load_state_dict(summed.state_dict())
    summed.eval(), product.eval()
    x = torch.randn(2, C, 9, 7)
    with torch.no_grad():
        out_sum, out_prod = summed(x), product(x)
        torch.testing.assert_close(out_sum, bam_by_hand(summed, x, "sum"))
        torch.testing.assert_close(out_prod, bam_by_hand(product, x, "product"))
    assert (out_sum - out_prod).abs().max() > 1e-3


def test_bam_residual_form_keeps_input_when_attention_saturates_low():
    m = build("bam").eval()
    with torch.no_grad():
        m.channel[3].bias.fill_(-1e4)  # σ(M) → 0 everywhere: out = x + x·0 = x
    x = torch.randn(2, C, 5, 5)
    torch.testing.assert_close(m(x), x)


def test_bam_batch1_training_error_and_bad_arguments():
    with pytest.raises(ValueError, match="batch size >= 2 or call .eval()"):
        build("bam")(torch.randn(1, C, 5, 5))
    with pytest.raises(ValueError, match="valid: sum .*product"):
        build("bam", combine="mean")
    dilated = [layer for layer in build("bam").spatial if getattr(layer, "kernel_size", None) == (3, 3)]
    assert [(d.dilation, d.padding) for d in dilated] == [((4, 4), (4, 4))] * 2


# ---------------------------------------------------------------- ECA + CBAM hybrids

def test_hybrids_reuse_eca_and_cbam_gates():
    seq, par = build("eca_cbam"), build("eca_cbam_parallel")
    for m in (seq, par):
        assert isinstance(m.channel, EfficientChannelAttention) and isinstance(m.spatial, SpatialGate)
    assert create_attn("eca_cbam", 2048).channel.conv.kernel_size == (7,)  # ECA's adaptive k
    assert create_attn("eca_cbam", 2048, kernel_size=3).channel.conv.kernel_size == (3,)


def test_hybrid_sequential_and_parallel_equations():
    seq = build("eca_cbam").eval()
    par = build("eca_cbam_parallel").eval()
    par.load_state_dict(seq.state_dict())
    x = torch.randn(2, C, 5, 7)
    with torch.no_grad():
        omega = seq.channel.gate(x)
        x1 = x * omega
        torch.testing.assert_close(seq(x), x1 * seq.spatial(x1))
        torch.testing.assert_close(par(x), x * omega * seq.spatial(x))
        assert (seq(x) - par(x)).abs().max() > 1e-4


def test_wrong_keyword_names_the_accepted_ones():
    with pytest.raises(ValueError, match="attention module 'se'.*kernel_size.*it takes: channels, rd_ratio, rd_channels"):
        create_attn("se", 64, kernel_size=3)


@pytest.mark.parametrize("bias", [True, False])
def test_conv1x1_on_descriptors_is_the_convolution_forward_and_backward(bias):
    from attnvision.attention.common import Conv1x1

    torch.manual_seed(0)
    conv = Conv1x1(12, 5, bias=bias).double()
    assert set(conv.state_dict()) == set(torch.nn.Conv2d(12, 5, 1, bias=bias).state_dict())
    for shape in [(4, 12, 1, 1), (3, 12, 5, 7)]:  # a pooled descriptor (matrix product), a map (convolution)
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_(True)
        out = conv(x)
        ref = F.conv2d(x_ref, conv.weight, conv.bias)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        grad = torch.randn_like(out)
        params = [p for p in conv.parameters()]
        got = torch.autograd.grad(out, [x, *params], grad)
        want = torch.autograd.grad(ref, [x_ref, *params], grad)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-12)

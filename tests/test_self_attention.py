"""AA-conv, non-local block, Residual Attention Network (module and CIFAR models), adaptive pooling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from attnvision.attention import create_attn
from attnvision.attention.aa_conv import AttentionAugmentedConv
from attnvision.attention.adaptive_pool import AdaptivePoolingAttention
from attnvision.attention.nonlocal_block import NonLocalBlock
from attnvision.attention.residual_attention import PreActBottleneck, ResidualAttentionModule
from attnvision.backbones import create_model

NAMES = {"aa": "conv", "nonlocal": "stage", "ran": "stage", "adaptive_pool": "block"}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- shared behaviour

@pytest.mark.parametrize("name", NAMES)
def test_registered_shapes_grads_and_batch1(name):
    torch.manual_seed(0)
    m = create_attn(name, 16)
    assert m.placement == NAMES[name]
    x = torch.randn(2, 16, 7, 9, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 16, 5, 5)).shape == (1, 16, 5, 5)
        assert m(torch.randn(1, 16, 1, 3)).shape == (1, 16, 1, 3)


# ---------------------------------------------------------------- AA-conv

def test_aa_dims_follow_paper_and_adapt_to_small_layers():
    wide = AttentionAugmentedConv(256)  # κ = 2υ = 0.2: d_v = 25.6 → 8 heads × 3, d_k = 8 × max(20, 6)
    assert (wide.heads, wide.dvh, wide.dkh) == (8, 3, 20)
    small = AttentionAugmentedConv(64)  # υ·C = 6.4 → 6 heads of one value channel each
    assert (small.heads, small.dvh, small.dkh) == (6, 1, 20)
    expected = 64 * (64 - 6) * 9 + 64 * (2 * 120 + 6) + 6 * 6 + 2 * (2 * 64 - 1) * 20
    assert n_params(small) == expected
    assert AttentionAugmentedConv(8, 12)(torch.randn(1, 8, 3, 5)).shape == (1, 12, 3, 5)


def test_aa_bad_input_errors():
    with pytest.raises(ValueError, match="max_extent"):
        AttentionAugmentedConv(16, max_extent=4)(torch.randn(1, 16, 3, 5))
    with pytest.raises(ValueError, match="in_channels=8"):
        AttentionAugmentedConv(16)(torch.randn(1, 8, 3, 3))
    with pytest.raises(ValueError, match="none for the convolution"):
        AttentionAugmentedConv(1)
    with pytest.raises(ValueError, match="odd"):
        AttentionAugmentedConv(16, kernel_size=2)


def naive_relative_logits(m: AttentionAugmentedConv, q: torch.Tensor) -> torch.Tensor:
    b, heads, h, w, _ = q.shape
    out = torch.zeros(b, heads, h * w, h * w, dtype=q.dtype)
    c = m.max_extent - 1
    for iy, ix, jy, jx in itertools.product(range(h), range(w), range(h), range(w)):
        r = m.rel_w[jx - ix + c] + m.rel_h[jy - iy + c]
        out[:, :, iy * w + ix, jy * w + jx] = q[:, :, iy, ix] @ r
    return out


def test_aa_relative_logits_match_naive_pairs():
    torch.manual_seed(0)
    m = AttentionAugmentedConv(16, max_extent=6).double()
    q = torch.randn(2, m.heads, 3, 5, m.dkh, dtype=torch.float64)
    torch.testing.assert_close(m.relative_logits(q), naive_relative_logits(m, q))


def test_aa_forward_matches_equations():
    torch.manual_seed(0)
    m = AttentionAugmentedConv(16, 16, heads=2, upsilon=0.25, kappa=0.5, min_key_dim=3, max_extent=5).double()
    x = torch.randn(1, 16, 4, 3, dtype=torch.float64)
    dk, dv = m.heads * m.dkh, m.heads * m.dvh
    flat = m.qkv(x).flatten(2)[0].T  # (HW, 2dk + dv)
    heads_out = []
    for h in range(m.heads):
        q = flat[:, h * m.dkh:(h + 1) * m.dkh] / math.sqrt(m.dkh)
        k = flat[:, dk + h * m.dkh:dk + (h + 1) * m.dkh]
        v = flat[:, 2 * dk + h * m.dvh:2 * dk + (h + 1) * m.dvh]
        rel = naive_relative_logits(m, q.reshape(1, 1, 4, 3, m.dkh))[0, 0]
        heads_out.append(torch.softmax(q @ k.T + rel, -1) @ v)
    attn = torch.cat(heads_out, 1).T.reshape(1, dv, 4, 3)
    expected = torch.cat((m.conv(x), m.proj(attn)), 1)
    torch.testing.assert_close(m(x), expected)


# ---------------------------------------------------------------- non-local

@pytest.mark.parametrize("mode", ["embedded_gaussian", "dot_product"])
def test_nonlocal_is_identity_at_init(mode):
    m = NonLocalBlock(16, mode=mode, sub_sample=True)
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(m(x), x, rtol=0, atol=0)
    torch.testing.assert_close(m.eval()(x), x, rtol=0, atol=0)


def naive_maxpool2(t: torch.Tensor) -> torch.Tensor:
    """2×2 stride-2 max-pool keeping partial windows at odd edges. (C, H, W) → (C, ⌈H/2⌉, ⌈W/2⌉)."""
    c, h, w = t.shape
    out = torch.empty(c, -(-h // 2), -(-w // 2), dtype=t.dtype)
    for i, j in itertools.product(range(out.shape[1]), range(out.shape[2])):
        out[:, i, j] = t[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].amax((1, 2))
    return out


def conv1x1(conv: torch.nn.Conv2d, t: torch.Tensor) -> torch.Tensor:
    """A 1×1 conv on (C, H, W) as a matrix product."""
    w = conv.weight[:, :, 0, 0]
    out = torch.einsum("oc,chw->ohw", w, t)
    return out if conv.bias is None else out + conv.bias[:, None, None]


@pytest.mark.parametrize("mode,sub_sample,variant", [
    ("embedded_gaussian", False, "paper"), ("embedded_gaussian", True, "paper"),
    ("dot_product", False, "paper"), ("dot_product", True, "paper"),
    ("embedded_gaussian", True, "code"), ("dot_product", True, "code"),
])
def test_nonlocal_matches_equations(mode, sub_sample, variant):
    torch.manual_seed(0)
    m = NonLocalBlock(6, mode=mode, sub_sample=sub_sample, variant=variant).double().eval()
    torch.nn.init.normal_(m.bn.weight)
    x = torch.randn(2, 6, 5, 3, dtype=torch.float64)
    for b in range(2):
        xb = x[b]
        theta = conv1x1(m.theta, xb).flatten(1)  # (C', N)
        if not sub_sample:
            phi, g = conv1x1(m.phi, xb), conv1x1(m.g, xb)
        elif variant == "paper":
            phi, g = naive_maxpool2(conv1x1(m.phi, xb)), naive_maxpool2(conv1x1(m.g, xb))
        else:
            phi, g = conv1x1(m.phi, naive_maxpool2(xb)), conv1x1(m.g, naive_maxpool2(xb))
        phi, g = phi.flatten(1), g.flatten(1)
        n_keys = phi.shape[1]
        assert n_keys == (6 if sub_sample else 15)
        y = torch.zeros(3, 15, dtype=torch.float64)
        for i in range(15):
            dots = torch.stack([theta[:, i] @ phi[:, j] for j in range(n_keys)])
            if mode == "dot_product":
                f, norm = dots, n_keys
            else:
                f = torch.exp(dots / math.sqrt(3) if variant == "code" else dots)
                norm = f.sum()
            y[:, i] = sum(f[j] * g[:, j] for j in range(n_keys)) / norm
        z = xb + m.bn(conv1x1(m.w_z, y.reshape(3, 5, 3))[None])[0]
        torch.testing.assert_close(m(x)[b], z)


def test_nonlocal_affinity_and_errors():
    m = NonLocalBlock(8, sub_sample=True)
    a = m.affinity(torch.randn(2, 8, 7, 9))
    assert a.shape == (2, 63, 4 * 5)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 63))
    assert n_params(NonLocalBlock(64)) == 3 * (64 * 32 + 32) + 32 * 64 + 2 * 64
    with pytest.raises(ValueError, match="dot_product"):
        NonLocalBlock(8, mode="gaussian")
    with pytest.raises(ValueError, match="paper, code"):
        NonLocalBlock(8, variant="caffe")


# ---------------------------------------------------------------- Residual Attention Network

UNIT_64 = 64 * 2 + 64 * 16 + 16 * 2 + 16 * 16 * 9 + 16 * 2 + 16 * 64  # BN + 1×1 + BN + 3×3 + BN + 1×1
MASK_HEAD_64 = 2 * (64 * 2 + 64 * 64) + 64  # (BN + 1×1) twice, last conv with bias


def test_ran_parameter_count_follows_p_t_r_and_depth():
    assert n_params(PreActBottleneck(64, 64)) == UNIT_64
    # depth d: p + t + p trunk units, r down + r up per level, d − 1 skip units
    assert n_params(ResidualAttentionModule(64)) == (4 + 2) * UNIT_64 + MASK_HEAD_64
    assert n_params(ResidualAttentionModule(64, depth=3)) == (4 + 6 + 2) * UNIT_64 + MASK_HEAD_64
    with pytest.raises(ValueError, match="depth"):
        ResidualAttentionModule(64, depth=0)


def test_ran_output_is_one_plus_mask_times_trunk():
    torch.manual_seed(0)
    m = ResidualAttentionModule(8, depth=3).double().eval()
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64)
    seen = []
    m.post.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        out = m(x)
        x1 = m.pre(x)
        mask, trunk = m.mask(x1), m.trunk(x1)
        assert mask.shape == trunk.shape == x.shape and 0 < mask.min() and mask.max() < 1
        torch.testing.assert_close(seen[-1], (1 + mask) * trunk)
        torch.testing.assert_close(out, m.post((1 + mask) * trunk))
        last = m.mask.out[-1]
        last.weight.zero_()
        for bias, factor in ((40.0, 2.0), (-40.0, 1.0)):  # force M = 1, then M = 0
            last.bias.fill_(bias)
            m(x)
            torch.testing.assert_close(seen[-1], factor * trunk)


@pytest.mark.parametrize("depth,classes,params", [(56, 10, 1_030_810), (92, 10, 1_842_138)])
def test_attention_net_cifar(depth, classes, params):
    model = create_model(f"attention{depth}", classes)
    assert n_params(model) == params
    modules = sum(isinstance(m, ResidualAttentionModule) for m in model.modules())
    assert modules == 3 * (depth - 20) // 36
    assert model.num_features == 256 and model.in_chans == 3
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_features(x).shape == (2, 256, 8, 8)
    assert model(x).shape == (2, classes)


def test_attention_net_other_inputs_and_errors():
    model = create_model("attention56", 3, in_chans=1).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 1, 28, 28)).shape == (1, 256, 7, 7)
    with pytest.raises(ValueError, match="in_chans=3"):
        model(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match="built in"):
        create_model("attention56", 10, attn="se")


# ---------------------------------------------------------------- adaptive pooling attention

def test_adaptive_pool_weights_are_data_dependent_and_match_equations():
    torch.manual_seed(0)
    m = AdaptivePoolingAttention(32).double()
    assert n_params(m) == (32 * 2 + 2) + (2 * 32 + 32) + (64 * 2 + 2)
    x = torch.randn(2, 32, 5, 7, dtype=torch.float64)
    x[1] = x[1].exp() * 3  # a very different second sample
    alpha = m.weights(x)
    assert alpha.shape == (2, 2)
    torch.testing.assert_close(alpha.sum(1), torch.ones(2, dtype=torch.float64))
    assert (alpha[0] - alpha[1]).abs().max() > 1e-3
    z_avg, z_max = x.mean((2, 3)), x.amax((2, 3))
    logits = torch.cat((z_avg, z_max), 1) @ m.mix.weight.T + m.mix.bias
    a = torch.softmax(logits, 1)
    gate = torch.sigmoid(a[:, :1] * m.mlp(z_avg) + a[:, 1:] * m.mlp(z_max))
    torch.testing.assert_close(alpha, a)
    torch.testing.assert_close(m(x), x * gate[:, :, None, None])

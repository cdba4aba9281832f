"""SASA layer (attention/sasa.py) against a slow per-pixel reference, and SANet-20."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnvision.attention import ATTENTION, create_attn
from attnvision.attention.sasa import SelfAttention2d
from attnvision.backbones import create_model


def reference_sasa(x: torch.Tensor, m: SelfAttention2d) -> torch.Tensor:
    """The paper's equations, pixel by pixel, with m's parameters (float64)."""
    x = x.double()
    wq, wk, wv = m.qkv.weight.detach().double()[:, :, 0, 0].chunk(3)
    rel_row, rel_col = m.rel_row.detach().double(), m.rel_col.detach().double()
    q, k, v = (torch.einsum("oc,bchw->bohw", w_, x) for w_ in (wq, wk, wv))
    b, c, h, w = q.shape
    n, d, r = m.heads, c // m.heads, m.kernel_size // 2
    q, k, v = (t.view(b, n, d, h, w) for t in (q, k, v))
    rel_row, rel_col = rel_row.view(-1, n, d // 2), rel_col.view(-1, n, d // 2)  # head n: its d/2 slice
    y = torch.zeros(b, n, d, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            nbrs = [(a, bb) for a in range(i - r, i + r + 1) for bb in range(j - r, j + r + 1)
                    if 0 <= a < h and 0 <= bb < w]
            rows = torch.tensor([a for a, _ in nbrs])
            cols = torch.tensor([bb for _, bb in nbrs])
            rel = torch.cat([rel_row[rows - i + r], rel_col[cols - j + r]], -1)  # (m, N, d)
            qij = q[:, :, :, i, j]  # (B, N, d)
            logits = (torch.einsum("bnd,bndm->bnm", qij, k[:, :, :, rows, cols]) / math.sqrt(d)
                      + torch.einsum("bnd,mnd->bnm", qij, rel))
            y[:, :, :, i, j] = torch.einsum("bnm,bndm->bnd", logits.softmax(-1), v[:, :, :, rows, cols])
    y = y.view(b, c, h, w)
    if m.stride == 2:
        y = torch.stack([torch.stack([y[:, :, i:i + 2, j:j + 2].mean((2, 3)) for j in range(0, w, 2)], -1)
                         for i in range(0, h, 2)], -2)
    return y


# (H, W, kernel, heads, stride); the default block_size 8 picks dense for some, halo for others
CASES = [(5, 7, 3, 1, 1), (9, 6, 7, 2, 2), (12, 12, 3, 4, 1), (17, 11, 7, 4, 2), (17, 11, 3, 2, 1)]
_REFERENCE: dict = {}


def _case(case):
    h, w, k, heads, stride = case
    if case not in _REFERENCE:
        torch.manual_seed(sum(case))
        m = SelfAttention2d(6, 4 * heads, k, heads, stride).double()
        x = torch.randn(2, 6, h, w, dtype=torch.float64)
        _REFERENCE[case] = (m, x, reference_sasa(x, m))
    return _REFERENCE[case]


@pytest.mark.parametrize("block_size", [2, 3, 8, 64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_reference(case, block_size):
    m, x, ref = _case(case)
    m.block_size = block_size
    with torch.no_grad():
        y = m(x)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, atol=1e-10, rtol=0)


def test_both_paths_are_exercised():
    m = SelfAttention2d(8, kernel_size=3, heads=2)
    assert m.blocking(5, 7) == (5, 7, 0)  # 35 ≤ (8+2)²: one dense block, no halo
    assert m.blocking(17, 11) == (6, 6, 1)  # near-equal blocks ≤ 8, halo r
    assert SelfAttention2d(16, kernel_size=7).blocking(56, 56) == (8, 8, 3)
    assert SelfAttention2d(16, kernel_size=7).blocking(14, 14) == (14, 14, 0)


def test_kernel_one_is_value_projection():
    """With a 1×1 window the softmax has one entry: y = W_V x."""
    m = SelfAttention2d(4, 6, kernel_size=1, heads=3).double()
    x = torch.randn(1, 4, 5, 3, dtype=torch.float64)
    wv = m.qkv.weight[12:, :, 0, 0]
    torch.testing.assert_close(m(x), torch.einsum("oc,bchw->bohw", wv, x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("block_size", [3, 64])
def test_translation_equivariance_interior(block_size):
    """Shifting the input shifts the output at pixels whose windows lie inside both crops;
    block boundaries fall differently in the two crops, so blocking must be invisible."""
    torch.manual_seed(0)
    m = SelfAttention2d(4, 8, kernel_size=3, heads=2, block_size=block_size).double()
    big = torch.randn(1, 4, 13, 12, dtype=torch.float64)
    y1, y2 = m(big[:, :, :11, :9]), m(big[:, :, 2:, 3:])
    torch.testing.assert_close(y2[:, :, 1:8, 1:5], y1[:, :, 3:10, 4:8], atol=1e-12, rtol=0)


def test_batch_one_eval_shapes():
    m = SelfAttention2d(8, 16, kernel_size=5, heads=4, stride=2).eval()
    assert m(torch.randn(1, 8, 7, 5)).shape == (1, 16, 4, 3)
    assert m(torch.randn(1, 8, 30, 19)).shape == (1, 16, 15, 10)
    m = SelfAttention2d(8, heads=2).eval()
    x = torch.randn(1, 8, 19, 6)
    assert m(x).shape == (1, 8, 19, 6)
    torch.testing.assert_close(m(x.contiguous(memory_format=torch.channels_last)), m(x))


@pytest.mark.parametrize("size", [(9, 6), (19, 13)])
def test_finite_gradients(size):
    """Including the halo path with padded query rows and columns (19×13 with 8-blocks)."""
    torch.manual_seed(0)
    m = SelfAttention2d(8, kernel_size=3, heads=2, stride=2)
    x = torch.randn(2, 8, *size, requires_grad=True)
    m(x).square().sum().backward()
    for g in (x.grad, m.qkv.weight.grad, m.rel_row.grad, m.rel_col.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_parameter_count_and_registry():
    m = create_attn("sasa", 32, kernel_size=5, heads=4)
    assert isinstance(m, SelfAttention2d) and m.in_channels == m.out_channels == 32
    assert ATTENTION.get("sasa").placement == "conv"
    # W_Q, W_K, W_V (3·d_in·d_out) + row and column tables (k × d_out/2 each)
    assert sum(p.numel() for p in m.parameters()) == 3 * 32 * 32 + 5 * 32
    assert sum(p.numel() for p in SelfAttention2d(16, 64, 7, 8).parameters()) == 3 * 16 * 64 + 7 * 64


@pytest.mark.parametrize("kw, match", [
    (dict(kernel_size=4), "odd"), (dict(stride=3), "stride"), (dict(heads=3), "heads"),
    (dict(heads=16), "even"), (dict(block_size=0), "block_size"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        SelfAttention2d(16, **kw)


def test_bad_input():
    with pytest.raises(ValueError, match="in_channels=3"):
        SelfAttention2d(8, heads=2)(torch.randn(1, 3, 5, 5))


@pytest.mark.parametrize("width, widths", [("small", (16, 32, 64)), ("large", (64, 128, 256))])
def test_sanet20_structure_and_parameters(width, widths):
    model = create_model("sanet20", 10, width=width)
    last = model.layer3
    assert all(isinstance(blk.conv1, SelfAttention2d) and isinstance(blk.conv2, SelfAttention2d) for blk in last)
    assert [blk.conv1.stride for blk in last] == [2, 1] and last[0].conv1.kernel_size == 5
    assert not any(isinstance(mod, nn.Conv2d) and mod.kernel_size == (3, 3) for mod in last.modules())
    c2, c3 = widths[1], widths[2]
    conv_params = 9 * c2 * c3 + 3 * 9 * c3 * c3  # the four 3×3 convs of stage 3
    sa_params = 3 * c2 * c3 + 5 * c3 + 3 * (3 * c3 * c3 + 5 * c3)
    resnet = create_model("resnet20", 10, width=width, layers=(2, 2, 2), shortcut="A")
    n_resnet = sum(p.numel() for p in resnet.parameters())
    assert n_resnet == {"small": 172_506, "large": 2_735_946}[width]  # research/eva-and-sasa.md §5
    assert sum(p.numel() for p in model.parameters()) == n_resnet - conv_params + sa_params


def test_sanet20_forward_batch_one_and_features():
    model = create_model("sanet20", 10, in_chans=1).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 1, 28, 28))
        assert feats.shape == (1, model.num_features, 7, 7) and model.num_features == 64
        assert model.head(feats).shape == (1, 10)
        assert model(torch.randn(1, 1, 30, 27)).shape == (1, 10)  # odd stage-3 inputs (15×14)
    model3 = create_model("sanet20", 10, in_chans=3, shortcut="B").train()
    logits = model3(torch.randn(2, 3, 32, 32))
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model3.parameters())


@pytest.mark.parametrize("block_size", [2, 64])
def test_gradcheck(block_size):
    """Exact gradients for input, projections and both tables (halo path with padding, and dense)."""
    torch.manual_seed(0)
    m = SelfAttention2d(3, 4, kernel_size=3, heads=2, block_size=block_size).double()
    names = ["qkv.weight", "rel_row", "rel_col"]
    params = [dict(m.named_parameters())[k].detach().clone().requires_grad_() for k in names]
    x = torch.randn(1, 3, 5, 3, dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)

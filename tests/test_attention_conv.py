"""Selective kernel (sk), split attention (splat) and dual attention (danet) against plain float64
references written from the papers' equations, their options, maps and ResNet parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnvision import create_attn, create_model
from attnvision.attention.dual_attention import DualAttention
from attnvision.attention.selective_kernel import PYTORCHINSIGHT_SK_RESNET, SelectiveKernelConv
from attnvision.attention.split_attention import SplitAttentionConv


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def settle(module: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """A few training steps move every BN's running statistics off (0, 1); then eval mode."""
    with torch.no_grad():
        for _ in range(3):
            module(x + torch.randn_like(x))
    return module.eval()


def bn(t: torch.Tensor, layer: torch.nn.BatchNorm2d, channels: slice = slice(None)) -> torch.Tensor:
    """Eval-mode BN of t (B, n, ...) with the statistics and affine of ``layer``'s channels."""
    return F.batch_norm(t, layer.running_mean[channels], layer.running_var[channels], layer.weight[channels],
                        layer.bias[channels], eps=layer.eps)


def weights_of(conv: torch.nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    return conv.weight.detach(), None if conv.bias is None else conv.bias.detach()


# ---------------------------------------------------------------- SK

def reference_sk(m: SelectiveKernelConv, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split, fuse, select (SK paper §3.1) from m's parameters, eval-mode BN: (V, a (B, M, C))."""
    u = []
    for branch in m.branches:
        conv, norm = branch[0], branch[1]
        u.append(torch.relu(bn(F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation,
                                        conv.groups), norm)))
    s = sum(u).mean((2, 3))  # (B, C)
    w = m.select.reduce.weight[:, :, 0, 0]  # (d, C)
    z = torch.relu(bn((s @ w.T)[:, :, None, None], m.select.bn))[:, :, 0, 0]  # (B, d)
    a_all = m.select.select.weight[:, :, 0, 0].view(len(u), -1, w.shape[0])  # A_m stacked, (M, C, d)
    logits = torch.einsum("mcd,bd->bmc", a_all, z)
    a = logits.softmax(1)  # across branches, per channel
    v = sum(a[:, i, :, None, None] * u_m for i, u_m in enumerate(u))
    return v, a


@pytest.mark.parametrize("cin, cout, kw, stride", [
    (8, 12, {}, 1),  # the paper's M = 2: 3×3 and 3×3 dilated 2 ("5×5"), dense
    (8, 12, {"groups": 4}, 2),
    (8, 12, {"dilations": (1, 2, 3), "groups": (1, 2, 4), "rd_channels": 5}, 2),
    (32, 64, PYTORCHINSIGHT_SK_RESNET, 1),
])
def test_sk_matches_reference(cin, cout, kw, stride):
    torch.manual_seed(0)
    m = SelectiveKernelConv(cin, cout, stride=stride, **kw).double()
    x = torch.randn(3, cin, 9, 6, dtype=torch.float64)  # odd H ≠ W
    settle(m, x)
    with torch.no_grad():
        v, a = reference_sk(m, x)
        out = m(x)
        assert out.shape == (3, cout, -(-9 // stride), -(-6 // stride))
        torch.testing.assert_close(out, v)
        torch.testing.assert_close(m.branch_weights(x)[..., 0, 0], a)
        torch.testing.assert_close(m.attention_maps(x, torch.tensor([[0.5, 0.5]]))["channel"], a[:, 0])
    torch.testing.assert_close(a.sum(1), torch.ones(3, cout, dtype=torch.float64))


def test_sk_branch_layout_and_hidden_width():
    m = create_attn("sk", 64)
    convs = [branch[0] for branch in m.branches]
    assert [(c.kernel_size, c.dilation, c.padding, c.groups) for c in convs] == [
        ((3, 3), (1, 1), (1, 1), 1), ((3, 3), (2, 2), (2, 2), 1)]
    assert all(c.bias is None for c in convs) and m.select.reduce.bias is None and m.select.select.bias is None
    # d = max(C/r, L) with r = 16, L = 32
    assert m.select.reduce.out_channels == 32
    assert create_attn("sk", 1024).select.reduce.out_channels == 64
    assert create_attn("sk", 64, min_rd_channels=1).select.reduce.out_channels == 4
    assert create_attn("sk", 64, rd_channels=7).select.reduce.out_channels == 7
    c, d = 64, 32  # two dense 3×3 convs + their BNs, W, BN(d), A_1 and A_2
    assert n_params(m) == 2 * (9 * c * c + 2 * c) + c * d + 2 * d + 2 * d * c


def test_sk_stride_matches_the_conv_it_replaces():
    for h, w in ((9, 6), (1, 1), (28, 28)):
        x = torch.randn(2, 16, h, w)
        ref = F.conv2d(x, torch.zeros(32, 16, 3, 3), stride=2, padding=1)
        assert create_attn("sk", 16, out_channels=32, stride=2)(x).shape == ref.shape


def test_sk_bad_arguments_and_batch1_training():
    with pytest.raises(ValueError, match="at least two branches"):
        create_attn("sk", 64, dilations=(1,))
    with pytest.raises(ValueError, match="groups=3 must divide in_channels"):
        create_attn("sk", 64, groups=3)
    with pytest.raises(ValueError, match="one value per branch"):
        create_attn("sk", 64, groups=(1, 2, 4))
    with pytest.raises(ValueError, match="min_rd_channels"):
        create_attn("sk", 64, min_rd_channels=0)
    with pytest.raises(ValueError, match="batch size >= 2 or call .eval()"):
        create_attn("sk", 16)(torch.randn(1, 16, 5, 5))
    with pytest.raises(ValueError, match=r"expects \(B, 16, H, W\)"):
        create_attn("sk", 16)(torch.randn(2, 8, 5, 5))
    m = create_attn("sk", 16).eval()
    assert m(torch.randn(1, 16, 5, 7)).shape == (1, 16, 5, 7)


# ---------------------------------------------------------------- split attention

def reference_splat(m: SplitAttentionConv, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ResNeSt's split attention, one cardinal group k and split r at a time (eval-mode BN).
    Feature-map group g = r·K + k (radix-major) convolves input group g; (V, a (B, R, C))."""
    r_, k_ = m.radix, m.select.groups
    c = m.out_channels
    cin, cout = m.in_channels // (r_ * k_), c // k_  # per feature-map group
    conv_w = m.conv.weight.detach()
    u_all = torch.relu(bn(F.conv2d(x, conv_w, None, m.conv.stride, 1, 1, r_ * k_), m.bn))
    w1, b1 = weights_of(m.select.reduce)
    w2, b2 = weights_of(m.select.select)
    d_k = w1.shape[0] // k_  # hidden units per cardinal group
    v_groups, a_groups = [], []
    for k in range(k_):
        splits = []
        for r in range(r_):
            g = r * k_ + k
            sl = slice(g * cout, (g + 1) * cout)
            u = F.conv2d(x[:, g * cin:(g + 1) * cin], conv_w[sl], None, m.conv.stride, 1)
            u = torch.relu(bn(u, m.bn, sl))
            torch.testing.assert_close(u, u_all[:, sl])  # the grouped conv is the per-group conv
            splits.append(u)
        s = sum(splits).mean((2, 3))  # (B, C/K)
        hk = slice(k * d_k, (k + 1) * d_k)
        z = torch.relu(bn(s @ w1[hk, :, 0, 0].T + b1[hk], m.select.bn, hk))
        ok = slice(k * r_ * cout, (k + 1) * r_ * cout)  # this group's R·C/K logits, split-major
        logits = (z @ w2[ok, :, 0, 0].T + b2[ok]).view(-1, r_, cout)
        a = logits.softmax(1) if r_ > 1 else logits.sigmoid()
        v_groups.append(sum(a[:, r, :, None, None] * splits[r] for r in range(r_)))
        a_groups.append(a)
    return torch.cat(v_groups, 1), torch.cat(a_groups, 2)


@pytest.mark.parametrize("radix, cardinality, stride", [(2, 1, 1), (2, 2, 2), (1, 2, 1), (3, 1, 2), (1, 1, 1)])
def test_splat_matches_reference(radix, cardinality, stride):
    torch.manual_seed(1)
    m = SplitAttentionConv(12, 8, radix=radix, cardinality=cardinality, stride=stride).double()
    x = torch.randn(3, 12, 7, 10, dtype=torch.float64)
    settle(m, x)
    with torch.no_grad():
        v, a = reference_splat(m, x)
        out = m(x)
        assert out.shape == (3, 8, -(-7 // stride), -(-10 // stride))
        torch.testing.assert_close(out, v)
        torch.testing.assert_close(m.split_weights(x)[..., 0, 0], a)
        torch.testing.assert_close(m.attention_maps(x, torch.tensor([[0.0, 1.0]]))["channel"], a[:, 0])
    if radix > 1:
        torch.testing.assert_close(a.sum(1), torch.ones(3, 8, dtype=torch.float64))
    else:
        assert ((a > 0) & (a < 1)).all()


def test_splat_layout_hidden_width_and_counts():
    m = create_attn("splat", 64)
    assert (m.conv.in_channels, m.conv.out_channels, m.conv.groups, m.conv.bias) == (64, 128, 2, None)
    assert n_params(m.conv) == 9 * 64 * 64  # as many weights as the dense 3×3 conv it replaces
    # d = max(C·R/4, 32)
    assert m.select.reduce.out_channels == 32
    assert create_attn("splat", 256).select.reduce.out_channels == 128
    assert create_attn("splat", 256, radix=4).select.reduce.out_channels == 256
    c, d = 64, 32  # conv + BN(2C), W and b, BN(d), A and c (2C outputs)
    assert n_params(m) == 9 * c * c + 4 * c + (c * d + d) + 2 * d + (d * 2 * c + 2 * c)
    grouped = create_attn("splat", 64, cardinality=2)
    assert grouped.select.reduce.groups == 2 and grouped.select.select.groups == 2 and grouped.conv.groups == 4


def test_splat_bad_arguments():
    with pytest.raises(ValueError, match="radix and cardinality must be >= 1"):
        create_attn("splat", 64, radix=0)
    with pytest.raises(ValueError, match="must split into radix x cardinality = 6 groups"):
        create_attn("splat", 64, radix=3, cardinality=2)
    with pytest.raises(ValueError, match="batch size >= 2 or call .eval()"):
        create_attn("splat", 16)(torch.randn(1, 16, 5, 5))
    assert create_attn("splat", 16).eval()(torch.randn(1, 16, 5, 7)).shape == (1, 16, 5, 7)


# ---------------------------------------------------------------- DANet

def reference_danet(m: DualAttention, x: torch.Tensor, variant: str) -> tuple[torch.Tensor, ...]:
    """DANet §3.2–3.3 with explicit N×N and C×C softmaxes: (E, s (B, N_j, N_i), x_ji (B, C, C))."""
    b, c, h, w = x.shape
    a = x.flatten(2)  # (B, C, N)

    def conv1x1(conv, t):
        weight, bias = weights_of(conv)
        return torch.einsum("oc,bcn->bon", weight[:, :, 0, 0], t) + bias[:, None]

    key, query, value = conv1x1(m.position.key, a), conv1x1(m.position.query, a), conv1x1(m.position.value, a)
    s = torch.einsum("bcj,bci->bji", query, key).softmax(-1)  # s_ji, normalised over i
    p = m.position.alpha * torch.einsum("bji,bci->bcj", s, value)
    gram = torch.einsum("bjn,bin->bji", a, a)
    if variant == "code":
        gram = gram.amax(-1, keepdim=True) - gram
    xji = gram.softmax(-1)
    q = m.channel.beta * torch.einsum("bji,bin->bjn", xji, a)
    return (a + p + q).view(b, c, h, w), s, xji


def test_danet_is_identity_at_init_and_its_scales_learn():
    m = create_attn("danet", 32)
    assert m.position.alpha.item() == 0 and m.channel.beta.item() == 0
    x = torch.randn(2, 32, 7, 5, requires_grad=True)
    out = m(x)
    assert torch.equal(out, x)
    (out * torch.randn_like(out)).sum().backward()
    assert m.position.alpha.grad.abs() > 0 and m.channel.beta.grad.abs() > 0


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_danet_matches_reference(variant):
    torch.manual_seed(2)
    m = create_attn("danet", 16, variant=variant).double()
    with torch.no_grad():
        m.position.alpha.fill_(0.7)
        m.channel.beta.fill_(-0.4)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64) * 0.3  # small Gram entries: a soft channel softmax
    with torch.no_grad():
        e, s, xji = reference_danet(m, x, variant)
        torch.testing.assert_close(m(x), e)
        torch.testing.assert_close(m.channel.weights(x), xji)
        queries = torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 0.3]])  # rows 0, 2, 4; cols 0, 3, 2
        maps = m.attention_maps(x, queries)
        flat = torch.tensor([0 * 7 + 0, 2 * 7 + 3, 4 * 7 + 2])
        torch.testing.assert_close(maps["attention"], s[:, None, flat].view(2, 1, 3, 5, 7))
        torch.testing.assert_close(maps["channel"], xji.mean(1))
        torch.testing.assert_close(maps["channel"].sum(1), torch.ones(2, dtype=torch.float64))
        # the maps are the weights the forward pass applied: Σ_i s_ji α D_i is P at the query
        value = m.position.value(x).flatten(2)
        p_at_queries = m.position.alpha * torch.einsum("bqn,bcn->bcq", maps["attention"][:, 0].flatten(2), value)
        torch.testing.assert_close(p_at_queries, m.position.residual(x).flatten(2)[:, :, flat])


def test_danet_code_variant_is_softmax_of_the_negated_gram_matrix():
    torch.manual_seed(3)
    x = torch.randn(2, 8, 4, 3) * 0.5
    paper, code = create_attn("danet", 8), create_attn("danet", 8, variant="code")
    gram = x.flatten(2) @ x.flatten(2).transpose(1, 2)
    torch.testing.assert_close(code.channel.weights(x), (-gram).softmax(-1))
    torch.testing.assert_close(paper.channel.weights(x), gram.softmax(-1))
    assert (paper.channel.weights(x) - code.channel.weights(x)).abs().max() > 0.1


def test_danet_shapes_parameters_and_errors():
    m = create_attn("danet", 64)
    c, c8 = 64, 8
    assert n_params(m) == 2 * (c * c8 + c8) + (c * c + c) + 2
    assert create_attn("danet", 16).position.query.out_channels == 2
    maps = m.eval().attention_maps(torch.randn(1, 64, 9, 4), torch.tensor([[0.2, 0.9]]))
    assert maps["attention"].shape == (1, 1, 1, 9, 4) and maps["channel"].shape == (1, 64)
    with pytest.raises(ValueError, match="unknown DANet variant 'x'; valid: paper"):
        create_attn("danet", 64, variant="x")


# ---------------------------------------------------------------- ResNets

@pytest.fixture(scope="module")
def resnet50_counts() -> dict[str, int]:
    torch.manual_seed(0)
    configs = {"sk": ("sk", {}), "sk_pytorchinsight": ("sk", PYTORCHINSIGHT_SK_RESNET),
               "splat": ("splat", {}), "danet": ("danet", {})}
    return {key: n_params(create_model("resnet50", 1000, attn=attn, attn_kw=kw))
            for key, (attn, kw) in configs.items()}


RESNET50 = 25_557_032  # torchvision's resnet50
# Middle 3×3 convs of ResNet-50's 16 bottlenecks: width p = 64 (×3), 128 (×4), 256 (×6), 512 (×3);
# Σ p over blocks = 3776. Every replaced conv keeps the block's BN after it (2p, already counted).


def test_resnet50_sk_pytorchinsight_layout_matches_published_sk_resnet50(resnet50_counts):
    # PytorchInsight's SK-ResNet50 (26.15M): per block a 32-group 3×3 branch 9p²/32 + its BN 2p, the
    # BN of the dense branch 2p (the dense conv replaces conv2), W p·p/16, BN(p/16), A p/16·2p:
    # Σ = 597,464 + 2·3776 (the block's extra BN; PytorchInsight has none after the fusion)
    extra = sum(n * (9 * p * p // 32 + 2 * p + 2 * p + p * p // 16 + 2 * p // 16 + p // 16 * 2 * p)
                for p, n in ((64, 3), (128, 4), (256, 6), (512, 3)))
    assert extra == 597_464 + 2 * 3776
    count = resnet50_counts["sk_pytorchinsight"]
    assert count == RESNET50 + extra == 26_162_048
    assert abs(count - 26.15e6) / 26.15e6 < 0.002


def test_resnet50_sk_paper_unit_count(resnet50_counts):
    # No published plain-ResNet-50 count (SKNet-50, 27.5M, is ResNeXt-50 32×4d based). Paper unit,
    # dense branches: per block a second dense 3×3 conv 9p², two branch BNs 4p, and with d = 32 at
    # every width (max(p/16, 32)): W 32p, BN(32) 64, A 2p·32: 9p² + 100p + 64
    extra = sum(n * (9 * p * p + 100 * p + 64) for p, n in ((64, 3), (128, 4), (256, 6), (512, 3)))
    assert resnet50_counts["sk"] == RESNET50 + extra == 37_252_904


def test_resnet50_splat_count_vs_resnest50(resnet50_counts):
    # R = 2, K = 1: conv 64p→128p in 2 groups = 9p² (as conv2), BN(2p) 4p, d = max(p/2, 32):
    # W + b p·d + d, BN(d) 2d, A + c d·2p + 2p → 6p + 3pd + 3d per block = 1,914,528.
    # Published ResNeSt-50: 27.5M = ours + 19,232 (deep stem) − 7,552 (no BN after the conv) = 27,483,240.
    extra = sum(n * (6 * p + 3 * p * max(p // 2, 32) + 3 * max(p // 2, 32))
                for p, n in ((64, 3), (128, 4), (256, 6), (512, 3)))
    count = resnet50_counts["splat"]
    assert count == RESNET50 + extra == 27_471_560
    assert abs(count - 27.5e6) / 27.5e6 < 0.002


def test_resnet50_danet_count(resnet50_counts):
    # No published classification count. Three modules after stages 1–3, C = 256, 512, 1024:
    # 2·(C·C/8 + C/8) + C² + C + 2 each = 82,242 + 328,322 + 1,312,002 = 1,722,566
    extra = sum(2 * (c * c // 8 + c // 8) + c * c + c + 2 for c in (256, 512, 1024))
    assert resnet50_counts["danet"] == RESNET50 + extra == 27_279_598


@pytest.mark.parametrize("attn", ["sk", "splat"])
def test_cifar_resnet20_with_conv_module_runs_on_fashion_mnist_shape(attn):
    torch.manual_seed(0)
    model = create_model("resnet20", 10, attn=attn, in_chans=1)
    cls = {"sk": SelectiveKernelConv, "splat": SplitAttentionConv}[attn]
    assert sum(isinstance(m, cls) for m in model.modules()) == 18  # 3 stages × 3 blocks × 2 convs
    x = torch.randn(2, 1, 28, 28)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x[:1])).all()

"""Context, spatial and channel+spatial gates: Gather-Excite, Global Context, Light CBAM, Coordinate
Attention, SimAM and Triplet Attention, each against a plain float64 reference of its equations,
plus identity-at-init, error messages, attention maps and ImageNet ResNet-50 parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnvision import create_attn, create_model
from attnvision.attention.coord import CoordinateAttention
from attnvision.attention.gather_excite import GatherExcite
from attnvision.attention.global_context import AttentionPool, GlobalContext, GlobalContextScale
from attnvision.attention.lcbam import LightCBAM
from attnvision.attention.pooling import PARAMETRIC_POOLS, ChannelPool, z_pool
from attnvision.attention.simam import SimAM, SimAMFunction
from attnvision.attention.triplet import TripletAttention

C = 32
RESNET50 = 25_557_032  # torchvision's resnet50, the base of every count below


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def resnet50_params(attn: str, **kw) -> int:
    return n_params(create_model("resnet50", 1000, attn=attn, **kw))


def randomise_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Random running statistics and affine weights in every BatchNorm, so that eval-mode
    references test the normalisation too (not just mean 0, var 1)."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.5, 0.5)
    return module


def bn_eval(t: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)


def finite_gradients(module: torch.nn.Module, x: torch.Tensor) -> None:
    x = x.clone().requires_grad_()
    (module(x) * torch.randn_like(x)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# ---------------------------------------------------------------- SimAM

def simam_reference(x: torch.Tensor, lam: float = 1e-4) -> torch.Tensor:
    n = x.shape[2] * x.shape[3] - 1
    mu = x.mean((2, 3), keepdim=True)
    var = ((x - mu) ** 2).sum((2, 3), keepdim=True) / n
    energy_inv = (x - mu) ** 2 / (4 * (var + lam)) + 0.5
    return x * torch.sigmoid(energy_inv)


@pytest.mark.parametrize("lam", [1e-4, 0.1])
def test_simam_matches_the_closed_form(lam):
    torch.manual_seed(0)
    m = SimAM(lam=lam)
    x = torch.randn(2, C, 5, 7, dtype=torch.float64) * 3 + 1
    torch.testing.assert_close(m(x), simam_reference(x, lam))
    torch.testing.assert_close(x * m.gate(x), simam_reference(x, lam))
    torch.testing.assert_close(m.logits(x).sigmoid(), m.gate(x))


def test_simam_fused_gradient_equals_autograd_of_the_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: SimAMFunction.apply(t, 1e-4), (x,))
    g = torch.randn_like(x)
    (expected,) = torch.autograd.grad(simam_reference(x), x, g)
    (fused,) = torch.autograd.grad(SimAM()(x), x, g)
    torch.testing.assert_close(fused, expected)


def test_simam_one_by_one_map_is_finite():
    """H·W = 1: n = 0 in the paper's σ² (NaN in its code); defined as σ² = 0 → gate σ(0.5)."""
    x = torch.randn(2, C, 1, 1, dtype=torch.float64, requires_grad=True)
    out = SimAM()(x)
    torch.testing.assert_close(out, x * torch.sigmoid(torch.tensor(0.5, dtype=torch.float64)))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.autograd.gradcheck(lambda t: SimAMFunction.apply(t, 1e-4), (x.detach().requires_grad_(),))
    with torch.no_grad():
        assert torch.isfinite(SimAM()(torch.randn(1, C, 1, 1))).all()  # batch 1


def test_simam_is_parameter_free_and_checks_lambda():
    m = SimAM(C)
    assert n_params(m) == 0 and not list(m.buffers())
    with pytest.raises(ValueError, match="lam .* must be > 0"):
        SimAM(lam=0)
    x = torch.randn(2, C, 5, 7)
    maps = m.attention_maps(x, torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(maps["spatial"], m.gate(x).mean(1, keepdim=True))
    torch.testing.assert_close(maps["channel"], m.gate(x).mean((2, 3)))


# ---------------------------------------------------------------- Gather-Excite

def ge_avg_gather(x: torch.Tensor, e: int) -> torch.Tensor:
    """Mean over the window [i·e − (e−1), i·e + (e−1)] ∩ map, per output cell, by loops."""
    h, w = x.shape[2:]
    ho, wo = math.ceil(h / e), math.ceil(w / e)
    z = x.new_empty(*x.shape[:2], ho, wo)
    for i in range(ho):
        for j in range(wo):
            rows = slice(max(i * e - e + 1, 0), min(i * e + e, h))
            cols = slice(max(j * e - e + 1, 0), min(j * e + e, w))
            z[:, :, i, j] = x[:, :, rows, cols].mean((2, 3))
    return z


def nearest_up(z: torch.Tensor, h: int, w: int) -> torch.Tensor:
    rows = torch.arange(h) * z.shape[2] // h
    cols = torch.arange(w) * z.shape[3] // w
    return z[:, :, rows][:, :, :, cols]


def test_ge_theta_minus_global_is_a_parameter_free_mean_gate():
    m = create_attn("ge", C)
    assert (m.variant, m.extent, n_params(m)) == ("theta-", None, 0)  # the paper's headline setting
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(m(x), x * torch.sigmoid(x.mean((2, 3), keepdim=True)))
    assert m.gate(x).shape == (2, C, 1, 1)
    assert m.attention_maps(x, None).keys() == {"channel"}
    torch.testing.assert_close(m.attention_maps(x, None)["channel"], m.gate(x).flatten(1))


@pytest.mark.parametrize("extent", [2, 4, 8])
def test_ge_theta_minus_extent_pools_2e_minus_1_windows_and_upsamples(extent):
    m = GatherExcite(C, extent=extent)
    x = torch.randn(2, C, 7, 9, dtype=torch.float64)
    gate = nearest_up(torch.sigmoid(ge_avg_gather(x, extent)), 7, 9)
    torch.testing.assert_close(m.gate(x), gate)
    torch.testing.assert_close(m(x), x * gate)
    torch.testing.assert_close(m.logits(x), nearest_up(ge_avg_gather(x, extent), 7, 9))
    maps = m.attention_maps(x, None)
    torch.testing.assert_close(maps["channel"], gate.mean((2, 3)))
    torch.testing.assert_close(maps["spatial"], gate.mean(1, keepdim=True))


def test_ge_theta_gather_layout():
    m = GatherExcite(C, variant="theta", extent=8)
    convs = [layer for layer in m.gather if isinstance(layer, torch.nn.Conv2d)]
    assert len(convs) == 3  # log2(8) stride-2 depth-wise 3×3 convs
    assert all((c.groups, c.stride, c.kernel_size, c.padding, c.bias) == (C, (2, 2), (3, 3), (1, 1), None)
               for c in convs)
    names = [type(layer).__name__ for layer in m.gather]
    assert names == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]
    assert m.excite is None
    glob = GatherExcite(C, variant="theta", feat_size=(5, 7))
    assert [type(layer).__name__ for layer in glob.gather] == ["Conv2d", "BatchNorm2d"]
    assert glob.gather[0].kernel_size == (5, 7) and glob.gather[0].groups == C
    assert n_params(glob) == C * 35 + 2 * C


def ge_parametric_reference(m: GatherExcite, x: torch.Tensor) -> torch.Tensor:
    """GE-θ / θ⁺ in eval mode with functional ops."""
    z = x
    layers = list(m.gather)
    for i in range(0, len(layers), 3):  # conv, BN[, ReLU]
        conv, bn = layers[i], layers[i + 1]
        z = bn_eval(F.conv2d(z, conv.weight, None, conv.stride, conv.padding, groups=conv.groups), bn)
        if i + 2 < len(layers):
            z = torch.relu(z)
    if m.excite is not None:
        fc1, _, fc2 = m.excite
        z = F.conv2d(torch.relu(F.conv2d(torch.relu(z), fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    gate = torch.sigmoid(z)
    return x * (gate if m.extent is None else nearest_up(gate, *x.shape[2:]))


@pytest.mark.parametrize("variant", ["theta", "theta+"])
@pytest.mark.parametrize("extent", ["global", 2, 4])
def test_ge_parametric_variants_match_reference(variant, extent):
    torch.manual_seed(0)
    kw = {"feat_size": (7, 9)} if extent == "global" else {}
    m = randomise_bn(GatherExcite(C, variant=variant, extent=extent, **kw)).double().eval()
    x = torch.randn(2, C, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(m(x), ge_parametric_reference(m, x))
    torch.testing.assert_close(m.logits(x).sigmoid(), m.gate(x))
    with torch.no_grad():
        assert m(x[:1]).shape == (1, C, 7, 9)  # batch 1 in eval


@pytest.mark.parametrize("variant", ["theta-", "theta", "theta+"])
@pytest.mark.parametrize("extent", ["global", 2, 4, 8])
def test_ge_every_path_trains(variant, extent):
    """Every variant × extent builds, keeps the shape and back-propagates (timm's gather-excite
    broke its MLP path by passing arguments positionally: here every path runs)."""
    torch.manual_seed(0)
    kw = {"feat_size": 6} if variant != "theta-" and extent == "global" else {}
    m = GatherExcite(C, variant=variant, extent=extent, **kw)
    x = torch.randn(2, C, 6, 6)
    assert m(x).shape == x.shape
    finite_gradients(m, x)
    if variant == "theta+":
        hidden = C // 16
        assert (m.excite[0].out_channels, m.excite[2].in_channels) == (hidden, hidden)


def test_ge_tiny_maps_and_gate_shapes():
    x = torch.randn(2, C, 1, 1)
    for kw in ({"extent": 8}, {"variant": "theta", "extent": 4}, {"variant": "theta+", "extent": 2}):
        assert GatherExcite(C, **kw)(x).shape == x.shape
    assert GatherExcite(C, extent=2).gate(torch.randn(2, C, 7, 9)).shape == (2, C, 7, 9)


def test_ge_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="unknown Gather-Excite variant 'theta\\+\\+'.*theta-.*theta .*theta\\+ "):
        GatherExcite(C, variant="theta++")
    for extent in (3, 0, 1, "local"):
        with pytest.raises(ValueError, match="extent must be 'global' or a power of two"):
            GatherExcite(C, extent=extent)
    with pytest.raises(ValueError, match="pass feat_size"):
        GatherExcite(C, variant="theta")
    with pytest.raises(ValueError, match="does not use it"):
        GatherExcite(C, feat_size=7)
    with pytest.raises(ValueError, match="does not use it"):
        GatherExcite(C, variant="theta", extent=2, feat_size=7)
    with pytest.raises(ValueError, match="built for 7×7 maps.*feat_size=\\(5, 5\\)"):
        GatherExcite(C, variant="theta", feat_size=7)(torch.randn(2, C, 5, 5))


# ---------------------------------------------------------------- Global Context

def gc_reference(m: GlobalContext, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(α (B, 1, H, W), context (B, C), t (B, C)) with plain ops."""
    b, c, h, w = x.shape
    logits = torch.einsum("bchw,c->bhw", x, m.pool.conv.weight.flatten()) + m.pool.conv.bias
    alpha = torch.softmax(logits.flatten(1), 1)  # over the H·W positions
    context = torch.einsum("bcn,bn->bc", x.flatten(2), alpha)
    fc1, ln, _, fc2 = m.transform
    hid = context @ fc1.weight.flatten(1).T + fc1.bias
    hid = (hid - hid.mean(1, keepdim=True)) / torch.sqrt(hid.var(1, unbiased=False, keepdim=True) + ln.eps)
    hid = torch.relu(hid * ln.weight.flatten() + ln.bias.flatten())
    t = hid @ fc2.weight.flatten(1).T + fc2.bias
    return alpha.view(b, 1, h, w), context, t


def trained_looking(m: torch.nn.Module) -> torch.nn.Module:
    """Random values in every parameter (the zero-initialised last conv included)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return m


def test_gc_is_attention_pooling_transform_and_addition():
    m = trained_looking(GlobalContext(C).double())
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    alpha, context, t = gc_reference(m, x)
    torch.testing.assert_close(m.pool.weights(x), alpha)
    torch.testing.assert_close(m.pool(x), context[:, :, None, None])
    torch.testing.assert_close(m(x), x + t[:, :, None, None])
    torch.testing.assert_close(m.attention_maps(x, None)["spatial"], alpha)
    torch.testing.assert_close(alpha.sum((2, 3)), torch.ones(2, 1, dtype=torch.float64))


def test_gc_scale_fuses_by_a_sigmoid_gate():
    m = trained_looking(GlobalContextScale(C).double())
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    alpha, _, t = gc_reference(m, x)
    gate = torch.sigmoid(t)[:, :, None, None]
    torch.testing.assert_close(m(x), x * gate)
    torch.testing.assert_close(m.gate(x), gate)
    torch.testing.assert_close(m.logits(x), t[:, :, None, None])
    maps = m.attention_maps(x, None)
    torch.testing.assert_close(maps["channel"], gate.flatten(1))
    torch.testing.assert_close(maps["spatial"], alpha)


def test_gc_last_conv_zero_init_gives_identity():
    x = torch.randn(2, C, 5, 7)
    for name, expected in (("gc", x), ("gc_scale", 0.5 * x)):
        m = create_attn(name, C)
        last = m.transform[-1]
        assert torch.equal(last.weight, torch.zeros_like(last.weight)) and torch.equal(last.bias, torch.zeros(C))
        torch.testing.assert_close(m(x), expected)
    assert create_attn("gc", C).pool.conv.bias.abs().sum() == 0


def test_gc_layout_and_bad_arguments():
    m = create_attn("gc", 256)
    fc1, ln, _, fc2 = m.transform
    assert (fc1.out_channels, tuple(ln.normalized_shape), fc2.out_channels) == (16, (16, 1, 1), 256)  # r = 1/16
    assert n_params(m) == (256 + 1) + (256 * 16 + 16) + 2 * 16 + (16 * 256 + 256)
    assert create_attn("gc", 256, rd_ratio=1 / 4).transform[0].out_channels == 64
    with pytest.raises(ValueError, match="rd_channels must be"):
        create_attn("gc", C, rd_channels=0)
    with torch.no_grad():
        assert create_attn("gc", C).eval()(torch.randn(1, C, 1, 1)).shape == (1, C, 1, 1)


def test_attention_pool_is_the_composers_attn_pooling():
    assert PARAMETRIC_POOLS["attn"] is AttentionPool
    pool = ChannelPool("attn", C)
    x = torch.randn(2, C, 5, 7)
    (descriptor,) = pool(x)
    torch.testing.assert_close(descriptor, pool.parametric(x))
    assert descriptor.shape == (2, C, 1, 1)


# ---------------------------------------------------------------- Light CBAM

def test_lcbam_matches_timms_light_equations():
    torch.manual_seed(0)
    m = randomise_bn(LightCBAM(C)).double().eval()
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    w0, w1 = m.channel.fc1.weight.flatten(1), m.channel.fc2.weight.flatten(1)
    z = 0.5 * x.mean((2, 3)) + 0.5 * x.amax((2, 3))  # one descriptor, one MLP pass
    m_c = torch.sigmoid(torch.relu(z @ w0.T) @ w1.T)[:, :, None, None]
    x1 = x * m_c
    pooled = 0.5 * x1.mean(1, keepdim=True) + 0.5 * x1.amax(1, keepdim=True)  # one map
    m_s = torch.sigmoid(bn_eval(F.conv2d(pooled, m.spatial.conv.weight, padding=3), m.spatial.bn))
    torch.testing.assert_close(m(x), x1 * m_s)
    maps = m.attention_maps(x, None)
    torch.testing.assert_close(m(x), x * maps["channel"][:, :, None, None] * maps["spatial"])


def test_lcbam_layout_and_bad_arguments():
    m = create_attn("lcbam", 256)
    assert m.channel.fc1.bias is None and m.channel.fc2.bias is None  # timm's mlp_bias=False
    assert (m.spatial.conv.in_channels, m.spatial.conv.kernel_size, m.spatial.conv.bias) == (1, (7, 7), None)
    assert n_params(m) == 2 * 256 * 16 + 49 + 2
    with pytest.raises(ValueError, match="odd"):
        create_attn("lcbam", C, spatial_kernel_size=4)


# ---------------------------------------------------------------- Coordinate attention

def test_coord_matches_reference():
    torch.manual_seed(0)
    m = randomise_bn(CoordinateAttention(C)).double().eval()
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)

    def conv1x1(t, conv):  # t: (B, C_in, L) → (B, C_out, L)
        return torch.einsum("oc,bcl->bol", conv.weight.flatten(1), t) + conv.bias[:, None]

    y = conv1x1(torch.cat([x.mean(3), x.mean(2)], 2), m.conv1)  # (B, m, H + W)
    bn = m.bn1
    y = (y - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps) * bn.weight[:, None] \
        + bn.bias[:, None]
    y = y * torch.clamp(y + 3, 0, 6) / 6  # h-swish
    g_h = torch.sigmoid(conv1x1(y[:, :, :5], m.conv_h))[:, :, :, None]  # (B, C, H, 1)
    g_w = torch.sigmoid(conv1x1(y[:, :, 5:], m.conv_w))[:, :, None, :]  # (B, C, 1, W)
    torch.testing.assert_close(m(x), x * g_h * g_w)
    torch.testing.assert_close(m.gate(x), g_h * g_w)
    maps = m.attention_maps(x, None)
    torch.testing.assert_close(maps["spatial"], (g_h * g_w).mean(1, keepdim=True))
    torch.testing.assert_close(maps["channel"], (g_h * g_w).mean((2, 3)))


def test_coord_hidden_width_and_bad_arguments():
    assert create_attn("coord", 64).conv1.out_channels == 8  # max(8, 64 // 32): the code's floor
    assert create_attn("coord", 512).conv1.out_channels == 16
    assert create_attn("coord", 64, rd_channels=4).conv1.out_channels == 4
    assert isinstance(create_attn("coord", 64).act, torch.nn.Hardswish)
    with pytest.raises(ValueError, match="rd_channels must be"):
        create_attn("coord", 64, rd_channels=0)
    m = create_attn("coord", C).eval()
    with torch.no_grad():
        assert m(torch.randn(1, C, 1, 1)).shape == (1, C, 1, 1)
    finite_gradients(create_attn("coord", C), torch.randn(2, C, 1, 1))


# ---------------------------------------------------------------- Z-pool ([max ; mean] over one axis)

def z_pool_reference(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.stack([x.max(dim).values, x.mean(dim)], 1)


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_z_pool_without_autograd_equals_max_and_mean(dim, channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, 7, 5, 6, dtype=torch.float64)  # odd and even axis lengths
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(z_pool(x, dim), z_pool_reference(x, dim))
    x.requires_grad_()
    pooled = z_pool(x, dim)
    assert torch.equal(pooled, z_pool_reference(x, dim)) and pooled.grad_fn is not None


def test_traced_z_pool_is_max_and_mean():
    x = torch.randn(2, 5, 4, 3)
    with torch.no_grad():
        traced = torch.jit.trace(lambda t: z_pool(t, 1), (x,))
    assert "aten::max" in str(traced.graph) and "aten::amax" not in str(traced.graph)
    assert torch.equal(traced(x), z_pool_reference(x, 1))


# ---------------------------------------------------------------- Triplet attention

def triplet_reference(m: TripletAttention, x: torch.Tensor) -> torch.Tensor:
    """The official code's rotations (permute, Z-pool over dim 1, conv, BN, σ, permute back)."""
    def branch(t, gate):
        pooled = torch.cat([t.amax(1, keepdim=True), t.mean(1, keepdim=True)], 1)
        return t * torch.sigmoid(bn_eval(F.conv2d(pooled, gate.conv.weight, padding=3), gate.bn))

    out_cw = branch(x.permute(0, 2, 1, 3), m.cw).permute(0, 2, 1, 3)
    out_hc = branch(x.permute(0, 3, 2, 1), m.hc).permute(0, 3, 2, 1)
    return (out_cw + out_hc + branch(x, m.hw)) / 3


def test_triplet_matches_the_official_rotations():
    torch.manual_seed(0)
    m = randomise_bn(TripletAttention(C)).double().eval()
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(m(x), triplet_reference(m, x))
    s_cw, s_hc, s_hw = m.branch_gates(x)
    assert (s_cw.shape, s_hc.shape, s_hw.shape) == ((2, C, 1, 7), (2, C, 5, 1), (2, 1, 5, 7))
    maps = m.attention_maps(x, None)
    torch.testing.assert_close(maps["spatial"], m.gate(x).mean(1, keepdim=True))
    torch.testing.assert_close(maps["channel"], m.gate(x).mean((2, 3)))


def test_triplet_layout_and_bad_arguments():
    m = create_attn("triplet", 256)
    assert n_params(m) == 3 * (2 * 49 + 2)  # three 2→1 7×7 convs (no bias) + BN(1)
    assert all(g.conv.bias is None for g in (m.cw, m.hc, m.hw))
    with pytest.raises(ValueError, match="odd"):
        create_attn("triplet", C, kernel_size=6)


# ---------------------------------------------------------------- parts of the gate composer

def test_gates_plug_into_the_gate_composer():
    torch.manual_seed(0)
    x = torch.randn(2, C, 7, 9)
    torch.testing.assert_close(create_attn("gate", C, channel=None, spatial="simam")(x), SimAM()(x))
    composed = create_attn("gate", C, channel="gc", spatial=None)
    alone = trained_looking(GlobalContextScale(C))
    composed.channel.load_state_dict(alone.state_dict())
    torch.testing.assert_close(composed(x), alone(x))
    for kw in ({"channel": "ge", "spatial": "coord"}, {"channel": "se", "pool": "attn", "spatial": "triplet"},
               {"channel": "gc", "spatial": "simam", "order": "parallel", "combine": "sum"}):
        assert create_attn("gate", C, **kw)(x).shape == x.shape


# ---------------------------------------------------------------- ImageNet ResNet-50 counts

# 16 Bottleneck blocks, C = 256 ×3, 512 ×4, 1024 ×6, 2048 ×3 (maps 56, 28, 14, 7 at 224 px).
FEAT = [{"feat_size": s} for s in (56, 28, 14, 7)]


@pytest.mark.parametrize("attn, kw, published, exact", [
    # SimAM: parameter-free; its README/paper: SimAM-R50 25.56M.
    ("simam", {}, 25.56e6, RESNET50),
    # GE-θ⁻ (global): parameter-free; paper Table 3: 25.6M.
    ("ge", {}, 25.6e6, RESNET50),
    # Triplet attention: 3 × (2·49 + 2) = 300 per block × 16 = 4,800; paper Table 1: 25.56M.
    ("triplet", {}, 25.56e6, RESNET50 + 4_800),
    # GC r = 16 in stages c3–c5 (the paper's setting): per block (C + 1) + (C·h + h) + 2h + (h·C + C),
    # h = C/16: 4 × 33,889 + 6 × 133,313 + 3 × 528,769 = 2,521,741; paper (ImageNet table): 28.08M.
    ("gc", {"attn_stages": [2, 3, 4]}, 28.08e6, RESNET50 + 2_521_741),
])
def test_imagenet_resnet50_counts_against_papers(attn, kw, published, exact):
    count = resnet50_params(attn, **kw)
    assert count == exact
    assert abs(count - published) / published < 0.002


def test_imagenet_resnet50_counts_of_ge_parametric_variants():
    """GE-θ (global) adds a depth-wise conv of the map's size + BN per block: 3·256·(56² + 2) +
    4·512·(28² + 2) + 6·1024·(14² + 2) + 3·2048·(7² + 2) = 5,549,568 → 31,106,600; GE-θ⁺ adds SE's
    MLP with biases (2,530,992) → 33,637,592. We read 31.2M and 33.7M in the paper's ImageNet
    table; the gaps (0.30 %, 0.19 %) fit those being 25.6M plus the rounded module costs (5.55M,
    8.08M). The layers are those of the official RN50-GEP / RN50-GEPP prototxts."""
    theta = resnet50_params("ge", attn_kw={"variant": "theta"}, attn_stage_kw=FEAT)
    theta_plus = resnet50_params("ge", attn_kw={"variant": "theta+"}, attn_stage_kw=FEAT)
    assert theta == RESNET50 + 5_549_568
    assert theta_plus == RESNET50 + 5_549_568 + 2_530_992
    assert abs(theta - 31.2e6) / 31.2e6 < 0.0035 and abs(theta_plus - 33.7e6) / 33.7e6 < 0.002


def test_imagenet_resnet50_counts_without_a_published_number():
    # GC in every stage (c2–c5): the c3–c5 count + 3 blocks at C = 256 of 257 + 4,112 + 32 + 4,352 =
    # 8,753 each: 2,521,741 + 26,259 = 2,548,000 (28.11M, also within 0.2 % of the paper's 28.08M).
    assert resnet50_params("gc") == RESNET50 + 2_548_000
    # gc_scale has the same layers as gc.
    assert resnet50_params("gc_scale", attn_stages=[2, 3, 4]) == RESNET50 + 2_521_741
    # Light CBAM: no paper. Per block 2·C·C/16 (bias-free MLP) + 49 + 2: 2,514,944 + 16 × 51 = 2,515,760.
    assert resnet50_params("lcbam") == RESNET50 + 2_515_760
    # Coordinate attention: the paper counts MobileNetV2/MobileNeXt/EfficientNet only. Per block
    # 3·C·m + 3m + 2C with m = max(8, C/32): 3 × 6,680 + 4 × 25,648 + 6 × 100,448 + 3 × 397,504.
    assert resnet50_params("coord") == RESNET50 + 1_917_832

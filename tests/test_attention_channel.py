"""Channel gates: eSE, ECA-MLP, circular ECA, GCT, SRM and FcaNet against plain float64 references,
their options and errors, and their ImageNet ResNet-50 parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnvision import create_attn, create_model
from attnvision.attention import ATTENTION
from attnvision.attention.eca import EfficientChannelAttention
from attnvision.attention.fca import DCTPooling, dct_basis, selected_frequencies
from attnvision.attention.srm import style_pool

NAMES = ["ese", "ecam", "ceca", "gct", "srm", "fca"]
QUERIES = torch.tensor([[0.5, 0.5]])


def build(name: str, channels: int = 32, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_attn(name, channels, **kw).double()


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize(module: torch.nn.Module) -> None:
    """Non-trivial values for every parameter (zero- or one-initialised ones would hide terms)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


def x64(*shape: int) -> torch.Tensor:
    torch.manual_seed(2)
    return torch.randn(*shape, dtype=torch.float64)


def check_applies_gate(m, x: torch.Tensor, expected_gate: torch.Tensor) -> None:
    """gate(x), forward and attention_maps against a (B, C) reference gate."""
    torch.testing.assert_close(m.gate(x), expected_gate[:, :, None, None])
    torch.testing.assert_close(m(x), x * expected_gate[:, :, None, None])
    maps = m.attention_maps(x, QUERIES)
    assert list(maps) == ["channel"] and maps["channel"].shape == x.shape[:2]
    torch.testing.assert_close(maps["channel"], expected_gate)


@pytest.mark.parametrize("name", NAMES)
def test_kind_placement_and_batch1_eval(name):
    m = build(name).eval()
    assert (m.kind, m.placement) == ("channel", "block")
    with torch.no_grad():
        assert m(x64(1, 32, 5, 7)).shape == (1, 32, 5, 7)


# ---------------------------------------------------------------- eSE

@pytest.mark.parametrize("variant", ["paper", "code"])
def test_ese_is_one_full_width_fc(variant):
    m = build("ese", variant=variant)
    randomize(m)
    x = x64(2, 32, 5, 7)
    w, b = m.fc.weight.flatten(1), m.fc.bias
    a = x.mean((2, 3)) @ w.T + b
    check_applies_gate(m, x, torch.sigmoid(a) if variant == "paper" else (a / 6 + 0.5).clamp(0, 1))
    torch.testing.assert_close(m.logits(x), a[:, :, None, None])
    assert n_params(m) == 32 * 32 + 32


def test_ese_code_variant_is_relu6_hard_sigmoid():
    m = build("ese", 7, variant="code")
    with torch.no_grad():
        m.fc.weight.zero_()
        m.fc.bias.copy_(torch.tensor([-4, -3, -1.5, 0, 1.5, 3, 4], dtype=torch.float64))
    gate = m.gate(x64(1, 7, 3, 3)).flatten()  # ReLU6(a + 3) / 6, not Keras's 0.2·a + 0.5
    torch.testing.assert_close(gate, torch.tensor([0, 0, 0.25, 0.5, 0.75, 1, 1], dtype=torch.float64))
    with pytest.raises(ValueError, match="valid: paper .*code"):
        create_attn("ese", 7, variant="hard")


# ---------------------------------------------------------------- ECA with an MLP (timm's use_mlp)

def test_ecam_matches_per_channel_mlp_and_kernel():
    m = build("ecam", 32, kernel_size=5, rd_channels=3)
    randomize(m)
    x = x64(2, 32, 5, 7)
    w1, b1 = m.conv.weight.view(3), m.conv.bias  # 1 → r
    w2, b2 = m.conv2.weight.view(3, 5), m.conv2.bias  # r → 1 over 5 taps
    y = x.mean((2, 3))  # (B, C)
    h = torch.relu(y[:, None, :] * w1[None, :, None] + b1[None, :, None])  # (B, r, C)
    h = F.pad(h, (2, 2))  # zero padding (k - 1)/2 along the channel axis
    a = b2 + sum((w2[:, j, None] * h[:, :, j:j + 32]).sum(1) for j in range(5))  # a_i = Σ_j w2_j · h_{i+j-2}
    check_applies_gate(m, x, torch.sigmoid(a))
    torch.testing.assert_close(m.logits(x), a[:, :, None, None])


def test_ecam_defaults_and_errors():
    m = create_attn("ecam", 256)  # k = ψ(256) = 5, r = 256/8 = 32
    assert m.conv.out_channels == 32 and m.conv2.kernel_size == (5,)
    assert n_params(m) == 2 * 32 + 5 * 32 + 1
    assert create_attn("ecam", 2048).conv2.kernel_size == (7,)
    assert create_attn("ecam", 64, rd_ratio=1 / 4).conv.out_channels == 16
    with pytest.raises(ValueError, match="odd"):
        create_attn("ecam", 64, kernel_size=4)
    with pytest.raises(ValueError, match="rd_channels"):
        create_attn("ecam", 64, rd_channels=0)


# ---------------------------------------------------------------- circular ECA (timm's CecaModule)

def test_ceca_wraps_the_channel_axis():
    m = build("ceca", 16, kernel_size=5)
    randomize(m)
    assert m.conv.bias is None
    x = x64(2, 16, 5, 7)
    w = m.conv.weight.view(5)
    y = x.mean((2, 3))
    # ω_i = σ(Σ_j w_j · y_{(i+j-2) mod C}); roll(y, s)[i] = y[i - s]
    check_applies_gate(m, x, torch.sigmoid(sum(w[j] * torch.roll(y, 2 - j, 1) for j in range(5))))


def test_ceca_equals_eca_away_from_the_ends_and_loads_its_weights():
    eca, ceca = build("eca", 16, kernel_size=5), build("ceca", 16, kernel_size=5)
    randomize(eca)
    ceca.load_state_dict(eca.state_dict())
    x = x64(2, 16, 5, 7)
    g_eca, g_ceca = eca.gate(x).flatten(1), ceca.gate(x).flatten(1)
    torch.testing.assert_close(g_ceca[:, 2:-2], g_eca[:, 2:-2])  # windows that never leave [0, C)
    assert (g_ceca[:, :2] - g_eca[:, :2]).abs().min() > 0 and (g_ceca[:, -2:] - g_eca[:, -2:]).abs().min() > 0


def test_ceca_kernel_and_errors():
    assert create_attn("ceca", 256).conv.kernel_size == (5,)  # ECA's adaptive k
    assert isinstance(create_attn("eca", 256), EfficientChannelAttention)  # "eca" untouched
    with pytest.raises(ValueError, match="odd"):
        create_attn("ceca", 64, kernel_size=2)
    with pytest.raises(ValueError, match="kernel_size <= channels"):
        create_attn("ceca", 4, kernel_size=5)


# ---------------------------------------------------------------- GCT

def gct_reference(x, alpha, gamma, beta, norm, eps=1e-5):
    c = x.shape[1]
    if norm == "l2":
        s = alpha * (x.pow(2).sum((2, 3)) + eps).sqrt()  # Eq. 1
        s_hat = math.sqrt(c) * s / (s.pow(2).sum(1, keepdim=True) + eps).sqrt()  # Eq. 2
    else:
        s = alpha * x.abs().sum((2, 3))
        s_hat = c * s / (s.abs().sum(1, keepdim=True) + eps)
    return 1 + torch.tanh(gamma * s_hat + beta)  # Eq. 3


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_gct_matches_paper_equations(norm):
    m = build("gct", 32, norm=norm)
    randomize(m)
    x = x64(2, 32, 5, 7)
    params = [p.view(1, 32) for p in (m.alpha, m.gamma, m.beta)]
    check_applies_gate(m, x, gct_reference(x, *params, norm))


def test_gct_is_identity_at_init():
    m = build("gct", 32)
    assert torch.equal(m.alpha, torch.ones(1, 32, 1, 1, dtype=torch.float64))
    assert not m.gamma.any() and not m.beta.any()
    x = x64(2, 32, 5, 7)
    assert torch.equal(m(x), x)
    assert n_params(m) == 3 * 32


def test_gct_channel_normalisation_and_errors():
    m = build("gct", 32)
    randomize(m)
    s_hat = m.normalized(m.embedding(x64(2, 32, 5, 7))).flatten(1)
    torch.testing.assert_close(s_hat.norm(dim=1), torch.full((2,), math.sqrt(32), dtype=torch.float64))
    with pytest.raises(ValueError, match="valid: l2"):
        create_attn("gct", 32, norm="l3")
    with pytest.raises(ValueError, match="eps must be > 0"):
        create_attn("gct", 32, eps=0)


# ---------------------------------------------------------------- SRM

def srm_z(m, x):
    mu = x.mean((2, 3))
    sigma = ((x - mu[:, :, None, None]).pow(2).mean((2, 3)) + 1e-5).sqrt()  # population variance + ε
    return m.cfc[:, 0] * mu + m.cfc[:, 1] * sigma  # channel-wise FC, no bias


def test_srm_eval_matches_reference_with_running_statistics():
    m = build("srm", 32)
    randomize(m)
    with torch.no_grad():
        m.bn.running_mean.copy_(torch.randn(32) * 0.3)
        m.bn.running_var.copy_(torch.rand(32) + 0.5)
    m.eval()
    x = x64(2, 32, 5, 7)
    bn = m.bn
    z_hat = (srm_z(m, x) - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.weight + bn.bias
    check_applies_gate(m, x, torch.sigmoid(z_hat))
    assert style_pool(x).shape == (2, 32, 2)


def test_srm_training_normalises_over_the_batch():
    m = build("srm", 32)
    randomize(m)
    x = x64(4, 32, 5, 7)
    z = srm_z(m, x)
    z_hat = (z - z.mean(0)) / (z.var(0, correction=0) + m.bn.eps).sqrt() * m.bn.weight + m.bn.bias
    torch.testing.assert_close(m.logits(x).flatten(1), z_hat)


def test_srm_init_parameter_count_and_batch1():
    m = build("srm", 32)
    assert not m.cfc.any()  # official code: CFC starts at 0, so every gate starts at σ(0) = 0.5
    x = x64(2, 32, 5, 7)
    torch.testing.assert_close(m.gate(x), torch.full((2, 32, 1, 1), 0.5, dtype=torch.float64))
    assert n_params(m) == 4 * 32  # CFC 2C + BN 2C
    with pytest.raises(ValueError, match="batch size >= 2 or call .eval()"):
        m(x[:1])
    m.eval()
    torch.testing.assert_close(m.gate(x[:1]), torch.full((1, 32, 1, 1), 0.5, dtype=torch.float64))


def test_srm_finite_gradient_on_a_constant_map():
    m = build("srm", 8)
    randomize(m)
    x = torch.ones(2, 8, 1, 1, dtype=torch.float64, requires_grad=True)  # σ = 0: needs the ε
    (m(x) * torch.randn_like(x)).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(m.cfc.grad).all()


# ---------------------------------------------------------------- FcaNet

def dct_reference(k: int, n: int) -> list[float]:
    return [math.sqrt((1 if k == 0 else 2) / n) * math.cos(math.pi * k * (i + 0.5) / n) for i in range(n)]


def dct_pool_reference(x: torch.Tensor, freqs, scale) -> torch.Tensor:
    """Σ_ij x_cij b_k(i) b_l(j) with (k, l) = scale(u, v, H, W) for channel group f."""
    b, c, h, w = x.shape
    group = c // len(freqs)
    out = torch.empty(b, c, dtype=x.dtype)
    for f, (u, v) in enumerate(freqs):
        k, l = scale(u, v, h, w)
        rows, cols = (torch.tensor(dct_reference(*kn), dtype=x.dtype) for kn in ((k, h), (l, w)))
        basis = rows[:, None] * cols[None, :]
        out[:, f * group:(f + 1) * group] = (x[:, f * group:(f + 1) * group] * basis).sum((2, 3))
    return out


def test_dct_pooling_on_odd_map_uses_floor_scaled_frequencies():
    x = x64(2, 32, 9, 5)
    pooled = DCTPooling(32, "top16").double()(x)
    assert pooled.shape == (2, 32, 1, 1)
    expected = dct_pool_reference(x, selected_frequencies("top16"), lambda u, v, h, w: (u * h // 7, v * w // 7))
    torch.testing.assert_close(pooled.flatten(1), expected)


@pytest.mark.parametrize("size", [7, 14])
def test_dct_pooling_equals_official_frequencies_on_multiples_of_7(size):
    """The official code: frequency u · (H // 7) on an H×H DCT (ImageNet maps 56, 28, 14, 7)."""
    x = x64(2, 16, size, size)
    freqs = selected_frequencies("low16")
    expected = dct_pool_reference(x, freqs, lambda u, v, h, w: (u * (h // 7), v * (w // 7)))
    torch.testing.assert_close(DCTPooling(16, "low16")(x).flatten(1), expected)


def test_dct_basis_is_orthonormal_and_dc_is_scaled_gap():
    basis = dct_basis(torch.arange(9), 9, torch.float64)
    torch.testing.assert_close(basis @ basis.T, torch.eye(9, dtype=torch.float64))
    x = x64(2, 8, 6, 10)
    torch.testing.assert_close(DCTPooling(8, "top1")(x), math.sqrt(60) * x.mean((2, 3), keepdim=True))
    pool = DCTPooling(32)
    assert n_params(pool) == 0 and "freqs" not in pool.state_dict()  # frequencies: a derived buffer


def test_fca_gate_is_bias_free_se_mlp_on_dct_descriptors():
    m = build("fca", 32)
    randomize(m)
    assert all(layer.bias is None for layer in (m.fc[0], m.fc[2]))
    x = x64(2, 32, 7, 9)
    freq = m.pool(x).flatten(1)
    check_applies_gate(m, x, torch.sigmoid(torch.relu(freq @ m.fc[0].weight.T) @ m.fc[2].weight.T))
    assert n_params(m) == 2 * 32 * 2  # W_1: 2×32, W_2: 32×2 (r = 16)


def test_fca_frequency_selection_and_errors():
    assert selected_frequencies("top16")[:3] == ((0, 0), (0, 1), (6, 0))
    assert len(selected_frequencies("bot32")) == 32 and selected_frequencies("low4")[-1] == (1, 1)
    assert create_attn("fca", 64, freq_sel="low8", rd_channels=8).fc[0].out_features == 8
    for bad in ("top3", "mid16", "top64", "TOP16"):
        with pytest.raises(ValueError, match="valid: top, low or bot"):
            create_attn("fca", 64, freq_sel=bad)
    with pytest.raises(ValueError, match="not divisible by 16.*top8"):
        create_attn("fca", 24)


# ---------------------------------------------------------------- ImageNet ResNet-50 parameter counts

# torchvision's ResNet-50: 25,557,032. Its 16 blocks end in C = 256 (×3), 512 (×4), 1024 (×6),
# 2048 (×3): ΣC = 15,104, ΣC² = 20,119,552, every module sits once per block (16 modules).
#   ese:  ΣC² + ΣC = 20,134,656 (no ResNet-50 in the paper: it uses VoVNetV2)
#   ecam: Σ(2r + k·r + 1), r = C/8, k = 5, 5, 5, 7: 3·225 + 4·449 + 6·897 + 3·2305 = 14,768 (timm
#         variant, no paper)
#   ceca: Σk = 3·5 + 4·5 + 6·5 + 3·7 = 86, as ECA (timm variant, no paper)
#   gct:  3·ΣC = 45,312. No published count checked: the paper's placement (a GCT before every conv,
#         stem and shortcuts included, official resnet.py) would add 3·22,531 = 67,593, i.e.
#         25,624,625; compared against that computed figure
#   srm:  (2 + 2)·ΣC = 60,416 → 25.62M, the paper's SRM-ResNet-50
#   fca:  2·ΣC²/16 = 2,514,944 → 28.07M, the paper's FcaNet-50
RESNET50 = 25_557_032


@pytest.mark.parametrize("name, reference, exact", [
    ("ese", None, RESNET50 + 20_134_656),
    ("ecam", None, RESNET50 + 14_768),
    ("ceca", None, RESNET50 + 86),
    ("gct", 25_624_625, RESNET50 + 45_312),
    ("srm", 25.62e6, RESNET50 + 60_416),
    ("fca", 28.07e6, RESNET50 + 2_514_944),
])
def test_imagenet_resnet50_parameter_counts(name, reference, exact):
    model = create_model("resnet50", 1000, attn=name)
    assert n_params(model) == exact
    assert sum(type(m) is ATTENTION.get(name) for m in model.modules()) == 16
    if reference is not None:
        assert abs(exact - reference) / reference < 0.002

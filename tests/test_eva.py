"""EVA head (Expanding Visual Attention) and the EVANet-20 model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnvision import create_head, create_model
from attnvision.backbones.resnet import ResNet
from attnvision.heads.eva import EVAHead, RingAttention, ring_positions


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_head(k: int = 7, variant: str = "paper", in_features: int = 6) -> EVAHead:
    torch.manual_seed(0)
    return EVAHead(in_features, 5, heads=2, kernel_size=k, dim=8, variant=variant)


# --- rings ---------------------------------------------------------------------------------

def test_ring_sizes_cover_the_map_once():
    for k in (1, 3, 5, 7, 9):
        sizes = [len(ring_positions(k, s)[0]) for s in range((k + 1) // 2)]
        assert sizes == [1] + [8 * s for s in range(1, (k + 1) // 2)]
        flat = torch.cat([r * k + c for r, c in (ring_positions(k, s) for s in range((k + 1) // 2))])
        assert sorted(flat.tolist()) == list(range(k * k))


def test_ring_positions_row_major():
    rows, cols = ring_positions(7, 1)
    assert list(zip(rows.tolist(), cols.tolist())) == [(2, 2), (2, 3), (2, 4), (3, 2), (3, 4), (4, 2), (4, 3), (4, 4)]
    rows, cols = ring_positions(7, 3)
    flat = (rows * 7 + cols).tolist()
    assert flat == sorted(flat) and len(flat) == 24
    assert ring_positions(7, 0)[0].tolist() == [3] and ring_positions(7, 0)[1].tolist() == [3]


# --- shapes, errors, gradients ---------------------------------------------------------------

@pytest.mark.parametrize("variant", ["paper", "code"])
@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_output_shape(k, variant):
    head = small_head(k, variant)
    assert head(torch.randn(3, 6, k, k)).shape == (3, 5)
    head.eval()
    out = head(torch.randn(1, 6, k, k))
    assert out.shape == (1, 5) and torch.isfinite(out).all()


def test_registered_head():
    head = create_head("eva", 16, 10, heads=4)
    assert isinstance(head, EVAHead) and head(torch.randn(2, 16, 7, 7)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(2, 6, 6, 6), (2, 6, 7, 5), (2, 6, 5, 5), (2, 4, 7, 7), (6, 7, 7)])
def test_wrong_map_raises(shape):
    with pytest.raises(ValueError, match="expects features"):
        small_head(7)(torch.randn(*shape))


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="odd kernel_size"):
        EVAHead(8, 5, heads=2, kernel_size=6)
    with pytest.raises(ValueError, match="heads of even width"):
        EVAHead(8, 5, heads=8)
    with pytest.raises(ValueError, match="unknown EVA variant"):
        EVAHead(8, 5, heads=2, variant="official")


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_every_parameter_gets_a_finite_gradient(variant):
    head = small_head(7, variant)
    head(torch.randn(4, 6, 7, 7)).logsumexp(1).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# --- structure and parameter counts -------------------------------------------------------------

def test_paper_structure():
    head = small_head(7, "paper")
    assert [m.pos.num_embeddings for m in head.mixers] == [2, 3, 4, 5]  # [q0, attn0 … attn_s]
    assert all(r.predict_next is None for r in head.rings)
    assert [r.rel_row.num_embeddings for r in head.rings[1:]] == [3, 5, 7]  # offsets −s … s
    assert all(isinstance(r.query, nn.Linear) for r in head.rings[1:])


def test_code_structure():
    head = small_head(7, "code")
    assert not hasattr(head, "query_conv")
    assert [m.pos.num_embeddings for m in head.mixers] == [2, 3, 4]  # no q0, none after stage 0
    assert all(isinstance(r.query, nn.Identity) for r in head.rings[1:])  # no W_Q
    assert [r.predict_next[-1].out_features for r in head.rings[:-1]] == [8, 16, 24]
    assert head.rings[-1].predict_next is None


def test_parameter_counts_small():
    paper, code = EVAHead(64, 10), EVAHead(64, 10, variant="code")
    assert n_params(paper) == 411_082 and n_params(code) == 180_490
    assert n_params(paper.query_conv) == 64 * 64 * 49
    # stage s ≥ 1: W_Q, W_K, W_V, W_Z, block (8,576) and (2s+1)·64 relative-embedding parameters
    assert [n_params(r) for r in paper.rings] == [16_768, 25_152, 25_280, 25_408]
    assert [n_params(m) for m in paper.mixers] == [25_088, 25_152, 25_216, 25_280]


# --- paper identities ---------------------------------------------------------------------------

def test_stage0_is_value_of_centre_for_any_query():
    ring = small_head(7).rings[0]
    assert ring.key is None and not hasattr(ring, "rel_row")  # W_Q, W_K, r would be gradient-free
    x = torch.randn(2, 6, 49)
    for query in (torch.randn(2, 8), torch.randn(2, 8)):
        torch.testing.assert_close(ring.attend(query, x), ring.value(x[:, :, 24]))


def naive_attend(ring: RingAttention, query: torch.Tensor, x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """Eq. 3 pixel by pixel, with explicit row offset a − c and column offset b − c."""
    c, heads = k // 2, ring.heads
    q = ring.query(query)
    dh = q.shape[1] // heads
    positions = [(a, b) for a in range(k) for b in range(k) if max(abs(a - c), abs(b - c)) == s]
    out = []
    for h in range(heads):
        ch, half = slice(h * dh, (h + 1) * dh), slice(h * dh // 2, (h + 1) * dh // 2)
        logits, values = [], []
        for a, b in positions:
            m = x[:, :, a, b]
            r = torch.cat((ring.rel_row.weight[a - c + s, half], ring.rel_col.weight[b - c + s, half]))
            logits.append((q[:, ch] * (ring.key(m)[:, ch] + r)).sum(-1) / dh ** 0.5)
            values.append(ring.value(m)[:, ch])
        weights = torch.stack(logits, 1).softmax(1)
        out.append((weights[:, :, None] * torch.stack(values, 1)).sum(1))
    return torch.cat(out, 1)


@pytest.mark.parametrize("s", [1, 2])
def test_ring_attention_matches_pixelwise_reference(s):
    torch.manual_seed(s)
    ring = RingAttention(6, 8, 2, 5, s, query_proj=True, next_ring=0, drop_rate=0.0)
    x, query = torch.randn(3, 6, 5, 5), torch.randn(3, 8)
    torch.testing.assert_close(ring.attend(query, x.flatten(2)), naive_attend(ring, query, x, 5, s))


def test_row_embedding_follows_row_offsets_not_columns():
    # no content term, only the row table: a large logit for row offset +2 selects the bottom row
    ring = RingAttention(4, 4, 1, 5, 2, query_proj=False, next_ring=0, drop_rate=0.0)
    with torch.no_grad():
        ring.key.weight.zero_()
        ring.value.weight.copy_(torch.eye(4))
        ring.rel_col.weight.zero_()
        ring.rel_row.weight.zero_()
        ring.rel_row.weight[4, 0] = 100.0  # table row 4 = offset +2
    x = torch.randn(2, 4, 5, 5)
    out = ring.attend(torch.tensor([[1.0, 0, 0, 0]] * 2), x.flatten(2))
    torch.testing.assert_close(out, x[:, :, 4, :].mean(-1))
    assert not torch.allclose(out, x[:, :, :, 4].mean(-1))


def test_ring_attention_sees_exactly_its_ring():
    ring = small_head(7).rings[2]
    rows, cols = ring_positions(7, 2)
    inside = torch.zeros(7, 7, dtype=torch.bool)
    inside[rows, cols] = True
    x, query = torch.randn(2, 6, 7, 7), torch.randn(2, 8)
    ref = ring.attend(query, x.flatten(2))
    outside_changed = torch.where(inside, x, torch.randn_like(x))
    torch.testing.assert_close(ring.attend(query, outside_changed.flatten(2)), ref)
    one_inside = x.clone()
    one_inside[:, :, 1, 4] += 1.0  # (1, 4) lies on ring 2
    assert not torch.allclose(ring.attend(query, one_inside.flatten(2)), ref)


def test_permuting_ring_order_with_its_offsets_changes_nothing():
    head = small_head(7).eval()
    x = torch.randn(2, 6, 7, 7)
    ref = head(x)
    torch.manual_seed(1)
    for ring in head.rings[1:]:
        perm = torch.randperm(len(ring.index))
        ring.index, ring.row_offset, ring.col_offset = ring.index[perm], ring.row_offset[perm], ring.col_offset[perm]
    torch.testing.assert_close(head(x), ref)
    head.rings[3].row_offset, head.rings[3].col_offset = head.rings[3].col_offset, head.rings[3].row_offset
    assert not torch.allclose(head(x), ref)  # swapping row and column offsets matters


def test_code_variant_query_reads_only_the_centre_pixel():
    head = small_head(3, "code").eval()
    ring0_query = []
    head.rings[0].register_forward_hook(lambda m, args, out: ring0_query.append(args[0]))
    x = torch.randn(2, 6, 3, 3)
    y = x.clone()
    y[:, :, 0, 0] += 1.0
    head(x), head(y)
    torch.testing.assert_close(ring0_query[0], ring0_query[1])


def marker_maps(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """5×5 noise maps with one bright pixel on the top (class 0) or bottom (class 1) row."""
    x = 0.1 * torch.randn(n, 4, 5, 5, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    x[torch.arange(n), 0, 4 * y, torch.randint(1, 4, (n,), generator=g)] = 3.0
    return x, y


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_learns_where_the_marker_is(variant):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    (x, y), (x_test, y_test) = marker_maps(128, g), marker_maps(256, g)
    head = EVAHead(4, 2, heads=2, kernel_size=5, dim=8, variant=variant, drop_rate=0.0)
    opt = torch.optim.Adam(head.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(head(x), y).backward()
        opt.step()
    assert (head.eval()(x_test).argmax(1) == y_test).float().mean() > 0.9


# --- EVANet-20 ---------------------------------------------------------------------------------

def test_evanet20_crops_8x8_like_the_code_and_keeps_7x7():
    torch.manual_seed(0)
    model = create_model("evanet20", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    trunk = ResNet.forward_features(model, x)
    assert trunk.shape[2:] == (8, 8)
    torch.testing.assert_close(model.forward_features(x), trunk[:, :, 1:, 1:])
    assert model(x[:1]).shape == (1, 10)
    fmnist = create_model("evanet20", 10, in_chans=1).eval()
    x = torch.randn(1, 1, 28, 28)
    torch.testing.assert_close(fmnist.forward_features(x), ResNet.forward_features(fmnist, x))


def test_evanet20_structure_and_parameters():
    model = create_model("evanet20", 10, head_kw={"variant": "code"})
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [2, 2, 2]
    assert model.head.variant == "code" and model.num_features == 64
    paper = create_model("evanet20", 10)
    resnet = create_model("resnet20", 10, layers=(2, 2, 2), shortcut="A")
    assert n_params(resnet) == 172_506
    assert n_params(paper) == 172_506 - 650 + 411_082
    assert n_params(create_model("evanet20", 10, shortcut="B")) == 175_258 - 650 + 411_082


def test_evanet20_errors():
    model = create_model("evanet20", 10).eval()
    for size in (16, 64):
        with pytest.raises(ValueError, match="EVA needs 7x7 or 8x8"):
            model(torch.randn(1, 3, size, size))
    with pytest.raises(ValueError, match="always uses the EVA head"):
        create_model("evanet20", 10, head="csra")

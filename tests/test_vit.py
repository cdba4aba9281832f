"""ViT backbone: shapes, position-embedding interpolation, attention maths, errors, parameter counts."""

from __future__ import annotations

import math

import pytest
import torch

from attnvision.backbones import create_model
from attnvision.backbones.vit import Attention, VisionTransformer


def small(**kw) -> VisionTransformer:
    cfg = dict(num_classes=5, img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    return VisionTransformer(**{**cfg, **kw})


def test_shapes_at_native_size() -> None:
    model = small()
    x = torch.randn(2, 3, 16, 16)
    assert model.forward_features(x).shape == (2, 32, 4, 4)  # class token dropped: 4×4 patch grid
    assert model(x).shape == (2, 5)
    assert model.num_features == 32 and model.in_chans == 3


def test_other_sizes_interpolate_position_embeddings() -> None:
    model = small(in_chans=1).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 1, 20, 12)).shape == (1, 32, 5, 3)  # H ≠ W, odd grid
        assert model(torch.randn(1, 1, 28, 28)).shape == (1, 5)


def test_position_embedding_identity_at_native_size_and_bicubic_elsewhere() -> None:
    model = small()
    assert model.position_embedding((4, 4)) is model.pos_embed
    resized = model.position_embedding((6, 3))
    assert resized.shape == (1, 1 + 18, 32)
    assert torch.equal(resized[:, 0], model.pos_embed[:, 0])  # class-token embedding kept
    with torch.no_grad():  # bicubic resampling reproduces a constant grid exactly
        model.pos_embed[:, 1:] = 0.7
    assert torch.allclose(model.position_embedding((6, 3))[:, 1:], torch.full((1, 18, 32), 0.7))


def test_resized_model_equals_model_built_at_that_size() -> None:
    a, b = small().eval(), small(img_size=(24, 12)).eval()
    state = a.state_dict()
    state["pos_embed"] = a.position_embedding((6, 3)).detach()
    b.load_state_dict(state)
    x = torch.randn(2, 3, 24, 12)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-6)


def test_attention_matches_softmax_formula() -> None:
    torch.manual_seed(0)
    attn = Attention(12, num_heads=3)
    x = torch.randn(2, 5, 12)
    q, k, v = attn.qkv(x).split(12, dim=-1)
    heads = [slice(4 * h, 4 * h + 4) for h in range(3)]
    out = torch.cat([torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(4), -1) @ v[..., s]
                     for s in heads], -1)
    assert torch.allclose(attn(x), attn.proj(out), atol=1e-6)


def test_class_token_is_attended_to() -> None:
    model = small().eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        before = model.forward_features(x)
        model.cls_token.fill_(1.0)
        assert not torch.allclose(before, model.forward_features(x))


def test_batch_one_eval_and_finite_gradients() -> None:
    model = small()
    model.eval()
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 5)
    model.train()
    model(torch.randn(2, 3, 16, 16)).logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.pos_embed.grad.abs().sum() > 0 and model.cls_token.grad.abs().sum() > 0


def test_clear_errors() -> None:
    model = small()
    with pytest.raises(ValueError, match="in_chans=1"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        model(torch.randn(1, 3, 18, 16))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        small(img_size=18)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        small(num_heads=3)
    with pytest.raises(ValueError, match="no attention module"):
        create_model("vit_tiny", 10, attn="se")


def test_vit_tiny_is_deit_tiny() -> None:
    model = create_model("vit_tiny", 1000)
    assert sum(p.numel() for p in model.parameters()) == 5_717_416  # DeiT-Tiny's published count
    assert len(model.blocks) == 12 and model.num_features == 192 and model.blocks[0].attn.num_heads == 3
    assert model.grid == (14, 14)


def test_vit_tiny_small_images_and_other_heads() -> None:
    model = create_model("vit_tiny", 10, in_chans=1, img_size=28, patch_size=4, head="csra",
                         head_kw={"heads": 1, "lam": 0.1}).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)

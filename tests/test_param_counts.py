"""Whole-model parameter counts against the papers' tables, and attention placement in ResNets."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from attnvision import create_model, list_attn
from attnvision.attention import ATTENTION
from attnvision.attention.bam import BottleneckAttention
from attnvision.attention.eca import EfficientChannelAttention


@lru_cache(maxsize=None)
def resnet50(attn: str | None, stage_kernel: int | None = None):
    stage_kw = None if stage_kernel is None else [{"kernel_size": stage_kernel}, {}, {}, {}]
    return create_model("resnet50", 1000, attn=attn, attn_stage_kw=stage_kw)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Published ImageNet ResNet-50 counts (PytorchInsight table; SE/CBAM/BAM papers), and the exact
# counts: torchvision's resnet50 = 25,557,032; SE adds 16 × (2C·C/16 + C/16 + C) with biases
# (official Caffe FCs) = 2,530,992; CBAM adds to SE's MLP a 2→1 7×7 conv (98) and a BN (2) per
# block; ECA adds k per block: 3·5 + 4·5 + 6·5 + 3·7 = 86; BAM's three modules (C = 256, 512,
# 1024; official layout with biases) add 17,361 + 68,513 + 272,193 = 358,067.
@pytest.mark.parametrize("attn, published, exact", [
    (None, 25.557e6, 25_557_032),
    ("se", 28.09e6, 28_088_024),
    ("cbam", 28.09e6, 28_088_024 + 16 * 100),
    ("eca", 25.557e6, 25_557_032 + 86),
    ("bam", 25.92e6, 25_557_032 + 358_067),
])
def test_imagenet_resnet50_parameter_counts(attn, published, exact):
    count = n_params(resnet50(attn))
    assert count == exact
    assert abs(count - published) / published < 0.002


def test_bam_sits_once_after_each_of_stages_1_to_3():
    model = resnet50("bam")
    bams = [m for m in model.modules() if isinstance(m, BottleneckAttention)]
    assert len(bams) == 3
    assert list(model.stage_attn) == ["layer1", "layer2", "layer3"]
    assert [m.channel[0].in_features for m in bams] == [256, 512, 1024]


def eca_kernels_per_stage(model) -> list[set[int]]:
    return [{block.attn.conv.kernel_size[0] for block in getattr(model, f"layer{i}")} for i in range(1, 5)]


def test_eca_adaptive_kernels_per_stage_and_override():
    assert eca_kernels_per_stage(resnet50("eca")) == [{5}, {5}, {5}, {7}]
    released = resnet50("eca", stage_kernel=3)  # the released ECA-Net50 weights' kernels
    assert eca_kernels_per_stage(released) == [{3}, {5}, {5}, {7}]
    assert n_params(released) == 25_557_032 + 80
    assert sum(isinstance(m, EfficientChannelAttention) for m in released.modules()) == 16


RESNET_PLACED = [name for name in list_attn() if ATTENTION.get(name).placement in ("block", "stage")]


@pytest.mark.parametrize("attn", [None, *RESNET_PLACED])
def test_cifar_resnet20_with_each_module_runs_on_fashion_mnist_shape(attn):
    torch.manual_seed(0)
    model = create_model("resnet20", 10, attn=attn, in_chans=1)
    if attn is not None:
        cls = ATTENTION.get(attn)
        expected = 9 if cls.placement == "block" else 2  # 3 stages × 3 blocks, or after stages 1–2
        assert sum(type(m) is cls for m in model.modules()) == expected
    x = torch.randn(2, 1, 28, 28)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x[:1])).all()


def test_attn_stages_limits_modules_to_the_given_stages():
    model = create_model("resnet20", 10, attn="se", in_chans=1, attn_stages=[2, 3])
    assert model.layer1[0].attn is None and model.layer2[0].attn is not None and model.layer3[2].attn is not None
    bam = create_model("resnet20", 10, attn="bam", in_chans=1, attn_stages=[2])
    assert list(bam.stage_attn) == ["layer2"]
    with pytest.raises(ValueError, match="attn_stages must be stage numbers 1..3"):
        create_model("resnet20", 10, attn="se", attn_stages=[4])


def test_conv_modules_replace_every_3x3_conv_of_the_chosen_stages():
    from attnvision.attention.sasa import SelfAttention2d

    model = create_model("resnet20", 10, attn="sasa", in_chans=1, attn_stages=[3],
                         attn_kw={"heads": 4, "kernel_size": 5})
    replaced = [m for m in model.modules() if isinstance(m, SelfAttention2d)]
    assert len(replaced) == 6  # 3 blocks × 2 convs of the last stage
    first = model.layer3[0].conv1
    assert (first.in_channels, first.out_channels, first.stride) == (32, 64, 2)
    assert torch.isfinite(model(torch.randn(2, 1, 28, 28))).all()
    # Bottleneck: only the middle 3×3 conv; BoTNet's placement (the last stage) of ImageNet ResNet-50
    r50 = create_model("resnet50", 1000, attn="sasa", attn_stages=[4])
    assert [type(b.conv2) for b in r50.layer4] == [SelfAttention2d] * 3
    assert isinstance(r50.layer4[0].conv1, torch.nn.Conv2d) and isinstance(r50.layer3[0].conv2, torch.nn.Conv2d)


def test_attention_modules_keep_their_own_init(monkeypatch):
    """The trunk's Kaiming init must not touch a conv inside an attention module (SASA's qkv)."""
    initialised = []
    monkeypatch.setattr(torch.nn.init, "kaiming_normal_", lambda w, **kw: initialised.append(w))
    model = create_model("resnet20", 10, attn="sasa", in_chans=1, attn_stages=[3])
    ids = {id(w) for w in initialised}
    assert id(model.layer2[0].conv1.weight) in ids
    assert not ids & {id(block.conv1.qkv.weight) for block in model.layer3}


def test_a_conv_module_without_stride_is_refused_at_strided_convs_only():
    with pytest.raises(ValueError, match="'aa' takes no stride.*attn_stages, e.g. \\[1\\]"):
        create_model("resnet20", 10, attn="aa", in_chans=1)
    model = create_model("resnet20", 10, attn="aa", in_chans=1, attn_stages=[1])
    assert type(model.layer1[0].conv1).__name__ == "AttentionAugmentedConv"

"""Attention modules and their registry.

Calling convention (as timm's ``create_attn``): ``create_attn(name, channels, **kw)`` builds a
module that maps (B, C, H, W) → (B, C, H, W) unless its docstring says otherwise. Each class has a
``placement`` attribute telling backbones where it goes:

- ``"block"``: inside every residual block, on the residual branch before the addition;
- ``"stage"``: once at the end of each stage except the last (BAM's bottleneck positions);
- ``"conv"``: a replacement for convolutions (SASA, AA-conv), used by models built around it
  (e.g. ``sanet20``); ResNets refuse it as ``attn``.

Explainability: a module whose attention can be shown implements ``attention_maps(x, queries)
-> dict[str, Tensor]`` for its own input x, computed with the same functions as its forward pass
(``attnvision.explain.capture`` lists the shapes per kind).

Every class also states its ``paper`` ("Authors, Venue Year") and its ``kind``: "channel",
"spatial", "channel+spatial" or "self-attention" (``attnvision list`` prints both).

A new mechanism is one new file in this folder plus one ``ATTENTION.add`` line below.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from ..registry import Registry
from .aa_conv import AttentionAugmentedConv
from .adaptive_pool import AdaptivePoolingAttention
from .bam import BAMChannelBranch, BAMSpatialBranch, BottleneckAttention
from .bottleneck_attn import BoTSelfAttention
from .cbam import CBAM, ChannelGate, SpatialGate
from .coord import CoordinateAttention
from .dual_attention import DualAttention
from .eca import EfficientChannelAttention
from .eca_variants import CircularEfficientChannelAttention, EfficientChannelAttentionMLP
from .ese import EffectiveSqueezeExcite
from .fca import DCTPooling, FrequencyChannelAttention
from .gate import CHANNEL_GATES, SPATIAL_GATES, Gate, SelfAttentionSpatialGate
from .gather_excite import GatherExcite
from .gct import GatedChannelTransform
from .global_context import AttentionPool, GlobalContext, GlobalContextScale
from .halo import HaloAttention
from .hybrid import ECACBAMParallel, ECACBAMSequential
from .lambda_layer import LambdaLayer
from .lcbam import LightCBAM
from .nonlocal_block import NonLocalBlock
from .pooling import PARAMETRIC_POOLS
from .residual_attention import ResidualAttentionModule
from .sasa import SelfAttention2d
from .se import SqueezeExcite
from .srm import StyleRecalibration
from .selective_kernel import SelectiveKernelConv
from .simam import SimAM
from .split_attention import SplitAttentionConv
from .triplet import TripletAttention

ATTENTION: Registry = Registry("attention module")
ATTENTION.add("se", SqueezeExcite)
ATTENTION.add("eca", EfficientChannelAttention)
ATTENTION.add("ecam", EfficientChannelAttentionMLP)
ATTENTION.add("ceca", CircularEfficientChannelAttention)
ATTENTION.add("ese", EffectiveSqueezeExcite)
ATTENTION.add("gct", GatedChannelTransform)
ATTENTION.add("srm", StyleRecalibration)
ATTENTION.add("fca", FrequencyChannelAttention)
ATTENTION.add("ge", GatherExcite)
ATTENTION.add("gc", GlobalContext)
ATTENTION.add("gc_scale", GlobalContextScale)
ATTENTION.add("cbam", CBAM)
ATTENTION.add("lcbam", LightCBAM)
ATTENTION.add("bam", BottleneckAttention)
ATTENTION.add("eca_cbam", ECACBAMSequential)
ATTENTION.add("eca_cbam_parallel", ECACBAMParallel)
ATTENTION.add("coord", CoordinateAttention)
ATTENTION.add("simam", SimAM)
ATTENTION.add("triplet", TripletAttention)
ATTENTION.add("gate", Gate)
ATTENTION.add("aa", AttentionAugmentedConv)
ATTENTION.add("nonlocal", NonLocalBlock)
ATTENTION.add("ran", ResidualAttentionModule)
ATTENTION.add("adaptive_pool", AdaptivePoolingAttention)
ATTENTION.add("sasa", SelfAttention2d)
ATTENTION.add("halo", HaloAttention)
ATTENTION.add("bottleneck", BoTSelfAttention)
ATTENTION.add("lambda", LambdaLayer)
ATTENTION.add("sk", SelectiveKernelConv)
ATTENTION.add("splat", SplitAttentionConv)
ATTENTION.add("danet", DualAttention)


def parse_attn(spec: str) -> tuple[str, dict]:
    """A module name, or a name with options in one string (for CLI flags, config files and study
    grids, where a module is one string): ``"gate:channel=eca,spatial=coord,order=parallel"`` →
    ("gate", {"channel": "eca", "spatial": "coord", "order": "parallel"}). Values: integers, floats,
    true/false, none, else strings."""
    name, _, options = spec.partition(":")
    kw = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"attention '{spec}': options are key=value separated by commas, e.g. "
                             "'gate:channel=eca,spatial=coord,order=parallel'")
        kw[key.strip()] = spec_value(value.strip())
    return name.strip(), kw


def spec_value(text: str) -> int | float | bool | str | None:
    special = {"true": True, "false": False, "none": None}
    if text.lower() in special:
        return special[text.lower()]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def attn_label(spec: str) -> str:
    """A short name for folders and tables: the name itself, or the name and the option values
    joined by "_" ("gate:channel=eca,spatial=coord,order=parallel" → "gate_eca_coord_parallel")."""
    name, kw = parse_attn(spec)
    return "_".join([name, *(str(v).lower() for v in kw.values())])


def attn_class(spec: str) -> type[nn.Module]:
    """The registered class of a module name or spec (its ``placement``, ``paper``, ``kind``)."""
    return ATTENTION.get(parse_attn(spec)[0])


def create_attn(name: str | None, channels: int, **kw) -> nn.Module | None:
    """Build the attention module registered as ``name`` for ``channels`` channels. ``name`` may
    carry options (``parse_attn``); ``kw`` is laid over them.

    A falsy name ("" or None) gives None, so callers can write ``create_attn(cfg.attn, c)``.
    An unknown name raises ValueError listing the valid names.
    """
    if not name:
        return None
    name, spec_kw = parse_attn(name)
    return ATTENTION.build(name, channels, **{**spec_kw, **kw})


def list_attn() -> list[str]:
    """Names of all registered attention modules, sorted."""
    return ATTENTION.names()


# The gate composer's parts (gate.py): name → constructor(channels, **kw) with gate(x) [and logits(x)].
CHANNEL_GATES.add("se", partial(ChannelGate, pool="avg"))
CHANNEL_GATES.add("eca", EfficientChannelAttention)
CHANNEL_GATES.add("bam", BAMChannelBranch)
CHANNEL_GATES.add("gct", GatedChannelTransform)
CHANNEL_GATES.add("srm", StyleRecalibration)
CHANNEL_GATES.add("fca", FrequencyChannelAttention)
CHANNEL_GATES.add("ge", GatherExcite)
CHANNEL_GATES.add("gc", GlobalContextScale)
PARAMETRIC_POOLS["dct"] = DCTPooling
PARAMETRIC_POOLS["attn"] = AttentionPool
SPATIAL_GATES.add("cbam", SpatialGate)
SPATIAL_GATES.add("bam", BAMSpatialBranch)
SPATIAL_GATES.add("sasa", SelfAttentionSpatialGate)
SPATIAL_GATES.add("coord", CoordinateAttention)
SPATIAL_GATES.add("simam", SimAM)
SPATIAL_GATES.add("triplet", TripletAttention)


KINDS = ("channel", "spatial", "channel+spatial", "self-attention")


def describe_attn(name: str) -> dict[str, str | bool]:
    """What ``attnvision list`` shows of a module: its paper, kind, placement and whether it has
    parameters (counted on a 64-channel instance with default options)."""
    cls = ATTENTION.get(name)
    return {"name": name, "paper": cls.paper, "kind": cls.kind, "placement": cls.placement,
            "parameter_free": not any(True for _ in create_attn(name, 64).parameters())}

"""The gate composer: the named channel+spatial modules are exact instances of it, checkpoints from
before it load unchanged, its equations, its errors, and its spellings (CLI spec, study grid)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnvision import create_attn, create_model
from attnvision.attention import attn_label, parse_attn
from attnvision.attention.gate import CHANNEL_GATES, SPATIAL_GATES, Gate

C = 32
FIXTURE = Path(__file__).parent / "fixtures" / "attention_before_composer.pt"


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def trained(m: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial weights and BN statistics: a few SGD steps in float64, then eval."""
    m = m.double()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        (m(torch.randn(4, C, 5, 7, dtype=torch.float64)) * torch.randn(4, C, 5, 7, dtype=torch.float64)).sum().backward()
        opt.step()
    return m.eval()


# name, its options, the composer's arguments, how the named module's keys map to the composer's
INSTANCES = [
    ("se", {}, {"channel": "se", "spatial": None}, {"fc1.": "channel.mlp.0.", "fc2.": "channel.mlp.2."}),
    ("eca", {}, {"channel": "eca", "spatial": None}, {"conv.": "channel.conv."}),
    ("cbam", {"rd_ratio": 1 / 8}, {"channel": "se", "pool": "avgmax", "spatial": "cbam",
                                   "channel_kw": {"rd_ratio": 1 / 8}}, {}),
    ("bam", {}, {"channel": "bam", "spatial": "bam", "order": "parallel", "combine": "sum", "residual": True}, {}),
    ("bam", {"combine": "product"}, {"channel": "bam", "spatial": "bam", "order": "parallel",
                                     "combine": "logit_product", "residual": True}, {}),
    ("eca_cbam", {}, {"channel": "eca", "spatial": "cbam"}, {}),
    ("eca_cbam_parallel", {}, {"channel": "eca", "spatial": "cbam", "order": "parallel"}, {}),
]


@pytest.mark.parametrize("name, kw, composed, renamed", INSTANCES)
def test_named_modules_are_exact_instances_of_the_composer(name, kw, composed, renamed):
    torch.manual_seed(0)
    named = trained(create_attn(name, C, **kw))
    gate = Gate(C, **composed).double().eval()
    state = {}
    for key, value in named.state_dict().items():
        for old, new in renamed.items():
            key = key.replace(old, new) if key.startswith(old) else key
        state[key] = value
    gate.load_state_dict(state)  # strict: the same parameters and buffers, no more, no fewer
    assert n_params(gate) == n_params(named)
    x = torch.randn(2, C, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(gate(x), named(x))
        maps, named_maps = gate.attention_maps(x, None), named.attention_maps(x, None)
    assert maps.keys() == named_maps.keys()
    for key in maps:
        torch.testing.assert_close(maps[key], named_maps[key], rtol=0, atol=1e-15)


def test_checkpoints_from_before_the_composer_load_and_give_the_same_outputs():
    """tests/fixtures/make_attention_before_composer.py trained these with the code before CBAM, BAM
    and the ECA+CBAM hybrids became instances of the composer (commit 923b129)."""
    saved = torch.load(FIXTURE)
    assert len(saved["modules"]) == 7
    for key, entry in saved["modules"].items():
        m = create_attn(entry["name"], C, **entry["kw"]).double().eval()
        m.load_state_dict(entry["state_dict"])
        with torch.no_grad():
            assert torch.equal(m(saved["x"]), entry["eval_output"]), key


def test_parallel_combinations_and_residual_follow_their_equations():
    torch.manual_seed(0)
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    kw = {"channel": "eca", "spatial": "cbam", "order": "parallel"}
    product, summed, logit_product = (Gate(C, combine=c, **kw).double().eval() for c in ("product", "sum", "logit_product"))
    summed.load_state_dict(product.state_dict())
    logit_product.load_state_dict(product.state_dict())
    residual = Gate(C, residual=True, **kw).double().eval()
    residual.load_state_dict(product.state_dict())
    with torch.no_grad():
        a_c, a_s = product.channel.logits(x), product.spatial.logits(x)
        torch.testing.assert_close(product(x), x * a_c.sigmoid() * a_s.sigmoid())
        torch.testing.assert_close(summed(x), x * (a_c + a_s).sigmoid())
        torch.testing.assert_close(logit_product(x), x * (a_c * a_s).sigmoid())
        torch.testing.assert_close(residual(x), x + product(x))
        sequential = Gate(C, channel="eca", spatial="cbam").double().eval()
        sequential.load_state_dict(product.state_dict())
        x1 = x * a_c.sigmoid()
        torch.testing.assert_close(sequential(x), x1 * sequential.spatial.gate(x1))


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax", "std"])
@pytest.mark.parametrize("channel", ["se", "eca"])
def test_channel_pooling_rules(channel, pool):
    torch.manual_seed(0)
    gate = Gate(C, channel=channel, spatial=None, pool=pool).double()
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    descriptors = {"avg": [x.mean((2, 3), keepdim=True)], "max": [x.amax((2, 3), keepdim=True)],
                   "std": [(x.var((2, 3), correction=0, keepdim=True) + 1e-5).sqrt()]}
    descriptors["avgmax"] = descriptors["avg"] + descriptors["max"]
    part = gate.channel
    if channel == "se":
        expected = sum(part.mlp(d) for d in descriptors[pool])
    else:
        expected = sum(part.conv(d.view(2, 1, C)).view(2, C, 1, 1) for d in descriptors[pool])
    torch.testing.assert_close(part.logits(x), expected)
    torch.testing.assert_close(gate(x), x * expected.sigmoid())
    assert torch.isfinite(Gate(C, channel=channel, spatial=None, pool=pool)(torch.randn(2, C, 1, 1))).all()


def test_sasa_spatial_part_is_a_map_over_positions():
    torch.manual_seed(0)
    gate = Gate(C, channel="eca", spatial="sasa", order="parallel", combine="sum")
    x = torch.randn(2, C, 7, 9)
    maps = gate.attention_maps(x, None)
    assert maps["spatial"].shape == (2, 1, 7, 9) and maps["channel"].shape == (2, C)
    assert gate(x).shape == x.shape


@pytest.mark.parametrize("kw, message", [
    ({"order": "diagonal"}, "unknown gate order 'diagonal'"),
    ({"combine": "mean"}, "unknown gate combine 'mean'"),
    ({"channel": None, "spatial": None}, "needs a channel part, a spatial part or both"),
    ({"combine": "sum"}, "needs order='parallel' and both"),
    ({"channel": None, "pool": "max"}, "has no channel part"),
    ({"channel": "mlp"}, "unknown channel gate 'mlp'; valid names: .*eca"),
    ({"spatial": "cbam7"}, "unknown spatial gate 'cbam7'; valid names: .*cbam"),
    ({"pool": "median"}, "unknown pooling 'median'; valid: avg, max, avgmax, std"),
    ({"channel_kw": {"ratio": 4}}, "channel gate 'se'.*takes: channels, rd_ratio, rd_channels, pool"),
])
def test_bad_arguments_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        Gate(C, **kw)


def test_sum_needs_parts_that_have_logits(monkeypatch):
    class ProductOnly(torch.nn.Module):  # a gate that is not σ(logits), e.g. GCT's 1 + tanh
        def __init__(self, channels):
            super().__init__()

        def gate(self, x):
            return torch.ones_like(x[:, :1])

    monkeypatch.setitem(SPATIAL_GATES._entries, "product_only", ProductOnly)
    with pytest.raises(ValueError, match="'product_only' is not σ\\(logits\\); use combine='product'"):
        Gate(C, channel="se", spatial="product_only", order="parallel", combine="sum")
    assert Gate(C, channel="se", spatial="product_only", order="parallel")(torch.randn(2, C, 3, 3)).shape == (2, C, 3, 3)


def test_spec_strings_name_a_composed_gate_in_one_string():
    spec = "gate:channel=eca,spatial=sasa,order=parallel,combine=sum,residual=true"
    assert parse_attn(spec) == ("gate", {"channel": "eca", "spatial": "sasa", "order": "parallel",
                                         "combine": "sum", "residual": True})
    assert parse_attn("se:rd_ratio=0.25,rd_channels=none") == ("se", {"rd_ratio": 0.25, "rd_channels": None})
    assert attn_label(spec) == "gate_eca_sasa_parallel_sum_true"
    gate = create_attn(spec, C)
    assert isinstance(gate, Gate) and gate.residual and gate.combine == "sum"
    model = create_model("resnet20", 10, attn="gate:channel=se,spatial=bam,order=parallel", in_chans=1)
    assert sum(isinstance(m, Gate) for m in model.modules()) == 9
    assert torch.isfinite(model(torch.randn(2, 1, 28, 28))).all()
    with pytest.raises(ValueError, match="options are key=value separated by commas"):
        create_attn("gate:eca", C)


def test_parts_registries_list_the_parts():
    assert CHANNEL_GATES.names() == ["bam", "eca", "fca", "gc", "gct", "ge", "se", "srm"]
    assert SPATIAL_GATES.names() == ["bam", "cbam", "coord", "sasa", "simam", "triplet"]


@pytest.mark.parametrize("channel", CHANNEL_GATES.names())
@pytest.mark.parametrize("spatial", SPATIAL_GATES.names())
def test_every_channel_part_composes_with_every_spatial_part(channel, spatial):
    torch.manual_seed(0)
    for order in ("sequential", "parallel"):
        gate = Gate(C, channel=channel, spatial=spatial, order=order)
        x = torch.randn(2, C, 7, 9, requires_grad=True)
        out = gate(x)
        assert out.shape == x.shape
        (out * torch.randn_like(out)).sum().backward()
        assert torch.isfinite(x.grad).all()
        maps = gate.eval().attention_maps(x.detach(), None)
        assert maps["channel"].shape == (2, C) and maps["spatial"].shape == (2, 1, 7, 9)


@pytest.mark.parametrize("pool", ["dct", "attn"])
@pytest.mark.parametrize("channel", ["se", "eca"])
def test_parametric_pools_feed_the_mlp_and_conv_gates(channel, pool):
    torch.manual_seed(0)
    gate = Gate(C, channel=channel, spatial=None, pool=pool).double()
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    descriptor = gate.channel.pool(x)
    assert len(descriptor) == 1 and descriptor[0].shape == (2, C, 1, 1)
    torch.testing.assert_close(gate(x), x * gate.channel.gate(x))


def test_cli_lists_keep_a_spec_with_commas_whole():
    from attnvision.cli import parse_list

    assert parse_list("attn", "none,gate:channel=eca,spatial=cbam,order=parallel,se") == [
        None, "gate:channel=eca,spatial=cbam,order=parallel", "se"]


def test_a_fused_part_gives_the_plain_product_in_the_composer():
    torch.manual_seed(0)
    x = torch.randn(2, C, 5, 7, dtype=torch.float64, requires_grad=True)
    for gate in (Gate(C, channel="eca", spatial="simam").double(), Gate(C, channel=None, spatial="simam")):
        y = gate(x)
        x1 = x if gate.channel is None else x * gate.channel.gate(x)
        plain = x1 * gate.spatial.gate(x1)
        torch.testing.assert_close(y, plain)
        g = torch.randn_like(y)
        torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(plain, x, g)[0])

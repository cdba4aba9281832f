"""Tests for attnvision.profile: parameter and MAC counts against hand computation and published
numbers (torchvision's model pages, He et al. 2016 §4.2), latency and profile_model plumbing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnvision import create_model
from attnvision.profile import (MACS_CONVENTION, count_macs, count_params, measure_latency, profile_model,
                                train_step_time, training_memory)


class ConvLinear(nn.Module):
    """conv 3→8 (3×3, pad 1) → grouped strided conv 8→8 (groups 4, stride 2) → BN/ReLU → GAP → fc 8→5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gconv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.gconv(self.conv(x))))
        return self.fc(x.mean((2, 3)))


class TinyAttention(nn.Module):
    """ECA-style conv1d over the channel descriptor plus three token-attention products written
    with einsum, bmm and SDPA (2 heads). (B, C, H, W) → (B, C, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        gate = self.conv(x.mean((2, 3)).unsqueeze(1)).sigmoid().view(b, c, 1, 1)
        t = x.flatten(2).transpose(1, 2)  # (B, N, C)
        attn = torch.einsum("bnc,bmc->bnm", t, t).softmax(-1)
        t = torch.bmm(attn, t)
        q = t.reshape(b, h * w, 2, c // 2).transpose(1, 2)  # (B, 2, N, C/2)
        t = F.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(b, h * w, c)
        return x * gate + t.transpose(1, 2).reshape(b, c, h, w)


class ModeProbe(nn.Module):
    """Records the train flag and inference-mode state seen by forward."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, torch.is_inference_mode_enabled()))
        return self.lin(x)


def test_macs_conv_linear_by_hand():
    # (3, 7, 5) input, H≠W, odd: conv 8·3·9 per pixel × 35 pixels; grouped conv 8·(8/4)·9 × 4·3
    # output pixels; fc 8·5. Biases, BN, ReLU and the mean are not counted.
    expected = 8 * 3 * 9 * 35 + 8 * 2 * 9 * 12 + 8 * 5
    assert count_macs(ConvLinear(), (3, 7, 5)) == expected == 9328


def test_macs_count_attention_products():
    # C = 4, N = 3·5 = 15 tokens: conv1d C·3; einsum q·kᵀ N·N·C; bmm attn·v N·N·C;
    # SDPA 2 heads × (N·N·C/2 + N·N·C/2). Softmax, sigmoid and products with the gate not counted.
    c, n = 4, 15
    assert count_macs(TinyAttention(), (c, 3, 5)) == c * 3 + 4 * n * n * c == 3612


def test_resnet50_matches_torchvision_published_cost():
    with torch.device("meta"):  # shapes only: counting needs no weights or arithmetic
        model = create_model("resnet50", 1000)
    macs = count_macs(model, (3, 224, 224))
    assert 4.0e9 <= macs <= 4.2e9
    assert round(macs / 1e9, 2) == 4.09  # torchvision ResNet50_Weights "GFLOPS" (multiply-adds)
    assert macs == 4_089_184_256
    assert count_params(model) == 25_557_032  # torchvision num_params


def test_resnet18_matches_torchvision_published_cost():
    with torch.device("meta"):
        model = create_model("resnet18", 1000)
    assert round(count_macs(model, (3, 224, 224)) / 1e9, 2) == 1.81
    assert count_params(model) == 11_689_512


def test_count_params_counts_shared_parameters_once():
    lin = nn.Linear(3, 3)
    assert count_params(nn.Sequential(lin, lin)) == 12
    assert count_params(nn.ReLU()) == 0


def test_count_macs_runs_in_eval_and_restores_mode():
    probe = ModeProbe().train()
    count_macs(probe, (4,))
    assert probe.seen == [(False, False)] and probe.training
    probe.eval()
    count_macs(probe, (4,))
    assert not probe.training


@pytest.mark.parametrize("size", [(), (3, 0, 4), (3, 4.0, 4), [3, -1]])
def test_count_macs_rejects_bad_input_size(size):
    with pytest.raises(ValueError, match="input_size"):
        count_macs(ConvLinear(), size)


def test_measure_latency_positive_and_mode_handling():
    probe = ModeProbe().train()
    ms = measure_latency(probe, torch.randn(2, 4), warmup=1, repeats=3)
    assert isinstance(ms, float) and ms > 0
    assert probe.seen == [(False, True)] * 4  # 1 warm-up + 3 timed calls, eval + inference mode
    assert probe.training


@pytest.mark.parametrize("kw", [{"repeats": 0}, {"warmup": -1}])
def test_measure_latency_rejects_bad_counts(kw):
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(ModeProbe(), torch.randn(1, 4), **kw)


def test_train_step_time_trains_the_model():
    model = nn.Linear(4, 2).eval()
    before = model.weight.detach().clone()
    seconds = train_step_time(model, torch.randn(3, 4), lambda out: out.square().mean(), steps=2)
    assert isinstance(seconds, float) and seconds > 0
    assert model.training and not torch.equal(model.weight, before)  # 1 warm-up + 2 timed SGD steps
    with pytest.raises(ValueError, match="steps"):
        train_step_time(model, torch.randn(3, 4), lambda out: out.sum(), steps=0)


def test_profile_model_small_resnet():
    out = profile_model("resnet20", img_size=32, num_classes=10, repeats=1, warmup=0)
    required = {"model", "attn", "img_size", "params", "macs", "latency_ms_b1", "latency_ms_b32",
                "macs_convention", "threads", "device"}
    assert required <= out.keys()
    model = create_model("resnet20", 10)
    assert out["params"] == count_params(model) == 272_474
    assert out["macs"] == count_macs(model, (3, 32, 32))
    assert out["latency_ms_b1"] > 0 and out["latency_ms_b32"] > 0
    assert (out["model"], out["attn"], out["img_size"], out["device"]) == ("resnet20", None, 32, "cpu")
    assert out["macs_convention"] == MACS_CONVENTION
    assert out["threads"] == torch.get_num_threads()


def test_profile_model_passes_model_kwargs():
    # He et al. 2016 §4.2: ResNet-20 with option-A (parameter-free) shortcuts has 0.27M parameters.
    out = profile_model("resnet20", img_size=32, num_classes=10, batch_sizes=(2,), repeats=1, warmup=0,
                        shortcut="A")
    assert out["params"] == 269_722
    assert "latency_ms_b2" in out and "latency_ms_b1" not in out


def test_profile_model_rejects_bad_sizes():
    with pytest.raises(ValueError, match="img_size"):
        profile_model("resnet20", img_size=0, num_classes=10)
    with pytest.raises(ValueError, match="batch_sizes"):
        profile_model("resnet20", img_size=32, num_classes=10, batch_sizes=(0,))


def test_macs_of_a_head_that_feeds_parameters_as_inputs():
    """Query2Label passes its label queries (parameters) into decoder layers; counting must work."""
    model = create_model("resnet20", 5, in_chans=1, head="query2label")
    assert count_macs(model, (1, 28, 28)) > count_macs(create_model("resnet20", 5, in_chans=1), (1, 28, 28))


def test_training_memory_counts_saved_activations_and_optimizer_state():
    linear = nn.Linear(10, 10)
    x = torch.randn(4, 10)
    memory = training_memory(linear, x, lambda out: out.square().sum())
    # Linear saves its input for backward (its weight is a parameter, counted with parameters);
    # square() saves its input, the linear output: 2 × 4 × 10 float32
    assert memory["activations"] == 2 * 4 * 10 * 4
    assert memory["parameters"] == 3 * (10 * 10 + 10) * 4  # weights, gradients, momentum
    assert memory["peak"] == memory["activations"] + memory["parameters"]
    assert linear.weight.grad is None  # leaves no gradients behind


def test_attention_gates_add_training_memory():
    from attnvision.profile import training_memory

    x = torch.randn(8, 1, 28, 28)
    loss = lambda out: out.sum()  # noqa: E731
    plain = training_memory(create_model("resnet20", 10, in_chans=1), x, loss)["activations"]
    se = training_memory(create_model("resnet20", 10, attn="se", in_chans=1), x, loss)["activations"]
    assert 1.05 * plain < se < 2 * plain


def test_latency_samples_are_one_per_timed_call():
    from attnvision.profile import latency_samples

    times = latency_samples(nn.Linear(4, 4), torch.randn(2, 4), warmup=1, repeats=5)
    assert len(times) == 5 and all(t > 0 for t in times)


def test_training_step_of_a_label_sequence_model_runs_its_own_objective_on_the_targets():
    model = create_model("resnet20", 4, head="sat", in_chans=1)
    x, targets = torch.randn(4, 1, 16, 16), torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1.]])
    with pytest.raises(ValueError, match="pass the batch's targets"):
        train_step_time(model, x, lambda out: out.sum(), steps=1)
    assert train_step_time(model, x, lambda out: out.sum(), steps=1, targets=targets) > 0
    memory = training_memory(model, x, lambda out: out.sum(), targets)
    assert memory["activations"] > 0 and memory["peak"] == memory["activations"] + memory["parameters"]

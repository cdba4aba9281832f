"""Tests for attnvision.load_weights with files in torchvision's exact format: a torch.save'd
state dict named as in torchvision's models/resnet.py (classifier at ``fc.*``)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from attnvision import create_model, load_weights


def torchvision_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under torchvision's names (``head.fc.*`` → ``fc.*``)."""
    return {k.replace("head.fc.", "fc.", 1) if k.startswith("head.fc.") else k: v.clone()
            for k, v in model.state_dict().items()}


def load_quietly(model: nn.Module, path) -> dict:
    """load_weights with every warning turned into an error (a clean load must not warn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_weights(model, path)


# Names and shapes in torchvision's resnet18/resnet50 state dicts (torchvision models/resnet.py:
# BatchNorm has weight, bias, running_mean, running_var, num_batches_tracked; the projection
# shortcut is downsample.0 (1×1 conv) + downsample.1 (BN); the classifier is fc).
TORCHVISION_KEYS = {
    "resnet18": (122, {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_var": (64,),
        "layer1.0.bn1.num_batches_tracked": (),
        "layer1.1.conv2.weight": (64, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.running_mean": (128,),
        "layer4.1.bn2.bias": (512,),
        "fc.weight": (1000, 512),
        "fc.bias": (1000,),
    }),
    "resnet50": (320, {
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),  # v1.5: stride on the 3×3 conv
        "layer3.5.bn3.weight": (1024,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "layer4.2.bn3.num_batches_tracked": (),
        "fc.weight": (1000, 2048),
    }),
}


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_key_names_and_counts_match_torchvision(name):
    count, known = TORCHVISION_KEYS[name]
    with torch.device("meta"):  # names and shapes only
        state = torchvision_state_dict(create_model(name, 1000))
    assert len(state) == count
    assert {k: tuple(state[k].shape) for k in known} == known
    assert not any(k.startswith("head.") for k in state)


def test_loads_torchvision_file_into_se_model(tmp_path, capsys):
    source = create_model("resnet18", 1000)
    file_state = torchvision_state_dict(source)
    torch.save(file_state, tmp_path / "resnet18.pth")
    model = create_model("resnet18", 1000, attn="se")
    result = load_quietly(model, tmp_path / "resnet18.pth")

    se_keys = [k for k in model.state_dict() if ".attn." in k]
    assert len(se_keys) == 32  # 8 blocks × (fc1, fc2) × (weight, bias)
    assert result == {"loaded": 122, "missing_attention": se_keys, "missing": [], "unexpected": [],
                      "mismatched": []}
    loaded = model.state_dict()
    for k, v in file_state.items():
        assert torch.equal(loaded[k.replace("fc.", "head.fc.", 1) if k.startswith("fc.") else k], v), k
    assert capsys.readouterr().out == ""


def test_legacy_file_without_batch_counters(tmp_path):
    # torchvision's original download files predate BatchNorm's num_batches_tracked buffer.
    state = {k: v for k, v in torchvision_state_dict(create_model("resnet20", 10)).items()
             if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "legacy.pth")
    model = create_model("resnet20", 10)
    result = load_quietly(model, tmp_path / "legacy.pth")
    assert result["loaded"] == len(state) and result["missing"] == [] and result["unexpected"] == []
    assert torch.equal(model.head.fc.weight, state["fc.weight"])


@pytest.mark.parametrize("wrap", [
    lambda sd: {"module." + k: v for k, v in sd.items()},
    lambda sd: {"epoch": 90, "state_dict": {"module." + k: v for k, v in sd.items()}},
    lambda sd: {"format": "attnvision-checkpoint", "model": sd},
], ids=["dataparallel", "state_dict-wrapper", "model-wrapper"])
def test_unwraps_checkpoints_and_strips_dataparallel_prefix(tmp_path, wrap):
    source = create_model("resnet20", 10)
    state = torchvision_state_dict(source)
    torch.save(wrap(state), tmp_path / "w.pth")
    model = create_model("resnet20", 10)
    result = load_quietly(model, tmp_path / "w.pth")
    assert result["loaded"] == len(state) and result["missing"] == [] and result["unexpected"] == []
    assert torch.equal(model.conv1.weight, source.conv1.weight)


def test_attnvision_names_load_unchanged(tmp_path):
    source = create_model("resnet20", 10)
    torch.save(source.state_dict(), tmp_path / "own.pth")
    model = create_model("resnet20", 10)
    assert load_quietly(model, tmp_path / "own.pth")["loaded"] == len(source.state_dict())
    assert torch.equal(model.head.fc.bias, source.head.fc.bias)


def test_shape_mismatch_is_refused_with_every_key(tmp_path):
    torch.save(torchvision_state_dict(create_model("resnet20", 100)), tmp_path / "c100.pth")
    model = create_model("resnet20", 10)
    before = model.conv1.weight.clone()
    with pytest.raises(ValueError) as err:
        load_weights(model, tmp_path / "c100.pth")
    message = str(err.value)
    for text in ("head.fc.weight: file (100, 64) vs model (10, 64)", "head.fc.bias: file (100,) vs model (10,)",
                 "num_classes", "strict_shapes=False", "c100.pth"):
        assert text in message
    assert torch.equal(model.conv1.weight, before)  # nothing copied before refusing


def test_shape_mismatch_skipped_when_not_strict(tmp_path):
    source = create_model("resnet20", 100)
    torch.save(torchvision_state_dict(source), tmp_path / "c100.pth")
    model = create_model("resnet20", 10)
    head = model.head.fc.weight.clone()
    with pytest.warns(UserWarning, match="2 mismatched"):
        result = load_weights(model, tmp_path / "c100.pth", strict_shapes=False)
    assert result["mismatched"] == ["head.fc.bias", "head.fc.weight"]
    assert result["missing"] == [] and result["loaded"] == len(source.state_dict()) - 2
    assert torch.equal(model.head.fc.weight, head)
    assert torch.equal(model.layer3[2].conv2.weight, source.layer3[2].conv2.weight)


def test_missing_and_unexpected_keys_are_reported_with_a_warning(tmp_path):
    state = torchvision_state_dict(create_model("resnet20", 10))
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "r20.pth")
    model = create_model("resnet32", 10)  # 5 blocks per stage instead of 3
    with pytest.warns(UserWarning, match="missing.*unexpected"):
        result = load_weights(model, tmp_path / "r20.pth")
    assert result["unexpected"] == ["extra.weight"]
    assert "layer1.3.conv1.weight" in result["missing"] and "layer3.4.bn2.bias" in result["missing"]
    assert result["missing_attention"] == [] and result["loaded"] == len(state) - 1


def test_stage_attention_keys_are_reported_apart(tmp_path):
    class Staged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3)
            self.stage_attn = nn.ModuleDict({"layer1": nn.Conv2d(4, 4, 1)})

    torch.save({"conv1.weight": torch.ones(4, 3, 3, 3), "conv1.bias": torch.ones(4)}, tmp_path / "s.pth")
    result = load_quietly(Staged(), tmp_path / "s.pth")
    assert result["missing_attention"] == ["stage_attn.layer1.weight", "stage_attn.layer1.bias"]
    assert result["missing"] == [] and result["loaded"] == 2


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_weights(create_model("resnet20", 10), tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError):
        load_weights(create_model("resnet20", 10), tmp_path)


@pytest.mark.parametrize("kind", ["text", "truncated", "empty", "random"])
def test_corrupt_file(tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    if kind == "text":
        path.write_text("conv1.weight 0.1 0.2\n")
    elif kind == "truncated":
        torch.save(torchvision_state_dict(create_model("resnet20", 10)), path)
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                         .to(torch.uint8).numpy().tobytes())
    with pytest.raises(ValueError, match="not a readable PyTorch weight file") as err:
        load_weights(create_model("resnet20", 10), path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("obj, match", [
    (torch.zeros(3), "holds no state dict"),
    ({}, "holds no state dict"),
    ({"conv1.weight": torch.zeros(1), "note": "hello"}, "not name → tensor pairs"),
])
def test_file_without_a_state_dict(tmp_path, obj, match):
    torch.save(obj, tmp_path / "x.pth")
    with pytest.raises(ValueError, match=match):
        load_weights(create_model("resnet20", 10), tmp_path / "x.pth")

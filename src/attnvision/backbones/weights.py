"""Loading torchvision-format weight files into attnvision models.

A torchvision-format file is a ``torch.save``'d state dict whose keys follow torchvision's
``models/resnet.py`` (``conv1.weight``, ``layer2.0.downsample.0.weight``, ``fc.bias``, …). Also
accepted: that dict wrapped under ``"state_dict"`` or ``"model"`` (training checkpoints,
attnvision checkpoints) and keys carrying DataParallel's ``module.`` prefix.

Key mapping: attnvision ResNets use torchvision's names except the classifier, which lives in the
head (``head.fc.*`` instead of ``fc.*``). Attention parameters (``*.attn.*`` inside blocks,
``stage_attn.*`` after stages) have no torchvision counterpart, so they keep their initial values
and are reported apart from other missing keys.

BatchNorm ``num_batches_tracked`` counters absent from the file (torchvision's original 2017
files predate them) are not reported missing: BatchNorm fills them in itself when loading, and
they do not affect eval-mode outputs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import read_torch_file

def _is_attention_key(key: str) -> bool:
    return ".attn." in key or key.startswith("stage_attn.")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load ``path`` and unwrap it to a flat {name: tensor} dict, raising clear errors."""
    obj = read_torch_file(path, "weight file")
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj:
        found = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path} holds no state dict (found {found}); expected a torch.save'd model.state_dict()")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path} is not a state dict: entries {bad[:5]} are not name → tensor pairs")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def key_summary(what: str, keys: list[str], shown: int = 3) -> str:
    """"2 missing (e.g. a, b)": a count and the first few names, not kilobytes of them."""
    return f"{len(keys)} {what} (e.g. {', '.join(keys[:shown])}{', …' if len(keys) > shown else ''})"


def state_dict_differences(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Why ``state`` does not load into ``model``: missing, unexpected and reshaped keys, summarised."""
    own = model.state_dict()
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(own.keys() & state.keys()) if state[k].shape != own[k].shape]
    parts = [key_summary(what, keys) for what, keys in (("missing", sorted(own.keys() - state.keys())),
                                                        ("unexpected", sorted(state.keys() - own.keys())),
                                                        ("of another shape", shapes)) if keys]
    return "; ".join(parts) or "no key differences"


def _to_attnvision_name(key: str) -> str:
    """torchvision's classifier ``fc.*`` is attnvision's ``head.fc.*``; every other name is shared."""
    return "head." + key if key.startswith("fc.") else key


def load_weights(model: nn.Module, path: str | Path, strict_shapes: bool = True, classifier: bool = True) -> dict:
    """Copy the tensors of a torchvision-format file at ``path`` into ``model`` (in place).
    ``classifier=False`` leaves the file's classifier (``fc.*``) out: a backbone pretrained on other
    classes (ImageNet's 1000) under a new head.

    Returns {"loaded": number of tensors copied, "missing_attention": attention keys of the model
    absent from the file (expected), "missing": other model keys absent from the file,
    "unexpected": file keys (attnvision names) the model lacks, "mismatched": keys left out for
    their shape (only with ``strict_shapes=False``)}. Non-empty "missing", "unexpected" or
    "mismatched" also raise a ``UserWarning``; nothing is printed.

    A key whose shape differs between file and model raises ValueError listing every such key,
    unless ``strict_shapes=False``, which leaves those tensors at their current values (e.g. to
    fine-tune ImageNet weights with a new classifier).
    """
    path = Path(path)
    state = {_to_attnvision_name(k): v for k, v in _read_state_dict(path).items() if classifier or not k.startswith("fc.")}
    own = model.state_dict()
    mismatched = sorted(k for k in state.keys() & own.keys() if state[k].shape != own[k].shape)
    if mismatched and strict_shapes:
        details = "\n  ".join(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                               for k in mismatched)
        raise ValueError(
            f"{path}: {len(mismatched)} tensor(s) have a different shape in the model:\n  {details}\n"
            "Build the model to match the file (e.g. num_classes=1000 for an ImageNet classifier), "
            "or pass strict_shapes=False to keep the model's own values for these tensors."
        )
    for k in mismatched:
        del state[k]
    loaded = len(state.keys() & own.keys())
    result = model.load_state_dict(state, strict=False)
    # without the file's classifier, the model's head keeps its own initialisation: not missing
    missing = [k for k in result.missing_keys if k not in mismatched and (classifier or not k.startswith("head."))]
    report = {
        "loaded": loaded,
        "missing_attention": [k for k in missing if _is_attention_key(k)],
        "missing": [k for k in missing if not _is_attention_key(k)],
        "unexpected": list(result.unexpected_keys),
        "mismatched": mismatched,
    }
    problems = [key_summary(k, report[k]) for k in ("missing", "unexpected", "mismatched") if report[k]]
    if problems:
        warnings.warn(f"loading {path}: " + "; ".join(problems), stacklevel=2)
    return report

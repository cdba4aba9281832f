"""Verified export of a trained model to ONNX or TorchScript, with the run's preprocessing recorded
and the exported model's outputs checked against PyTorch's on the run's own test images.

What is exported: the checkpoint's evaluated weights (``evaluate.load_run``) in eval mode, on the
CPU in float32, as one forward pass ``model(x)``:

    input  "image"   float32 (B, C, H, W): pixel values / 255, then (x − mean) / std per channel
    output "logits"  float32 (B, K): class scores before softmax (single-label data) or sigmoid
                     (multi-label data), in the order of "class_names"

Metadata (ONNX: ``metadata_props``, each value JSON text; TorchScript: the extra file
``attnvision.json``, one JSON object with the same keys): "mean", "std" (per channel, [0, 1]
scale), "input_size" [C, H, W], "class_names", "task" ("single" or "multilabel"), "batch_size"
(1, or null for any), "tta_hflip", "model", "attn", "head" (null: the model's own).

How the graph is written, its batch size, the exporter's limits and the verification's tolerance:
``exported.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import atomic_write_bytes
from .config import TrainConfig
from .data import BatchLoader, DatasetBundle, first_images
from .evaluate import load_run
from .exported import check_format, export_model, load_exported, verify

VERIFY_IMAGES = 32  # the first test images, the verification's inputs


def export_checkpoint(checkpoint: str | Path, out: str | Path, format: str = "onnx", dynamic_batch: bool = False,
                      data_dir: str | None = None) -> dict:
    """Export the model of ``checkpoint`` to ``out``, verified on the first ``VERIFY_IMAGES`` test
    images of its run's data; ``out`` is written only when the verification passes.

    Returns {"out", "format", "dynamic_batch", "metadata", and ``verify``'s "images",
    "max_abs_diff", "max_abs_logit", "tolerance", "top1_agreement"}. Raises ExportError (a
    ValueError) naming the operator or the difference and the fix, FileNotFoundError for a missing
    checkpoint."""
    check_format(format)
    if Path(out).is_dir():
        raise ValueError(f"--out {out} is a folder: give a file name such as model.onnx")
    cfg, bundle, model, _, _ = load_run(checkpoint, data_dir)
    model = model.cpu().float().to(memory_format=torch.contiguous_format)
    images = verification_images(bundle)
    metadata = export_metadata(cfg, bundle, dynamic_batch)
    data = export_model(model, images, format, dynamic_batch, metadata)
    result = verify(load_exported(data, format), model, images, dynamic_batch)
    atomic_write_bytes(out, data)
    return {"out": str(out), "format": format, "dynamic_batch": dynamic_batch, **result, "metadata": metadata}


def verification_images(bundle: DatasetBundle, count: int = VERIFY_IMAGES) -> torch.Tensor:
    """The first ``count`` test images, scaled and normalised as ``attnvision eval`` feeds them:
    float32 (N, C, H, W)."""
    if len(bundle.test) == 0:
        raise ValueError(f"dataset {bundle.name} has no test images to verify the export on")
    split = first_images(bundle.test, count)
    return next(iter(BatchLoader(split, len(split), bundle.mean, bundle.std, train=False)))[0]


def export_metadata(cfg: TrainConfig, bundle: DatasetBundle, dynamic_batch: bool) -> dict:
    """What a server needs besides the graph (module docstring: "Metadata")."""
    return {"mean": list(bundle.mean), "std": list(bundle.std), "input_size": [bundle.in_chans, *bundle.img_size],
            "class_names": list(bundle.class_names), "task": bundle.task, "batch_size": None if dynamic_batch else 1,
            "tta_hflip": cfg.tta_hflip, "model": cfg.model, "attn": cfg.attn, "head": cfg.head}

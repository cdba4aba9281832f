"""A model written as an ONNX or TorchScript file, and run again from the file's bytes: the
model-level half of ``attnvision export`` (``export.py`` adds the checkpoint, its data and the
metadata), also used by ``profile --runtime onnxruntime`` to time the exported model.

Models that train on their own objective (DRAM, the show-attend-tell head:
``label_sequence.takes_targets``) export their inference path, ``forward(x)`` without targets:
greedy decoding over their fixed number of steps, unrolled; DRAM samples glimpse locations only in
training, and looks at the emission means in eval mode, so the exported graph is deterministic.
Test-time augmentation is not in the graph: a run evaluated with ``tta_hflip`` averages the logits
of each image and its mirror image, which a server does itself (the metadata says so).

Batch size: fixed at 1 by default (the ONNX input is (1, C, H, W)); with ``dynamic_batch`` the
first axis of input and output is named "batch" and any size runs. The spatial size is the
dataset's and is fixed. A dynamic export is traced at batch 2 and verified at batch 1 and at all
verification images at once, so a batch size that the model's code turned into a constant (a
Python int taken from the input's shape) fails here rather than on the server: DRAM's retina
builds its sampling grid at the traced batch size, so DRAM exports (to TorchScript) at batch 1 only.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter, at opset 17.
Measured on torch 2.13 with every registered model, every head and every attention module on
resnet20: it exports all but five (below) in 0.2–8 s each, with a dynamic batch, matching PyTorch;
the torch.export-based exporter (the default since torch 2.9) needs the onnxscript package, took
5–100 s per model on one CPU core, and gave the ECA, CBAM and composed-gate models an input fixed
at the example's batch size although a dynamic one was asked for (torch.export specialised the
batch dimension). Known limits of the one used (``EXPORT_FIXES`` names the way out):
``Tensor.unfold`` with sizes it cannot follow (SASA, halo and BoTNet attention, sanet20), and
adaptive pooling to a size that does not divide the input (DRAM's 16×16 context image of a 28×28
input); CBAM's adaptive max pool to 1×1 and fused attention (``F.scaled_dot_product_attention``,
written as MatMul and Softmax) export. It is deprecated in torch, as is TorchScript itself; both
are what torch 2.13 offers for these formats without another package. Opset 17 holds
LayerNormalization (ViT) as one operator, and onnxruntime has run it since 1.12; nothing here
needs a newer one.

Tolerance: max |exported − PyTorch| ≤ ``ATOL`` + ``RTOL`` · max |PyTorch logit| over the
verification images. The runtimes sum in other orders (onnxruntime folds BatchNorm into the
convolutions and tiles its matrix products differently), so float32 round-off differs in
proportion to the activations' scale: measured 2e-7 of the largest logit on resnet20, up to 3e-5
on an untrained attention92 whose logits reach 6e3. A wrongly exported operator moves the logits
by their own order of magnitude, far above 1e-4 of it. TorchScript runs PyTorch's own kernels;
it differs by round-off only where a batch size other than the reference's picks other kernels.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import re
import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

FORMATS = ("onnx", "torchscript")
OPSET = 17
INPUT, OUTPUT = "image", "logits"
METADATA_FILE = "attnvision.json"  # TorchScript: the extra file holding the metadata
TRACE_BATCH = 2  # a dynamic export's example batch: not 1, which tracing could treat as a broadcast size
ATOL = RTOL = 1e-4
EXPORT_FIXES = {  # operator (as the exporter names it, lower case) → why it fails here and the fix
    "unfold": "SASA, halo and BoTNet attention and sanet20 cut their windows with Tensor.unfold, whose sizes this "
              "exporter cannot follow; export with --format torchscript",
    "adaptive_avg_pool2d": "the exporter writes adaptive pooling only where the output size divides the input size "
                           "(DRAM pools a 28×28 image to 16×16); export with --format torchscript, or train on "
                           "images whose side is a multiple of the pooled size",
}
DEFAULT_FIX = "export with --format torchscript, which traces the same forward pass with PyTorch's own operators"


class ExportError(ValueError):
    """The model cannot be exported, or its export disagrees with PyTorch; the message names the
    operator or the difference, and the fix."""


def error_line(error: Exception) -> str:
    """One line of an error's message (torch's run to pages): the first, or the last where the
    TorchScript interpreter put a traceback of the traced code before the cause."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return lines[-1] if lines[0].startswith("The following operation failed in the TorchScript interpreter") else lines[0]


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown --format '{format}'; valid: {', '.join(FORMATS)}")


def export_model(model: nn.Module, images: torch.Tensor, format: str, dynamic_batch: bool, metadata: dict) -> bytes:
    """The file's bytes: ``model`` (eval mode, CPU, float32) traced on the first image of
    ``images`` (N, C, H, W), or the first ``TRACE_BATCH`` with ``dynamic_batch``, with ``metadata``
    recorded. Raises ExportError naming the operator that failed and the fix."""
    check_format(format)
    example = images[:TRACE_BATCH if dynamic_batch else 1]
    if format == "onnx":
        return onnx_bytes(model, example, dynamic_batch, metadata)
    return torchscript_bytes(model, example, metadata)


def onnx_bytes(model: nn.Module, example: torch.Tensor, dynamic_batch: bool, metadata: dict) -> bytes:
    """The ONNX file of ``model`` traced on ``example``, with ``metadata`` in its metadata_props."""
    import onnx

    buffer = io.BytesIO()
    axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}} if dynamic_batch else None
    try:
        with quiet_exporter():
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=[INPUT],
                              output_names=[OUTPUT], dynamic_axes=axes)
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as e:  # the model's own ValueErrors pass as they are
        raise ExportError(onnx_failure(e)) from None
    graph = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=json.dumps(value))
    return graph.SerializeToString()


def onnx_failure(error: Exception) -> str:
    """One line naming the operator the exporter stopped at, why, and the fix (``EXPORT_FIXES``)."""
    text = str(error)
    unsupported = re.search(r"ONNX export of operator (\w+)(?:, ([^.]+))?\.", text)  # a symbolic that gave up
    missing = re.search(r"operator '([\w:]+)' to ONNX opset version (\d+) is not supported", text)  # no symbolic
    if unsupported:
        operator, reason = unsupported.group(1), f" ({unsupported.group(2)})" if unsupported.group(2) else ""
    elif missing:
        operator, reason = missing.group(1), f" (no ONNX form at opset {missing.group(2)})"
    else:
        return f"ONNX export failed: {error_line(error)}; {DEFAULT_FIX}"
    fix = EXPORT_FIXES.get(operator.lower().removeprefix("aten::"), DEFAULT_FIX)
    return f"ONNX export failed at operator {operator}{reason}: {fix}"


def torchscript_bytes(model: nn.Module, example: torch.Tensor, metadata: dict) -> bytes:
    """The TorchScript file of ``model`` traced on ``example``, with ``metadata`` in ``METADATA_FILE``."""
    buffer = io.BytesIO()
    try:
        with quiet_exporter():
            # no check_trace: it re-runs the model only to compare on the same input; verify() does more
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
    except RuntimeError as e:
        raise ExportError(f"TorchScript tracing failed: {error_line(e)}") from None
    return buffer.getvalue()


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Keep the exporters' noise off the terminal: their deprecation and tracer warnings (whether a
    trace is right is decided by ``verify``), and the whole TorchScript graph, tens of thousands of
    lines, that the ONNX exporter prints to the process's standard output (from C++, hence the
    file-descriptor redirect) when an operator fails: torch 2.13's ``setup_onnx_logging`` tests a
    function object for truth, so that log is always on."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        ctypes.CDLL(None).fflush(None)  # what C's stdio still buffers goes to /dev/null, not to the terminal
        os.dup2(saved, 1)
        os.close(saved)


def load_exported(data: bytes, format: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The exported model as a function of images float32 (B, C, H, W) → logits float32 (B, K),
    run by onnxruntime (CPU) or the TorchScript interpreter from the file's bytes."""
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load's: TorchScript is the format asked for
            scripted = torch.jit.load(io.BytesIO(data))

        def run_torchscript(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return scripted(x).float()
        return run_torchscript

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the threads PyTorch was given, not every core
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's exception types do not share a base class below Exception
        raise ExportError(f"onnxruntime cannot load the exported graph: {error_line(e)}; {DEFAULT_FIX}") from None

    def run_onnx(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT], {INPUT: x.numpy()})[0])
    return run_onnx


def verify(run: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, images: torch.Tensor,
           dynamic_batch: bool) -> dict:
    """Compare the exported model ``run`` with ``model`` on ``images`` float32 (N, C, H, W): one
    image per call, and with ``dynamic_batch`` also all N in one call.

    Returns {"images": N, "max_abs_diff", "max_abs_logit", "tolerance" (module docstring),
    "top1_agreement": images whose top class is the same in every call}. Raises ExportError when a
    call fails or the difference exceeds the tolerance."""
    with torch.no_grad():
        expected = model(images).float()
    tolerance = ATOL + RTOL * expected.abs().max().item()
    worst, agree = 0.0, torch.ones(len(images), dtype=torch.bool)
    for size in (1, len(images)) if dynamic_batch else (1,):
        try:
            got = torch.cat([run(chunk) for chunk in images.split(size)])
        except Exception as e:  # a runtime's failure (a shape the graph fixed): reported, not a traceback
            raise ExportError(f"the exported model fails at batch size {size}: {error_line(e)}"
                              f"{batch_hint(size, dynamic_batch)}") from None
        difference = (got - expected).abs().max().nan_to_num(nan=float("inf")).item()
        if difference > tolerance:
            raise ExportError(f"the exported model's logits differ from PyTorch's by up to {difference:.3g} at batch "
                              f"size {size} (tolerance {tolerance:.3g}){batch_hint(size, dynamic_batch)}")
        worst = max(worst, difference)
        agree &= got.argmax(1) == expected.argmax(1)
    return {"images": len(images), "max_abs_diff": worst, "max_abs_logit": expected.abs().max().item(),
            "tolerance": tolerance, "top1_agreement": int(agree.sum())}


def batch_hint(size: int, dynamic_batch: bool) -> str:
    """Why a dynamic export may fail at a batch size other than the one it was traced at."""
    if not dynamic_batch or size == TRACE_BATCH:
        return ""
    return (f"; it was traced at batch size {TRACE_BATCH}, so the model's code has probably made the batch size a "
            "constant (e.g. len(x) in its forward; x.shape[0] stays variable): export without --dynamic-batch")

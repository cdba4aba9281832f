"""Model cost: parameters, multiply-accumulates (MACs) and wall-clock latency.

MAC convention (``MACS_CONVENTION``): the multiply-accumulates of one forward pass of a single
(1, C, H, W) image in eval mode, counted over convolutions (1-D, 2-D, grouped, depthwise), linear
layers and matrix products, including attention's batched products written with ``bmm``,
``einsum``, ``@`` or ``F.scaled_dot_product_attention`` (q·kᵀ and attn·v each count
B·heads·N_q·N_k·d). This is what the SE, ECA and CBAM papers' "GFLOPs" tables and torchvision's
"GFLOPS" column report (ResNet-50 at 224²: 4.09 G). Element-wise ops (attention gates, residual
additions, biases), pooling, normalisation, softmax and activations are not counted.

Counting uses ``torch.utils.flop_counter.FlopCounterMode``, which records 2 FLOPs per MAC on the
aten ops above; ``count_macs`` halves its total. FlopCounterMode has formulas for the CUDA SDPA
kernels and for SDPA's math fallback (two ``bmm``), but not for the fused CPU kernel
``_scaled_dot_product_flash_attention_for_cpu`` that SDPA picks on CPU when q, k and v share
their head size: without ``_CPU_SDPA`` below such attention would count as zero.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .backbones import create_model
from .compiled import Compiled
from .exported import TRACE_BATCH, ExportError, load_exported, onnx_bytes
from .label_sequence import takes_targets

MACS_CONVENTION = (
    "multiply-accumulates of one (1, C, H, W) image in eval mode over convolutions, linear layers "
    "and matrix products (bmm/einsum/SDPA); element-wise ops, pooling, normalisation, softmax "
    "and activations not counted (torch FlopCounterMode total / 2)"
)
RUNTIMES = ("onnxruntime",)  # where ``profile_model`` can also time the exported model


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the fused CPU SDPA kernel: the same q·kᵀ and attn·v products as on CUDA."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def count_params(model: nn.Module) -> int:
    """Number of parameter elements, each shared parameter counted once (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """MACs of one forward pass of a (1, *input_size) input, e.g. ``input_size=(3, 224, 224)``.

    See the module docstring for what is counted. The input is zeros on the model's device and
    dtype; the model runs in eval mode and gets its previous mode back. A model
    built under ``torch.device("meta")`` is counted from shapes alone, without memory or compute.
    """
    if not input_size or not all(isinstance(s, int) and s > 0 for s in input_size):
        raise ValueError(
            f"input_size must be the positive shape of one sample without the batch dimension, "
            f"e.g. (3, 224, 224); got {input_size!r}"
        )
    param = next(model.parameters(), None)  # the input follows the model's device and dtype
    x = torch.zeros(1, *input_size, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None else torch.float32)
    counter = FlopCounterMode(display=False, custom_mapping=_CPU_SDPA)
    # Gradients stay enabled: FlopCounterMode's module tracker hooks every module input that
    # requires grad, and under no_grad that fails for a parameter passed as an input
    # (Query2Label's label queries), "Expected gradient function to be set".
    with _eval_mode(model), counter:
        model(x)
    return counter.get_total_flops() // 2


def latency_samples(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, warmup: int = 3,
                    repeats: int = 10) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` calls of ``model(x)`` under ``torch.inference_mode``,
    a module in eval mode (or any function of x, e.g. an exported model's runner).

    ``warmup`` untimed calls come first (allocator, kernel selection, lazy init). With ``x`` on
    CUDA every timed call is bracketed by ``torch.cuda.synchronize`` so the time covers the
    kernels, not just their launch. The model gets its previous train/eval mode back.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")

    def sync() -> None:
        if x.is_cuda:
            torch.cuda.synchronize(x.device)

    times = []
    with _eval_mode(model) if isinstance(model, nn.Module) else nullcontext(), torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - start) * 1000)
    return times


def measure_latency(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, warmup: int = 3,
                    repeats: int = 10) -> float:
    """Median of ``latency_samples``, in milliseconds."""
    return statistics.median(latency_samples(model, x, warmup, repeats))


def training_loss(model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                  targets: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of one training forward pass: ``loss_fn(model(x))``, or the model's own objective
    where it trains on one (``label_sequence.takes_targets``: DRAM, show-attend-tell), which needs
    the batch's ``targets``."""
    if not takes_targets(model):
        return loss_fn(model(x))
    if targets is None:
        raise ValueError(f"{type(model).__name__} trains on its own objective over the targets: pass the batch's "
                         "targets to time or measure its training step")
    return model(x, targets)[1]


def training_memory(model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                    targets: torch.Tensor | None = None) -> dict:
    """Bytes one SGD-momentum training step on batch ``x`` holds at its peak, counted from tensors
    rather than read from the allocator (which on CPU has no peak counter):

    - "activations": tensors autograd saves for backward in the forward pass (each storage once),
      which is what attention gates add (every gate keeps its input and its sigmoid);
    - "parameters": weights + gradients + momentum buffers (3 × parameter bytes).

    "peak" is their sum, the memory at the start of backward; on CUDA "allocator_peak" adds
    ``torch.cuda.max_memory_allocated`` over the step."""
    storages: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    if x.is_cuda:
        torch.cuda.reset_peak_memory_stats(x.device)
    params = {id(p): p for p in model.parameters()}
    param_ptrs = {p.untyped_storage().data_ptr() for p in params.values()}
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = training_loss(model, x, loss_fn, targets)
    loss.backward()
    activations = sum(n for ptr, n in storages.items() if ptr not in param_ptrs)
    parameters = 3 * sum(p.numel() * p.element_size() for p in params.values())
    model.zero_grad(set_to_none=True)
    result = {"activations": activations, "parameters": parameters, "peak": activations + parameters}
    if x.is_cuda:
        result["allocator_peak"] = torch.cuda.max_memory_allocated(x.device)
    return result


def train_step_time(model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                    steps: int = 10, targets: torch.Tensor | None = None, warmup: int = 1) -> float:
    """Mean wall-clock seconds of one training step of ``model`` on batch ``x``: forward and loss
    (``training_loss``), backward and an SGD-momentum update, after ``warmup`` untimed steps. With
    ``warmup=0, steps=1`` it times a model's first step: for a ``compiled.Compiled`` model, its
    compilation (whose failure falls back to eager over the whole step, backward included).

    The model is put in train mode and its parameters are updated. For ratios between models,
    interleave repeated calls so that drift on a shared machine hits every model alike."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(module: nn.Module) -> None:
        loss = training_loss(module, x, loss_fn, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    run = model.step if isinstance(model, Compiled) else lambda fn: fn(model)
    for _ in range(warmup):
        run(step)
    start = time.perf_counter()
    for _ in range(steps):
        run(step)
    return (time.perf_counter() - start) / steps


def compiled_latency(model: nn.Module, name: str, inputs: dict[int, torch.Tensor], warmup: int = 3,
                     repeats: int = 10) -> dict:
    """The latency of ``model`` through torch.compile (``compiled.Compiled``) on each batch size's
    input: {"compile_time_s", "compiled_latency_ms_b{b}" for each b}, or {} where compilation fails
    (the fallback says why). The first call at a batch size compiles that shape's graph; it is timed
    apart (``compile_time_s``: their sum), then latency as ``measure_latency``."""
    compiled = Compiled(model, name)
    result, compile_ms = {}, 0.0
    for b, x in inputs.items():
        compile_ms += latency_samples(compiled, x, warmup=0, repeats=1)[0]
        result[f"compiled_latency_ms_b{b}"] = measure_latency(compiled, x, warmup=warmup, repeats=repeats)
    return {"compile_time_s": compile_ms / 1000, **result} if compiled.active else {}


def onnxruntime_latency(model: nn.Module, inputs: dict[int, torch.Tensor], warmup: int = 3,
                        repeats: int = 10) -> dict:
    """The latency of ``model`` exported to ONNX with a dynamic batch (``exported.onnx_bytes``, the
    exporter ``attnvision export`` uses) and run by onnxruntime's CPU provider with PyTorch's thread
    count, on each batch size's input (CPU): {"export_time_s", "onnxruntime_latency_ms_b{b}" for
    each b}, or {"onnxruntime_error": the exporter's message naming the operator and the fix}."""
    example = next(iter(inputs.values()))[:1].expand(TRACE_BATCH, -1, -1, -1).contiguous()
    start = time.perf_counter()
    try:
        with _eval_mode(model):
            run = load_exported(onnx_bytes(model, example, dynamic_batch=True, metadata={}), "onnx")
    except ExportError as e:
        return {"onnxruntime_error": str(e)}
    result = {"export_time_s": time.perf_counter() - start}
    for b, x in inputs.items():
        result[f"onnxruntime_latency_ms_b{b}"] = measure_latency(run, x, warmup=warmup, repeats=repeats)
    return result


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def profile_model(
    name: str,
    attn: str | None = None,
    img_size: int = 224,
    in_chans: int = 3,
    num_classes: int = 1000,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 10,
    warmup: int = 3,
    device: str | torch.device = "cpu",
    compile: bool = False,
    runtimes: Sequence[str] = (),
    **model_kw,
) -> dict:
    """Build ``create_model(name, num_classes, attn=attn, in_chans=in_chans, **model_kw)`` and
    measure it at ``img_size``² on ``device``.

    Returns {"model", "attn", "img_size", "in_chans", "num_classes", "params", "macs",
    "macs_convention", "latency_ms_b{b}" for each b in ``batch_sizes``, "threads", "device"}, with
    ``compile`` also ``compiled_latency``'s keys, with "onnxruntime" in ``runtimes`` also
    ``onnxruntime_latency``'s (CPU only). Latency (see ``measure_latency``) is timed on random
    normal (B, in_chans, img_size, img_size) inputs with ``warmup`` untimed and ``repeats`` timed
    calls per batch size.
    """
    if img_size < 1 or any(b < 1 for b in batch_sizes):
        raise ValueError(f"img_size and batch_sizes must be positive, got {img_size} and {tuple(batch_sizes)}")
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime {', '.join(map(repr, unknown))}; valid: {', '.join(RUNTIMES)} "
                         "(PyTorch eager is always timed; --compile adds torch.compile)")
    device = torch.device(device)
    if "onnxruntime" in runtimes and device.type != "cpu":
        raise ValueError(f"onnxruntime latency is measured with its CPU provider; profile on the CPU, not {device}")
    model = create_model(name, num_classes, attn=attn, in_chans=in_chans, **model_kw).to(device)
    result = {
        "model": name,
        "attn": attn,
        "img_size": img_size,
        "in_chans": in_chans,
        "num_classes": num_classes,
        "params": count_params(model),
        "macs": count_macs(model, (in_chans, img_size, img_size)),
        "macs_convention": MACS_CONVENTION,
    }
    inputs = {b: torch.randn(b, in_chans, img_size, img_size, device=device) for b in batch_sizes}
    for b, x in inputs.items():
        result[f"latency_ms_b{b}"] = measure_latency(model, x, warmup=warmup, repeats=repeats)
    if compile:
        result.update(compiled_latency(model, f"{name} + {attn or 'no attention'}", inputs, warmup, repeats))
    if "onnxruntime" in runtimes:
        result.update(onnxruntime_latency(model, inputs, warmup, repeats))
    result["threads"] = torch.get_num_threads()
    result["device"] = _device_name(device)
    return result

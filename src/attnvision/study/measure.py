"""The cost columns of a study, measured for all configurations in one process, interleaved.

Wall times of separate runs drift on a shared machine (other load, thermal state), so comparable
numbers come from one process that measures every configuration in turn, round after round, and
takes medians: a slow spell then hits all configurations alike. Per configuration:

- params; MACs of one image at the data's size (``profile.MACS_CONVENTION``);
- inference latency at batch 1 and 32 (eval mode, inference_mode): median and interquartile range
  over ``rounds × repeats`` timed calls after warm-up;
- training-step time at the recipe's batch size (forward, backward, SGD-momentum update) and its
  ratio to the baseline's, the median over rounds of per-round ratios;
- training memory at that batch (``profile.training_memory``);
- where the study compiles (``TrainConfig.compile``): the training-step time through torch.compile,
  its speed-up over the eager step (median over rounds of the per-round eager/compiled ratio),
  and the compiling first step's seconds, timed apart.

Threads: the cells' own thread count, so that the step ratio describes the runs it sits beside.
Weights are freshly initialised: none of these depends on their values.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import atomic_write_text
from ..compiled import Compiled
from ..data import BatchLoader
from ..evaluate import build_model, load_bundle
from ..profile import MACS_CONVENTION, count_macs, count_params, latency_samples, train_step_time, training_memory
from .grid import Cell, Study
from .layout import COSTS, MAIN
from .results import read_rebuildable


def quantiles(samples: list[float]) -> dict:
    q1, median, q3 = statistics.quantiles(samples, n=4) if len(samples) > 1 else samples * 3
    return {"median": median, "q1": q1, "q3": q3}


def measure_costs(study: Study, cells: list[Cell], out: Path, threads: int, rounds: int = 5, repeats: int = 4,
                  steps: int = 3) -> dict:
    """Measure (or reuse ``out/costs.json`` when it matches these settings) every configuration's
    costs; returns {"settings": ..., "configurations": {name: {...}}}."""
    path = out / COSTS
    measured = study.first_seed(cells, MAIN)  # configuration → its cell
    first = next(iter(measured.values())).config
    settings = {"threads": threads, "rounds": rounds, "repeats": repeats, "steps": steps,
                "batch_size": first.batch_size, "configurations": list(measured), "baseline": study.baseline_name,
                # only where set, so that the costs.json of studies from before --compile stay valid
                **({"compile": True} if first.compile else {})}
    saved = read_rebuildable(path, "recomputing it")
    if saved is not None and {k: saved.get("settings", {}).get(k) for k in settings} == settings:
        return saved
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = _measure(measured, settings, rounds, repeats, steps)
    finally:
        torch.set_num_threads(previous_threads)
    atomic_write_text(path, json.dumps(result, indent=2))
    return result


def _measure(cells: dict, settings: dict, rounds: int, repeats: int, steps: int) -> dict:
    torch.manual_seed(0)
    first = next(iter(cells.values())).config
    bundle = load_bundle(first)
    shape = (bundle.in_chans, *bundle.img_size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = {name: build_model(cell.config, bundle).to(device) for name, cell in cells.items()}
    for name, model in models.items():
        if cells[name].config.channels_last:
            models[name] = model.to(memory_format=torch.channels_last)

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))

    batch = settings["batch_size"]
    inputs = {b: torch.randn(b, *shape, device=device).contiguous(memory_format=torch.channels_last)
              for b in (1, 32, batch)}
    # the batch's targets, for models that train on their own objective (label_sequence.takes_targets)
    _, first = next(iter(BatchLoader(bundle.train, batch, bundle.mean, bundle.std, train=False)))  # any split kind
    targets = first[torch.arange(batch) % len(first)].to(device)
    latency = {(name, b): [] for name in models for b in (1, 32)}
    step = {name: [] for name in models}
    compiled = {name: Compiled(model, name) for name, model in models.items()} if settings.get("compile") else {}
    # the first compiled step compiles: timed apart, before the warm-up
    compile_time = {name: train_step_time(model, inputs[batch], loss, steps=1, targets=targets, warmup=0)
                    for name, model in compiled.items()}
    compiled_step = {name: [] for name in compiled}
    for model in models.values():  # warm-up: allocator, thread pool, kernel choice
        latency_samples(model, inputs[1], warmup=2, repeats=1)
        train_step_time(model, inputs[batch], loss, steps=1, targets=targets)
    for _ in range(rounds):
        for name, model in models.items():
            for b in (1, 32):
                latency[(name, b)] += latency_samples(model, inputs[b], warmup=1, repeats=repeats)
            step[name].append(train_step_time(model, inputs[batch], loss, steps=steps, targets=targets))
            if name in compiled:
                compiled_step[name].append(train_step_time(compiled[name], inputs[batch], loss, steps=steps,
                                                           targets=targets))
    baseline = settings["baseline"]
    result = {}
    for name, model in models.items():
        ratios = [t / b for t, b in zip(step[name], step[baseline])]
        result[name] = {
            "params": count_params(model),
            "macs": count_macs(model, shape),
            "latency_ms_b1": quantiles(latency[(name, 1)]),
            "latency_ms_b32": quantiles(latency[(name, 32)]),
            "train_step_ms": quantiles([1000 * t for t in step[name]]),
            "train_step_ratio": quantiles(ratios),
            "memory_bytes": training_memory(model, inputs[batch], loss, targets),
        }
        if name in compiled and compiled[name].active:  # where compilation failed, Compiled said so
            result[name].update({
                "compiled_train_step_ms": quantiles([1000 * t for t in compiled_step[name]]),
                "compile_speedup": quantiles([e / c for e, c in zip(step[name], compiled_step[name])]),
                "compile_time_s": compile_time[name],
            })
    return {"settings": {**settings, "input": list(shape), "device": str(device), "torch": torch.__version__,
                         "macs_convention": MACS_CONVENTION},
            "configurations": result}

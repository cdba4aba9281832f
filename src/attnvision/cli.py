"""The ``attnvision`` command: list, train, eval, profile, demo."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Attention modules, heads and backbones for image classification.")
console = Console()


def print_version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"attnvision {__version__}")
        raise typer.Exit()


@app.callback()
def common(version: bool = typer.Option(False, "--version", callback=print_version, is_eager=True,
                                        help="print the version and exit")) -> None:
    """Attention modules, heads and backbones for image classification."""


def parse_json_dict(option: str, text: Optional[str]) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"{option} must be a JSON object such as '{{\"width\": \"large\"}}': {e}")
    if not isinstance(value, dict):
        fail(f"{option} must be a JSON object, got {text}")
    return value


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.command("list")
def list_cmd() -> None:
    """Print the registered attention modules, heads, models and datasets."""
    from . import list_attn, list_datasets, list_heads, list_models

    for title, names in (("attention modules", list_attn()), ("heads", list_heads()),
                         ("models", list_models()), ("datasets", list_datasets())):
        console.print(f"[bold]{title}[/] ({len(names)}): " + ", ".join(names), highlight=False)


@app.command()
def train(
    ctx: typer.Context,
    data: str = typer.Option("fashion-mnist", help="dataset name (see `attnvision list`)"),
    data_dir: Optional[str] = typer.Option(None, help="folder with the dataset files (default: $ATTNVISION_DATA, system paths)"),
    data_kw: Optional[str] = typer.Option(None, help='dataset options as JSON, e.g. \'{"canvas_size": 64}\''),
    task: Optional[str] = typer.Option(None, help="single or multilabel: checked against the dataset"),
    model: str = typer.Option("resnet20", help="model name"),
    attn: Optional[str] = typer.Option(None, help="attention module inside the backbone (none if omitted)"),
    head: Optional[str] = typer.Option(None, help="classification head (default: the model's own, e.g. gap)"),
    width: Optional[str] = typer.Option(None, help="CIFAR ResNets: small (16/32/64) or large (64/128/256)"),
    heads: Optional[int] = typer.Option(None, help="attention heads of the head (CSRA: 1, 2, 4, 6, 8; EVA: 4)"),
    lam: Optional[float] = typer.Option(None, help="CSRA's λ"),
    model_kw: Optional[str] = typer.Option(None, help='more model options as JSON, e.g. \'{"layers": [2, 2, 2], "shortcut": "A"}\''),
    epochs: int = 15,
    batch_size: int = 128,
    optimizer: str = typer.Option("sgd", help="sgd (Nesterov) or adamw"),
    lr: float = 0.1,
    head_lr: Optional[float] = typer.Option(None, help="separate learning rate for the head"),
    weight_decay: float = 5e-4,
    warmup_epochs: float = 1.0,
    schedule: str = typer.Option("cosine", help="cosine or step"),
    step_epochs: int = typer.Option(4, help="step schedule: epochs between decays"),
    loss: Optional[str] = typer.Option(None, help="ce (single-label default), bce (multi-label default), asl"),
    label_smoothing: float = 0.0,
    crop_pad: int = typer.Option(2, help="random-crop padding in pixels (0: no crop)"),
    hflip: bool = typer.Option(True, help="random horizontal flips"),
    val_size: Optional[int] = typer.Option(None, help="validation images carved from the training set (default: the dataset's, 5000 for Fashion-MNIST)"),
    train_subset: Optional[int] = typer.Option(None, help="train on the first N training images only"),
    seed: int = 0,
    channels_last: bool = True,
    accelerator: str = typer.Option("auto", help="cpu, gpu, auto"),
    devices: int = 1,
    num_nodes: int = 1,
    strategy: str = typer.Option("auto", help="auto, ddp, …"),
    precision: str = typer.Option("32-true", help="32-true, bf16-mixed, 16-mixed"),
    out: str = typer.Option("runs/default", help="run folder"),
    resume: Optional[str] = typer.Option(None, help="continue the run in this folder from its last.pt, with its "
                                         "saved options; --epochs N extends it to N epochs"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Train a model; writes metrics.json, log.csv, TensorBoard events, best.pt and last.pt."""
    from .checkpoint import DiskFullError
    from .train import DivergedError, TrainConfig
    from .train import train as run_training

    given = [name for name in ctx.params if ctx.get_parameter_source(name).name == "COMMANDLINE"]
    if resume is not None:
        refused = [f"--{name.replace('_', '-')}" for name in given if name not in ("resume", "epochs", "progress")]
        if refused:
            fail(f"--resume continues {resume} with the options it was started with; {', '.join(refused)} "
                 "cannot change them (only --epochs can, to extend the run). Start a new run with another "
                 "--out to change them.")

    head_kw = {k: v for k, v in (("heads", heads), ("lam", lam)) if v is not None}
    extra_model_kw = parse_json_dict("--model-kw", model_kw)
    cfg = TrainConfig(
        data=data, data_dir=data_dir, data_kw=parse_json_dict("--data-kw", data_kw), task=task,
        val_size=val_size, train_subset=train_subset, model=model, attn=attn, head=head,
        model_kw={**({"width": width} if width else {}), **({"head_kw": head_kw} if head_kw else {}), **extra_model_kw},
        epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, head_lr=head_lr,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, schedule=schedule, step_epochs=step_epochs,
        loss=loss, label_smoothing=label_smoothing, crop_pad=crop_pad, hflip=hflip, seed=seed,
        channels_last=channels_last, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
        strategy=strategy, precision=precision, out=out,
    )
    try:
        metrics = run_training(cfg, resume=resume, progress=progress,
                               epochs=epochs if resume is not None and "epochs" in given else None)
    except (DivergedError, DiskFullError) as e:
        fail(str(e), code=1)
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e))
    metric = metrics["selection_metric"]
    console.print(f"test {metric} (best-val checkpoint, epoch {metrics['test']['epoch']}): "
                  f"{metrics['test'][metric]:.2f}%   run folder: {metrics['run']}", highlight=False)


@app.command("eval")
def eval_cmd(
    checkpoint: str = typer.Option(..., help="path to best.pt / last.pt"),
    split: str = typer.Option("test", help="train, val or test"),
    data_dir: Optional[str] = None,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Evaluate a checkpoint on a split of the data it was trained on."""
    from .train import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(checkpoint, data_dir=data_dir, split=split)
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result))
    else:
        scores = "  ".join(f"{k} {v:.2f}{'' if k == 'loss' else '%'}" for k, v in result.items()
                           if isinstance(v, float))
        console.print(f"{split}: {scores}  (checkpoint {checkpoint}, epoch {result['epoch']})", highlight=False)


@app.command("boost")
def boost_cmd(
    checkpoint: str = typer.Option(..., help="a checkpoint of a model with a GAP + linear head"),
    lambdas: Optional[str] = typer.Option(None, help="comma-separated λ values to sweep (default: 0,0.005,…,1)"),
    data_dir: Optional[str] = None,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Training-free boost (CSRA Fig. 1): score = y_avg + λ·y_max, λ chosen on the validation split."""
    from .boost import LAMBDAS, boost

    try:
        sweep = tuple(float(v) for v in lambdas.split(",")) if lambdas else LAMBDAS
    except ValueError:
        fail(f"--lambdas must be comma-separated numbers such as 0,0.1,0.5; got '{lambdas}'")
    if not all(math.isfinite(v) for v in sweep):
        fail(f"--lambdas must be finite numbers; got '{lambdas}'")
    try:
        result = boost(checkpoint, sweep, data_dir=data_dir)
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result))
        return
    m = result["metric"]
    console.print(f"test {m}: baseline {result['baseline']:.2f}%  |  λ={result['chosen_lambda']:g} (chosen on val) "
                  f"{result['boosted']:.2f}% ({result['difference']:+.2f})  |  fixed λ={result['fixed_lambda']:g} "
                  f"{result['fixed']:.2f}% ({result['fixed_difference']:+.2f})", highlight=False)


@app.command()
def explain(
    checkpoint: str = typer.Option(..., help="best.pt / last.pt of a run"),
    out: Optional[str] = typer.Option(None, help="output folder (default: explain/ beside the checkpoint)"),
    method: Optional[str] = typer.Option(
        None, help="comma-separated: gradcam, attention (the model's own class or spatial map), "
                   "integrated_gradients, occlusion (default: gradcam, plus attention where the model has its own maps)"),
    classes: str = typer.Option("present", help="present (ground truth), predicted, all, or comma-separated class names"),
    split: str = typer.Option("test", help="train, val or test"),
    images: str = typer.Option("16", help="how many images of the split to explain and score (from the first), or 'all'"),
    figures: int = typer.Option(16, min=0, help="how many of them get a PNG"),
    localization: Optional[bool] = typer.Option(None, "--localization/--no-localization",
                                                help="score maps against the data's boxes (default: when it has boxes)"),
    tolerance: float = typer.Option(4.0, min=0, help="pointing-game tolerance in pixels (also scored at 0)"),
    faithfulness_images: int = typer.Option(128, min=0, help="images for deletion/insertion (RISE), from the first"),
    steps: int = typer.Option(16, min=1, help="deletion/insertion steps"),
    layer: Optional[str] = typer.Option(None, help="Grad-CAM layer, a module path such as layer2 (default: the head's input)"),
    batch_size: int = typer.Option(128, min=1, help="images per batch"),
    data_dir: Optional[str] = None,
    as_json: bool = typer.Option(False, "--json", help="print the scores as one JSON object"),
) -> None:
    """Explain a checkpoint: per-image figures of its maps, and their localisation and faithfulness scores."""
    from .explain.run import explain_checkpoint

    if images != "all" and not (images.isdigit() and int(images) >= 1):
        fail(f"--images must be a positive number or 'all', got '{images}'")
    methods = tuple(m.strip() for m in method.split(",") if m.strip()) if method else None
    folder = Path(out) if out else Path(checkpoint).parent / "explain"
    try:
        result = explain_checkpoint(checkpoint, folder, methods, classes, split, None if images == "all" else int(images),
                                    figures, localization, tolerance, faithfulness_images, steps, layer, batch_size,
                                    data_dir)
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"{result['model']} + {result['attn'] or 'no attention'} ({result['head'] or 'own head'}), "
                        f"{result['split']} split of {result['data']}")
    columns = (("pointing_game", f"point ≤{tolerance:g}px"), ("pointing_game_exact", "point 0px"),
               ("energy_in_box", "energy"), ("relevance_rank", "rank"),
               ("deletion", "del ↓"), ("insertion", "ins ↑"), ("images_per_s", "img/s"))
    table.add_column("map")
    for _, title in columns:
        table.add_column(title, justify="right")
    for name, scores in result["methods"].items():
        table.add_row(name, *(f"{scores[k]:.1f}" if k in scores else "–" for k, _ in columns))
    console.print(table)
    console.print(f"{result['images']} images, {result['pairs']} (image, class) pairs ({result['classes']} classes); "
                  "scores in %: pointing game, energy in box, relevance rank; deletion/insertion AUC on the first "
                  f"{result['faithfulness_images']} images; random, centre and box are reference maps. "
                  f"Figures and scores.json: {folder}", highlight=False)


@app.command()
def profile(
    model: str = typer.Option("resnet50", help="model name"),
    attn: Optional[str] = None,
    head: Optional[str] = None,
    img_size: int = 224,
    in_chans: int = 3,
    num_classes: int = 1000,
    repeats: int = typer.Option(10, help="timed runs per batch size (median reported)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Parameters, MACs (multiply-adds, the papers' "GFLOPs") and latency at batch 1 and 32."""
    from .profile import profile_model

    try:
        result = profile_model(model, attn=attn, head=head, img_size=img_size, in_chans=in_chans,
                               num_classes=num_classes, repeats=repeats)
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"{model} + {attn or 'no attention'} at {img_size}×{img_size}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("params", f"{result['params']:,}")
    table.add_row("MACs", f"{result['macs'] / 1e9:.3f} G")
    for key in sorted(k for k in result if k.startswith("latency_ms_b")):
        table.add_row(f"latency, batch {key.removeprefix('latency_ms_b')}", f"{result[key]:.2f} ms")
    console.print(table)
    console.print(f"MACs: {result['macs_convention']}; latency: median of {repeats} runs, "
                  f"{result['threads']} threads, {result['device']}", highlight=False)


@app.command()
def demo(
    out: str = typer.Option("runs/demo", help="folder for the runs"),
    attns: str = typer.Option("none,se,eca,cbam", help="comma-separated attention modules ('none': baseline)"),
    epochs: int = 3,
    train_subset: int = 10000,
    val_size: int = typer.Option(5000, help="validation images carved from the training set"),
    data_dir: Optional[str] = None,
) -> None:
    """A short comparison on Fashion-MNIST: resnet20 baseline vs a few attention modules."""
    from .checkpoint import DiskFullError
    from .train import DivergedError, TrainConfig
    from .train import train as run_training

    console.print(f"[bold]attnvision demo[/]: resnet20 (small) on Fashion-MNIST, short recipe: "
                  f"{epochs} epochs on the first {train_subset} training images (a {val_size:,}-image "
                  "validation split picks the checkpoint; the 10,000 test images are evaluated once). "
                  "Full-length numbers: docs/results.md.", highlight=False)
    rows = []
    try:
        configs = {attn: TrainConfig(attn=None if attn == "none" else attn, epochs=epochs, train_subset=train_subset,
                                     val_size=val_size, data_dir=data_dir, out=str(Path(out) / attn))
                   for attn in attns.split(",")}
        for cfg in configs.values():  # every name and value, before the first run trains
            cfg.validate()
        for attn, cfg in configs.items():
            console.print(f"\n[bold]{attn}[/] → {cfg.out}", highlight=False)
            rows.append((attn, run_training(cfg, progress=sys.stderr.isatty())))
    except (DivergedError, DiskFullError) as e:
        fail(str(e), code=1)
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e))
    table = Table(title="resnet20 small, Fashion-MNIST (short demo recipe)")
    for col in ("attention", "params", "MMACs", "best val acc", "test acc", "train time", "img/s"):
        table.add_column(col, justify="left" if col == "attention" else "right")
    for attn, m in rows:
        table.add_row(attn, f"{m['params']:,}", f"{m['macs'] / 1e6:.2f}", f"{m['best_val']['val_acc']:.2f}%",
                      f"{m['test']['acc']:.2f}%", f"{m['train_time_s']:.0f} s", f"{m['images_per_s']:.0f}")
    console.print(table)
    console.print(f"run folder: {Path(out).resolve()}", highlight=False)


def main() -> None:
    app()

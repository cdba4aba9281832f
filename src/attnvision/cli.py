"""The ``attnvision`` command: list, train, eval, export, boost, explain, profile, compare, report."""

from __future__ import annotations

import inspect
import json
import math
import shlex
import typing
from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .study.grid import GRID_AXES

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
    """Print the registered attention modules, heads, models and datasets, and the packaged recipes
    (`train --config NAME`) and study presets (`compare --preset NAME`)."""
    from rich.table import Table

    from . import list_attn, list_datasets, list_heads, list_models
    from .attention import describe_attn
    from .config import recipe_names
    from .study.grid import PRESETS

    modules = Table(title=f"attention modules ({len(list_attn())})", title_justify="left")
    for column in ("name", "paper", "kind", "placement", "parameters"):
        modules.add_column(column)
    for name in list_attn():
        row = describe_attn(name)
        modules.add_row(name, row["paper"], row["kind"], row["placement"], "none" if row["parameter_free"] else "yes")
    console.print(modules)
    for title, names in (("heads", list_heads()), ("models", list_models()), ("datasets", list_datasets()),
                         ("recipes", recipe_names()), ("study presets", list(PRESETS))):
        console.print(f"[bold]{title}[/] ({len(names)}): " + ", ".join(names), highlight=False)


MODEL_SHORTCUTS = {  # CLI-only flags that fill model_kw
    "width": (Optional[str], "CIFAR ResNets: small (16/32/64) or large (64/128/256)"),
    "heads": (Optional[int], "attention heads of the head (CSRA: 1, 2, 4, 6, 8; EVA: 4)"),
    "lam": (Optional[float], "CSRA's λ"),
}


def config_parameters(lists: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One CLI option per TrainConfig field, from its type, default and help (the single source of
    truth), plus ``MODEL_SHORTCUTS``. Fields in ``lists`` take comma-separated lists (grid axes);
    dict fields take JSON, list fields (milestones) a comma-separated list."""
    from .config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        flag, help_text, hint = "--" + f.name.replace("_", "-"), f.metadata["help"], hints[f.name]
        if f.name in lists:
            none = " ('none': without)" if f.name == "attn" else ""
            annotation = Optional[str]
            option = typer.Option(None, flag, help=f"{help_text}; a comma-separated list is one axis of the grid{none}")
        elif hint is dict:
            annotation, option = Optional[str], typer.Option(None, flag, help=help_text)
        elif hint == list[int]:
            annotation, option = Optional[str], typer.Option(None, flag, help=f"{help_text}; comma-separated")
        elif hint is bool or hint == bool | None:  # a flag pair; with a None default, neither flag means "decide"
            annotation = hint if hint is bool else Optional[bool]
            option = typer.Option(f.default, f"{flag}/--no-{f.name.replace('_', '-')}", help=help_text,
                                  show_default=f.default is not None)
        else:  # int | None → Optional[int], which typer understands
            annotation = hint if f.default is not None else Optional[next(t for t in typing.get_args(hint)
                                                                          if t is not type(None))]
            option = typer.Option(f.default, flag, help=help_text, show_default=f.default is not None)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=annotation))
    for name, (annotation, help_text) in MODEL_SHORTCUTS.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                        default=typer.Option(None, help=help_text), annotation=annotation))
    return params


def with_config_options(lists: tuple[str, ...] = (), exclude: tuple[str, ...] = ()):
    """Give a command taking ``**options`` the TrainConfig options (see ``config_parameters``)."""
    def wrap(func):
        signature = inspect.signature(func)
        own = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        func.__signature__ = signature.replace(parameters=own + config_parameters(lists, exclude))
        return func
    return wrap


def given_flags(ctx: typer.Context) -> list[str]:
    """The parameters set on the command line (not defaults)."""
    return [name for name in ctx.params if ctx.get_parameter_source(name).name == "COMMANDLINE"]


def command_line(ctx: typer.Context, given: list[str]) -> str:
    """The command as typed, rebuilt from the options given on the command line."""
    parts = ["attnvision", ctx.info_name]
    for name in given:
        value, flag = ctx.params[name], "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{name.replace('_', '-')}")
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def config_overrides(options: dict, given: list[str]) -> dict:
    """TrainConfig fields from the config options given on the command line: JSON dicts parsed,
    ``MODEL_SHORTCUTS`` merged key by key into model_kw (a key set by both is refused)."""
    from .config import merge_options

    out = {name: options[name] for name in given if name in options and name not in MODEL_SHORTCUTS}
    for name in ("data_kw", "model_kw"):
        if name in out:
            out[name] = parse_json_dict("--" + name.replace("_", "-"), out[name])
    if "milestones" in out:  # the one list-valued option
        out["milestones"] = parse_list("milestones", out["milestones"], int) if out["milestones"].strip() else []
    shortcuts = {name: options[name] for name in given if name in MODEL_SHORTCUTS}
    if shortcuts:
        head_kw = {k: shortcuts[k] for k in ("heads", "lam") if k in shortcuts}
        from_shortcuts = {**({"width": shortcuts["width"]} if "width" in shortcuts else {}),
                          **({"head_kw": head_kw} if head_kw else {})}
        given_kw = out.get("model_kw", {})
        clash = sorted(leaf_keys(from_shortcuts) & leaf_keys(given_kw))
        if clash:
            fail(f"--model-kw sets {', '.join(clash)}, which {', '.join('--' + k for k in shortcuts)} also "
                 "set(s): give each value once")
        out["model_kw"] = merge_options(from_shortcuts, given_kw)
    return out


def leaf_keys(options: dict, prefix: str = "") -> set[str]:
    """The dotted paths of a nested dict's values: {"head_kw": {"heads": 4}} → {"head_kw.heads"}."""
    return {path for key, value in options.items()
            for path in (leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {prefix + key})}


@app.command()
@with_config_options()
def train(
    ctx: typer.Context,
    config: Optional[str] = typer.Option(None, help="a YAML file of these options, e.g. a run folder's config.yaml "
                                         "(re-runs it), or a packaged recipe's name (`attnvision list`, e.g. "
                                         "fashion-mnist-converged); options given here override it"),
    resume: Optional[str] = typer.Option(None, help="continue the run in this folder from its last.pt, with its "
                                         "saved options; --epochs N extends it to N epochs"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    **options,
) -> None:
    """Train a model; writes metrics.json, log.csv, test predictions, TensorBoard events, best.pt and last.pt."""
    from .checkpoint import DiskFullError
    from .config import TrainConfig, merge_options, read_config
    from .train import DivergedError
    from .train import train as run_training

    given = given_flags(ctx)
    if resume is not None:
        refused = [f"--{name.replace('_', '-')}" for name in given if name not in ("resume", "epochs", "progress")]
        if refused:
            fail(f"--resume continues {resume} with the options it was started with; {', '.join(refused)} "
                 "cannot change them (only --epochs can, to extend the run). Start a new run with another "
                 "--out to change them.")
    try:
        saved = read_config(config) if config else {}
        cfg = TrainConfig.from_dict(merge_options(saved, config_overrides(options, given)))
        metrics = run_training(cfg, resume=resume, progress=progress,
                               epochs=options["epochs"] if resume is not None and "epochs" in given else None)
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
    compile: bool = typer.Option(False, "--compile", help="run the model through torch.compile (Inductor); "
                                 "eagerly, with a message, where compilation fails"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Evaluate a checkpoint on a split of the data it was trained on."""
    from .evaluate import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(checkpoint, data_dir=data_dir, split=split, compile=compile)
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result))
    else:
        scores = "  ".join(f"{k} {v:.2f}{'' if k == 'loss' else '%'}" for k, v in result.items()
                           if isinstance(v, float))
        console.print(f"{split}: {scores}  (checkpoint {checkpoint}, epoch {result['epoch']})", highlight=False)


@app.command("export")
def export_cmd(
    checkpoint: str = typer.Option(..., help="best.pt / last.pt of a run"),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript"),
    out: str = typer.Option(..., help="the file to write, e.g. model.onnx (written only when verified)"),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="accept any batch size (default: batch 1)"),
    data_dir: Optional[str] = None,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Export a checkpoint's model with its preprocessing (mean/std, input size, class names) recorded,
    and check its outputs against PyTorch's on test images of the run's data."""
    from .export import export_checkpoint

    try:
        result = export_checkpoint(checkpoint, out, fmt, dynamic_batch=dynamic_batch, data_dir=data_dir)
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e))
    except OSError as e:  # writing --out: a full disk (DiskFullError says what it needs), no write permission
        fail(f"cannot write {out}: {e.strerror or e}", code=1)
    if as_json:
        print(json.dumps(result))
        return
    batch = "any batch size" if dynamic_batch else "batch size 1"
    console.print(f"wrote {out} ({fmt}, {batch}); verified on {result['images']} test images: max |exported - "
                  f"PyTorch| = {result['max_abs_diff']:.2e} (tolerance {result['tolerance']:.1e}, largest logit "
                  f"{result['max_abs_logit']:.3g}), same top class on {result['top1_agreement']}/{result['images']}",
                  highlight=False)


def field_help(name: str) -> str:
    """The help of a TrainConfig field: what a command that takes the same option says about it."""
    from .config import TrainConfig

    return next(f.metadata["help"] for f in fields(TrainConfig) if f.name == name)


@app.command("shard")
def shard_cmd(
    data: str = typer.Option(..., help=field_help("data")),
    out: str = typer.Option(..., help="the folder to write the shards and their manifest into (not one holding shards)"),
    data_dir: Optional[str] = typer.Option(None, help=field_help("data_dir")),
    data_kw: Optional[str] = typer.Option(None, help=field_help("data_kw")),
    val_size: Optional[int] = typer.Option(None, help=field_help("val_size")),
    split_seed: int = typer.Option(0, help=field_help("split_seed")),
    shard_size: int = typer.Option(1000, help="samples per shard: at least ranks × workers shards per split keep "
                                   "every rank and worker busy"),
    resize: bool = typer.Option(False, "--resize", help="store the images squished to the data's img_size (JPEG files "
                                "saved again at quality 95) rather than the files' bytes: smaller shards, cheaper "
                                "decoding (docs/benchmarks.md)"),
) -> None:
    """Write a dataset's train, val and test splits as WebDataset tar shards, once, for `train --data
    DATA --data-dir OUT` to stream: image files keep their bytes (PNG for data held in memory)."""
    import time

    from .data import load_dataset, streamable
    from .data.shards import write_shards

    options = parse_json_dict("--data-kw", data_kw)
    t0 = time.perf_counter()
    try:
        bundle = load_dataset(data, data_dir, val_size=val_size, seed=split_seed,
                              stream=True if streamable(data) else None, **options)
        manifest = write_shards(bundle, out, shard_size,
                                {**options, "val_size": len(bundle.val), "split_seed": split_seed}, resize)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    except OSError as e:  # writing --out: a full disk, no write permission
        fail(f"cannot write {out}: {e.strerror or e}", code=1)
    written = ", ".join(f"{name} {sum(s['counts'])} samples in {len(s['shards'])} shards"
                        for name, s in manifest["splits"].items())
    console.print(f"wrote {out}: {written} ({time.perf_counter() - t0:.1f} s); train with --data {data} "
                  f"--data-dir {out}", highlight=False)


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
    classes: str = typer.Option("present", help="present (ground truth), predicted, all, or comma-separated class "
                                                "names; several joined by + (present+predicted) are scored separately"),
    split: str = typer.Option("test", help="train, val or test"),
    images: str = typer.Option("16", help="how many images of the split to explain and score (from the first), or 'all'"),
    figures: int = typer.Option(16, min=0, help="how many of them get a PNG"),
    localization: Optional[bool] = typer.Option(None, "--localization/--no-localization",
                                                help="score maps against the data's boxes (default: when it has boxes)"),
    tolerance: Optional[float] = typer.Option(
        None, min=0, help="pointing-game tolerance in pixels, also scored at 0 (default: 15/224 of the shorter "
                          "image side, TorchRay's 15 px at 224 px: 1.9 px at 28 px, 4.3 px at 64 px)"),
    faithfulness_images: int = typer.Option(128, min=0, help="images for deletion/insertion (RISE) and ROAD, "
                                                             "from the first"),
    steps: int = typer.Option(16, min=1, help="deletion/insertion steps"),
    layer: Optional[str] = typer.Option(None, help="Grad-CAM layer, a module path such as layer2 (default: the head's input)"),
    batch_size: int = typer.Option(128, min=1, help="images per batch"),
    deletion_substrate: str = typer.Option("black", help="what deletion and box masking fill pixels with: black "
                                                         "(pixel 0) or mean (the dataset mean, RISE's substrate)"),
    data_dir: Optional[str] = None,
    sanity: bool = typer.Option(False, "--sanity", help="sanity checks (Adebayo et al. 2018): maps of models whose "
                                "weights are re-drawn block by block from the head down, compared with the trained ones"),
    sanity_reference: Optional[str] = typer.Option(None, help="with --sanity: a checkpoint of the same model trained "
                                                   "on permuted labels (data randomisation test)"),
    as_json: bool = typer.Option(False, "--json", help="print the scores as one JSON object"),
) -> None:
    """Explain a checkpoint: per-image figures of its maps, and their localisation and faithfulness scores."""
    from .explain.run import ExplainSettings, explain_checkpoint

    if images != "all" and not (images.isdigit() and int(images) >= 1):
        fail(f"--images must be a positive number or 'all', got '{images}'")
    methods = tuple(m.strip() for m in method.split(",") if m.strip()) if method else None
    folder = Path(out) if out else Path(checkpoint).parent / "explain"
    settings = ExplainSettings(methods=methods, classes=classes, split=split,
                               images=None if images == "all" else int(images), figures=figures,
                               localization=localization, tolerance=tolerance, faithfulness_images=faithfulness_images,
                               steps=steps, layer=layer, batch_size=batch_size, data_dir=data_dir,
                               deletion_substrate=deletion_substrate, sanity=sanity,
                               sanity_reference=sanity_reference)
    try:
        result = explain_checkpoint(checkpoint, folder, settings)
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps(result))
        return
    print_explain(result, folder)
    if "sanity" in result:
        print_sanity(result["sanity"])


def print_explain(result: dict, folder: Path) -> None:
    """``attnvision explain``'s score table, what its scores mean, and the box-masking check."""
    from .explain.run import SCORES_FILE
    from .explain.scores import RATIOS, SCORE_COLUMNS

    columns = [(key, title.format(tol=f"{result['tolerance']:g}")) for key, title in SCORE_COLUMNS]
    columns.append(("images_per_s", "img/s"))
    sets = result.get("by_classes", {result["classes"]: result})  # several class choices: a table each
    for choice, part in sets.items():
        table = Table(title=f"{result['model']} + {result['attn'] or 'no attention'} ({result['head'] or 'own head'}), "
                            f"{result['split']} split of {result['data']}: {choice} classes")
        table.add_column("map", no_wrap=True)
        for _, title in columns:
            table.add_column(title, justify="right")
        for name, scores in part["methods"].items():
            table.add_row(name, *(f"{scores[k]:.{2 if k in RATIOS else 1}f}" if k in scores else "–"
                                  for k, _ in columns))
        (console if console.is_terminal else Console(width=160)).print(table)  # a log keeps every column
    pairs = ", ".join(f"{part['pairs']} {choice}" for choice, part in sets.items())
    console.print(f"{result['images']} images, (image, class) pairs: {pairs}; "
                  "scores in %: pointing game, energy in box (raw and min-max scaled), relevance rank; energy lift: "
                  "energy over the box's area share (a uniform map: 1.0); deletion (to "
                  f"{result['deletion_substrate']}) / insertion (from a Gaussian blur) and ROAD (10-90% of pixels "
                  f"removed, noisy linear imputation) AUC of the class probability on the first "
                  f"{result['faithfulness_images']} images; random, centre, edge (Sobel) and box are reference maps.",
                  highlight=False)
    if "box_masking" in result:
        masking = result["box_masking"]
        console.print(f"Boxes masked to {result['deletion_substrate']}: accuracy {masking['accuracy']:.1f}% → "
                      f"{masking['masked_accuracy']:.1f}% (chance {masking['chance']:.1f}%)", highlight=False)
    console.print(f"Figures and {SCORES_FILE}: {folder}", highlight=False)


def print_sanity(sanity: dict) -> None:
    """The sanity checks' table: cascade step × method, mean Spearman with the trained model's maps."""
    from .explain.sanity import FAIL_SPEARMAN, sanity_rows

    columns, rows = sanity_rows(sanity)
    table = Table(title=f"sanity checks: Spearman of |map| with the trained model's (fails above {FAIL_SPEARMAN})")
    for i, column in enumerate(columns):
        table.add_column(column, justify="right" if i else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
def profile(
    model: str = typer.Option("resnet50", help="model name"),
    attn: Optional[str] = None,
    head: Optional[str] = None,
    img_size: int = 224,
    in_chans: int = 3,
    num_classes: int = 1000,
    repeats: int = typer.Option(10, help="timed runs per batch size (median reported)"),
    compile: bool = typer.Option(False, "--compile", help="also time the model through torch.compile (Inductor): "
                                 "latency and speed-up per batch size, and the compile time apart"),
    runtime: Optional[str] = typer.Option(None, help="also time the model exported for a runtime: onnxruntime "
                                          "(ONNX with a dynamic batch, as `attnvision export` writes it; CPU)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Parameters, MACs (multiply-adds, the papers' "GFLOPs") and latency at batch 1 and 32."""
    from .profile import profile_model

    try:
        result = profile_model(model, attn=attn, head=head, img_size=img_size, in_chans=in_chans,
                               num_classes=num_classes, repeats=repeats, compile=compile,
                               runtimes=[runtime] if runtime else [])
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
        batch = key.removeprefix("latency_ms_b")
        table.add_row(f"latency, batch {batch}", f"{result[key]:.2f} ms")
        if f"compiled_{key}" in result:
            compiled = result[f"compiled_{key}"]
            table.add_row(f"compiled latency, batch {batch}", f"{compiled:.2f} ms ({result[key] / compiled:.2f}×)")
        if f"onnxruntime_{key}" in result:
            exported = result[f"onnxruntime_{key}"]
            table.add_row(f"onnxruntime latency, batch {batch}", f"{exported:.2f} ms ({result[key] / exported:.2f}×)")
    if "compile_time_s" in result:
        table.add_row("compile time", f"{result['compile_time_s']:.1f} s")
    if "export_time_s" in result:
        table.add_row("ONNX export time", f"{result['export_time_s']:.1f} s")
    console.print(table)
    notes = [f"MACs: {result['macs_convention']}", f"latency: median of {repeats} runs, {result['threads']} threads, "
             f"{result['device']}"]
    if "compile_time_s" in result or "export_time_s" in result:
        notes.append("(×) = speed-up over PyTorch eager")
    if "compile_time_s" in result:
        notes.append("compiled: torch.compile, compile time = the first call at each batch size")
    if "export_time_s" in result:
        notes.append("onnxruntime: CPU provider, as many threads as PyTorch, the model exported with a dynamic batch")
    if "onnxruntime_error" in result:
        notes.append(f"no onnxruntime latency: {result['onnxruntime_error']}")
    console.print("; ".join(notes), highlight=False)


def parse_list(option: str, text: str, kind=str) -> list:
    """A comma-separated CLI list; 'none' is None (attention, head). A piece with "=" and no ":"
    continues the module spec before it: "none,gate:channel=eca,spatial=cbam" is two entries."""
    items: list[str] = []
    for piece in text.split(","):
        if items and "=" in piece and ":" not in piece:
            items[-1] += "," + piece
        else:
            items.append(piece)
    try:
        return [None if v.strip() in ("none", "") else kind(v.strip()) for v in items]
    except ValueError:
        fail(f"--{option} must be a comma-separated list of {kind.__name__}s, got '{text}'")


PRESET_HELP = ("quick (what `make demo` runs, minutes on a CPU), converged (the measured 20-epoch Fashion-MNIST "
               "recipe and the scenes recipe, 3 seeds each, sanity checks with permuted-label models: about 20 h on 2 "
               "CPU cores), modules (every channel/spatial module and 3 composed gates, screened on one seed, the "
               "baseline, the papers' four and the screen's best 2 confirmed on 3: about 6 h), full (the 15-epoch "
               "Fashion-MNIST recipe, 5 seeds), cifar (ResNet-56 on CIFAR-100, 164 epochs, 5 seeds, SE as positive "
               "control) or cifar10: the last three for a GPU machine")


def study_settings(localization: str | None, confirm: str | None, **given) -> dict:
    """The study settings given on the command line (flags left out are None)."""
    settings = {name: value for name, value in given.items() if value is not None}
    if confirm is not None:
        settings["confirm"] = [name.strip() for name in confirm.split(",")]
    if localization is not None:
        settings["localization"] = None if localization == "none" else parse_json_dict("--localization", localization)
    return settings


@app.command()
@with_config_options(lists=GRID_AXES, exclude=("out",))
def compare(
    ctx: typer.Context,
    preset: Optional[str] = typer.Option(None, help=PRESET_HELP),
    grid: Optional[str] = typer.Option(None, help="a grid YAML file (keys: model, attn, head, seed as lists, "
                                       "recipe, localization, localization_seeds, data_randomization, confirm, "
                                       "confirm_top, baseline, positive_control, explain_images, note), e.g. a "
                                       "study's study.yaml"),
    out: str = typer.Option("runs/study", help="study folder"),
    localization: Optional[str] = typer.Option(
        None, help="options of the localisation part as JSON (e.g. '{\"data\": \"fashion-mnist-scenes-single\", "
                   "\"epochs\": 3}'), or 'none' for no such part"),
    baseline: Optional[str] = typer.Option(None, help="the configuration the others are tested against "
                                           "(default: the first)"),
    positive_control: Optional[str] = typer.Option(None, help="a configuration expected to beat the baseline (a "
                                                   "published gain): the report says whether it did"),
    localization_seeds: Optional[int] = typer.Option(None, min=1, help="the localisation part trains the first N "
                                                     "seeds (default 1)"),
    data_randomization: Optional[bool] = typer.Option(None, help="also train each localisation configuration on "
                                                      "permuted labels (first seed): the sanity checks' data "
                                                      "randomisation test"),
    confirm: Optional[str] = typer.Option(None, help="screening plus confirmation: configurations (comma-separated) "
                                          "that the seeds after the first and the localisation part train, "
                                          "besides the best of the first seed's screen of every configuration"),
    confirm_top: Optional[int] = typer.Option(None, min=0, help="how many of the screen's best (by validation "
                                              "score) join the confirmed configurations (default 1)"),
    explain_images: Optional[int] = typer.Option(None, min=1, help="test images explained per localisation run"),
    faithfulness_images: Optional[int] = typer.Option(None, min=1, help="of those, how many also get "
                                                      "deletion/insertion scores (the costly part)"),
    jobs: Optional[int] = typer.Option(None, min=1, help="runs at once (default: one per GPU, else one per CPU core)"),
    executor: str = typer.Option("local", help="local (processes on this machine) or ray (Ray tasks)"),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local Ray)"),
    **options,
) -> None:
    """Train a grid of configurations × seeds and write a report comparing accuracy (with paired
    significance tests), cost and localisation: report.html, report.md, results.csv, plots."""
    from .study.execute import default_jobs
    from .study.grid import build_study, load_grid
    from .study.run import run_study

    if executor not in ("local", "ray"):
        fail(f"unknown --executor '{executor}'; valid: local, ray")
    given = given_flags(ctx)
    axes = {name: parse_list(name, options[name], int if name == "seed" else str) for name in GRID_AXES if name in given}
    jobs, threads = default_jobs(jobs)
    recipe = config_overrides(options, [name for name in given if name not in GRID_AXES])
    settings = study_settings(localization, confirm, baseline=baseline, positive_control=positive_control,
                              explain_images=explain_images, localization_seeds=localization_seeds,
                              data_randomization=data_randomization, confirm_top=confirm_top,
                              faithfulness_images=faithfulness_images)
    try:
        grid_file = load_grid(grid) if grid else None
        if "threads" not in recipe and "threads" not in ((grid_file or {}).get("recipe") or {}):
            recipe["threads"] = threads  # recorded in every cell, fixed across seeds and modules
        study = build_study(preset, grid_file, axes, recipe, **settings)
        data, report = run_study(study, Path(out), jobs, study.recipe["threads"], command_line(ctx, given),
                                 executor, ray_address)
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e))
    print_summary(data, report)


def print_summary(data: dict, report: Path) -> None:
    """The study's summary table (its own width where output is not a terminal: a log keeps every column)."""
    from .study.report import summary_table

    out = console if console.is_terminal else Console(width=160)
    out.print(summary_table(data))
    out.print(f"report: {report.resolve()}", highlight=False)


@app.command()
def report(out: str = typer.Argument(..., help="a study folder written by `attnvision compare`")) -> None:
    """Rebuild a study's report from its run folders, without training."""
    from .study.run import build_report

    try:
        data, path = build_report(Path(out))
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e))
    print_summary(data, path)


def main() -> None:
    app()

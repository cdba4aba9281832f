"""Explain a trained run: maps for a split's images, their localisation and faithfulness scores,
one figure per image, ``scores.json`` (the means) and ``pairs.pt`` (every pair's scores: "pairs"
(P, 2) rows (image, class), then per map name its per-pair scores: localisation in [0, 1],
deletion/insertion in percent for the first ``faithfulness_pairs`` pairs). ``attnvision explain``
is a thin layer over :func:`explain_checkpoint`; it reads the model and data through
``train.load_run`` only.

Phases: select the images and the (image, class) pairs to explain → ``map_and_score``: per batch
of images, every method's maps for its pairs and their per-pair localisation scores (no map of
the whole split is kept) → deletion/insertion on the first ``faithfulness_images`` images →
``write_figures`` → summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..data import Split, TensorLoader
from .cam import METHODS, has_own_maps, pair_maps
from .figures import gallery_figure, image_figure
from .scores import BASELINES, baseline_maps, deletion_insertion, pair_scores, summarize_pairs

CLASS_CHOICES = ("present", "predicted", "all")


def choose_pairs(choice: str, targets: torch.Tensor, logits: torch.Tensor, class_names: list[str],
                 task: str) -> torch.Tensor:
    """(P, 2) rows (image index, class) to explain. ``choice``: "present" (the ground-truth
    classes), "predicted" (arg-max for single-label, logit > 0 for multi-label), "all", or
    comma-separated class names."""
    n, c = logits.shape
    if choice == "present":
        wanted = (targets[:, None] == torch.arange(c)) if task == "single" else targets == 1
    elif choice == "predicted":
        wanted = (logits.argmax(1, keepdim=True) == torch.arange(c)) if task == "single" else logits > 0
    elif choice == "all":
        wanted = torch.ones(n, c, dtype=torch.bool)
    else:
        names = [s.strip() for s in choice.split(",") if s.strip()]
        unknown = [s for s in names if s not in class_names]
        if unknown or not names:
            raise ValueError(f"unknown class {', '.join(repr(s) for s in unknown) or '(none given)'} for --classes; "
                             f"valid: {', '.join(CLASS_CHOICES)}, or names among: {', '.join(class_names)}")
        wanted = torch.zeros(n, c, dtype=torch.bool)
        wanted[:, [class_names.index(s) for s in names]] = True
    return wanted.nonzero()


def pair_boxes(boxes: list[torch.Tensor], pairs: torch.Tensor) -> list[torch.Tensor]:
    """For each (image, class) pair, the boxes (k, 4) of that class in that image (k may be 0)."""
    return [boxes[i][boxes[i][:, 4] == c, :4] for i, c in pairs.tolist()]


def explain_checkpoint(checkpoint: str | Path, out: str | Path, methods: tuple[str, ...] | None = None,
                       classes: str = "present", split: str = "test", images: int | None = 16,
                       figures: int = 16, localization: bool | None = None, tolerance: float = 4,
                       faithfulness_images: int = 128, steps: int = 16, layer: str | None = None,
                       batch_size: int = 128, data_dir: str | None = None, seed: int = 0) -> dict:
    """Explain ``images`` images (None: all) of ``split`` of a checkpoint's data; writes
    ``figures`` PNGs, ``scores.json`` and ``pairs.pt`` to ``out`` and returns the scores.

    ``methods`` None: Grad-CAM, plus the model's own maps where it has them.
    ``localization``: score maps against the data's boxes (None: when the data has boxes; True on
    data without boxes is an error). Baselines (random, centre, box) are scored beside the methods
    for localisation; deletion/insertion run for the methods and the random map (the reference).
    """
    from ..evaluate import load_run

    for method in methods or ():
        if method not in METHODS:
            raise ValueError(f"unknown explanation method '{method}'; valid: {', '.join(METHODS)}")
    if images is not None and images < 1 or figures < 0 or faithfulness_images < 0 or steps < 1 or tolerance < 0:
        raise ValueError("--images must be >= 1 (or all), --figures and --faithfulness-images >= 0, --steps >= 1, "
                         "--tolerance >= 0")
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split '{split}'; valid: train, val, test")
    cfg, bundle, model, fabric, state = load_run(checkpoint, data_dir)
    data, boxes = select_images(bundle, cfg.data, split, images, localization)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loader = TensorLoader(data, batch_size, mean=bundle.mean, std=bundle.std, train=False, device=fabric.device,
                          channels_last=cfg.channels_last)
    with torch.no_grad():
        logits = torch.cat([model(x).float().cpu() for x, _ in loader])
    if methods is None:
        methods = ("gradcam", "attention") if has_own_maps(model, next(iter(loader))[0][:1]) else ("gradcam",)
    pairs = choose_pairs(classes, data.targets, logits, bundle.class_names, bundle.task)
    if len(pairs) == 0:
        raise ValueError(f"--classes {classes} selects no (image, class) pair in the {len(data)} images")
    black = -torch.tensor(bundle.mean) / torch.tensor(bundle.std)  # pixel value 0, normalised
    names = list(methods) + (list(BASELINES) if boxes is not None else [])

    kept = pairs[:, 0] < max(figures, faithfulness_images)  # pairs whose maps are kept for figures/faithfulness
    per_pair, kept_maps, seconds = map_and_score(model, loader, pairs, kept, names, boxes, tolerance, layer, black, seed)
    summary, saved = {}, {"pairs": pairs}  # saved: every pair's scores, for paired comparisons of runs
    for name in names:
        summary[name] = {"seconds": seconds[name], "images_per_s": len(data) / max(seconds[name], 1e-9)}
        if boxes is not None:
            summary[name].update(summarize_pairs(per_pair[name], pairs[:, 1]))
            saved[name] = per_pair[name]
    kept_pairs = pairs[kept]
    faithful = kept_pairs[:, 0] < faithfulness_images
    if faithful.any():
        x_faith = torch.cat([x for x, _ in loader_prefix(loader, faithfulness_images)])
        for name in [m for m in names if m not in BASELINES or m == "random"]:  # random: the reference
            auc = deletion_insertion(model, x_faith[kept_pairs[faithful, 0]], kept_maps[name][faithful],
                                     kept_pairs[faithful, 1], black, bundle.task == "multilabel", steps, batch_size, seed)
            summary[name].update(deletion=float(auc["deletion"].mean()), insertion=float(auc["insertion"].mean()),
                                 faithfulness_pairs=int(faithful.sum()))
            saved.setdefault(name, {}).update(auc)
    probs = logits.sigmoid() if bundle.task == "multilabel" else logits.softmax(1)
    write_figures(out, split, data, kept_pairs, {m: kept_maps[m] for m in methods}, probs, boxes,
                  bundle.class_names, figures)

    result = {"checkpoint": str(checkpoint), "model": cfg.model, "attn": cfg.attn, "head": cfg.head, "data": cfg.data,
              "task": bundle.task, "split": split, "images": len(data), "pairs": len(pairs), "classes": classes,
              "localization": boxes is not None, "tolerance": tolerance,
              "faithfulness_images": min(faithfulness_images, len(data)), "steps": steps,
              "layer": layer or "head input", "epoch": state["epoch"], "threads": torch.get_num_threads(),
              "device": str(fabric.device), "methods": summary}
    (out / "scores.json").write_text(json.dumps(result, indent=2))
    torch.save(compact(saved), out / "pairs.pt")
    return result


def compact(saved: dict) -> dict:
    """``pairs.pt`` in small types: hits (pointing game, valid) as bool, other scores as float16
    (3 significant digits, plenty for means and paired tests), pairs as int32."""
    def small(name: str, t: torch.Tensor) -> torch.Tensor:
        return t.bool() if name.startswith("pointing") or name == "valid" else t.half()

    return {key: value.int() if key == "pairs" else {name: small(name, t) for name, t in value.items()}
            for key, value in saved.items()}


def select_images(bundle, data_name: str, split: str, images: int | None,
                  localization: bool | None) -> tuple[Split, list[torch.Tensor] | None]:
    """The first ``images`` images of the split and their boxes (None when not scoring localisation)."""
    all_boxes = bundle.extras.get("boxes", {}).get(split)
    if localization and all_boxes is None:
        raise ValueError(f"dataset '{data_name}' has no object boxes, so maps cannot be scored for localisation; "
                         "drop --localization, or explain a model trained on data with boxes "
                         "(fashion-mnist-scenes, fashion-mnist-scenes-single, voc2007, coco2014)")
    data = getattr(bundle, split)
    n = len(data) if images is None else min(images, len(data))
    use_boxes = all_boxes is not None if localization is None else localization
    return data.subset(torch.arange(n)), all_boxes[:n] if use_boxes else None


def map_and_score(model, loader: TensorLoader, pairs: torch.Tensor, kept: torch.Tensor, names: list[str],
                  boxes: list[torch.Tensor] | None, tolerance: float, layer: str | None, black: torch.Tensor,
                  seed: int) -> tuple[dict, dict, dict]:
    """Per batch of images, every map of its pairs and (with boxes) their localisation scores.
    Returns per-pair scores {name: {score: (P,)}}, the maps of the ``kept`` pairs {name: (P_kept, H, W)}
    and the seconds spent making each kind of map. No map of the whole split is held."""
    scores = {name: [] for name in names}
    kept_maps = {name: [] for name in names}
    seconds = dict.fromkeys(names, 0.0)
    start = 0
    for x, _ in loader:
        in_batch = (pairs[:, 0] >= start) & (pairs[:, 0] < start + len(x))
        batch_pairs = pairs[in_batch]
        batch_boxes = None if boxes is None else pair_boxes(boxes, batch_pairs)
        for name in names:
            t0 = time.perf_counter()
            if name in BASELINES:
                maps = baseline_maps(name, len(batch_pairs), *x.shape[2:], boxes=batch_boxes, seed=seed + start)
            else:
                maps = pair_maps(model, x, batch_pairs - torch.tensor([start, 0]), name, layer, black).float().cpu()
            seconds[name] += time.perf_counter() - t0
            if boxes is not None:
                scores[name].append(pair_scores(maps, batch_boxes, tolerance))
            kept_maps[name].append(maps[kept[in_batch]])
        start += len(x)
    joined = {name: {k: torch.cat([d[k] for d in parts]) for k in parts[0]} for name, parts in scores.items() if parts}
    return joined, {name: torch.cat(m) for name, m in kept_maps.items()}, seconds


def write_figures(out: Path, split: str, data: Split, pairs: torch.Tensor, maps: dict[str, torch.Tensor],
                  probs: torch.Tensor, boxes: list[torch.Tensor] | None, class_names: list[str], figures: int) -> None:
    """One PNG per image i < ``figures``: its pairs' rows of ``maps`` (aligned with ``pairs``)."""
    for i in range(min(figures, len(data))):
        rows = pairs[:, 0] == i
        classes = pairs[rows, 1]
        image_figure(out / f"{split}-{i:05d}.png", data.images[i], [class_names[c] for c in classes],
                     probs[i, classes], {m: v[rows] for m, v in maps.items()},
                     None if boxes is None else pair_boxes(boxes, pairs[rows]))


def loader_prefix(loader: TensorLoader, images: int):
    """The loader's batches up to ``images`` images, the last one cut."""
    seen = 0
    for x, y in loader:
        if seen >= images:
            return
        yield x[: images - seen], y[: images - seen]
        seen += len(x)


def runs_gallery(checkpoints: dict[str, str | Path], out: str | Path, images: int = 8) -> Path:
    """A gallery PNG of the same first ``images`` test images explained by several runs
    (label → checkpoint): one row per run's Grad-CAM, plus a row with its own map where it has
    one (spatial gate, CSRA, Query2Label). Each column explains the image's ground-truth class
    (for multi-label data its first present class), with that class's boxes where the data has them."""
    from ..evaluate import load_run

    rows, first = {}, None
    for label, checkpoint in checkpoints.items():
        cfg, bundle, model, fabric, _ = load_run(checkpoint)
        test = bundle.test.subset(torch.arange(min(images, len(bundle.test))))
        x, _ = next(iter(TensorLoader(test, len(test), mean=bundle.mean, std=bundle.std, train=False,
                                      device=fabric.device, channels_last=cfg.channels_last)))
        targets = test.targets if bundle.task == "single" else test.targets.argmax(1)
        pairs = torch.stack([torch.arange(len(test)), targets], 1)
        if first is None:
            all_boxes = bundle.extras.get("boxes", {}).get("test")
            first = (test.images, None if all_boxes is None else pair_boxes(all_boxes, pairs),
                     [bundle.class_names[c] for c in targets])
        rows[f"{label} Grad-CAM"] = pair_maps(model, x, pairs, "gradcam").cpu()
        if has_own_maps(model, x[:1]):
            rows[f"{label} own map"] = pair_maps(model, x, pairs, "attention").cpu()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gallery_figure(out, first[0], rows, first[1], first[2])
    return out

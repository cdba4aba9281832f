"""Explain a trained run: maps for a split's images, their localisation and faithfulness scores,
one figure per image, ``scores.json`` (SCORES_FILE: the means) and ``pairs.pt`` (PAIRS_FILE: every
pair's scores: "pairs" (P, 2) rows (image, class), then per map name its per-pair scores:
localisation in [0, 1] (energy lift a ratio), deletion/insertion and ROAD in percent for the first
``faithfulness_pairs`` pairs).
``attnvision explain`` is a thin layer over :func:`explain_checkpoint` and its ``ExplainSettings``;
it reads the model and data through ``evaluate.load_run`` only, never the trainer.

Phases: select the images and the (image, class) pairs to explain → ``map_and_score``: per batch
of images, every method's maps for its pairs and their per-pair localisation scores (no map of
the whole split is kept) → ``faithfulness``: deletion/insertion and ROAD on the first
``faithfulness_images`` images → (with boxes) ``box_masking``: the model's accuracy with every box
masked → ``summarize`` → ``write_figures`` → ``scores.json``, ``pairs.pt``. Every score's convention
is in ``explain.scores``' docstring.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..checkpoint import atomic_torch_save, atomic_write_text
from ..data import BatchLoader, Split, first_images
from ..evaluate import SPLITS, load_run
from .cam import METHODS, default_methods, pair_maps
from .figures import gallery_figure, image_figure
from .sanity import run_sanity
from .scores import (BASELINES, ROAD_FRACTIONS, ROAD_NOISE, baseline_maps, box_masking, default_tolerance,
                     deletion_insertion, pair_scores, road, summarize_pairs)

SCORES_FILE = "scores.json"
PAIRS_FILE = "pairs.pt"
CLASS_CHOICES = ("present", "predicted", "all")
SUBSTRATES = ("black", "mean")
GALLERY_TITLES = {"gradcam": "Grad-CAM", "attention": "own map"}  # what deletion and box masking fill pixels with: pixel 0, or the dataset mean


@dataclass(frozen=True)
class ExplainSettings:
    """What ``explain_checkpoint`` explains and how it scores it (the defaults: ``attnvision explain``'s)."""

    methods: tuple[str, ...] | None = None  # map methods (METHODS); None: Grad-CAM, plus the model's own maps
    classes: str = "present"  # the pairs' classes: present, predicted, all, class names (a,b); several: present+predicted
    split: str = "test"  # train, val or test
    images: int | None = 16  # the first N images of the split to explain and score; None: all
    figures: int = 16  # of those, how many get a PNG
    localization: bool | None = None  # score maps against the data's boxes; None: when it has boxes
    tolerance: float | None = None  # pointing-game tolerance in pixels (also scored at 0); None: default_tolerance
    faithfulness_images: int = 128  # deletion/insertion (RISE) and ROAD on the first N images
    steps: int = 16  # deletion/insertion steps
    layer: str | None = None  # Grad-CAM layer, a module path such as "layer2"; None: the head's input
    batch_size: int = 128  # images per batch
    data_dir: str | None = None  # where the run's data lies; None: where it was trained from
    seed: int = 0  # of the random reference map, ROAD's noise and the order of tied pixels in deletion/insertion/ROAD
    deletion_substrate: str = "black"  # deletion's (and box masking's) fill: "black" (pixel 0) or "mean" (RISE's)
    sanity: bool = False  # sanity checks (explain/sanity.py): cascading weight randomisation, scores.json "sanity"
    sanity_reference: str | None = None  # with sanity: a checkpoint of the same model trained on permuted labels

    def check(self) -> None:
        """Refuse settings that cannot work, before any model loads."""
        unknown = [m for m in self.methods or () if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown explanation method '{unknown[0]}'; valid: {', '.join(METHODS)}")
        if self.split not in SPLITS:
            raise ValueError(f"unknown split '{self.split}'; valid: {', '.join(SPLITS)}")
        if self.sanity_reference and not self.sanity:
            raise ValueError("a sanity reference (permuted-label checkpoint) is only used with --sanity")
        if self.deletion_substrate not in SUBSTRATES:
            raise ValueError(f"unknown deletion substrate '{self.deletion_substrate}'; valid: {', '.join(SUBSTRATES)}")
        least = {"images": 1, "figures": 0, "faithfulness_images": 0, "steps": 1, "tolerance": 0, "batch_size": 1}
        for name, bound in least.items():
            value = getattr(self, name)
            if value is not None and value < bound:  # images None: all
                raise ValueError(f"{name} must be >= {bound}, got {value}")


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


def select_pairs(classes: str, targets: torch.Tensor, logits: torch.Tensor, bundle) -> tuple[dict, torch.Tensor]:
    """The pairs of each class choice ("present+predicted": two) and their union, each pair once."""
    sets = {choice: choose_pairs(choice, targets, logits, bundle.class_names, bundle.task)
            for choice in classes.split("+")}
    pairs = torch.cat(list(sets.values())).unique(dim=0)  # by image then class
    if len(pairs) == 0:
        raise ValueError(f"--classes {classes} selects no (image, class) pair in the {len(targets)} images")
    return sets, pairs


def explain_checkpoint(checkpoint: str | Path, out: str | Path, settings: ExplainSettings = ExplainSettings()) -> dict:
    """Explain ``settings.images`` images of a checkpoint's data; writes ``settings.figures`` PNGs,
    SCORES_FILE and PAIRS_FILE to ``out`` and returns the scores.

    With localisation, the reference maps (random, centre, edge, box) are scored beside the methods
    (True on data without boxes is an error) and "box_masking" gives the model's accuracy with every
    box masked; deletion/insertion and ROAD run for the methods and the random map (the reference).
    "classes" records which classes the pairs explain (present, predicted, ...). Several choices
    joined by "+" ("present+predicted") are explained in one pass over the union of their pairs and
    scored separately: "by_classes" {choice: {"pairs", "methods"}}, and "pairs"/"methods" are the
    first choice's (pairs.pt holds the union).
    """
    settings.check()
    cfg, bundle, model, fabric, state = load_run(checkpoint, settings.data_dir)
    data, boxes = select_images(bundle, cfg.data, settings.split, settings.images, settings.localization)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loader = BatchLoader(data, settings.batch_size, mean=bundle.mean, std=bundle.std, train=False,
                          device=fabric.device, channels_last=cfg.channels_last)
    with torch.no_grad():
        logits = torch.cat([model(x).float().cpu() for x, _ in loader])
    methods = settings.methods or default_methods(model, next(iter(loader))[0][:1])
    sets, pairs = select_pairs(settings.classes, data.targets, logits, bundle)
    black = -torch.tensor(bundle.mean) / torch.tensor(bundle.std)  # pixel value 0, normalised
    substrate = black if settings.deletion_substrate == "black" else torch.zeros_like(black)
    tolerance = settings.tolerance if settings.tolerance is not None else default_tolerance(*data.images.shape[2:])
    names = list(methods) + (list(BASELINES) if boxes is not None else [])
    multilabel = bundle.task == "multilabel"

    kept = pairs[:, 0] < max(settings.figures, settings.faithfulness_images)  # maps kept for figures/faithfulness
    localization, kept_maps, seconds = map_and_score(model, loader, pairs, kept, names, boxes, tolerance,
                                                     settings.layer, black, settings.seed)
    noise = ROAD_NOISE / torch.tensor(bundle.std)  # ROAD's σ in the normalised input's units
    aucs = faithfulness(model, loader, pairs[kept], kept_maps, names, substrate, noise, multilabel, settings)
    summary, saved = summarize(names, seconds, len(data), pairs, localization, aucs)
    probs = logits.sigmoid() if multilabel else logits.softmax(1)
    write_figures(out, settings.split, data, pairs[kept], {m: kept_maps[m] for m in methods}, probs, boxes,
                  bundle.class_names, settings.figures)

    result = {"checkpoint": str(checkpoint), "model": cfg.model, "attn": cfg.attn, "head": cfg.head, "data": cfg.data,
              "task": bundle.task, "split": settings.split, "images": len(data), "pairs": len(pairs),
              "classes": settings.classes, "localization": boxes is not None, "tolerance": tolerance,
              "faithfulness_images": min(settings.faithfulness_images, len(data)), "steps": settings.steps,
              "deletion_substrate": settings.deletion_substrate, "road_fractions": list(ROAD_FRACTIONS),
              "road_noise": ROAD_NOISE, "layer": settings.layer or "head input", "epoch": state["epoch"],
              "threads": torch.get_num_threads(), "device": str(fabric.device), "methods": summary}
    if len(sets) > 1:
        result["by_classes"] = by_classes(sets, names, seconds, len(data), pairs, localization, aucs, settings)
        result.update(next(iter(result["by_classes"].values())))  # "pairs", "methods": the first choice's
    if boxes is not None:
        result["box_masking"] = box_masking(model, (x for x, _ in loader), data.targets, boxes, substrate, multilabel)
    if settings.sanity:  # after the main scores: the trained model's maps are compared with re-drawn models'
        result["sanity"] = run_sanity(cfg, bundle, model, loader, pairs, tuple(methods),
                                      None if boxes is None else pair_boxes(boxes, pairs), black,
                                      replace(settings, tolerance=tolerance))  # the tolerance in use
    atomic_write_text(out / SCORES_FILE, json.dumps(result, indent=2))
    atomic_torch_save(compact(saved), out / PAIRS_FILE)
    return result


def faithfulness(model, loader: BatchLoader, pairs: torch.Tensor, maps: dict[str, torch.Tensor], names: list[str],
                 substrate: torch.Tensor, noise: torch.Tensor, multilabel: bool,
                 settings: ExplainSettings) -> dict[str, dict]:
    """Deletion/insertion AUCs and ROAD scores {name: {"deletion", "insertion", "road_morf", ...}}
    of the ``pairs`` (rows of ``maps``) on the first ``settings.faithfulness_images`` images, for the
    methods and the random map (the reference). ``substrate`` (C,): deletion's fill; ``noise`` (C,):
    ROAD's σ, both normalised."""
    faithful = pairs[:, 0] < settings.faithfulness_images
    if not faithful.any():
        return {}
    x = torch.cat([x for x, _ in loader_prefix(loader, settings.faithfulness_images)])
    x, targets = x[pairs[faithful, 0]], pairs[faithful, 1]
    return {name: {**deletion_insertion(model, x, maps[name][faithful], targets, substrate, multilabel,
                                        settings.steps, settings.batch_size, settings.seed),
                   **road(model, x, maps[name][faithful], targets, noise, multilabel, settings.batch_size,
                          settings.seed)}
            for name in names if name not in BASELINES or name == "random"}


def summarize(names: list[str], seconds: dict, images: int, pairs: torch.Tensor, localization: dict,
              aucs: dict) -> tuple[dict, dict]:
    """Per map its speed, mean localisation scores, deletion/insertion and ROAD AUCs and mean ROAD
    curves (scores.json's "methods"); and every pair's scores (pairs.pt, for paired comparisons of runs)."""
    summary, saved = {}, {"pairs": pairs}
    for name in names:
        summary[name] = {"seconds": seconds[name], "images_per_s": images / max(seconds[name], 1e-9)}
        if name in localization:
            summary[name].update(summarize_pairs(localization[name], pairs[:, 1]))
            saved[name] = dict(localization[name])  # a copy: the faithfulness scores join it below
        if name in aucs:
            auc = aucs[name]  # per pair: (P,) scores, (P, fractions) curves
            summary[name].update({k: float(v.mean()) if v.ndim == 1 else v.mean(0).tolist() for k, v in auc.items()})
            summary[name]["faithfulness_pairs"] = len(auc["deletion"])
            saved.setdefault(name, {}).update(auc)
    return summary, saved


def by_classes(sets: dict[str, torch.Tensor], names: list[str], seconds: dict, images: int, pairs: torch.Tensor,
               localization: dict, aucs: dict, settings: ExplainSettings) -> dict[str, dict]:
    """Per class choice (``sets``: its pairs, each a row of the union ``pairs``), its number of pairs
    and its own summary ("methods"), from the union's per-pair scores."""
    width = int(pairs[:, 1].max()) + 1  # a pair's key: image · width + class
    faithful = pairs[:, 0] < settings.faithfulness_images  # the rows of the union that aucs holds
    out = {}
    for choice, chosen in sets.items():
        rows = torch.isin(pairs[:, 0] * width + pairs[:, 1], chosen[:, 0] * width + chosen[:, 1])
        part = {n: {k: v[rows] for k, v in d.items()} for n, d in localization.items()}
        part_aucs = {n: {k: v[rows[faithful]] for k, v in d.items()} for n, d in aucs.items()}
        out[choice] = {"pairs": len(chosen),
                       "methods": summarize(names, seconds, images, pairs[rows], part, part_aucs)[0]}
    return out


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
    return first_images(data, n), all_boxes[:n] if use_boxes else None


def map_and_score(model, loader: BatchLoader, pairs: torch.Tensor, kept: torch.Tensor, names: list[str],
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
            if name in BASELINES:  # seeded by image index: the same maps whatever the batch size
                maps = baseline_maps(name, len(batch_pairs), *x.shape[2:], boxes=batch_boxes, seed=seed,
                                     images=x[batch_pairs[:, 0] - start], index=batch_pairs[:, 0])
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


def loader_prefix(loader: BatchLoader, images: int):
    """The loader's batches up to ``images`` images, the last one cut."""
    seen = 0
    for x, y in loader:
        if seen >= images:
            return
        yield x[: images - seen], y[: images - seen]
        seen += len(x)


def runs_gallery(checkpoints: dict[str, str | Path], out: str | Path, images: int = 8) -> Path:
    """A gallery PNG of the same first ``images`` test images explained by several runs
    (label → checkpoint): one row per run's Grad-CAM (where it has a head's input: not DRAM), plus a
    row with its own map where it has one (spatial gate, CSRA, Query2Label, show-attend-tell, DRAM). Each column explains the image's ground-truth class
    (for multi-label data its first present class), with that class's boxes where the data has them."""
    rows, first = {}, None
    for label, checkpoint in checkpoints.items():
        cfg, bundle, model, fabric, _ = load_run(checkpoint)
        test = first_images(bundle.test, images)
        x, _ = next(iter(BatchLoader(test, len(test), mean=bundle.mean, std=bundle.std, train=False,
                                      device=fabric.device, channels_last=cfg.channels_last)))
        targets = test.targets if bundle.task == "single" else test.targets.argmax(1)
        pairs = torch.stack([torch.arange(len(test)), targets], 1)
        if first is None:
            all_boxes = bundle.extras.get("boxes", {}).get("test")
            first = (test.images, None if all_boxes is None else pair_boxes(all_boxes, pairs),
                     [bundle.class_names[c] for c in targets])
        for method in default_methods(model, x[:1]):
            rows[f"{label} {GALLERY_TITLES[method]}"] = pair_maps(model, x, pairs, method).cpu()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gallery_figure(out, first[0], rows, first[1], first[2])
    return out

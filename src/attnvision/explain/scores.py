"""How well a saliency map localises an object with a known box, and how faithful it is to the model.

Conventions (each changes published numbers, so each is stated):

- A map is (H, W), one per (image, class) pair, on the image's pixel grid. Boxes are int
  (x0, y0, x1, y1) with exclusive ends: a box covers pixels [y0, y1) × [x0, x1). A pair's boxes are
  the boxes of *that class* in *that image*; their union is the box mask S.
- Pairs with no box (a class absent from the image) are left out of every localisation score and
  counted as ``skipped``; scores are means over the remaining pairs, in percent.
- ``pointing_game`` (Zhang et al., ECCV 2016 / IJCV 2018): a hit when the map's maximum lies in S,
  or within ``tolerance`` pixels of it (Euclidean distance from the pixel to the nearest box pixel
  ≤ tolerance; TorchRay's reference code accepts distance < 15 px on ~224-px images). When several
  pixels share the maximum, all of them must qualify; a constant map (no maximum), including an
  all-zero one, is a miss. The paper averages over classes: ``per_class`` gives that too.
- ``energy_in_box`` (Score-CAM's energy-based pointing game, Wang et al. CVPRW 2020):
  Σ_{p∈S} max(m_p, 0) / Σ_p max(m_p, 0). A map without positive mass scores 0. A uniform map scores
  |S| / (H·W), the box's area share.
- ``relevance_rank`` (Arras et al. 2022, relevance rank accuracy): the share of the |S| highest
  pixels of the map that lie in S. Ties at the |S|-th value are counted at their expected value
  under random tie-breaking, so a uniform (or all-zero) map scores |S| / (H·W) and an order that
  is not in the map is never invented.

Faithfulness (RISE, Petsiuk et al. BMVC 2018): pixels in decreasing map order (ties in a fixed
random order) are moved, ``steps`` equal chunks at a time, to a substrate (deletion: from the
image to black, i.e. pixel value 0; insertion: from a blurred copy, Gaussian kernel 11, σ = 5, back
to the image), and the explained class's probability (softmax for single-label, sigmoid for
multi-label models) is recorded after each chunk; the score is the area under that curve over the
fraction of pixels moved (trapezoid rule), in percent. Lower deletion and higher insertion AUC
are better. Deviation: the RISE code's deletion substrate is zero *after* normalisation (the
dataset mean); black is the empty background of the scene datasets this is used on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CHUNK = 1024  # pairs per vectorised block: bounds the (pairs, boxes, H, W) temporaries
SCORES = ("pointing_game", "pointing_game_exact", "energy_in_box", "relevance_rank")
BASELINES = ("random", "centre", "box")  # reference maps, scored beside every method
# every score a map gets with its column title ({tol}: the pointing game's tolerance in pixels): the
# one list the CLI's table, the study's report and the benchmark tables show
SCORE_COLUMNS = (("pointing_game", "pointing ≤ {tol} px (%)"), ("pointing_game_exact", "pointing 0 px (%)"),
                 ("energy_in_box", "energy in box (%)"), ("relevance_rank", "relevance rank (%)"),
                 ("deletion", "deletion AUC ↓"), ("insertion", "insertion AUC ↑"))


def box_masks(boxes: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Union masks bool (N, H, W) of each pair's boxes (k_n, 4) = (x0, y0, x1, y1), ends exclusive."""
    masks = [box_distance(block, height, width) == 0 for block in pad_boxes(boxes).split(CHUNK)]
    return torch.cat(masks) if masks else torch.zeros(0, height, width, dtype=torch.bool)


def pad_boxes(boxes: list[torch.Tensor]) -> torch.Tensor:
    """(N, K, 4) int64 with K = the most boxes of any pair; missing rows are empty boxes (0, 0, 0, 0)."""
    k = max((len(b) for b in boxes), default=0)
    out = torch.zeros(len(boxes), max(k, 1), 4, dtype=torch.long)
    for i, b in enumerate(boxes):  # one row per pair, not per pixel: N small copies
        out[i, :len(b)] = b[:, :4]
    return out


def box_distance(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Squared Euclidean distance (n, H, W) from every pixel to the nearest pixel of the pair's
    boxes (n, K, 4); +inf for pairs without a box."""
    ys = torch.arange(height)[:, None]
    xs = torch.arange(width)[None, :]
    x0, y0, x1, y1 = (boxes[..., i, None, None] for i in range(4))
    dx = torch.clamp(torch.maximum(x0 - xs, xs - (x1 - 1)), min=0)
    dy = torch.clamp(torch.maximum(y0 - ys, ys - (y1 - 1)), min=0)
    dist = (dx * dx + dy * dy).float()
    empty = (x1 <= x0) | (y1 <= y0)
    return dist.masked_fill(empty, math.inf).amin(1)


def localization_scores(maps: torch.Tensor, boxes: list[torch.Tensor], tolerance: float = 0,
                        classes: torch.Tensor | None = None) -> dict:
    """Pointing game, energy-in-box and relevance rank (percent) of maps (N, H, W) against the boxes
    of each pair (a list of N int tensors (k_n, 4), x0, y0, x1, y1, ends exclusive).

    Returns {"pointing_game" (within ``tolerance``), "pointing_game_exact" (tolerance 0),
    "energy_in_box", "relevance_rank": means over the pairs with a box, "pairs": how many,
    "skipped": pairs without a box}, plus ``per_class`` means of each score when ``classes`` (N,)
    names each pair's class.
    """
    if maps.ndim != 3 or len(maps) != len(boxes):
        raise ValueError(f"maps must be (N, H, W) with one box list per map; got maps {tuple(maps.shape)} "
                         f"and {len(boxes)} box lists")
    return {**summarize_pairs(pair_scores(maps, boxes, tolerance), classes), "tolerance": tolerance}


def summarize_pairs(per_pair: dict[str, torch.Tensor], classes: torch.Tensor | None = None) -> dict:
    """Means (percent) over the valid pairs of ``pair_scores`` output, see ``localization_scores``."""
    valid = per_pair["valid"]

    def mean(sel: torch.Tensor) -> dict[str, float]:
        return {name: float(per_pair[name][sel].mean() * 100) if sel.any() else math.nan for name in SCORES}

    result = {**mean(valid), "pairs": int(valid.sum()), "skipped": int((~valid).sum())}
    if classes is not None:
        result["per_class"] = {int(c): mean(valid & (classes == c)) for c in classes[valid].unique().tolist()}
    return result


def pair_scores(maps: torch.Tensor, boxes: list[torch.Tensor], tolerance: float = 0) -> dict[str, torch.Tensor]:
    """Per-pair scores in [0, 1]: ``SCORES`` and "valid" (N,) each; "valid" is False for pairs
    without a box (their scores are meaningless)."""
    n, h, w = maps.shape
    maps = maps.detach().float().cpu()
    padded = pad_boxes(boxes)
    out = {k: [] for k in (*SCORES, "valid")}
    for m, b in zip(maps.split(CHUNK), padded.split(CHUNK)):
        dist = box_distance(b, h, w)  # (n, H, W)
        inside = dist == 0
        flat, inside_flat = m.flatten(1), inside.flatten(1)
        top, bottom = flat.amax(1), flat.amin(1)
        peak = flat == top[:, None]
        has_peak = top > bottom
        for name, tol in (("pointing_game", tolerance), ("pointing_game_exact", 0)):
            near = dist.flatten(1) <= tol ** 2
            out[name].append(((peak <= near).all(1) & has_peak).float())
        positive = flat.clamp(min=0)
        mass = positive.sum(1)
        out["energy_in_box"].append(torch.where(mass > 0, (positive * inside_flat).sum(1) / mass.clamp(min=1e-30),
                                                torch.zeros_like(mass)))
        out["relevance_rank"].append(relevance_rank(flat, inside_flat))
        out["valid"].append(inside_flat.any(1))
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in out.items()}


def relevance_rank(flat: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Share (n,) of the |S| highest values of flat (n, P) that lie in S = inside (n, P), ties at
    the |S|-th value counted at their expected share (see the module docstring)."""
    size = inside.sum(1)
    ordered = flat.sort(1, descending=True).values
    threshold = ordered.gather(1, (size - 1).clamp(min=0)[:, None])  # (n, 1) the |S|-th value
    above, tied = flat > threshold, flat == threshold
    n_above = above.sum(1)
    hits = (above & inside).sum(1) + (size - n_above) * (tied & inside).sum(1) / tied.sum(1).clamp(min=1)
    return torch.where(size > 0, hits / size.clamp(min=1), torch.zeros_like(hits, dtype=torch.float))


def baseline_maps(kind: str, n: int, height: int, width: int, boxes: list[torch.Tensor] | None = None,
                  seed: int = 0) -> torch.Tensor:
    """Reference maps (n, H, W): "random" (i.i.d. uniform, seeded: what a map that knows nothing
    scores), "centre" (a Gaussian at the image centre with σ = a quarter of the shorter side: the
    centre bias of photographs and of many saliency maps), "box" (the box mask itself: the upper
    bound)."""
    if kind == "random":
        return torch.rand(n, height, width, generator=torch.Generator().manual_seed(seed))
    if kind == "centre":
        sigma = min(height, width) / 4
        ys = torch.arange(height) - (height - 1) / 2
        xs = torch.arange(width) - (width - 1) / 2
        gauss = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma ** 2))
        return gauss.expand(n, height, width).clone()
    if kind == "box":
        if boxes is None:
            raise ValueError("the box baseline needs the boxes")
        return box_masks(boxes, height, width).float()
    raise ValueError(f"unknown baseline '{kind}'; valid: random, centre, box")


def gaussian_blur(x: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), reflect-padded (RISE's insertion substrate)."""
    ax = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - (kernel_size - 1) / 2
    kernel = torch.exp(-ax ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    pad = kernel_size // 2
    mode = "reflect" if min(x.shape[2:]) > pad else "replicate"
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode=mode), kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode=mode), kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@torch.no_grad()
def deletion_insertion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                       black: torch.Tensor, multilabel: bool, steps: int = 16, batch_size: int = 256,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """RISE deletion and insertion AUC (percent) per pair: images x (N, C, H, W) as the model takes
    them (normalised), maps (N, H, W), explained classes targets (N,), ``black`` (C,) the
    normalised value of pixel 0. Runs the model on all N images at each of the ``steps`` + 1
    points, ``batch_size`` images at a time. Returns {"deletion", "insertion"} (N,) each."""
    model.eval()
    n, _, h, w = x.shape
    tiebreak = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed)).to(maps.device)
    # rank of every pixel in decreasing map order, ties in the fixed random order `tiebreak`
    order = tiebreak[maps.flatten(1)[:, tiebreak].float().sort(dim=1, descending=True, stable=True).indices]
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1))
    rank = rank.view(n, 1, h, w).to(x.device)
    fractions = torch.linspace(0, 1, steps + 1)
    curves = {"deletion": torch.zeros(n, steps + 1), "insertion": torch.zeros(n, steps + 1)}
    for start in range(0, n, batch_size):
        xb, rb, tb = x[start:start + batch_size], rank[start:start + batch_size], targets[start:start + batch_size]
        substrates = {"deletion": black.view(1, -1, 1, 1).to(xb).expand_as(xb), "insertion": gaussian_blur(xb)}
        for s, fraction in enumerate(fractions.tolist()):
            moved = rb < round(fraction * h * w)  # (b, 1, H, W)
            for kind, substrate in substrates.items():
                image = torch.where(moved, substrate, xb) if kind == "deletion" else torch.where(moved, xb, substrate)
                logits = model(image).float()
                probs = logits.sigmoid() if multilabel else logits.softmax(1)
                curves[kind][start:start + len(xb), s] = probs.gather(1, tb[:, None].to(probs.device))[:, 0].cpu()
    return {kind: torch.trapezoid(c, fractions, dim=1) * 100 for kind, c in curves.items()}

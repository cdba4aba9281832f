"""How well a saliency map localises an object with a known box, and how faithful it is to the model.

Conventions (each changes published numbers, so each is stated):

- A map is (H, W), one per (image, class) pair, on the image's pixel grid. Boxes are int
  (x0, y0, x1, y1) with exclusive ends: a box covers pixels [y0, y1) × [x0, x1). A pair's boxes are
  the boxes of *that class* in *that image*; their union is the box mask S.
- Pairs with no box (a class absent from the image) are left out of every localisation score and
  counted as ``skipped``; scores are means over the remaining pairs, in percent, except the ratios
  (``RATIOS``: energy lift), which are means of per-pair ratios.
- ``pointing_game`` (Zhang et al., ECCV 2016 / IJCV 2018): a hit when the map's maximum lies in S,
  or within ``tolerance`` pixels of it (Euclidean distance from the pixel to the nearest box pixel
  ≤ tolerance). TorchRay's reference code accepts distance < 15 px on ~224-px images; the default
  tolerance (``default_tolerance``) scales that to the image: 15/224 of the shorter side, rounded to
  0.1 px (1.9 px at 28 px, 4.3 px at 64 px, 15 px at 224 px). ``pointing_game_exact`` is tolerance 0.
  When several pixels share the maximum, all of them must qualify; a constant map (no maximum),
  including an all-zero one, is a miss. The paper averages over classes: ``per_class`` gives that too.
- ``energy_in_box`` (Score-CAM's energy-based pointing game, Wang et al. CVPRW 2020):
  Σ_{p∈S} max(m_p, 0) / Σ_p max(m_p, 0). A map without positive mass scores 0. A uniform map
  scores |S| / (H·W), the box's area share.
- ``energy_lift``: per pair ``energy_in_box`` / (|S| / (H·W)), the energy over the box's area share,
  as a ratio (×), not a percent: a uniform map scores 1.0, a map inside the box H·W / |S|. It puts
  pairs with small and large boxes on one scale; not in the papers.
- ``energy_minmax``: ``energy_in_box`` of the map min-max scaled to [0, 1] first, (m − min) /
  (max − min), Score-CAM's own convention (its maps are min-max normalised before the energy is
  taken). Raw energy is not like for like between maps with a floor (a sigmoid gate's positive
  minimum spreads mass over the whole image) and maps clipped at 0 (Grad-CAM); scaling removes the
  floor. A constant map has nothing to scale and scores 0.
- ``relevance_rank`` (Arras et al. 2022, relevance rank accuracy): the share of the |S| highest
  pixels of the map that lie in S. Ties at the |S|-th value are counted at their expected value
  under random tie-breaking, so a uniform (or all-zero) map scores |S| / (H·W) and an order that
  is not in the map is never invented.
- Reference maps (``baseline_maps``): random (seeded per image index, so independent of how the
  images were batched), a centred Gaussian, the Sobel edge magnitude of the image as the model takes
  it, normalised (XAI-TRIS, 2023: popular methods often fail to beat such a map; for one channel
  the same map as on raw pixels up to a scale, which no score sees), the box itself (upper bound).

Faithfulness. Pixels are ordered by decreasing map value, ties in a fixed random order (seeded;
``pixel_rank``).

- Deletion/insertion (RISE, Petsiuk et al. BMVC 2018): pixels are moved, ``steps`` equal chunks at
  a time, to a substrate. Deletion: from the image to the deletion substrate, black (pixel value
  0, the empty background of the scene datasets; the default) or the dataset mean (zero after
  normalisation: the RISE code's substrate). Insertion: from a blurred copy back to the image; the
  blur is a Gaussian, kernel 11 × 11, σ = 5 px, truncated and renormalised, separable, reflect
  padding (``gaussian_blur``). Not RISE's kernel: its ``gkern(11, 5)`` smooths a delta with scipy's
  ``gaussian_filter`` (reflect mode), folding the tails beyond ±5 px back into the window (a flatter
  kernel), and its convolution zero-pads (darker borders). The explained class's probability
  (softmax for single-label, sigmoid for multi-label models) is recorded after each chunk; the score
  is the area under that curve over the fraction of pixels moved (trapezoid rule), in percent. Lower
  deletion and higher insertion AUC are better.
- ROAD (Rong et al., ICML 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
  Methods", arXiv 2202.00449): a fraction f of the pixels is removed, the most relevant first
  (MoRF) or the least relevant first (LeRF), f ∈ ``ROAD_FRACTIONS`` = 10 %, 20 %, …, 90 %, and
  replaced by noisy linear imputation (``impute``): each removed pixel is the weighted mean of its
  8 neighbours (1/6 for the 4 direct ones, 1/12 for the diagonals; neighbours outside the image
  are dropped and the weights of the rest renormalised, as the reference code
  ``tleemann/road_evaluation``), for all removed pixels at once, plus Gaussian noise of σ = 0.01
  in [0, 1] pixel units (``ROAD_NOISE``; the reference code adds σ = 0.01 to the tensor it imputes,
  which in pytorch-grad-cam's copy is the normalised input), drawn once per pair (seeded) and shared by every
  fraction. Because the imputation is a weighted mean it commutes with the per-channel
  normalisation, so it runs on the normalised input with σ = 0.01 / std. The explained class's
  probability (and, for single-label models, whether it is the top-1 class) is recorded after each
  fraction; the score is the area under that curve over the fractions (trapezoid rule) divided by
  their span (0.8), in percent: a mean over the fractions with half weight at 10 % and 90 %.
  Lower MoRF and higher LeRF are better. Deviations: removal counts pixels exactly by rank (the
  reference thresholds at a percentile of the map, so ties move together); the reference reports
  the drop s(imputed) − s(x) averaged over fractions, we report the probability itself.

Ground-truth check (``box_masking``): boxes known does not mean the model uses only them
(AttributionLab, 2023). Every box of an image is filled with the deletion substrate and the model's
accuracy on the masked images is reported beside that on the images and chance (1 / classes;
multi-label: whether the top-scored class is present, chance the mean number present / classes).
Masked accuracy well above chance means the background carries label signal, and a map pointing
outside the box may be faithful rather than wrong.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CHUNK = 1024  # pairs per vectorised block: bounds the (pairs, boxes, H, W) temporaries
SCORES = ("pointing_game", "pointing_game_exact", "energy_in_box", "energy_lift", "energy_minmax", "relevance_rank")
RATIOS = ("energy_lift",)  # scores that are ratios (×); every other score is a share, reported in percent
BASELINES = ("random", "centre", "edge", "box")  # reference maps, scored beside every method
TOLERANCE_AT_224 = 15  # TorchRay's pointing-game tolerance in pixels, on ~224-px images
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # shares of pixels ROAD removes
ROAD_NOISE = 0.01  # σ of ROAD's imputation noise, in [0, 1] pixel units
ROAD_TOLERANCE = 1e-6  # conjugate gradients stop at this residual RMS (normalised units, float64)
# every score a map gets with its column title ({tol}: the pointing game's tolerance in pixels): the
# one list the CLI's table, the study's report and the benchmark tables show
SCORE_COLUMNS = (("pointing_game", "pointing ≤ {tol} px (%)"), ("pointing_game_exact", "pointing 0 px (%)"),
                 ("energy_in_box", "energy in box (%)"), ("energy_lift", "energy lift (×)"),
                 ("energy_minmax", "energy min-max (%)"), ("relevance_rank", "relevance rank (%)"),
                 ("deletion", "deletion AUC ↓"), ("insertion", "insertion AUC ↑"),
                 ("road_morf", "ROAD MoRF AUC ↓"), ("road_lerf", "ROAD LeRF AUC ↑"))


def default_tolerance(height: int, width: int) -> float:
    """The pointing game's tolerance scaled to the image: TorchRay's 15 px at 224 px, as 15/224 of
    the shorter side, rounded to 0.1 px (1.9 px at 28 px, 4.3 px at 64 px)."""
    return round(TOLERANCE_AT_224 * min(height, width) / 224, 1)


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
    """Pointing game, energy in box (raw, as lift, min-max scaled) and relevance rank of maps
    (N, H, W) against the boxes of each pair (a list of N int tensors (k_n, 4), x0, y0, x1, y1, ends
    exclusive).

    Returns {"pointing_game" (within ``tolerance``), "pointing_game_exact" (tolerance 0),
    "energy_in_box", "energy_lift" (a ratio), "energy_minmax", "relevance_rank": means over the pairs
    with a box, in percent except the ratios (``RATIOS``), "pairs": how many,
    "skipped": pairs without a box}, plus ``per_class`` means of each score when ``classes`` (N,)
    names each pair's class.
    """
    if maps.ndim != 3 or len(maps) != len(boxes):
        raise ValueError(f"maps must be (N, H, W) with one box list per map; got maps {tuple(maps.shape)} "
                         f"and {len(boxes)} box lists")
    return {**summarize_pairs(pair_scores(maps, boxes, tolerance), classes), "tolerance": tolerance}


def summarize_pairs(per_pair: dict[str, torch.Tensor], classes: torch.Tensor | None = None) -> dict:
    """Means over the valid pairs of ``pair_scores`` output, in percent except the ratios
    (``RATIOS``), see ``localization_scores``."""
    valid = per_pair["valid"]

    def mean(sel: torch.Tensor) -> dict[str, float]:
        return {name: float(per_pair[name][sel].mean() * (1 if name in RATIOS else 100)) if sel.any() else math.nan
                for name in SCORES}

    result = {**mean(valid), "pairs": int(valid.sum()), "skipped": int((~valid).sum())}
    if classes is not None:
        result["per_class"] = {int(c): mean(valid & (classes == c)) for c in classes[valid].unique().tolist()}
    return result


def pair_scores(maps: torch.Tensor, boxes: list[torch.Tensor], tolerance: float = 0) -> dict[str, torch.Tensor]:
    """Per-pair scores, shares in [0, 1] and ratios (``RATIOS``): ``SCORES`` and "valid" (N,) each;
    "valid" is False for pairs without a box (their scores are meaningless)."""
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
        energy = box_energy(flat, inside_flat)
        out["energy_in_box"].append(energy)
        out["energy_lift"].append(energy * (h * w) / inside_flat.sum(1).clamp(min=1))
        scaled = (flat - bottom[:, None]) / torch.where(has_peak, top - bottom, 1)[:, None]  # constant: all 0
        out["energy_minmax"].append(box_energy(scaled, inside_flat))
        out["relevance_rank"].append(relevance_rank(flat, inside_flat))
        out["valid"].append(inside_flat.any(1))
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in out.items()}


def box_energy(flat: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Share (n,) of the positive mass of flat (n, P) inside S = inside (n, P); 0 without positive mass."""
    positive = flat.clamp(min=0)
    mass = positive.sum(1)
    return torch.where(mass > 0, (positive * inside).sum(1) / mass.clamp(min=1e-30), torch.zeros_like(mass))


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
                  seed: int = 0, images: torch.Tensor | None = None, index: torch.Tensor | None = None) -> torch.Tensor:
    """Reference maps (n, H, W): "random" (i.i.d. uniform, what a map that knows nothing scores; map k
    drawn from seed and ``index[k]``, the image's index in the split (default 0..n-1), so it does not
    depend on how the images were batched), "centre" (a Gaussian at the image centre with σ = a
    quarter of the shorter side: the centre bias of photographs and of many saliency maps), "edge"
    (``sobel_magnitude`` of ``images`` (n, C, H, W): what an edge detector points at), "box" (the box
    mask itself: the upper bound)."""
    if kind == "random":
        index = torch.arange(n) if index is None else index
        return torch.stack([torch.rand(height, width, generator=torch.Generator().manual_seed(seed * 2 ** 32 + i))
                            for i in index.tolist()]) if n else torch.zeros(0, height, width)
    if kind == "centre":
        sigma = min(height, width) / 4
        ys = torch.arange(height) - (height - 1) / 2
        xs = torch.arange(width) - (width - 1) / 2
        gauss = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma ** 2))
        return gauss.expand(n, height, width).clone()
    if kind == "edge":
        if images is None:
            raise ValueError("the edge baseline needs the images")
        return sobel_magnitude(images.float()).cpu()
    if kind == "box":
        if boxes is None:
            raise ValueError("the box baseline needs the boxes")
        return box_masks(boxes, height, width).float()
    raise ValueError(f"unknown baseline '{kind}'; valid: {', '.join(BASELINES)}")


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude (N, H, W) of images (N, C, H, W): √(g_x² + g_y²) per channel with the
    3 × 3 Sobel kernels, replicate padding (no edge at the image border), then the mean over channels."""
    n, c, h, w = x.shape
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([kx, kx.T])[:, None].repeat(c, 1, 1, 1)  # (2C, 1, 3, 3): x and y per channel
    grads = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, groups=c).view(n, c, 2, h, w)
    return grads.pow(2).sum(2).sqrt().mean(1)


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


def pixel_rank(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Rank (N, 1, H, W) of every pixel of maps (N, H, W) in decreasing map order (0: the highest),
    ties in a fixed random order of the pixels (seeded, the same for every map)."""
    n, h, w = maps.shape
    tiebreak = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed)).to(maps.device)
    order = tiebreak[maps.flatten(1)[:, tiebreak].float().sort(dim=1, descending=True, stable=True).indices]
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1))
    return rank.view(n, 1, h, w)


def class_probability(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """The probability (N,) of each image's explained class (softmax, or sigmoid when multi-label), on the CPU."""
    logits = model(x).float()
    probs = logits.sigmoid() if multilabel else logits.softmax(1)
    return probs.gather(1, targets[:, None].to(probs.device))[:, 0].cpu()


@torch.no_grad()
def deletion_insertion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                       substrate: torch.Tensor, multilabel: bool, steps: int = 16, batch_size: int = 256,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """RISE deletion and insertion AUC (percent) per pair: images x (N, C, H, W) as the model takes
    them (normalised), maps (N, H, W), explained classes targets (N,), ``substrate`` (C,) the
    normalised value deleted pixels get (black: that of pixel 0; the dataset mean: 0). Runs the model
    on all N images at each of the ``steps`` + 1 points, ``batch_size`` images at a time. Returns
    {"deletion", "insertion"} (N,) each."""
    model.eval()
    n, _, h, w = x.shape
    rank = pixel_rank(maps, seed).to(x.device)
    fractions = torch.linspace(0, 1, steps + 1)
    curves = {"deletion": torch.zeros(n, steps + 1), "insertion": torch.zeros(n, steps + 1)}
    for start in range(0, n, batch_size):
        xb, rb, tb = x[start:start + batch_size], rank[start:start + batch_size], targets[start:start + batch_size]
        substrates = {"deletion": substrate.view(1, -1, 1, 1).to(xb).expand_as(xb), "insertion": gaussian_blur(xb)}
        for s, fraction in enumerate(fractions.tolist()):
            moved = rb < round(fraction * h * w)  # (b, 1, H, W)
            for kind, fill in substrates.items():
                image = torch.where(moved, fill, xb) if kind == "deletion" else torch.where(moved, xb, fill)
                curves[kind][start:start + len(xb), s] = class_probability(model, image, tb, multilabel)
    return {kind: torch.trapezoid(c, fractions, dim=1) * 100 for kind, c in curves.items()}


ROAD_WEIGHTS = (1 / 6, 1 / 12)  # ROAD's weights of a pixel's direct and diagonal neighbours


def impute(x: torch.Tensor, removed: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """ROAD's noisy linear imputation: x (N, C, H, W) with the pixels ``removed`` (N, 1, H, W) bool
    replaced, all at once, by the solution u of: every removed pixel = the weighted mean of its
    in-image 8 neighbours (``ROAD_WEIGHTS``: 1/6 direct, 1/12 diagonal, renormalised at the border),
    kept neighbours at their values; then ``noise`` (N, C, H, W) added on the removed pixels. Kept
    pixels are returned unchanged.

    Solver: conjugate gradients, batched over images and channels, on the system W_p u_p −
    Σ_{q removed} w_pq u_q = Σ_{q kept} w_pq x_q (W_p the pixel's in-image weight sum), whose matrix
    is symmetric positive definite when some pixel is kept (every group of removed pixels then
    borders a kept one). The matrix is never built: one product is the 3 × 3 neighbour stencil (eight
    shifted, weighted sums of the padded image), so an iteration costs O(N·C·H·W), memory stays
    O(N·C·H·W), and there is no Python loop over pixels or images (a sparse direct solve, as the
    reference's scipy ``spsolve``, would be one factorisation per image). CG rather than Jacobi:
    Jacobi needs O(d²) iterations for a hole of diameter d, CG O(d) (40 to 180 on 64 × 64 images
    with 10 % to 90 % of the pixels removed). Runs in float64 from the mean of the kept pixels and
    stops when every system's residual RMS over its removed pixels is ≤ ``ROAD_TOLERANCE`` (or after
    H·W iterations, CG's bound in exact arithmetic); as the inverse's norm grows like d², the error
    is then ≲ d²/10 × 1e-6, far below the noise."""
    h, w = x.shape[2:]
    xd, r_mask = x.double(), removed.to(x.device).double()

    def neighbours(v: torch.Tensor) -> torch.Tensor:  # Σ_q w_pq v_q, zero outside the image
        p = F.pad(v, (1, 1, 1, 1))
        direct = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
        diagonal = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
        return direct * ROAD_WEIGHTS[0] + diagonal * ROAD_WEIGHTS[1]

    weight_sum = neighbours(torch.ones(1, 1, h, w, dtype=xd.dtype, device=xd.device))

    def system(u: torch.Tensor) -> torch.Tensor:
        return r_mask * (weight_sum * u - neighbours(r_mask * u))

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # per (image, channel)
        return (a * b).sum((2, 3), keepdim=True)

    kept_mean = dot(xd, 1 - r_mask) / (1 - r_mask).sum((2, 3), keepdim=True).clamp(min=1)
    u = r_mask * kept_mean
    residual = r_mask * neighbours((1 - r_mask) * xd) - system(u)
    direction, rs = residual, dot(residual, residual)
    limit = ROAD_TOLERANCE ** 2 * r_mask.sum((2, 3), keepdim=True)
    for _ in range(h * w):
        if bool((rs <= limit).all()):
            break
        product = system(direction)
        alpha = rs / dot(direction, product).clamp(min=1e-300)
        u = u + alpha * direction
        residual = residual - alpha * product
        rs_next = dot(residual, residual)
        direction = residual + rs_next / rs.clamp(min=1e-300) * direction
        rs = rs_next
    filled = u if noise is None else u + noise.to(xd)
    return torch.where(removed.to(x.device), filled.to(x.dtype), x)


@torch.no_grad()
def road(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, noise: torch.Tensor,
         multilabel: bool, batch_size: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """ROAD (see the module docstring) per pair: images x (N, C, H, W) as the model takes them
    (normalised), maps (N, H, W), explained classes targets (N,), ``noise`` (C,) the imputation
    noise's σ in the input's units (``ROAD_NOISE`` / std). Returns per pair "road_morf", "road_lerf"
    (N,): the AUC of the class probability over ``ROAD_FRACTIONS`` in percent; "road_morf_curve",
    "road_lerf_curve" (N, F): the probabilities in percent; and for single-label models
    "road_morf_top1", "road_lerf_top1" (N,): the AUC of "the class is the top-1" in percent."""
    model.eval()
    n, _, h, w = x.shape
    rank = pixel_rank(maps, seed).to(x.device)
    draws = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * noise.view(1, -1, 1, 1)
    fractions = torch.tensor(ROAD_FRACTIONS)
    kinds = ("morf", "lerf")
    curves = {f"road_{k}_{what}": torch.zeros(n, len(fractions)) for k in kinds for what in ("curve", "top1")}
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        xb, rb, tb = x[part], rank[part], targets[part].to(x.device)
        for s, fraction in enumerate(fractions.tolist()):
            k = round(fraction * h * w)
            for kind, removed in zip(kinds, (rb < k, rb >= h * w - k)):
                logits = model(impute(xb, removed, draws[part].to(xb))).float()
                probs = logits.sigmoid() if multilabel else logits.softmax(1)
                curves[f"road_{kind}_curve"][part, s] = probs.gather(1, tb[:, None])[:, 0].cpu() * 100
                curves[f"road_{kind}_top1"][part, s] = (logits.argmax(1) == tb).float().cpu() * 100
    span = float(fractions[-1] - fractions[0])
    out = {}
    for kind in kinds:
        out[f"road_{kind}"] = torch.trapezoid(curves[f"road_{kind}_curve"], fractions, dim=1) / span
        out[f"road_{kind}_curve"] = curves[f"road_{kind}_curve"]
        if not multilabel:
            out[f"road_{kind}_top1"] = torch.trapezoid(curves[f"road_{kind}_top1"], fractions, dim=1) / span
    return out


@torch.no_grad()
def box_masking(model: nn.Module, batches, targets: torch.Tensor, boxes: list[torch.Tensor], substrate: torch.Tensor,
                multilabel: bool) -> dict[str, float]:
    """Does the background carry the label? The model's accuracy (percent) on the images and on the
    images with every box filled with ``substrate`` (C,) (normalised: black or the dataset mean), and
    the chance level. ``batches``: the images (B, C, H, W) as the model takes them, in order;
    targets and boxes (k, 4 or 5) per image. Single-label: top-1 accuracy, chance 1 / classes;
    multi-label: the share of images whose top-scored class is present, chance the mean number of
    present classes / classes. Masked accuracy near chance: the label lies in the boxes only."""
    model.eval()
    hits, masked_hits, start, classes = [], [], 0, 1
    for x in batches:
        masks = box_masks(boxes[start:start + len(x)], *x.shape[2:])[:, None].to(x.device)
        target = targets[start:start + len(x)]
        for out, image in ((hits, x), (masked_hits, torch.where(masks, substrate.view(1, -1, 1, 1).to(x), x))):
            logits = model(image)
            top, classes = logits.argmax(1).cpu(), logits.shape[1]
            out.append(target.gather(1, top[:, None])[:, 0] == 1 if multilabel else top == target)
        start += len(x)
    chance = float((targets == 1).sum(1).float().mean()) / classes if multilabel else 1 / classes
    return {"accuracy": float(torch.cat(hits).float().mean() * 100),
            "masked_accuracy": float(torch.cat(masked_hits).float().mean() * 100), "chance": chance * 100}

"""Sanity checks for saliency maps (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018,
arXiv 1810.03292): a map that explains the model must change when the model's learned weights
are destroyed (model-parameter randomisation) and when the model learned nothing about the labels
(data randomisation).

Cascading model-parameter randomisation. The model is cut into *units*: its direct children in
the order the forward pass first calls them, a container child (``nn.Sequential``, ``ModuleList``,
``ModuleDict``) replaced by its elements (a stage is a list of blocks). Units without parameters or
buffers (ReLU, pooling) and units the forward pass never calls are left out; a normalisation layer
that directly follows a leaf layer is one unit with it (a stem's conv and its BatchNorm);
parameters and buffers of the model itself (ViT's class token and position embedding) join the
first unit. Steps go from the last unit (the head) down to the first: step k re-draws units n,
n−1, …, n−k+1, cumulatively, so the last step is a fully re-drawn model. ResNet-20: head,
layer3.2, layer3.1, …, layer1.0, conv1+bn1 (11 steps; stage attention such as BAM's,
``stage_attn.layerI``, right after its stage's last block); ViT: head, norm, blocks.11 … blocks.0,
patch_embed+cls_token+pos_embed; Attention-56: head, final_act.0, stages.2, stages.1, stages.0,
stem (a stage is one unit there: containers are opened one level deep). Deviation: Adebayo et al. re-draw Inception v3 layer by layer;
here a unit is a residual or transformer block (a conv inside a block is not a step of its own).
Re-drawn weights are the model's own initialisation: a model of the same configuration built
afresh under a fixed seed (``fresh_model``); a unit's parameters and buffers are copied from it.
Deviation from ``reset_parameters()``: PyTorch's default layer init is not what our models use
(Kaiming fan-out for ResNet convs, truncated normal for ViT), so the fresh model is the reference.
After each step the BatchNorm layers of the re-drawn units get new running statistics: they are
reset and run in train mode with ``momentum=None`` (a cumulative average of the batch means and
unbiased batch variances) over the first ``BN_IMAGES`` training-split images, unaugmented, in equal
batches, without gradients; the rest of the model stays in eval mode and keeps its trained
statistics (its inputs did not change). Adebayo et al. do not say how they treat BatchNorm; stale
trained statistics would rescale random features arbitrarily, so they are re-estimated.
Deviations: the trained statistics came from augmented images, the re-estimated ones from
unaugmented ones; the fresh weights are drawn with ``ExplainSettings.seed``, which may repeat the
run's own initial weights (an equally valid draw of the initialisation).

Data randomisation: the maps of a second checkpoint of the same architecture trained on permuted
labels (``--sanity-reference``; training it is the study's job) are compared with the trained
model's maps of the same (image, class) pairs.

Similarity of an original map a and a randomised map b, per pair, then averaged over pairs:
- Spearman rank correlation of |a| and |b| (absolute values, as Adebayo et al.'s main figures):
  the Pearson correlation of the pixels' ranks, ties at their average rank (as
  ``scipy.stats.spearmanr``). Undefined (NaN) when a map is constant (e.g. an all-zero Grad-CAM);
  means are over the pairs where it is defined, and "undefined_pairs" counts the others.
- SSIM (Wang et al., IEEE TIP 2004): maps min-max scaled to [0, 1] each (a constant map → 0; signed
  values, so a map and its negative are dissimilar), an 11 × 11 Gaussian window with σ = 1.5
  (smaller maps: the largest odd window that fits), K1 = 0.01, K2 = 0.03, dynamic range L = 1, the
  mean of the SSIM map over the positions where the window fits ("valid", as Wang's MATLAB code).

A method ``fails_sanity`` when its mean Spearman at the fully re-drawn model exceeds
``FAIL_SPEARMAN`` = 0.5: a correlation of 0.5 is "large" by Cohen's convention (1988), so such a
map keeps most of its pixel order after every learned weight is gone: it shows the image (edges,
as an edge detector does, which scores 1) or the architecture, not what the model learned. 0 would
be too strict: maps of random networks share a spatial prior with trained ones (smooth upsampled
CAMs, borders), which gives a small positive correlation. Alongside, the fully re-drawn model's
maps are scored for localisation (``scores.pair_scores``) on data with boxes: the
"randomised-model reference row".
"""

from __future__ import annotations

import copy
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

from ..data import BatchLoader, first_images
from ..evaluate import build_model, load_run
from .cam import pair_maps
from .scores import CHUNK, pair_scores, summarize_pairs

FAIL_SPEARMAN = 0.5  # mean Spearman at the fully re-drawn model above which a method fails (module docstring)
BN_IMAGES = 512  # training-split images that re-estimate BatchNorm statistics after each step
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03  # Wang et al. 2004
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
NORMS = (_NormBase, nn.LayerNorm, nn.GroupNorm)


def has_state(module: nn.Module) -> bool:
    """Whether a module holds parameters or buffers (anything to re-draw)."""
    return next(module.parameters(), None) is not None or next(module.buffers(), None) is not None


@torch.no_grad()
def cascade_steps(model: nn.Module, x: torch.Tensor) -> list[tuple[str, list[str]]]:
    """The cascade's steps top-down (see the module docstring): [(name, [unit paths])], where a
    unit path is a module path or the name of a parameter/buffer of the model itself. The units'
    forward order is read from one eval-mode forward pass on x[:1] (modes restored afterwards)."""
    units = []
    for name, child in model.named_children():  # a container's elements are units of their own
        container = isinstance(child, CONTAINERS)
        units += [(f"{name}.{k}", c) for k, c in child.named_children()] if container else [(name, child)]
    first_call: dict[str, int] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple) -> None:  # returns None: the inputs pass unchanged
            first_call.setdefault(name, len(first_call))
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in units]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    modules = dict(units)
    ordered = sorted((n for n, m in units if n in first_call and has_state(m)), key=first_call.__getitem__)
    if not ordered:
        raise ValueError(f"{type(model).__name__} has no module with weights to randomise")
    steps: list[list[str]] = []
    for name in ordered:
        after_leaf = steps and next(modules[steps[-1][-1]].children(), None) is None
        if after_leaf and isinstance(modules[name], NORMS):
            steps[-1].append(name)  # a leaf layer and the norm after it (a conv and its BatchNorm): one unit
        else:
            steps.append([name])
    steps[0] += [n for n, _ in (*model.named_parameters(recurse=False), *model.named_buffers(recurse=False))]
    return [("+".join(s), s) for s in reversed(steps)]


@torch.no_grad()
def randomize(model: nn.Module, fresh: nn.Module, units: list[str]) -> list[nn.Module]:
    """Copy the parameters and buffers of ``units`` (paths, see ``cascade_steps``) from ``fresh``
    (same architecture, newly initialised) into ``model``, in place. Returns the BatchNorm layers
    with running statistics inside the re-drawn units (their statistics are now the fresh ones)."""
    own = dict(model.named_parameters(recurse=False)) | dict(model.named_buffers(recurse=False))
    fresh_own = dict(fresh.named_parameters(recurse=False)) | dict(fresh.named_buffers(recurse=False))
    norms = []
    for path in units:
        if path in own:
            own[path].copy_(fresh_own[path])
            continue
        module = model.get_submodule(path)
        module.load_state_dict(fresh.get_submodule(path).state_dict())
        norms += [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    return norms


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, norms: list[nn.Module], batches: list[torch.Tensor]) -> None:
    """Replace the running statistics of ``norms`` (BatchNorm layers of ``model``) by those of the
    images ``batches`` (each (B, C, H, W), as the model takes them): reset, then a cumulative average
    (``momentum=None``) of the batch means and unbiased batch variances, one forward pass per batch
    with only ``norms`` in train mode. The model is left in eval mode, the momenta as they were."""
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            m.eval()


def cascade(model: nn.Module, fresh: nn.Module, steps: list[tuple[str, list[str]]],
            batches: list[torch.Tensor]) -> Iterator[tuple[str, nn.Module]]:
    """Cascading randomisation: yields (step name, model) after each step of ``steps`` (top-down),
    the model being one copy of ``model`` re-drawn cumulatively from ``fresh`` with its BatchNorm
    statistics re-estimated on ``batches``. ``model`` itself is not changed."""
    current = copy.deepcopy(model)
    for name, units in steps:
        reestimate_batchnorm(current, randomize(current, fresh, units), batches)
        yield name, current


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks (N, P) float64 of the values of each row of x (N, P), 0-based, tied values at their
    average rank (``scipy.stats.rankdata(method="average") - 1`` per row)."""
    values, order = x.sort(1)
    n, p = x.shape
    position = torch.arange(p, device=x.device).expand(n, p)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, 0).cummax(1).values  # where each value's run of ties starts
    last = torch.where(ends, position, p).flip(1).cummin(1).values.flip(1)  # and ends
    return torch.empty(n, p, dtype=torch.float64, device=x.device).scatter_(1, order, (first + last).double() / 2)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation (N,) of |a| and |b|, maps (N, H, W), per map pair: the Pearson
    correlation of average ranks; NaN where either map is constant."""
    ra, rb = (average_ranks(m.detach().flatten(1).abs()) for m in (a, b))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denominator = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(denominator > 0, (ra * rb).sum(1) / denominator.clamp(min=1e-300),
                       torch.full_like(denominator, torch.nan))


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each map of (N, H, W) scaled to [0, 1] by its own min and max; a constant map becomes 0."""
    flat = maps.detach().double().flatten(1)
    low, span = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True)
    return torch.where(span > 0, (flat - low) / span.clamp(min=1e-300), torch.zeros_like(flat)).view(maps.shape)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (N,) of maps a and b (N, H, W), each min-max scaled to [0, 1] (module docstring:
    Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, L 1, valid positions), all pairs in one conv2d."""
    size = min(SSIM_WINDOW, *a.shape[-2:])
    size -= 1 - size % 2  # odd
    axis = torch.arange(size, dtype=torch.float64, device=a.device) - (size - 1) / 2
    g = torch.exp(-axis ** 2 / (2 * SSIM_SIGMA ** 2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2).view(1, 1, size, size)
    x, y = minmax(a)[:, None], minmax(b)[:, None]
    stats = F.conv2d(torch.cat([x, y, x * x, y * y, x * y], 1).flatten(0, 1)[:, None], kernel)
    mx, my, xx, yy, xy = stats.view(len(a), 5, *stats.shape[-2:]).unbind(1)
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    index = (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return index.flatten(1).mean(1)


def similarity(original: torch.Tensor, randomized: torch.Tensor) -> dict:
    """Means over pairs of ``spearman`` (over the pairs where it is defined) and ``ssim`` of maps
    (P, H, W), and "undefined_pairs": how many pairs have no Spearman value (a constant map).
    Computed ``scores.CHUNK`` pairs at a time."""
    blocks = list(zip(original.split(CHUNK), randomized.split(CHUNK)))  # bounds the temporaries
    rho = torch.cat([spearman(a, b) for a, b in blocks])
    defined = ~rho.isnan()
    return {"spearman": float(rho[defined].mean()) if defined.any() else float("nan"),
            "ssim": float(torch.cat([ssim(a, b) for a, b in blocks]).mean()), "undefined_pairs": int((~defined).sum())}


def method_maps(model: nn.Module, loader: BatchLoader, pairs: torch.Tensor, methods: tuple[str, ...],
                layer: str | None = None, black: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every method's maps {method: (P, H, W) float32 on the CPU}, row i explaining pair i of
    ``pairs`` (P, 2) rows (image index into the loader's images, class); computed per batch of the
    loader with ``cam.pair_maps``."""
    out, where = {m: [] for m in methods}, []
    start = 0
    for x, _ in loader:
        rows = ((pairs[:, 0] >= start) & (pairs[:, 0] < start + len(x))).nonzero()[:, 0]
        start += len(x)
        if len(rows) == 0:
            continue
        where.append(rows)
        for m in methods:
            local = pairs[rows] - torch.tensor([start - len(x), 0])
            out[m].append(pair_maps(model, x, local, m, layer, black).float().cpu())
    order = torch.cat(where).argsort()
    return {m: torch.cat(v)[order] for m, v in out.items()}


def sanity_checks(model: nn.Module, fresh: nn.Module, loader: BatchLoader, pairs: torch.Tensor,
                  methods: tuple[str, ...], batches: list[torch.Tensor], layer: str | None = None,
                  black: torch.Tensor | None = None, boxes: list[torch.Tensor] | None = None, tolerance: float = 0,
                  reference: nn.Module | None = None) -> dict:
    """Both sanity checks of the maps of ``methods`` for ``pairs`` (see ``method_maps``).

    ``fresh``: a newly initialised model of ``model``'s architecture (the re-drawn weights);
    ``batches``: training-split images for BatchNorm re-estimation; ``boxes``: each pair's boxes
    (k, 4) for the fully re-drawn model's localisation scores (None: not scored); ``reference``:
    the same architecture trained on permuted labels (None: no data randomisation test).
    Returns {method: {"steps": [{"randomized": step name, "spearman", "ssim", "undefined_pairs"}],
    "fails_sanity", "randomized_model_scores" (with boxes), "data_randomization" (with a
    reference)}}; steps top-down, each cumulative."""
    original = method_maps(model, loader, pairs, methods, layer, black)
    steps = cascade_steps(model, next(iter(loader))[0])
    result = {m: {"steps": []} for m in methods}
    for name, randomized in cascade(model, fresh, steps, batches):
        maps = method_maps(randomized, loader, pairs, methods, layer, black)
        for m in methods:
            result[m]["steps"].append({"randomized": name, **similarity(original[m], maps[m])})
    for m in methods:
        result[m]["fails_sanity"] = bool(result[m]["steps"][-1]["spearman"] > FAIL_SPEARMAN)
        if boxes is not None:
            result[m]["randomized_model_scores"] = {**summarize_pairs(pair_scores(maps[m], boxes, tolerance)),
                                                    "tolerance": tolerance}
    if reference is not None:
        permuted = method_maps(reference, loader, pairs, methods, layer, black)
        for m in methods:
            result[m]["data_randomization"] = similarity(original[m], permuted[m])
    return result


def fresh_model(cfg, bundle, seed: int = 0) -> nn.Module:
    """A newly initialised model of the run's configuration (``evaluate.build_model``), drawn under
    ``seed`` without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(cfg, bundle)


def training_batches(cfg, bundle, batch_size: int, device) -> list[torch.Tensor]:
    """The first ``BN_IMAGES`` training-split images, unaugmented and normalised as the model takes
    them, in whole batches of ``batch_size`` (a shorter last one is dropped: ``momentum=None``
    weighs batches equally), or one batch of all of them when there are fewer."""
    train = first_images(bundle.train, BN_IMAGES)
    loader = BatchLoader(train, batch_size, mean=bundle.mean, std=bundle.std, train=False, device=device,
                          channels_last=cfg.channels_last)
    return [x for x, _ in loader if len(x) == min(batch_size, len(train))]


def load_reference(path, cfg, data_dir: str | None = None) -> nn.Module:
    """The model of the permuted-label checkpoint ``path``; a ValueError when its architecture
    (model, attention, head, model options) is not the explained run's."""
    ref_cfg, _, reference, _, _ = load_run(path, data_dir)
    keys = ("model", "attn", "head", "model_kw")
    if any(getattr(ref_cfg, k) != getattr(cfg, k) for k in keys):
        mine, theirs = ({k: getattr(c, k) for k in keys} for c in (cfg, ref_cfg))
        raise ValueError(f"--sanity-reference {path} is a different architecture ({theirs}) from the explained "
                         f"run ({mine}); the data randomisation test compares one architecture trained two ways")
    return reference


def run_sanity(cfg, bundle, model: nn.Module, loader: BatchLoader, pairs: torch.Tensor, methods: tuple[str, ...],
               boxes: list[torch.Tensor] | None, black: torch.Tensor, settings) -> dict:
    """``sanity_checks`` for ``explain_checkpoint`` (scores.json's "sanity"): ``settings`` is its
    ``ExplainSettings`` (seed of the re-drawn weights, batch size, layer, tolerance,
    ``sanity_reference``, data folder); ``boxes`` per pair or None."""
    device = next(model.parameters()).device
    reference = None
    if settings.sanity_reference:
        reference = load_reference(settings.sanity_reference, cfg, settings.data_dir).to(device)
    batches = training_batches(cfg, bundle, settings.batch_size, device)
    return sanity_checks(model, fresh_model(cfg, bundle, settings.seed), loader, pairs, methods, batches,
                         settings.layer, black, boxes, settings.tolerance, reference)


def sanity_rows(sanity: dict) -> tuple[list[str], list[list[str]]]:
    """The CLI's table of scores.json's "sanity": columns ["randomized", *methods], one row per
    cascade step (mean Spearman), then data randomisation (when tested) and the fails_sanity flags."""
    methods = list(sanity)
    first = sanity[methods[0]]
    rows = [[step["randomized"], *(f"{sanity[m]['steps'][i]['spearman']:.2f}" for m in methods)]
            for i, step in enumerate(first["steps"])]
    if "data_randomization" in first:
        rows.append(["permuted labels", *(f"{sanity[m]['data_randomization']['spearman']:.2f}" for m in methods)])
    rows.append(["fails sanity", *("yes" if sanity[m]["fails_sanity"] else "no" for m in methods)])
    return ["randomized (cumulative)", *methods], rows

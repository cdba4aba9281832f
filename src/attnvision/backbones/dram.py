"""DRAM, the deep recurrent attention model (Ba, Mnih & Kavukcuoglu, "Multiple Object Recognition
with Visual Attention", ICLR 2015, arXiv:1412.7755): an LSTM pair that looks at the image through
a few small multi-resolution glimpses and emits one label after every ``glimpses_per_label``
glimpses, then END (``label_sequence``: vocabulary, alignment of the label set to the steps,
per-class scores).

Model (n = 1..N glimpses, N = steps · glimpses_per_label; l = (x, y) ∈ [−1, 1]², the image's
corners at ±1 as in ``F.affine_grid``):

    x_n   = ρ(I, l_n)                                   glimpse sensor (retina, below)
    g_n   = G_image(x_n) ⊙ G_loc(l_n)                   glimpse network: elementwise product
    r1_n  = LSTM_1(g_n, r1_{n−1}),  r1_0 = 0            lower core: what
    r2_n  = LSTM_2(r1_n, r2_{n−1}), h(r2_0) = C(I_coarse), c(r2_0) = 0     upper core: where
    μ_{n+1} = tanh(E r2_n + e),  l_{n+1} ~ N(μ_{n+1}, σ² 1)   emission network (l_1 from r2_0)
    p(y_t) = softmax(W_2 ReLU(W_1 r1_{tK} + b_1) + b_2)  over C classes + END, at glimpse n = tK

with K = ``glimpses_per_label``, t = 1..T = ``steps``. G_image: three 3×3 convolutions (ReLU, the
second with stride 2) and a linear layer (ReLU); G_loc: linear (ReLU); the context network C:
three 3×3 convolutions (ReLU, strides 1, 2, 2) on I_coarse = the image area-averaged to
``context_size``² pixels, then a linear layer (tanh). Only r2 sees the context, so the labels
come from the glimpses alone, as in the paper.

Retina ρ: ``scales`` square patches centred at l, the first ``patch_size`` pixels wide and each
next one twice as wide, each box-averaged down to patch_size² values and stacked as channels:
(B, scales · in_chans, P, P). One ``F.grid_sample`` call serves the whole batch and every scale:
each output value is the mean of M × M nearest-pixel samples spread evenly over its cell
(M = 2^(scales − 1)), which is exactly the mean of the pixels under the cell when the cell lies on
the pixel grid, and its area-weighted mean (to 1/M of a pixel) otherwise. Padding rule: outside
the image the retina sees zeros; inputs are normalised, so zero is the dataset mean, a neutral
value that carries no edge of its own (the same rule as a convolution's zero padding).
``test_dram.py`` checks border glimpses against crops of a zero-padded image.

Objective per image, over the T_y steps that have a target (the labels and END, aligned by
``label_sequence.next_targets`` from each step's own logits) and the glimpses n of those steps:

    L = −(1/T_y) Σ_t log p(y_t)                                       (``sequence_loss``)
        − λ (1/N_y) Σ_n (R_n − b_n) log N(l_n; μ_n, σ²)              REINFORCE, l_n and R_n − b_n fixed
        + β (1/N_y) Σ_n (R_n − b_n)²                                   the baseline's regression
    r_t = 1[argmax p(· at step t) = y_t],   R_n = Σ_{t ≥ ⌈n/K⌉} r_t    reward and return

(averaged over the batch). The paper's training signal (§3): maximise the lower bound
Σ_l p(l|I) log p(y|l, I) of log p(y|I), whose gradient is estimated by M sampled location
sequences as (1/M) Σ_m [∂ log p(y|l^m)/∂W + log p(y|l^m) ∂ log p(l^m|I)/∂W]; for lower variance
log p(y|l^m) in the second term becomes a 0/1 reward for a correct prediction, minus a learned
baseline b, and the term is weighed by λ. Here M = 1 sample per image. The REINFORCE term is
formed as ``reinforce_surrogate``: A · (log π − stopgrad log π), whose value is 0 and whose
gradient is the estimator, so the loss the trainer logs is the cross-entropy plus the baseline's
squared error. Locations are not differentiable: the emission network, r2 and the context network
learn only from the REINFORCE term; the baseline b_n = w_b·stopgrad(r2_{n−1}) + c_b learns only
from its regression.

At test time (no targets) every location is the emission mean μ_n: the run is deterministic, the
logits of ``forward``, ``attention_maps`` and ``glimpse_centres`` all come from it. With targets
the locations are sampled whatever the module's mode.

Options and defaults (``dram(num_classes, in_chans=…, **kw)``):
- ``steps`` T = 5 (labels + END: up to 4 labels, Fashion-MNIST scenes hold 1–4 items).
- ``glimpses_per_label`` K = 3: the paper takes several glimpses per object.
- ``patch_size`` P = 12 and ``scales`` = 3: patches of 12, 24 and 48 px, so that on a 64-px scene
  the middle one covers a Fashion-MNIST item (21–42 px). The retina of Mnih et al. 2014 (RAM): k
  patches, each twice as wide as the one before.
- ``hidden_dim`` = 256 (G_image and G_loc outputs, both LSTMs, the classifier's hidden layer);
  ``context_size`` = 16.
- ``location_std`` σ = 0.1 and ``reinforce_weight`` λ = 0.1: those of the DRAM configuration of
  google-research/saccader (``visual_attention/dram_config.py``: sampling_stddev 0.1,
  reinforce_loss_wt 0.1); ``baseline_weight`` β = 1.
- ``order``: "predicted" (default) or "class", see ``label_sequence``.

Deviations:
- Label order: the paper's sequences are ordered (digits left to right); multi-hot targets give a
  set, aligned per step by ``label_sequence`` (its docstring says why). A label set has no counts.
- Reward: one 0/1 reward per label step, and each location is credited with the rewards of the
  steps it can still influence (its own and the later ones: return-to-go); glimpses of steps after
  the END target are not scored. The paper's per-sequence credit assignment (§3) could not be
  re-read in the copies at hand; this is the plain REINFORCE estimator for per-step rewards.
- Sampled locations are clamped to [−1, 1] for the sensor (and G_loc) but scored by the Gaussian
  log-density of the unclamped sample: the clamp belongs to the environment, so the estimator
  stays unbiased. The mean is tanh-bounded to [−1, 1].
- Sizes (channels, hidden units, patches, the stride in G_image) are ours, for 64–112-px scenes
  on modest hardware; the paper sizes its networks for SVHN. The context network's output sets
  r2's hidden state, its cell state starts at 0.
- Initialisation: PyTorch's defaults, except the emission weights ~ N(0, 0.01²) with zero bias
  (the first looks land near the centre), the baseline zero (b = 0 at first) and the LSTMs'
  forget-gate biases 1 (Jozefowicz, Zaremba & Sutskever 2015). The paper gives none.
- The test-time rule (emission means) is the usual one for these models; the paper's own
  test-time procedure could not be checked in the copies at hand.

Cost per image: N glimpses of scales · in_chans · P² values, each read through scales · M² · P²
samples per input channel (6,912 for the defaults); two LSTM steps per glimpse; one context
network pass. Training at batch 128 on 64-px scenes: ≈ 0.85 s per forward + backward on one CPU
thread with the defaults.
"""

from __future__ import annotations

import inspect
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..label_sequence import (IGNORED_STEP, check_order, check_steps, decoded_tokens, next_targets, sequence_loss,
                              set_logits, start_targets)
from .common import check_input

EMISSION_INIT_STD = 0.01  # first locations near the centre, yet not all equal


def retina(images: torch.Tensor, centres: torch.Tensor, patch_size: int, scales: int) -> torch.Tensor:
    """Multi-resolution glimpses: images (B, C, H, W), centres (B, 2) as (x, y) in [−1, 1] →
    (B, scales · C, P, P), scale k (0 = finest) covering P · 2^k pixels, box-averaged, in channels
    k·C … (k+1)·C − 1. Zeros outside the image (module docstring)."""
    b, c, h, w = images.shape
    supersample = 2 ** (scales - 1)
    side = patch_size * supersample
    widths = patch_size * 2.0 ** torch.arange(scales, device=images.device, dtype=images.dtype)
    theta = torch.zeros(b, scales, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, :, 0, 0] = widths / w
    theta[:, :, 1, 1] = widths / h
    theta[:, :, :, 2] = centres.to(images.dtype)[:, None, :]
    grid = F.affine_grid(theta.flatten(0, 1), [b * scales, c, side, side], align_corners=False)
    samples = F.grid_sample(images, grid.view(b, scales * side, side, 2), mode="nearest", padding_mode="zeros",
                            align_corners=False)  # (B, C, scales·side, side): the scales one above the other
    patches = F.avg_pool2d(samples, supersample)  # (B, C, scales·P, P)
    return patches.unflatten(2, (scales, patch_size)).transpose(1, 2).flatten(1, 2)


def pixel_centres(locations: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Locations (..., 2) as (x, y) in [−1, 1] → (..., 2) as (y, x) in pixel index coordinates
    (pixel (i, j)'s centre is (i, j))."""
    h, w = size
    return torch.stack([(locations[..., 1] + 1) * h / 2 - 0.5, (locations[..., 0] + 1) * w / 2 - 0.5], -1)


def chebyshev_distances(locations: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """d∞ (B, S, H, W): the larger of the row and column distances of each pixel's centre to the
    glimpse centre, for locations (B, S, 2) (x, y)."""
    h, w = size
    centre = pixel_centres(locations.float(), size)
    rows = torch.arange(h, device=locations.device, dtype=torch.float32)
    cols = torch.arange(w, device=locations.device, dtype=torch.float32)
    row_distance = (rows - centre[..., 0, None]).abs()[..., :, None]  # (B, S, H, 1)
    col_distance = (cols - centre[..., 1, None]).abs()[..., None, :]  # (B, S, 1, W)
    return torch.maximum(row_distance, col_distance)


def footprints(locations: torch.Tensor, patch_size: int, size: tuple[int, int]) -> torch.Tensor:
    """0/1 boxes of the finest retina patch, (B, S, H, W), for locations (B, S, 2) (x, y): the pixels
    whose centre lies within patch_size / 2 of the glimpse centre along both axes."""
    return (chebyshev_distances(locations, size) < patch_size / 2).float()


def cones(locations: torch.Tensor, patch_size: int, size: tuple[int, int]) -> torch.Tensor:
    """The finest retina patch of each glimpse as a pyramid, (B, S, H, W): 1 − d∞(p, centre) / (P/2)
    inside the patch, 0 outside (``chebyshev_distances``), so that the map's maximum is the pixel
    nearest the glimpse centre."""
    return (1 - chebyshev_distances(locations, size) / (patch_size / 2)).clamp(min=0)


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """log N(sample; mean, std² 1), summed over the last dimension."""
    z = (sample - mean) / std
    return (-0.5 * z ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


def reinforce_surrogate(log_prob: torch.Tensor, advantage: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """−mean over the counted entries of A · (log π − stopgrad log π): value 0, gradient
    −mean(A ∇ log π), the REINFORCE estimate of −∇ E[return] (A = return − baseline, held fixed).
    log_prob, advantage: (B, S); counted: (B, S) bool → scalar."""
    weighted = advantage.detach() * (log_prob - log_prob.detach())
    return -weighted[counted].sum() / counted.sum().clamp(min=1)


def step_rewards(step_logits: torch.Tensor, step_targets: torch.Tensor) -> torch.Tensor:
    """r_t = 1 where step t's most probable token is its target, 0 elsewhere and at ignored steps.
    step_logits: (B, T, C + 1); step_targets: (B, T) → (B, T) float32."""
    return (step_logits.argmax(2) == step_targets).float()  # an ignored target (−1) never matches


def returns_to_go(rewards: torch.Tensor, glimpses_per_label: int) -> torch.Tensor:
    """R_n = Σ_{t ≥ step of glimpse n} r_t for every glimpse: rewards (B, T) → (B, T · K)."""
    later_sum = rewards.flip(1).cumsum(1).flip(1)
    return later_sum.repeat_interleave(glimpses_per_label, 1)


def conv_encoder(in_channels: int, widths: tuple[int, ...], strides: tuple[int, ...], size: int,
                 out_features: int) -> nn.Sequential:
    """3×3 convolutions with ReLU (padding 1) on size × size inputs, then flatten and a linear map."""
    layers: list[nn.Module] = []
    for width, stride in zip(widths, strides):
        layers += [nn.Conv2d(in_channels, width, 3, stride, 1), nn.ReLU(inplace=True)]
        in_channels, size = width, (size - 1) // stride + 1
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(in_channels * size * size, out_features))


class Glimpses(NamedTuple):
    """One unrolled run over S = T · K glimpses of B images."""

    step_logits: torch.Tensor  # (B, T, C + 1): scores of the C classes and END at each label step
    step_targets: torch.Tensor | None  # (B, T) aligned targets (−1 after END); None when deterministic
    locations: torch.Tensor  # (B, S, 2): where each glimpse looked, (x, y) in [−1, 1]
    log_probs: torch.Tensor | None  # (B, S): log N(l_n; μ_n, σ²) of the sampled locations, float32
    baselines: torch.Tensor | None  # (B, S): b_n, float32


def check_positive_int(name: str, value, least: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be an integer ≥ {least}, got {value!r}")


def check_options(steps: int, glimpses_per_label: int, patch_size: int, scales: int, hidden_dim: int,
                  context_size: int, location_std: float, reinforce_weight: float, baseline_weight: float,
                  order: str) -> None:
    """Every option's valid range, failing with the fix in the message."""
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps (labels + END) must be an integer ≥ 2, got {steps!r}; "
                         "pass steps=k+1 for up to k labels per image")
    check_positive_int("glimpses_per_label", glimpses_per_label)
    check_positive_int("patch_size", patch_size, 2)
    check_positive_int("hidden_dim", hidden_dim)
    check_positive_int("context_size", context_size, 4)
    if not isinstance(scales, int) or not 1 <= scales <= 4:
        raise ValueError(f"scales must be an integer in 1..4 (each patch twice as wide as the last), got {scales!r}")
    if not (isinstance(location_std, (int, float)) and location_std > 0):
        raise ValueError(f"location_std (σ of the location policy) must be > 0, got {location_std!r}")
    for name, weight in (("reinforce_weight", reinforce_weight), ("baseline_weight", baseline_weight)):
        if not (isinstance(weight, (int, float)) and weight >= 0):
            raise ValueError(f"{name} must be ≥ 0, got {weight!r}; pass 0 to drop the term")
    check_order(order)


class DRAM(nn.Module):
    """Deep recurrent attention model: (B, in_chans, H, W) → per-class logits (B, C); in training,
    ``forward(x, targets)`` → (logits (B, C), loss). See the module docstring."""

    takes_targets = True

    def __init__(self, num_classes: int, in_chans: int = 1, steps: int = 5, glimpses_per_label: int = 3,
                 patch_size: int = 12, scales: int = 3, hidden_dim: int = 256, context_size: int = 16,
                 location_std: float = 0.1, reinforce_weight: float = 0.1, baseline_weight: float = 1.0,
                 order: str = "predicted") -> None:
        super().__init__()
        check_options(steps, glimpses_per_label, patch_size, scales, hidden_dim, context_size, location_std,
                      reinforce_weight, baseline_weight, order)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.steps, self.glimpses_per_label, self.order = steps, glimpses_per_label, order
        self.patch_size, self.scales, self.context_size = patch_size, scales, context_size
        self.location_std, self.reinforce_weight, self.baseline_weight = location_std, reinforce_weight, baseline_weight
        self.glimpse_image = nn.Sequential(
            conv_encoder(scales * in_chans, (32, 64, 64), (1, 2, 1), patch_size, hidden_dim), nn.ReLU(inplace=True))
        self.glimpse_location = nn.Sequential(nn.Linear(2, hidden_dim), nn.ReLU(inplace=True))
        self.core_lower = nn.LSTMCell(hidden_dim, hidden_dim)  # r1: what
        self.core_upper = nn.LSTMCell(hidden_dim, hidden_dim)  # r2: where
        self.context = nn.Sequential(conv_encoder(in_chans, (16, 32, 64), (1, 2, 2), context_size, hidden_dim),
                                     nn.Tanh())
        self.emission = nn.Linear(hidden_dim, 2)
        self.baseline = nn.Linear(hidden_dim, 1)
        self.classifier = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                                        nn.Linear(hidden_dim, num_classes + 1))  # C classes and END
        self._init_weights()

    @property
    def num_glimpses(self) -> int:
        return self.steps * self.glimpses_per_label

    def _init_weights(self) -> None:
        nn.init.normal_(self.emission.weight, std=EMISSION_INIT_STD)
        nn.init.zeros_(self.emission.bias)
        nn.init.zeros_(self.baseline.weight)
        nn.init.zeros_(self.baseline.bias)
        for core in (self.core_lower, self.core_upper):
            hidden = core.hidden_size
            with torch.no_grad():  # gates are (input, forget, cell, output); the two biases add up
                core.bias_ih[hidden:2 * hidden].fill_(1.0)
                core.bias_hh[hidden:2 * hidden].zero_()

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        """Without targets: the deterministic run → per-class logits (B, C). With multi-hot targets
        (B, C) in {1, 0, −1 ignored}: a sampled run → (per-class logits (B, C), loss float32)."""
        if targets is None:
            return set_logits(self.decode(x).step_logits)
        run = self.sample(x, targets)
        return set_logits(run.step_logits), self.loss(run)

    def decode(self, x: torch.Tensor) -> Glimpses:
        """The test-time run: every location is the emission mean."""
        return self._unroll(x, None)

    def sample(self, x: torch.Tensor, targets: torch.Tensor) -> Glimpses:
        """The training run: sampled locations, each label step's target aligned from its logits."""
        if targets.shape != (len(x), self.num_classes):
            raise ValueError(f"dram expects multi-hot targets (B, {self.num_classes}), got {tuple(targets.shape)}")
        check_steps(self.steps, targets)
        return self._unroll(x, targets)

    def loss(self, run: Glimpses) -> torch.Tensor:
        """Cross-entropy per target step + λ REINFORCE (value 0) + β baseline squared error, both
        averaged over the glimpses of target steps (module docstring), float32."""
        counted_steps = run.step_targets != IGNORED_STEP
        counted = counted_steps.repeat_interleave(self.glimpses_per_label, 1)
        returns = returns_to_go(step_rewards(run.step_logits, run.step_targets), self.glimpses_per_label)
        advantage = returns - run.baselines.detach()
        policy = reinforce_surrogate(run.log_probs, advantage, counted)
        regression = ((run.baselines - returns) ** 2)[counted].mean()
        return (sequence_loss(run.step_logits, run.step_targets) + self.reinforce_weight * policy
                + self.baseline_weight * regression)

    def _unroll(self, x: torch.Tensor, targets: torch.Tensor | None) -> Glimpses:
        check_input(x, self.in_chans)
        sampling = targets is not None
        if sampling:
            remaining, done = start_targets(targets)
        # x.shape[0], not len(x): a traced export (attnvision export --dynamic-batch) keeps it variable
        zeros = x.new_zeros(x.shape[0], self.core_lower.hidden_size)
        lower, upper = (zeros, zeros), (self.context(self._coarse(x)), zeros)
        location, log_prob, baseline = self._emit(upper[0], sampling)
        logits, aligned, looked, log_probs, baselines = [], [], [], [], []
        for n in range(1, self.num_glimpses + 1):
            looked.append(location.clamp(-1, 1))
            log_probs.append(log_prob)
            baselines.append(baseline)
            lower = self.core_lower(self._glimpse(x, looked[-1]), lower)
            if n % self.glimpses_per_label == 0:
                logits.append(self.classifier(lower[0]))
                if sampling:
                    target, remaining, done = next_targets(logits[-1], remaining, done, self.order)
                    aligned.append(target)
            if n < self.num_glimpses:
                upper = self.core_upper(lower[0], upper)
                location, log_prob, baseline = self._emit(upper[0], sampling)
        return Glimpses(torch.stack(logits, 1), torch.stack(aligned, 1) if sampling else None,
                        torch.stack(looked, 1), torch.stack(log_probs, 1) if sampling else None,
                        torch.stack(baselines, 1) if sampling else None)

    def _coarse(self, x: torch.Tensor) -> torch.Tensor:
        """I_coarse: the image area-averaged to context_size² pixels."""
        return F.adaptive_avg_pool2d(x, self.context_size)

    def _glimpse(self, x: torch.Tensor, location: torch.Tensor) -> torch.Tensor:
        """g = G_image(ρ(x, l)) ⊙ G_loc(l): (B, hidden)."""
        patches = retina(x, location, self.patch_size, self.scales)
        return self.glimpse_image(patches) * self.glimpse_location(location.to(patches.dtype))

    def _emit(self, state: torch.Tensor,
              sampling: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The next location from r2's hidden state (B, hidden): (location (B, 2), log π (B,) float32,
        baseline (B,) float32) when sampling; (mean, None, None) otherwise. Locations carry no
        gradient (hard attention)."""
        mean = torch.tanh(self.emission(state)).float()
        if not sampling:
            return mean.detach(), None, None
        location = (mean + self.location_std * torch.randn_like(mean)).detach()
        baseline = self.baseline(state.detach()).float().squeeze(1)
        return location, gaussian_log_prob(location, mean, self.location_std), baseline

    @torch.no_grad()
    def glimpse_centres(self, x: torch.Tensor) -> torch.Tensor:
        """Where the deterministic run looks: (B, S, 2) as (y, x) pixel index coordinates (pixel
        (i, j)'s centre is (i, j)), S = steps · glimpses_per_label, in glimpse order."""
        return pixel_centres(self.decode(x).locations, x.shape[-2:])

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"glimpses": the finest patch of every glimpse as a 0/1 box, (B, S, H, W); "classes": per
        class, the glimpses of the step that emitted it, zeros if not emitted, (B, C, H, W)}.
        ``queries`` is unused (no self-attention).

        A class map is max_k (k/K)·cone_k over the step's K glimpses (``cones``): its footprint is
        the union of their finest patches, and its maximum, 1, is the pixel nearest the centre of
        the last glimpse before the label was emitted, so the pointing game of a class map asks
        whether that glimpse centre lies in the box of the emitted class (of every step that
        emitted it, when several did: the maps of those steps are combined by their maximum)."""
        run = self.decode(x)
        boxes = footprints(run.locations, self.patch_size, x.shape[-2:])  # (B, S, H, W)
        pyramids = cones(run.locations, self.patch_size, x.shape[-2:]).unflatten(1, (self.steps, -1))
        weight = torch.arange(1, self.glimpses_per_label + 1, device=x.device) / self.glimpses_per_label
        per_step = (pyramids * weight[:, None, None]).amax(2)  # (B, T, H, W)
        emitted_at = F.one_hot(decoded_tokens(run.step_logits), self.num_classes + 1)[:, :, :self.num_classes]
        emitted_at = emitted_at.float()  # (B, T, C)
        classes = torch.zeros(x.shape[0], self.num_classes, *x.shape[-2:], device=x.device)
        for t in range(self.steps):  # a class emitted at several steps keeps each step's glimpses
            classes = torch.maximum(classes, emitted_at[:, t, :, None, None] * per_step[:, t, None])
        return {"glimpses": boxes, "classes": classes}

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Where the model looked when it emitted each class, (B, C, H, W) (``attention_maps``'s
        "classes")."""
        return self.attention_maps(x, torch.empty(0, 2))["classes"]


def dram(num_classes: int, attn: str | None = None, in_chans: int = 1, head: str | None = None, **kw) -> DRAM:
    """DRAM (module docstring). ``kw``: steps, glimpses_per_label, patch_size, scales, hidden_dim,
    context_size, location_std, reinforce_weight, baseline_weight, order."""
    if attn is not None or head is not None:
        raise ValueError(f"dram has its own glimpse network and classifier (got attn={attn!r}, head={head!r}): "
                         "drop --attn/--head")
    valid = [p for p in inspect.signature(DRAM).parameters if p not in ("num_classes", "in_chans")]
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        raise ValueError(f"dram got unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return DRAM(num_classes, in_chans=in_chans, **kw)

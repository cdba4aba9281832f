"""Show-attend-tell label decoder (Xu, Ba, Kiros, Cho, Courville, Salakhutdinov, Zemel & Bengio,
"Show, Attend and Tell: Neural Image Caption Generation with Visual Attention", ICML 2015,
arXiv:1502.03044): an LSTM that emits one label per step, looking at the image through soft
attention before each one. The caption's words are here the image's labels, then END
(``label_sequence``: vocabulary, alignment of the label set to the steps, per-class scores).

Features x ∈ R^{B×D×h×w} are the annotation vectors a_i ∈ R^D, i = 1..L = h·w (§3.1.1). With
E ∈ R^{m×(C+2)} the label embedding (C classes, END = C, START = C + 1), n the LSTM size and
y_0 = START, every step t = 1..T computes (§3.1.2, §4.2):

    e_ti = w^T tanh(W_a a_i + W_h h_{t−1} + b)          f_att, the attention MLP (Eq. 4)
    α_t  = softmax_i(e_t)                               (Eq. 5)
    β_t  = σ(f_β(h_{t−1}))                              gating scalar, f_β linear (§4.2.1)
    ẑ_t  = β_t Σ_i α_ti a_i                             φ (Eq. 6) as the soft expectation (§4.2)
    h_t, c_t = LSTM([E y_{t−1}; ẑ_t], (h_{t−1}, c_{t−1}))   (Eqs. 1–3)
    p(y_t | a, y_{<t}) ∝ exp(L_o (E y_{t−1} + L_h h_t + L_z ẑ_t))   deep output layer (Eq. 7)
    c_0 = f_init,c((1/L) Σ_i a_i),  h_0 = f_init,h((1/L) Σ_i a_i)   two separate MLPs

The paper's gates are one affine map of (E y_{t−1}, h_{t−1}, ẑ_t); an ``nn.LSTMCell`` on the
concatenation [E y_{t−1}; ẑ_t] is that same function (W_ih [E y; ẑ] + W_hh h + b_ih + b_hh, the
two bias vectors together playing the paper's one). Training minimises the doubly stochastic
objective per image (§4.2.1)

    −Σ_t log p(y_t) + λ Σ_i (1 − Σ_t α_ti)²

with teacher forcing: the previous *target* label is the next input. Step t's target is aligned
by ``label_sequence.next_targets`` from step t's own logits (``order``), so each step is run, then
aligned, and its target is fed to step t + 1. The sums over t run over the steps that have a
target (the labels and END; later steps are ignored). Normalisation: the library's
``sequence_loss`` is the mean cross-entropy per target step, so the penalty (mean over images)
is divided by the mean number of target steps per image; the total is the paper's objective,
averaged over images, divided by that number, so the paper's balance between the two terms is
kept. With S counted steps and S < L the penalty cannot reach 0 (Σ_i Σ_t α_ti = S; its floor is
(L − S)²/L per image, the attention spread evenly), so the logged loss carries that constant;
only the unevenness of the attention over the image moves it. All in float32.

At test time (no targets): greedy decoding, the argmax label fed back, until END or ``steps``
steps; per-class logits are ``label_sequence.set_logits`` of the decoded steps. Beam search is
not offered: ``set_logits`` reads one decoded sequence per image, and the argmax of a step is
what thresholds at 0.5.

Hard (stochastic) attention is not offered: it samples one location per step and is trained by
REINFORCE on a variational lower bound (§4.1), a different estimator from this head's
backpropagation; the library's DRAM model covers stochastic glimpses.

Options and defaults (the authors' released COCO configuration, kelvinxu/arctic-captions
``evaluate_coco.py``, where the paper gives no number):
- ``steps`` = 5: labels + END, so up to 4 labels per image (Fashion-MNIST scenes hold 1–4 items
  by default).
- ``lam`` λ = 1.0 (``alpha_c = 1.``; the paper states the penalty, not its weight).
- ``dropout`` = 0.5 where the authors' code applies it: after the hidden layer of each init MLP,
  on h_t before L_h, and on the deep output's sum before L_o. The paper says only "dropout".
- ``embed_dim`` m = ``attn_dim`` = D (512 = 512 = D in that configuration); ``hidden_dim`` n = 2·D
  (the authors use 1800 ≈ 3.5·D; halved to keep the head small next to a CIFAR trunk).
- ``order``: "predicted" (default) or "class", see ``label_sequence``.

Deviations:
- A caption is ordered; a label set is not: each step's target is aligned by ``order`` (see
  ``label_sequence``), and the loss averages over target steps where the paper sums over words.
- The deep output is linear as in the paper's Eq. 7; the authors' code puts a tanh before L_o.
- f_init,c and f_init,h are two separate one-hidden-layer MLPs (D → D ReLU → n tanh), as the
  paper says; the authors' code shares the hidden layer between them.
- f_att has one hidden layer (the paper's form); the authors' COCO setting stacks a second one on
  W_a a_i.
- Only L_o has a bias (biases on L_h, L_z would be absorbed into it). PyTorch's default
  initialisation throughout.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..label_sequence import (IGNORED_STEP, check_order, check_steps, decoded_steps, decoded_tokens, next_targets,
                              sequence_loss, set_logits, start_targets)


class Decoding(NamedTuple):
    """One unrolled decoder run over T steps for B images of L locations."""

    step_logits: torch.Tensor  # (B, T, C + 1): scores of the C classes and END at each step
    step_targets: torch.Tensor | None  # (B, T) aligned targets (−1 after END); None when greedy
    alphas: torch.Tensor  # (B, T, L): α_t, the attention over the locations at each step
    betas: torch.Tensor  # (B, T): β_t, the gating scalar at each step


def doubly_stochastic_penalty(alphas: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Σ_i (1 − Σ_t α_ti)² per image, the sum over t taken over the counted steps only.
    alphas: (B, T, L); counted: (B, T) bool → (B,)."""
    attention_per_location = (alphas * counted[:, :, None]).sum(1)
    return ((1 - attention_per_location) ** 2).sum(1)


def init_mlp(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    """f_init: D → D (ReLU, dropout) → n (tanh)."""
    return nn.Sequential(nn.Linear(in_features, in_features), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(in_features, out_features), nn.Tanh())


def check_size(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer (or None for the default), got {value!r}")


def check_options(steps: int, dropout: float, lam: float, order: str, sizes: dict[str, int | None]) -> None:
    """Every option's valid range, failing with the fix in the message."""
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps (labels + END) must be an integer ≥ 2, got {steps!r}; "
                         "pass steps=k+1 for up to k labels per image")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}; pass dropout=0 to turn it off")
    if not lam >= 0:
        raise ValueError(f"lam (λ, the doubly stochastic weight) must be ≥ 0, got {lam}; pass lam=0 to drop "
                         "the penalty")
    check_order(order)
    for name, value in sizes.items():
        check_size(name, value)


class ShowAttendTellHead(nn.Module):
    """LSTM label decoder with soft attention. (B, D, h, w) → per-class logits (B, C); in training,
    ``forward(x, targets)`` → (logits (B, C), loss)."""

    takes_targets = True

    def __init__(self, in_features: int, num_classes: int, steps: int = 5, hidden_dim: int | None = None,
                 embed_dim: int | None = None, attn_dim: int | None = None, dropout: float = 0.5,
                 lam: float = 1.0, order: str = "predicted") -> None:
        super().__init__()
        check_options(steps, dropout, lam, order,
                      {"hidden_dim": hidden_dim, "embed_dim": embed_dim, "attn_dim": attn_dim})
        hidden, embed, attn = hidden_dim or 2 * in_features, embed_dim or in_features, attn_dim or in_features
        self.in_features, self.num_classes = in_features, num_classes
        self.steps, self.lam, self.order = steps, lam, order
        self.end, self.start = num_classes, num_classes + 1
        self.embed = nn.Embedding(num_classes + 2, embed)  # E: classes, END, START
        self.init_c = init_mlp(in_features, hidden, dropout)
        self.init_h = init_mlp(in_features, hidden, dropout)
        self.attn_annotation = nn.Linear(in_features, attn)  # W_a, b
        self.attn_state = nn.Linear(hidden, attn, bias=False)  # W_h
        self.attn_score = nn.Linear(attn, 1, bias=False)  # w
        self.gate = nn.Linear(hidden, 1)  # f_β
        self.lstm = nn.LSTMCell(embed + in_features, hidden)
        self.out_state = nn.Linear(hidden, embed, bias=False)  # L_h
        self.out_context = nn.Linear(in_features, embed, bias=False)  # L_z
        self.out = nn.Linear(embed, num_classes + 1)  # L_o: the C classes and END
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        """Without targets: greedy decoding → per-class logits (B, C). With multi-hot targets (B, C)
        in {1, 0, −1 ignored}: teacher forcing → (per-class logits (B, C), loss)."""
        if targets is None:
            return set_logits(self.decode(x).step_logits)
        run = self.teacher_force(x, targets)
        return set_logits(run.step_logits), self.loss(run)

    def loss(self, run: Decoding) -> torch.Tensor:
        """Mean cross-entropy per target step + λ · mean penalty per image / mean target steps per
        image (the module docstring's normalisation), float32."""
        counted = run.step_targets != IGNORED_STEP
        penalty = doubly_stochastic_penalty(run.alphas.float(), counted).mean()
        steps_per_image = counted.sum() / len(counted)
        return sequence_loss(run.step_logits, run.step_targets) + self.lam * penalty / steps_per_image

    def decode(self, x: torch.Tensor) -> Decoding:
        """Greedy decoding of features x (B, D, h, w): each step's argmax is the next input. All
        ``steps`` steps are computed; ``label_sequence.decoded_steps`` says which count."""
        return self._unroll(x, None)

    def teacher_force(self, x: torch.Tensor, targets: torch.Tensor) -> Decoding:
        """The training run on features x (B, D, h, w) and multi-hot targets (B, C): each step's
        aligned target is the next input."""
        check_steps(self.steps, targets)
        return self._unroll(x, targets)

    def _annotations(self, x: torch.Tensor) -> torch.Tensor:
        """Annotation vectors a (B, L, D) of features x (B, D, h, w)."""
        if x.ndim != 4 or x.shape[1] != self.in_features:
            raise ValueError(f"show-attend-tell head expects features (B, {self.in_features}, h, w), "
                             f"got {tuple(x.shape)}")
        return x.flatten(2).transpose(1, 2)

    def _unroll(self, x: torch.Tensor, targets: torch.Tensor | None) -> Decoding:
        annotations = self._annotations(x)
        keys = self.attn_annotation(annotations)  # W_a a_i + b, (B, L, A), the same at every step
        mean_annotation = annotations.mean(1)
        h, c = self.init_h(mean_annotation), self.init_c(mean_annotation)
        # x.shape[0], not len(x): a traced export (attnvision export --dynamic-batch) keeps it variable
        token = torch.full((x.shape[0],), self.start, dtype=torch.long, device=x.device)
        if targets is not None:
            remaining, done = start_targets(targets)
        logits, aligned, alphas, betas = [], [], [], []
        for _ in range(self.steps):
            step_logits, alpha, beta, h, c = self._step(token, annotations, keys, h, c)
            if targets is None:
                token = step_logits.argmax(1)
            else:
                target, remaining, done = next_targets(step_logits, remaining, done, self.order)
                aligned.append(target)
                token = target.masked_fill(target == IGNORED_STEP, self.end)  # its step is not scored
            logits.append(step_logits)
            alphas.append(alpha)
            betas.append(beta)
        return Decoding(torch.stack(logits, 1), torch.stack(aligned, 1) if aligned else None,
                        torch.stack(alphas, 1), torch.stack(betas, 1))

    def _step(self, token: torch.Tensor, annotations: torch.Tensor, keys: torch.Tensor, h: torch.Tensor,
              c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One decoding step from the previous label ``token`` (B,) and state h, c (B, n):
        (logits (B, C + 1), α_t (B, L), β_t (B,), h_t, c_t)."""
        scores = self.attn_score(torch.tanh(keys + self.attn_state(h)[:, None])).squeeze(2)
        alpha = scores.softmax(1)
        beta = torch.sigmoid(self.gate(h))  # (B, 1)
        context = beta * torch.einsum("bl,bld->bd", alpha, annotations)
        embedded = self.embed(token)
        h, c = self.lstm(torch.cat([embedded, context], 1), (h, c))
        deep = embedded + self.out_state(self.drop(h)) + self.out_context(context)
        return self.out(self.drop(deep)), alpha, beta.squeeze(1), h, c

    def attention_maps(self, x: torch.Tensor, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"steps": α_t of each greedily decoded step, zeros after decoding stopped, (B, T, h, w);
        "classes": for each class the α of the first step that emitted it, zeros if not emitted,
        (B, C, h, w)}. ``queries`` is unused (no self-attention)."""
        run = self.decode(x)
        decoded = decoded_steps(run.step_logits)
        alphas = run.alphas * decoded[:, :, None]
        return {"steps": alphas.unflatten(2, x.shape[2:]),
                "classes": self._class_attention(run.step_logits, alphas).unflatten(2, x.shape[2:])}

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Where the model looked when it emitted each class, (B, C, h, w) (``attention_maps``'s
        "classes")."""
        return self.attention_maps(x, torch.empty(0, 2))["classes"]

    def _class_attention(self, step_logits: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """(B, C, L): per class the α (B, T, L) of the first decoded step whose argmax it is."""
        hits = nn.functional.one_hot(decoded_tokens(step_logits), self.num_classes + 1)[:, :, :self.num_classes]
        first = hits * (hits.cumsum(1) == 1)
        return torch.einsum("btc,btl->bcl", first.to(alphas.dtype), alphas)

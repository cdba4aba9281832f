"""The maps that a model's own attention computes, captured with forward hooks.

Every attention module and head that has maps implements

    attention_maps(x, queries) -> dict[str, Tensor]

for its own input ``x`` (``queries``: (Q, 2) query points as fractions (y, x) of the map, used by
self-attention only). :func:`attention_maps` hooks each such module for one forward pass, calls
that method on the input the module received, and removes the hooks: a model that is not being
explained carries no hooks and pays nothing. Maps are computed from the same inputs and the same
gate functions that the forward pass uses, so they are exactly what the model applied.

Shapes per kind (see each module's ``attention_maps``):
- channel gates (SE, ECA, CBAM's and the hybrids' channel part, adaptive pooling): (B, C);
- spatial gates (CBAM, ECA+CBAM, BAM's gate averaged over channels, RAN's mask averaged over
  channels): (B, 1, H, W);
- self-attention (SASA, AA-conv, BoTNet, halo, non-local, ViT): the weights of the query points,
  (B, heads, Q, H, W); the lambda layer: its signed linear weights on the values, same shape;
- CSRA: each branch's class scores s_ik and attention p_ik, Query2Label: each decoder layer's
  label cross-attention, (B, C, h, w); EVA: each ring's weights on the k×k map, (B, heads, k, k).
"""

from __future__ import annotations

import torch
from torch import nn

CENTRE = torch.tensor([[0.5, 0.5]])  # the default query point: the centre of the map


def map_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost modules of ``model`` (by path) that implement ``attention_maps``: a module
    inside another one that has maps (ECA inside ECA+CBAM) reports through its owner."""
    found: dict[str, nn.Module] = {}
    for path, module in model.named_modules():
        if callable(getattr(module, "attention_maps", None)):
            if not any(p == "" or path.startswith(p + ".") for p in found):
                found[path] = module
    return found


@torch.no_grad()
def attention_maps(model: nn.Module, x: torch.Tensor, queries: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Run ``model`` on images x (B, C, H, W) once and return its attention maps, keyed
    ``"<module path>.<name>"`` in forward order (e.g. ``"layer3.2.attn.spatial"``).

    ``queries`` (Q, 2): query points for self-attention as fractions (y, x) of each layer's map
    (default: the centre). The model runs in eval mode (BatchNorm uses its running statistics,
    as at test time) and every submodule is put back in its previous mode afterwards.
    A model without attention maps gives an empty dict.
    """
    queries = CENTRE if queries is None else torch.as_tensor(queries, dtype=torch.float32)
    captured: dict[str, torch.Tensor] = {}

    def hook_for(path: str):
        def hook(module: nn.Module, inputs: tuple, output) -> None:
            for name, value in module.attention_maps(inputs[0], queries.to(inputs[0].device)).items():
                captured[f"{path}.{name}" if path else name] = value.float()
        return hook

    handles = [m.register_forward_hook(hook_for(p)) for p, m in map_modules(model).items()]
    modes = [(m, m.training) for m in model.modules()]  # restored one by one: submodules may differ
    try:
        model.eval()
        model(x)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    return captured

"""One saliency map per (image, class): Grad-CAM, the model's own attention, Integrated Gradients, Occlusion.

Methods (``METHODS``):
- ``gradcam`` (Selvaraju et al., ICCV 2017), captum's ``LayerGradCam`` with
  ``relu_attributions=True``: ReLU(Σ_k α_k A_k), α_k = the spatial mean of ∂y_c/∂A_k, y_c the
  class *logit* (pre-softmax, as the paper; for multi-label models the class's own logit).
  A = the feature map that enters the head (the last stage's output for every registered model),
  or the output of any module named by ``layer`` (e.g. "layer2").
- ``attention``: the model's own class map: the head's ``class_maps`` where it has one (CSRA: each
  location's exact share of the logit; Query2Label: the last layer's label cross-attention), else
  the network's last spatial gate (CBAM, ECA+CBAM, BAM, RAN), which is the same for every class.
  Models with neither (channel gates only: SE, ECA) raise ValueError.
- ``integrated_gradients`` (Sundararajan et al. 2017), captum, from a black image, 16 steps,
  summed over channels; ``occlusion`` (Zeiler & Fergus 2014), captum, a black square of
  1/8 of the shorter side slid with half its size as stride: (2·8 − 1)² forward passes per pair.

Maps are upsampled (bilinear, ``align_corners=False``) from the layer's grid to the input's H × W
and are not normalised: scores that need a scale (energy) use the positive part as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .capture import attention_maps

METHODS = ("gradcam", "attention", "integrated_gradients", "occlusion")


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, K, h, w) → (N, K, H, W), bilinear; unchanged when already that size."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)


def target_maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, method: str,
                layer: str | None = None, black: torch.Tensor | None = None) -> torch.Tensor:
    """One map per image for its own target class: x (N, C, H, W), targets (N,) → (N, H, W).
    ``black`` (C,): the normalised value of a black pixel (baseline of IG and Occlusion; default 0)."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method '{method}'; valid: {', '.join(METHODS)}")
    model.eval()
    targets = targets.to(x.device)
    size = x.shape[-2:]
    if method == "gradcam":
        return gradcam(model, x, targets, layer)
    if method == "attention":
        return own_class_maps(model, x, targets)
    from captum.attr import IntegratedGradients, Occlusion

    baseline = (torch.zeros(x.shape[1]) if black is None else black).to(x).view(1, -1, 1, 1).expand_as(x)
    if method == "integrated_gradients":
        attr = IntegratedGradients(model).attribute(x, baselines=baseline, target=targets, n_steps=16,
                                                    internal_batch_size=len(x))
    else:
        window = max(1, min(size) // 8)
        attr = Occlusion(model).attribute(x, target=targets, baselines=baseline,
                                          sliding_window_shapes=(x.shape[1], window, window),
                                          strides=(x.shape[1], max(1, window // 2), max(1, window // 2)),
                                          perturbations_per_eval=64)
    return attr.sum(1).detach()


def class_maps(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, method: str = "gradcam",
               layer: str | None = None, black: torch.Tensor | None = None) -> torch.Tensor:
    """Maps (B, K, H, W) for the classes (B, K) of every image x (B, C, H, W): column k explains
    class classes[b, k] of image b. Batched: one pass per column over the whole batch."""
    classes = torch.as_tensor(classes)
    if classes.ndim != 2 or len(classes) != len(x):
        raise ValueError(f"classes must be (B, K) class indices, one row per image; got {tuple(classes.shape)} "
                         f"for {len(x)} images")
    return torch.stack([target_maps(model, x, classes[:, k], method, layer, black) for k in range(classes.shape[1])], 1)


def gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """Grad-CAM (N, H, W) of each image's target logit at the head's input, or at module ``layer``."""
    from captum.attr import LayerGradCam

    module = model.head if layer is None else find_module(model, layer)
    cam = LayerGradCam(model, module).attribute(x, target=targets, relu_attributions=True,
                                                attribute_to_layer_input=layer is None)
    return upsample(cam.detach(), x.shape[-2:])[:, 0]


def find_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` (e.g. "layer2" or "layer3.1.conv2"), or a ValueError listing the
    top-level ones."""
    modules = dict(model.named_modules())
    if not path or path not in modules:
        top = [p for p in modules if p and "." not in p]
        raise ValueError(f"model has no module '{path}'; top-level modules: {', '.join(top)} "
                         "(deeper ones by dotted path, e.g. layer3.1)")
    return modules[path]


@torch.no_grad()
def own_class_maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The model's own map for each image's target class (see the module docstring), (N, H, W)."""
    head_maps = getattr(model.head, "class_maps", None)
    if head_maps is not None:
        maps = head_maps(model.forward_features(x))  # (N, C, h, w)
        picked = maps[torch.arange(len(x)), targets]
    else:
        spatial = [v for k, v in attention_maps(model, x).items() if k.endswith(".spatial")]
        if not spatial:
            raise ValueError(f"{type(model).__name__} with head '{type(model.head).__name__}' has no class or "
                             "spatial attention map of its own (channel gates such as SE and ECA weight channels, "
                             "not places; self-attention maps belong to query points, not classes); explain it "
                             "with --method gradcam")
        picked = spatial[-1][:, 0]
    return upsample(picked[:, None].float(), x.shape[-2:])[:, 0]


def has_own_maps(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``method="attention"`` works for ``model`` (checked on a sample batch x)."""
    return getattr(model.head, "class_maps", None) is not None or any(
        k.endswith(".spatial") for k in attention_maps(model, x))

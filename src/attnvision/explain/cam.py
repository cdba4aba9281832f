"""One saliency map per (image, class): Grad-CAM, the model's own attention, Integrated Gradients, Occlusion.

Methods (``METHODS``):
- ``gradcam`` (Selvaraju et al., ICCV 2017), captum's ``LayerGradCam`` with
  ``relu_attributions=True``: ReLU(Σ_k α_k A_k), α_k = the spatial mean of ∂y_c/∂A_k, y_c the
  class *logit* (pre-softmax, as the paper; for multi-label models the class's own logit).
  A = the feature map that enters the head (the last stage's output for every registered model),
  or the output of any module named by ``layer`` (e.g. "layer2").
- ``attention``: the model's own class map: the model's or its head's ``class_maps`` where it has
  one (CSRA: each location's exact share of the logit; Query2Label: the last layer's label
  cross-attention; show-attend-tell: the attention of the step that emitted the class; DRAM: the
  glimpses of the step that emitted it), else
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


def pair_maps(model: nn.Module, x: torch.Tensor, pairs: torch.Tensor, method: str, layer: str | None = None,
              black: torch.Tensor | None = None) -> torch.Tensor:
    """One map per (image, class) pair: images x (B, C, H, W), pairs (P, 2) rows (index into x,
    class) → (P, H, W). Work shared by an image's pairs is done once per image: the trunk's
    forward pass (Grad-CAM at the head's input) and the model's own maps of all classes.
    ``black`` (C,): the normalised value of a black pixel (baseline of IG and Occlusion; default 0)."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method '{method}'; valid: {', '.join(METHODS)}")
    model.eval()
    index, targets = pairs[:, 0].to(x.device), pairs[:, 1].to(x.device)
    if method == "gradcam":
        return gradcam(model, x, index, targets, layer)
    if method == "attention":
        maps = own_class_maps(model, x)
        return maps[index, targets if maps.shape[1] > 1 else 0]
    from captum.attr import IntegratedGradients, Occlusion

    xs = x[index]
    baseline = (torch.zeros(x.shape[1]) if black is None else black).to(x).view(1, -1, 1, 1).expand_as(xs)
    if method == "integrated_gradients":
        attr = IntegratedGradients(model).attribute(xs, baselines=baseline, target=targets, n_steps=16,
                                                    internal_batch_size=len(xs))
    else:
        window = max(1, min(x.shape[-2:]) // 8)
        attr = Occlusion(model).attribute(xs, target=targets, baselines=baseline,
                                          sliding_window_shapes=(x.shape[1], window, window),
                                          strides=(x.shape[1], max(1, window // 2), max(1, window // 2)),
                                          perturbations_per_eval=64)
    return attr.sum(1).detach()


def class_maps(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, method: str = "gradcam",
               layer: str | None = None, black: torch.Tensor | None = None) -> torch.Tensor:
    """Maps (B, K, H, W) for the classes (B, K) of every image x (B, C, H, W): entry [b, k]
    explains class classes[b, k] of image b (one target per image, all images in one batch)."""
    classes = torch.as_tensor(classes)
    if classes.ndim != 2 or len(classes) != len(x):
        raise ValueError(f"classes must be (B, K) class indices, one row per image; got {tuple(classes.shape)} "
                         f"for {len(x)} images")
    b, k = classes.shape
    pairs = torch.stack([torch.arange(b).repeat_interleave(k), classes.flatten()], 1)
    return pair_maps(model, x, pairs, method, layer, black).view(b, k, *x.shape[-2:])


def gradcam(model: nn.Module, x: torch.Tensor, index: torch.Tensor, targets: torch.Tensor,
            layer: str | None = None) -> torch.Tensor:
    """Grad-CAM (P, H, W) of the target logits ``targets`` of images x[index], at the head's input
    or at module ``layer``.

    At the head's input only the head needs gradients: the trunk runs once per image without
    autograd and captum differentiates the head alone, per pair (the same numbers as through the
    whole model)."""
    from captum.attr import LayerGradCam

    if layer is None:
        if not hasattr(model, "forward_features"):
            raise ValueError(f"{type(model).__name__} has no feature map entering a head, where Grad-CAM looks by "
                             "default: name a layer (--layer, a module path) or use another --method")
        with torch.no_grad():
            features = model.forward_features(x)[index]
        cam = LayerGradCam(model.head, model.head).attribute(features, target=targets, relu_attributions=True,
                                                             attribute_to_layer_input=True)
    else:
        cam = LayerGradCam(model, find_module(model, layer)).attribute(x[index], target=targets,
                                                                       relu_attributions=True)
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
def own_class_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's own map of every class (see the module docstring): (B, num_classes, H, W), or
    (B, 1, H, W) for a spatial gate, which is the same for every class."""
    head_maps = getattr(getattr(model, "head", None), "class_maps", None)
    if callable(getattr(model, "class_maps", None)):
        maps = model.class_maps(x)  # (B, C, H', W') of the image itself (DRAM)
    elif head_maps is not None:
        maps = head_maps(model.forward_features(x))  # (B, C, h, w)
    else:
        spatial = [v for k, v in attention_maps(model, x).items() if k.endswith(".spatial")]
        if not spatial:
            raise ValueError(f"{type(model).__name__} with head '{type(model.head).__name__}' has no class or "
                             "spatial attention map of its own (channel gates such as SE and ECA weight channels, "
                             "not places; self-attention maps belong to query points, not classes); explain it "
                             "with --method gradcam")
        maps = spatial[-1]  # (B, 1, h, w): the same map for every class
    return upsample(maps.float(), x.shape[-2:])


def has_own_maps(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``method="attention"`` works for ``model`` (checked on a sample batch x)."""
    head = getattr(model, "head", None)
    if callable(getattr(model, "class_maps", None)) or callable(getattr(head, "class_maps", None)):
        return True
    return any(k.endswith(".spatial") for k in attention_maps(model, x))


def default_methods(model: nn.Module, x: torch.Tensor) -> tuple[str, ...]:
    """What ``attnvision explain`` computes when no method is named: Grad-CAM at the head's input
    (where the model has one) and the model's own maps (where it has them), checked on images x."""
    methods = ("gradcam",) if hasattr(model, "forward_features") else ()
    return methods + (("attention",) if has_own_maps(model, x) else ())

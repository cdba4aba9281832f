"""Parameters and MACs of ImageNet ResNets with each attention module, next to published figures.

    .venv/bin/python benchmarks/imagenet_costs.py

Models are built on the meta device (no memory, no compute), 1000 classes, 224×224 input.
MACs: multiply-accumulates of convolutions, linear layers and matrix products (``attnvision.profile``).
Published figures (ResNet-50): PytorchInsight's same-recipe table (params, "GFLOPs" = GMACs) and the
ECA paper's kernel-size table; they count MACs of the convolutions as we do, give or take small ops.
"""

from __future__ import annotations

import torch

from attnvision import create_model
from attnvision.profile import count_macs, count_params

PUBLISHED_R50 = {  # params (M), GMACs
    None: (25.56, 4.122),
    "se": (28.09, 4.130),
    "cbam": (28.09, 4.139),
    "bam": (25.92, 4.205),
    "eca": (25.56, None),
}
ATTNS = (None, "se", "eca", "cbam", "bam", "eca_cbam", "eca_cbam_parallel", "adaptive_pool")


def main() -> None:
    print("| model | attention | params | GMACs | published params (M) | published GMACs |")
    print("|---|---|---:|---:|---:|---:|")
    for model_name in ("resnet18", "resnet50", "resnet101"):
        for attn in ATTNS:
            with torch.device("meta"):
                model = create_model(model_name, 1000, attn=attn)
            params, macs = count_params(model), count_macs(model, (3, 224, 224))
            pub = PUBLISHED_R50.get(attn, (None, None)) if model_name == "resnet50" else (None, None)
            fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
            print(f"| {model_name} | {attn or 'none'} | {params:,} | {macs / 1e9:.3f} | {fmt(pub[0], '.2f')} "
                  f"| {fmt(pub[1], '.3f')} |")


if __name__ == "__main__":
    main()

"""Parameters of ImageNet ResNet-50 (torchvision's v1.5 layout, 1000 classes) with every registered
attention module, against the count its paper publishes, printed as a markdown table.

    .venv/bin/python benchmarks/resnet50_counts.py

Each row builds ``create_model("resnet50", 1000, attn=NAME, **model_kw)``; ``model_kw`` places the
module as the paper's network does (e.g. BoTNet's MHSA in stage 4 only). The tests assert the same
counts exactly (``tests/test_param_counts.py``, ``tests/test_attention_*.py``); this script only
prints them for ``docs/models.md``. "published": the paper's ResNet-50 figure, or where another
source gives the only one, that source; "–": none exists for a plain ResNet-50.
"""

from __future__ import annotations

from attnvision import create_model, list_attn
from attnvision.attention import describe_attn
from attnvision.attention.selective_kernel import PYTORCHINSIGHT_SK_RESNET
from attnvision.profile import count_params

GE_FEATURE_SIZES = {"attn_stage_kw": [{"feat_size": s} for s in (56, 28, 14, 7)]}

# name → [(model_kw, published params or None, where the number comes from)]
PUBLISHED: dict[str, list[tuple[dict, float | None, str]]] = {
    "se": [({}, 28.09e6, "SE paper")],
    "eca": [({}, 25.56e6, "ECA paper (ours +86 with the adaptive k; +80 with its released kernels)")],
    "cbam": [({}, 28.09e6, "CBAM paper")],
    "bam": [({}, 25.92e6, "BAM paper")],
    "srm": [({}, 25.62e6, "SRM paper")],
    "fca": [({}, 28.07e6, "FcaNet paper")],
    "simam": [({}, 25.56e6, "SimAM's official README (parameter-free)")],
    "triplet": [({}, 25.56e6, "Triplet attention paper")],
    "ge": [({}, 25.6e6, "GE paper, GE-θ⁻ (parameter-free)"),
           ({"attn_kw": {"variant": "theta"}, **GE_FEATURE_SIZES}, 31.2e6, "GE paper, GE-θ (from memory: unchecked)"),
           ({"attn_kw": {"variant": "theta+"}, **GE_FEATURE_SIZES}, 33.7e6, "GE paper, GE-θ⁺ (from memory: unchecked)")],
    "gc": [({"attn_stages": [2, 3, 4]}, 28.08e6, "GCNet paper, GC in c3–c5, r = 16 (from memory: unchecked)")],
    "sk": [({"attn_kw": PYTORCHINSIGHT_SK_RESNET}, 26.15e6, "PytorchInsight's SK-ResNet-50 (the paper has none)")],
    "splat": [({}, 27.5e6, "ResNeSt-50, which adds a deep stem and average-pool shortcuts: not the same network")],
    "lambda": [({}, 15.0e6, "LambdaNetworks paper (every 3×3 conv replaced)")],
    "bottleneck": [({"attn_stages": [4]}, 20.8e6, "BoTNet paper (BoT50); without BN parameters ours is 20,798,888")],
    "sasa": [({}, 18.0e6, "SASA paper, conv stem + attention (from memory: unchecked)")],
    "aa": [({"attn_stages": [1]}, None, "AA-conv has no stride, so only stage 1 (stride 1) can take it here")],
    "halo": [({"attn_stages": [4]}, None, "HaloNet's H0–H7 change widths and depths: no ResNet-50")],
}


def main() -> None:
    print("| module | paper | kind | placement | model_kw | params | published | Δ | source |")
    print("|---|---|---|---|---|---:|---:|---:|---|")
    base = count_params(create_model("resnet50", 1000))
    print(f"| none | He et al., CVPR 2016 | – | – | – | {base:,} | 25.56M | {100 * (base - 25.557e6) / 25.557e6:+.2f}% "
          "| torchvision |")
    for name in list_attn():
        info = describe_attn(name)
        rows = PUBLISHED.get(name, [({}, None, "–")])
        for model_kw, published, source in rows:
            try:
                params = f"{count_params(create_model('resnet50', 1000, attn=name, **model_kw)):,}"
                count = int(params.replace(",", ""))
                delta = f"{100 * (count - published) / published:+.2f}%" if published else "–"
            except ValueError as e:  # a module that cannot sit in a ResNet-50 at this placement
                params, delta = f"refused: {e}", "–"
            shown_kw = ", ".join(f"{k}={v}" for k, v in model_kw.items() if k != "attn_stage_kw") or "–"
            print(f"| {name} | {info['paper']} | {info['kind']} | {info['placement']} | {shown_kw} | {params} | "
                  f"{f'{published / 1e6:.2f}M' if published else '–'} | {delta} | {source} |")


if __name__ == "__main__":
    main()

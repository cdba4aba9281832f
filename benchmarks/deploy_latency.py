"""Inference latency of trained-model shapes in the three runtimes a user can serve with: PyTorch
eager, PyTorch through torch.compile, and the ONNX export run by onnxruntime (CPU).

    .venv/bin/python benchmarks/deploy_latency.py [--attn none se eca cbam bam] [--repeats 10] [--warmup 3]

Per model and module, ``profile.profile_model(..., compile=True, runtimes=["onnxruntime"])``, the
function behind ``attnvision profile --compile --runtime onnxruntime``: the median wall time of
``--repeats`` calls at batch 1 and 32 after ``--warmup`` untimed ones (compilation and export
timed apart), all threads PyTorch has (onnxruntime gets as many). Models: resnet20 on the study's
1×28×28 input (10 classes) and ImageNet resnet50 on 3×224×224 (1000 classes). Prints a markdown
table; "-" where a runtime refused the model.
"""

from __future__ import annotations

import argparse

import torch

from attnvision.profile import profile_model

SHAPES = {"resnet20": {"img_size": 28, "in_chans": 1, "num_classes": 10},
          "resnet50": {"img_size": 224, "in_chans": 3, "num_classes": 1000}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--attn", nargs="+", default=["none", "se", "eca", "cbam", "bam"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for model in args.models:
        for attn in args.attn:
            result = profile_model(model, attn=None if attn == "none" else attn, repeats=args.repeats,
                                   warmup=args.warmup, compile=True, runtimes=["onnxruntime"], **SHAPES[model])
            if "onnxruntime_error" in result:
                print(f"{model} + {attn}: {result['onnxruntime_error']}")
            rows.append((model, attn, result))
            print(f"{model} + {attn} done", flush=True)

    print(f"\n{torch.get_num_threads()} threads, torch {torch.__version__}; latency in ms (median), "
          "speed-up over eager in parentheses\n")
    print("| model | attention | eager b1 | compiled b1 | onnxruntime b1 | eager b32 | compiled b32 | "
          "onnxruntime b32 | compile (s) | export (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model, attn, r in rows:
        cols = []
        for b in (1, 32):
            eager = r[f"latency_ms_b{b}"]
            cols.append(f"{eager:.2f}")
            for key in (f"compiled_latency_ms_b{b}", f"onnxruntime_latency_ms_b{b}"):
                cols.append(f"{r[key]:.2f} ({eager / r[key]:.2f}×)" if key in r else "-")
        cols += [f"{r['compile_time_s']:.0f}" if "compile_time_s" in r else "-",
                 f"{r['export_time_s']:.1f}" if "export_time_s" in r else "-"]
        print(f"| {model} | {attn} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()

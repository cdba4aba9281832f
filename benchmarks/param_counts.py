"""Parameter counts of the EVA paper's Table 1 models, printed as a markdown table.

    .venv/bin/python benchmarks/param_counts.py

Every model is built with ``create_model(name, 10, in_chans=..., width=..., **kwargs)`` for
in_chans 1 (Fashion-MNIST) and 3 (CIFAR-10) and widths small (16/32/64) and large (64/128/256).
ResNet-20 gets the paper's [2, 2, 2] blocks.
"""

from __future__ import annotations

from attnvision import create_model
from attnvision.profile import count_params

ROWS: list[tuple[str, dict]] = [
    ("resnet20", {"layers": (2, 2, 2), "shortcut": "A"}),
    ("resnet20", {"layers": (2, 2, 2), "shortcut": "B"}),
    ("evanet20", {}),
    ("evanet20", {"shortcut": "B"}),
    ("evanet20", {"head_kw": {"variant": "code"}}),
    ("sanet20", {}),
]


def count(name: str, width: str, in_chans: int, kwargs: dict) -> int:
    return count_params(create_model(name, 10, in_chans=in_chans, width=width, **kwargs))


def main() -> None:
    print("| model | kwargs | small, in_chans 1 | small, in_chans 3 | large, in_chans 1 | large, in_chans 3 |")
    print("|---|---|---:|---:|---:|---:|")
    for name, kwargs in ROWS:
        counts = [count(name, w, c, kwargs) for w in ("small", "large") for c in (1, 3)]
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "defaults"
        print(f"| {name} | {shown} | " + " | ".join(f"{n:,}" for n in counts) + " |")


if __name__ == "__main__":
    main()

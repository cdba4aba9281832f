"""benchmarks/: every grid file is a valid study with its own command in its header, and the
README index names exactly the files there. Nothing trains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attnvision.study.grid import build_study, load_grid

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
GRIDS = sorted(BENCHMARKS.glob("*.yaml"))


def indexed() -> set[str]:
    """The files the README's tables name: the first cell of each row, in backticks."""
    return set(re.findall(r"^\| `([^`]+)` \|", (BENCHMARKS / "README.md").read_text(), re.MULTILINE))


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.name)
def test_grid_validates_as_a_study(path):
    study = build_study(None, load_grid(path), {}, {})  # validates every cell's config
    assert study.cells(Path("study"))
    assert f"attnvision compare --grid benchmarks/{path.name} " in path.read_text()


def test_index_names_every_file_and_only_existing_ones():
    on_disk = {p.name for p in BENCHMARKS.iterdir() if p.is_file() and p.name != "README.md"}
    assert GRIDS
    assert indexed() == on_disk


def test_paired_runs_counts_disagreements_per_seed_and_tests_over_seeds(tmp_path):
    """Two configurations × two seeds of multi-label predictions whose exact-set hits are known."""
    import json
    import subprocess
    import sys

    import torch

    targets = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    right, wrong = 9.0, -9.0  # logits that give the label set / the opposite set
    def save(name, hit, exact):  # hit: (4,) which scenes the run gets exactly right
        folder = tmp_path / name
        folder.mkdir()
        logits = torch.where(torch.tensor(hit)[:, None], (2 * targets - 1) * right, (2 * targets - 1) * wrong)
        torch.save({"split": "test", "logits": logits, "targets": targets}, folder / "test_predictions.pt")
        (folder / "metrics.json").write_text(json.dumps({"selection_metric": "mAP", "test": {"exact": exact}}))
    save("a-s0", [True, True, True, False], 75.0)
    save("b-s0", [True, False, False, False], 25.0)
    save("a-s1", [True, True, False, False], 50.0)
    save("b-s1", [True, True, False, False], 40.0)
    out = subprocess.run([sys.executable, str(BENCHMARKS / "paired_runs.py"), str(tmp_path), "a", "b",
                          "--metric", "exact"], capture_output=True, text=True, check=True).stdout
    assert "| 0 | 75.00 | 25.00 | 2 | 0 | 0.5 |" in out  # McNemar: 2 discordant pairs, both for a
    assert "| 1 | 50.00 | 40.00 | 0 | 0 | 1 |" in out
    assert "a − b in exact: +30.00" in out  # the mean of +50 and +10

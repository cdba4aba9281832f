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

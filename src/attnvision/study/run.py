"""``attnvision compare`` in phases: record the grid and environment → train the cells
(``execute``) → measure costs (``measure``) → explain the localisation cells → gallery → report
(``results`` + ``report``). Every phase skips what an earlier call finished, so a study that was
interrupted, or one that gains seeds, continues where it stopped. ``attnvision report`` is the
last two phases alone.
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
from pathlib import Path

import torch
import yaml

from .. import __version__
from ..checkpoint import atomic_write_text
from ..explain.run import explain_checkpoint, runs_gallery
from .execute import run_cells
from .grid import Study
from .layout import GALLERY
from .measure import measure_costs
from .report import write_report
from .results import EXPLAIN, collect, read_study

GALLERY_IMAGES = 8


def record(study: Study, out: Path, jobs: int, command: str) -> None:
    """study.yaml (refusing a folder that holds a different study's runs is left to the cells) and
    environment.json: what the report's environment block shows."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", yaml.safe_dump(study.to_dict(), sort_keys=False))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    env = {"command": command, "commit": commit,
           "attnvision": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "device": device, "cpu": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads "
                                    f"available", "jobs": jobs,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    atomic_write_text(out / "environment.json", json.dumps(env, indent=2))


def explain_cells(study: Study, out: Path) -> None:
    """Localisation scores of every finished localisation cell (skipped when already there)."""
    for cell in study.cells(out):
        folder = cell.folder
        if cell.part != "localization" or not (folder / "metrics.json").is_file():
            continue
        scores = folder / EXPLAIN / "scores.json"
        if scores.is_file() and json.loads(scores.read_text())["images"] >= study.explain_images:
            continue
        print(f"explaining localization/{cell.name}", flush=True)
        try:
            explain_checkpoint(folder / "best.pt", folder / EXPLAIN, images=study.explain_images, figures=0,
                               faithfulness_images=min(study.faithfulness_images, study.explain_images))
        except (ValueError, RuntimeError) as e:  # one configuration's maps failing leaves the others' report
            print(f"explaining localization/{cell.name} failed: {e}", flush=True)


def gallery(study: Study, out: Path) -> Path | None:
    """The same first test images across configurations: the localisation cells (data with boxes)
    where there are any, else the main grid's first seed."""
    part = "localization" if study.localization is not None else "runs"
    checkpoints = {c.configuration: c.folder / "best.pt" for c in study.cells(out)
                   if c.part == part and c.config.seed == study.seed[0] and (c.folder / "metrics.json").is_file()}
    path = out / "plots" / GALLERY
    if not checkpoints or not all(p.is_file() for p in checkpoints.values()):
        # a study folder kept without its checkpoints (docs/study) keeps the gallery it was built with
        return path if path.is_file() else None
    return runs_gallery(checkpoints, path, GALLERY_IMAGES)


def build_report(out: Path) -> tuple[dict, Path]:
    """The report from the study folder alone (``attnvision report``)."""
    study = read_study(out)
    data = collect(out)
    data["environment"]["report_date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return data, write_report(data, gallery(study, out))


def run_study(study: Study, out: Path, jobs: int, threads: int, command: str, executor: str = "local",
              ray_address: str | None = None) -> tuple[dict, Path]:
    """All phases; ``command`` is the command line recorded in the report's environment block."""
    record(study, out, jobs, command)
    results = run_cells(study.cells(out), jobs, threads, executor, ray_address)
    failed = [name for name, state in results.items() if state != "finished"]
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)}; the report lists their errors", flush=True)
    if any((c.folder / "metrics.json").is_file() for c in study.cells(out) if c.part == "runs"):
        print("measuring costs (all configurations interleaved in one process)", flush=True)
        measure_costs(study, out, threads)
    explain_cells(study, out)
    return build_report(out)

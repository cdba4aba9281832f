"""``attnvision compare`` in phases: record the grid and environment → train the cells
(``execute``) → measure costs (``measure``) → explain the localisation cells → gallery → report
(``results`` + ``report``). Every phase skips what an earlier call finished, so a study that was
interrupted, or one that gains seeds, continues where it stopped. The cells are built once per
call (``Study.cells``) and handed to every phase. ``attnvision report`` is the last two phases
alone.
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
from ..explain.run import SCORES_FILE, ExplainSettings, explain_checkpoint, runs_gallery
from ..run_folder import LAST
from .execute import run_cells
from .grid import Cell, Study
from .layout import ENVIRONMENT, GALLERY, LOCALIZATION, MAIN, PERMUTED, PLOTS, STUDY_FILE
from .measure import measure_costs
from .report import write_report
from .results import collect, read_rebuildable, read_study

GALLERY_IMAGES = 8


def record(study: Study, out: Path, jobs: int, command: str) -> None:
    """study.yaml (refusing a folder that holds a different study's runs is left to the cells) and
    environment.json: what the report's environment block shows."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / STUDY_FILE, yaml.safe_dump(study.to_dict(), sort_keys=False))
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
    atomic_write_text(out / ENVIRONMENT, json.dumps(env, indent=2))


def explain_cells(study: Study, cells: list[Cell]) -> None:
    """Localisation scores of every finished localisation cell, with the sanity checks (cascading
    randomisation; data randomisation against the configuration's permuted-label twin when the
    study trains them); skipped when already there."""
    permuted = study.first_seed(cells, PERMUTED)
    for cell in cells:
        if cell.part != LOCALIZATION or not cell.finished:
            continue
        twin = permuted.get(cell.configuration) if cell.config.seed == study.seed[0] else None
        reference = str(twin.folder / LAST) if twin is not None and twin.finished else None
        scores = read_rebuildable(cell.explain_folder / SCORES_FILE, "recomputing it")
        if scores is not None and explained(scores, study, reference):
            continue
        print(f"explaining {cell.key}", flush=True)
        settings = ExplainSettings(images=study.explain_images, figures=0,
                                   faithfulness_images=min(study.faithfulness_images, study.explain_images),
                                   sanity=True, sanity_reference=reference)
        try:
            explain_checkpoint(cell.checkpoint, cell.explain_folder, settings)
        except (ValueError, RuntimeError) as e:  # one configuration's maps failing leaves the others' report
            print(f"explaining {cell.key} failed: {e}", flush=True)


def explained(scores: dict, study: Study, reference: str | None) -> bool:
    """Whether saved scores answer what the study asks: enough images, the sanity checks, the data
    randomisation test when there is a reference, and every score of this version (pointing with
    the image-scaled tolerance, energy lift, ROAD: older scores lack them)."""
    sanity = scores.get("sanity") or {}
    first = next(iter(sanity.values()), {})
    return (scores["images"] >= study.explain_images and bool(sanity) and "road_fractions" in scores
            and (reference is None or "data_randomization" in first))


def gallery(study: Study, cells: list[Cell], out: Path) -> Path | None:
    """The same first test images across configurations: the localisation cells (data with boxes)
    where there are any, else the main grid's first seed."""
    part = LOCALIZATION if study.localization is not None else MAIN
    checkpoints = {name: cell.checkpoint for name, cell in study.first_seed(cells, part).items() if cell.finished}
    path = out / PLOTS / GALLERY
    if not checkpoints or not all(p.is_file() for p in checkpoints.values()):
        # a study folder kept without its checkpoints (docs/study) keeps the gallery it was built with
        return path if path.is_file() else None
    return runs_gallery(checkpoints, path, GALLERY_IMAGES)


def report_study(study: Study, cells: list[Cell], out: Path) -> tuple[dict, Path]:
    """The report from the study folder alone: the last phases of ``compare``, all of ``report``."""
    data = collect(study, cells, out)
    data["environment"]["report_date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return data, write_report(data, gallery(study, cells, out))


def build_report(out: Path) -> tuple[dict, Path]:
    """``attnvision report``: the report of the study folder ``out``, without training."""
    study = read_study(out)
    return report_study(study, study.cells(out), out)


def run_study(study: Study, out: Path, jobs: int, threads: int, command: str, executor: str = "local",
              ray_address: str | None = None) -> tuple[dict, Path]:
    """All phases; ``command`` is the command line recorded in the report's environment block."""
    record(study, out, jobs, command)
    cells = study.cells(out)
    results = run_cells(cells, jobs, threads, executor, ray_address)
    if study.confirm is not None:  # the screen is done: its best configurations join the other seeds
        cells = study.cells(out)
        print(f"confirming on seeds {study.seed[1:]}: {', '.join(study.confirmed(out))}", flush=True)
        results.update(run_cells([cell for cell in cells if cell.key not in results], jobs, threads, executor,
                                 ray_address))
    failed = [name for name, state in results.items() if state != "finished"]
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)}; the report lists their errors", flush=True)
    if any(cell.finished for cell in cells if cell.part == MAIN):
        print("measuring costs (all configurations interleaved in one process)", flush=True)
        measure_costs(study, cells, out, threads)
    explain_cells(study, cells)
    return report_study(study, cells, out)

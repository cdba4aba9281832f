"""The study: `attnvision compare` end to end on tiny data (report files, resume, failed cells,
`attnvision report`), its statistics, the Ray executor, and the report in a real browser."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from attnvision.cli import app
from attnvision.study.grid import PRESETS, Study, build_study
from attnvision.study.layout import REPORT_HTML, REPORT_MD
from attnvision.study.report import (CONFIGURATION_COLUMNS, GALLERY_CAPTION, TEMPLATES, Cell, Document, Row, Section,
                                     Table, document, pareto_front, render)
from attnvision.study.results import configuration_rows, paired_comparison, positive_control, seed_noise
from attnvision.run_folder import PREDICTIONS


def flat(result) -> str:
    """The CLI's output with line wrapping undone."""
    return " ".join(result.output.split())


def tiny_grid(fmnist_dir: Path, out: Path, *extra: str, localization: bool = True) -> list[str]:
    loc = ('{"data": "fashion-mnist-scenes-single", "val_size": 100, "data_kw": {"n_train": 300, "n_test": 100}}'
           if localization else "none")
    return ["compare", "--attn", "none,se", "--epochs", "1", "--train-subset", "200", "--val-size", "100",
            "--batch-size", "64", "--data-dir", str(fmnist_dir), "--localization", loc, "--explain-images", "40",
            "--jobs", "2", "--out", str(out), *(["--data-randomization"] if localization else []), *extra]


@pytest.fixture(scope="module")  # `make test` runs a file on one worker (--dist loadfile): trained once
def study(fmnist_dir, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("study") / "study"
    result = CliRunner().invoke(app, tiny_grid(fmnist_dir, out))
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.slow
def test_compare_writes_every_part_of_the_report(study):
    out, output = study
    assert re.search(r"\[6/6\] (localization|permuted)/\w+-s0: test acc", output) and "epoch 1/1" in output
    assert f"report: {(out / 'report.html').resolve()}" in output.replace("\n", "")
    for name in ("report.html", "report.md", "results.csv", "costs.json", "study.yaml", "environment.json",
                 "plots/accuracy-vs-latency.png", "plots/accuracy-vs-latency.svg", "plots/accuracy-vs-params.svg",
                 "plots/learning-curves.png", "plots/gallery.png", "localization/se-s0/explain/scores.json",
                 "permuted/se-s0/metrics.json"):
        assert (out / name).is_file(), name
    permuted = yaml.safe_load((out / "permuted" / "se-s0" / "config.yaml").read_text())
    assert permuted["permute_labels"] and permuted["data"] == "fashion-mnist-scenes-single"
    sanity = json.loads((out / "localization" / "se-s0" / "explain" / "scores.json").read_text())["sanity"]
    assert {"steps", "fails_sanity", "randomized_model_scores", "data_randomization"} <= set(sanity["gradcam"])
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "## Do the maps depend on what the model learned?" in markdown and "reference: randomized model" in markdown
    assert re.search(r"(Equal|Unequal) quality: ", markdown) and "accuracy vs baseline" in markdown
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["level"] for r in rows].count("run") == 6 and [r["level"] for r in rows].count("configuration") == 2
    se = next(r for r in rows if r["level"] == "configuration" and r["configuration"] == "se")
    assert float(se["params"]) > 272_186 and float(se["train_step_ratio"]) > 0 and float(se["latency_ms_b32"]) > 0
    assert se["ci_low"] and float(se["ci_low"]) <= float(se["delta"]) <= float(se["ci_high"])
    config = json.loads((out / "runs" / "se-s0" / "metrics.json").read_text())
    assert config["threads"] == 1  # pinned: one thread per cell on CPU


@pytest.mark.slow
def test_report_html_is_self_contained(study):
    page = (study[0] / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from a network
    assert "<link" not in page and "@import" not in page and "url(http" not in page
    assert page.count("<svg") >= 3 and 'src="data:image/png;base64,' in page
    for section in ('id="results"', 'id="localization"', 'id="runs"', 'id="environment"', "Pareto front",
                    "McNemar", "reference: random map", "attnvision compare"):
        assert section in page, section


def headings(out: Path) -> tuple[list[str], list[str]]:
    """The headings of report.html and of report.md, in order, as "<level> <text>"."""
    page = (out / "report.html").read_text(encoding="utf-8")
    markdown = (out / "report.md").read_text(encoding="utf-8")
    return ([f"{level} {html.unescape(text)}" for level, text in re.findall(r"<h([12])>(.*?)</h[12]>", page)],
            [f"{len(hashes)} {text}" for hashes, text in re.findall(r"^(#{1,2}) (.+)$", markdown, re.M)])


@pytest.mark.slow
def test_report_md_and_html_show_the_same_sections(study):
    out, _ = study
    in_html, in_markdown = headings(out)
    assert in_html == in_markdown
    assert in_html[1:] == ["2 Accuracy and cost", "2 Does it look at the object?",
                           "2 Do the maps depend on what the model learned?", "2 The same test images, every configuration", "2 Runs", "2 Environment"]
    markdown = (out / "report.md").read_text(encoding="utf-8")
    page = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert "![explanation gallery](plots/gallery.png)" in markdown
    assert GALLERY_CAPTION in markdown and GALLERY_CAPTION in page
    tolerance = json.loads((out / "localization" / "se-s0" / "explain" / "scores.json").read_text())["tolerance"]
    for text in (markdown, page):  # the score titles of explain.scores, with the tolerance the scores used
        assert f"pointing ≤ {tolerance:g} px (%)" in text and "{tol}" not in text and "reference: box map" in text


def test_report_templates_escape_what_their_format_needs():
    table = Table("t", ["a | b"], [Row([Cell("x | <b>y</b>", "x")], baseline=True)])
    report = Document("title <1>", "lead & more", [Section("S", [table])])
    markdown, page = render(report, REPORT_MD), render(report, REPORT_HTML)
    assert "| a \\| b |" in markdown and "| x \\| <b>y</b> |" in markdown and "# title <1>" in markdown
    assert "<b>y</b>" not in page and "x | &lt;b&gt;y&lt;/b&gt;" in page and "lead &amp; more" in page
    assert '<tr class="baseline"><td data-sort="x" class="text">' in page


def test_a_study_note_heads_both_reports():
    note = build_study("quick", None, {}, {}).note
    assert "demonstration recipe" in note and "--preset converged" in note
    report = Document("t", "lead", [], warning=note)
    markdown, page = render(report, REPORT_MD), render(report, REPORT_HTML)
    assert f"> **{note}**" in markdown and markdown.index(note) < markdown.index("lead")
    assert '<p class="warning" id="study-note">' in page and page.index("study-note") < page.index("lead")
    assert "warning" not in render(Document("t", "lead", []), REPORT_HTML).split("</style>")[1]


def test_report_templates_are_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    names = {"report.html.j2", "report.md.j2", "report.css", "report.js"}
    assert names <= {p.name for p in (resources.files("attnvision.study") / TEMPLATES).iterdir()}
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["attnvision.study"]
    assert all(any(fnmatch(f"{TEMPLATES}/{name}", pattern) for pattern in patterns) for name in names)
    assert any(d.startswith("jinja2") for d in pyproject["project"]["dependencies"])


@pytest.mark.slow
def test_finished_cells_are_skipped_and_interrupted_ones_resumed(study, fmnist_dir):
    out, _ = study
    kept = (out / "runs" / "none-s0" / "metrics.json").stat().st_mtime_ns
    (out / "runs" / "se-s0" / "metrics.json").unlink()  # as if killed after its last epoch's checkpoint
    result = CliRunner().invoke(app, tiny_grid(fmnist_dir, out))
    assert result.exit_code == 0, result.output
    assert "6 cells: 5 finished, 1 to train" in result.output and "start runs/se-s0 (resuming)" in result.output
    assert (out / "runs" / "none-s0" / "metrics.json").stat().st_mtime_ns == kept
    assert (out / "runs" / "se-s0" / "metrics.json").is_file()


@pytest.mark.slow
def test_damaged_costs_and_scores_are_reported_and_recomputed(study, fmnist_dir):
    # before test_report_rebuilds_from_run_folders: recomputing the scores needs the localisation checkpoints
    out, _ = study
    costs, scores = out / "costs.json", out / "localization" / "se-s0" / "explain" / "scores.json"
    kept = {path: path.read_bytes() for path in (costs, scores)}
    try:
        for path, data in kept.items():
            path.write_bytes(data[: len(data) // 2])  # as if the machine died mid-write
        result = CliRunner().invoke(app, ["report", str(out)])
        assert result.exit_code == 0, result.output
        for path in kept:
            assert f"{path} is damaged" in flat(result) and "Traceback" not in result.output
        result = CliRunner().invoke(app, tiny_grid(fmnist_dir, out))
        assert result.exit_code == 0, result.output
        for path in kept:
            assert f"{path} is damaged" in flat(result) and "recomputing it" in flat(result)
        assert set(json.loads(costs.read_text())["configurations"]) == {"none", "se"}
        assert json.loads(scores.read_text())["images"] == 40
    finally:
        for path, data in kept.items():
            path.write_bytes(data)


@pytest.mark.slow
def test_a_damaged_metrics_file_is_named(study, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(study[0], out)
    metrics = out / "runs" / "se-s0" / "metrics.json"
    metrics.write_text(metrics.read_text()[:40])
    result = CliRunner().invoke(app, ["report", str(out)])
    # the path is wrapped mid-name in the error box: compare without whitespace
    assert result.exit_code == 2 and f"{metrics}isdamaged" in "".join(result.output.split()), result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_report_rebuilds_from_run_folders(study):
    out, _ = study
    (out / "report.html").unlink()
    shutil.rmtree(out / "plots")
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and (out / "plots" / "gallery.png").is_file()
    assert "se" in result.output and "test acc" in result.output
    # a study kept without its checkpoints (docs/study) keeps the gallery it was built with
    for checkpoint in [*(out / "localization").glob("*/best.pt"), *(out / "localization").glob("*/last.pt")]:
        checkpoint.unlink()
    gallery = (out / "plots" / "gallery.png").read_bytes()
    again = CliRunner().invoke(app, ["report", str(out)])
    assert again.exit_code == 0, again.output
    assert (out / "plots" / "gallery.png").read_bytes() == gallery and "data:image/png" in (out / "report.html").read_text()


@pytest.mark.slow
def test_a_failing_cell_is_recorded_and_the_others_finish(fmnist_dir, tmp_path):
    out = tmp_path / "study"
    (out / "runs" / "se-s0").mkdir(parents=True)
    (out / "runs" / "se-s0" / "last.pt").write_bytes(b"not a checkpoint")  # its resume fails
    result = CliRunner().invoke(app, tiny_grid(fmnist_dir, out, localization=False))
    assert result.exit_code == 0, result.output
    assert "runs/se-s0: FAILED" in result.output and "1 cell(s) failed" in result.output
    assert (out / "runs" / "none-s0" / "metrics.json").is_file()
    failure = json.loads((out / "runs" / "se-s0" / "failed.json").read_text())
    assert "last.pt" in failure["error"] and "Traceback" not in failure["error"]
    page = (out / "report.html").read_text()
    assert "Failed runs" in page and "not a checkpoint" not in page and "failed: " in page
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "\n## Failed runs\n\n- runs/se-s0: " in markdown and "last.pt" in markdown and "failed: " in markdown
    in_html, in_markdown = headings(out)
    assert in_html == in_markdown and "2 Failed runs" in in_markdown


@pytest.mark.slow
def test_a_multi_item_localization_part_explains_every_present_class(fmnist_dir, tmp_path):
    out = tmp_path / "study"
    grid = tiny_grid(fmnist_dir, out, "--attn", "none", "--explain-images", "12", localization=False)
    grid[grid.index("--localization") + 1] = json.dumps(
        {"data": "fashion-mnist-scenes", "val_size": 100, "data_kw": {"n_train": 300, "n_test": 100, "items": [2, 3]}})
    result = CliRunner().invoke(app, grid)
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "localization" / "none-s0" / "explain" / "scores.json").read_text())
    assert scores["task"] == "multilabel" and scores["images"] == 12 and scores["pairs"] > 12
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "test mAP (%)" in markdown and "reference: randomized model" in markdown


@pytest.mark.slow
def test_ray_executor_runs_cells_into_the_same_folders(fmnist_dir, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "study"
    result = CliRunner().invoke(app, tiny_grid(fmnist_dir, out, "--executor", "ray", localization=False))
    assert result.exit_code == 0, result.output
    assert "ray executor" in result.output
    for name in ("none-s0", "se-s0"):
        assert json.loads((out / "runs" / name / "metrics.json").read_text())["status"] == "completed"
    assert (out / "report.html").is_file()


def test_grid_errors_name_the_problem_before_anything_trains(fmnist_dir, tmp_path):
    runner = CliRunner()
    cases = [(["--attn", "none,sen"], "unknown attention module 'sen'"),
             (["--attn", "none,se,se"], "attn lists a value twice"),
             (["--baseline", "cbam"], "baseline 'cbam' is not a configuration"),
             (["--localization", "[1]"], "--localization must be a JSON object"),
             (["--seed", "0,x"], "--seed must be a comma-separated list of ints"),
             (["--preset", "huge"], "unknown preset 'huge'"),
             (["--executor", "slurm"], "unknown --executor 'slurm'"),
             (["--grid", str(tmp_path / "missing.yaml")], "grid file"),
             (["--lr", "-1"], "lr must be a finite number > 0")]
    for extra, message in cases:
        result = runner.invoke(app, ["compare", "--data-dir", str(fmnist_dir), "--out", str(tmp_path / "s"), *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert message in flat(result) and "Traceback" not in result.output, (extra, result.output)
    assert not (tmp_path / "s").exists()
    (tmp_path / "grid.yaml").write_text("attn: [null, se]\nrecipe: {epochs: 1, colour: red}\n")
    result = runner.invoke(app, ["compare", "--grid", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "unknown config keys ['colour']" in flat(result)


def test_a_study_refuses_a_folder_with_runs_of_other_options(study, fmnist_dir):
    out, _ = study
    result = CliRunner().invoke(app, tiny_grid(fmnist_dir, out, "--lr", "0.05"))
    assert result.exit_code == 2 and "holds a run with other options (lr: 0.1 → 0.05)" in flat(result)


def test_study_layers_preset_grid_and_flags():
    study = build_study("quick", {"seed": [0, 1], "recipe": {"epochs": 4}}, {"attn": [None, "se"]}, {"lr": 0.05},
                        baseline="none")
    assert study.seed == [0, 1] and study.attn == [None, "se"] and study.localization == PRESETS["quick"]["localization"]
    assert study.recipe == {**PRESETS["quick"]["recipe"], "epochs": 4, "lr": 0.05}
    cells = study.cells(Path("s"))
    assert [c.name for c in cells if c.part == "runs"] == ["none-s0", "se-s0", "none-s1", "se-s1"]  # seed-major
    assert [c.name for c in cells if c.part == "localization"] == ["none-s0", "se-s0"]
    assert cells[-1].config.data == "fashion-mnist-scenes-single" and cells[-1].config.lr == 0.05
    assert build_study("quick", None, {}, {}, localization=None).localization is None
    names = [n for n, _ in Study(model=["resnet20", "resnet32"], attn=[None, "se"], head=[None, "csra"]).configurations()]
    assert names[:2] == ["resnet20-none-own-head", "resnet20-none-csra"] and len(names) == 8


def test_screen_then_confirm_the_listed_and_the_best_of_the_screen(tmp_path):
    from attnvision.study.report import design_note

    study = build_study("quick", None, {"attn": [None, "se", "eca", "cbam"], "seed": [0, 1, 2]}, {},
                        confirm=["none"], confirm_top=1)
    names = lambda part: [c.name for c in study.cells(tmp_path) if c.part == part]  # noqa: E731
    assert names("runs") == ["none-s0", "se-s0", "eca-s0", "cbam-s0", "none-s1", "none-s2"]
    assert names("localization") == ["none-s0"]
    assert "not yet chosen" in design_note(study, study.screen_ranking(tmp_path))

    def finish(name: str, val: float) -> None:
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"selection_metric": "acc", "best_val": {"val_acc": val}}))

    finish("none-s0", 80.0)
    finish("se-s0", 84.0)
    finish("eca-s0", 86.0)
    assert study.screen_ranking(tmp_path) is None  # cbam-s0 has not run: the top is not chosen yet
    (tmp_path / "runs" / "cbam-s0").mkdir()
    (tmp_path / "runs" / "cbam-s0" / "failed.json").write_text(json.dumps({"error": "boom"}))
    assert study.screen_ranking(tmp_path) == [("eca", 86.0), ("se", 84.0), ("none", 80.0)]
    assert study.confirmed(tmp_path) == ["none", "eca"]
    assert names("runs")[4:] == ["none-s1", "eca-s1", "none-s2", "eca-s2"]
    assert names("localization") == ["none-s0", "eca-s0"]
    note = design_note(study, study.screen_ranking(tmp_path))
    assert "seed 0 trains every configuration" in note and "the 1 best other(s) of the screen" in note
    assert note.endswith(": eca.")
    with pytest.raises(ValueError, match="confirm must list configurations; unknown: \\['sk'\\]"):
        build_study("quick", None, {}, {}, confirm=["sk"])
    with pytest.raises(ValueError, match="confirm_top must be a non-negative integer"):
        build_study("quick", None, {}, {}, confirm=["none"], confirm_top=-1)


@pytest.mark.slow
def test_a_screened_study_confirms_the_best_of_the_screen_and_reports_unequal_seeds(fmnist_dir, tmp_path):
    out = tmp_path / "screened"
    args = tiny_grid(fmnist_dir, out, "--seed", "0,1", "--confirm", "none", "--confirm-top", "1",
                     localization=False)
    args[args.index("none,se")] = "none,se,eca"
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ranking = Study.from_dict(yaml.safe_load((out / "study.yaml").read_text())).screen_ranking(out)
    best = next(name for name, _ in ranking if name != "none")
    assert f"confirming on seeds [1]: none, {best}" in result.output
    trained = sorted(p.name for p in (out / "runs").iterdir())
    assert trained == sorted(["none-s0", "se-s0", "eca-s0", "none-s1", f"{best}-s1"])
    rows = {r["configuration"]: r for r in csv.DictReader(open(out / "results.csv")) if r["level"] == "configuration"}
    assert rows[best]["n"].startswith("2") and rows[({"se", "eca"} - {best}).pop()]["n"].startswith("1")
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "Screening plus confirmation" in markdown and f"by validation score (test results play no part" in markdown


def test_modules_preset_screens_every_channel_and_spatial_module(tmp_path):
    from attnvision.study.grid import COMPOSED_GATES

    study = build_study("modules", None, {}, {})
    names = [n for n, _ in study.configurations()]
    assert {"se", "eca", "cbam", "bam", "simam", "coord", "gct", "fca", "triplet", "ge"} <= set(names)
    assert not {"sasa", "nonlocal", "danet", "bottleneck", "gate"} & set(names)  # self-attention, conv, CBAM twice
    assert names[-3:] == ["gate_eca_simam", "gate_gct_cbam", "gate_se_dct_cbam"] and len(COMPOSED_GATES) == 3
    runs = [c for c in study.cells(tmp_path) if c.part == "runs"]
    assert len(runs) == len(names) + 2 * 5  # the screen, then the listed five on seeds 1 and 2


def test_compare_flags_for_screening_are_checked_before_training(tmp_path):
    result = CliRunner().invoke(app, ["compare", "--preset", "quick", "--confirm", "none,sk", "--confirm-top", "2",
                                      "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "confirm must list configurations; unknown: ['sk']" in result.output
    assert not (tmp_path / "s").exists()


def test_a_composed_gate_is_a_named_entry_of_the_attn_axis():
    spec = "gate:channel=eca,spatial=cbam,order=parallel"
    study = build_study("quick", None, {"attn": [None, spec], "seed": [0]}, {})
    cells = [c for c in study.cells(Path("s")) if c.part == "runs"]
    assert [c.name for c in cells] == ["none-s0", "gate_eca_cbam_parallel-s0"]
    assert cells[1].config.attn == spec
    study.check("the grid")


def test_localization_seeds_and_permuted_label_twins():
    study = build_study("quick", None, {"seed": [0, 1, 2]}, {}, localization_seeds=2, data_randomization=True)
    cells = study.cells(Path("s"))
    assert [c.name for c in cells if c.part == "localization"][-2:] == ["bam-s1", "eca_cbam-s1"]
    assert len([c for c in cells if c.part == "localization"]) == 12
    twins = [c for c in cells if c.part == "permuted"]
    assert len(twins) == 6 and all(c.config.permute_labels and c.config.seed == 0 for c in twins)
    assert twins[0].folder == Path("s/permuted/none-s0") and twins[0].config.data == "fashion-mnist-scenes-single"
    with pytest.raises(ValueError, match="localization_seeds 4 is more than the 3 seed"):
        build_study("quick", None, {"seed": [0, 1, 2]}, {}, localization_seeds=4)
    with pytest.raises(ValueError, match="no localisation part"):
        build_study("quick", None, {}, {}, localization=None, data_randomization=True)


def test_converged_preset_reads_the_packaged_recipes():
    study = build_study("converged", None, {}, {})
    main = study.cells(Path("s"))[0].config
    assert (main.epochs, main.schedule, main.batch_size, main.tta_hflip, len(study.seed)) == (20, "linear", 64, True, 3)
    assert study.model == ["resnet20"] and "model" not in study.recipe
    loc = next(c for c in study.cells(Path("s")) if c.part == "localization").config
    assert loc.data == "fashion-mnist-scenes-single" and loc.data_kw["clutter"] > 0 and not loc.tta_hflip
    assert study.localization_seeds == 3 and study.data_randomization


def test_quick_preset_compares_the_proposal_modules():
    assert PRESETS["quick"]["attn"] == [None, "se", "eca", "cbam", "bam", "eca_cbam"]
    assert PRESETS["quick"]["localization"]["data"] == "fashion-mnist-scenes-single"


def test_cifar_presets_hold_the_published_recipe():
    study = build_study("cifar", None, {}, {})
    assert study.model == ["resnet56"] and study.seed == [0, 1, 2, 3, 4] and study.positive_control == "se"
    config = study.cells(Path("s"))[1].config
    assert (config.data, config.epochs, config.batch_size, config.lr, config.weight_decay) == ("cifar100", 164, 128,
                                                                                                 0.1, 5e-4)
    assert (config.schedule, config.milestones, config.crop_pad, config.hflip) == ("step", [81, 122], 4, True)
    assert config.attn == "se" and study.localization is None
    cifar10 = build_study("cifar10", None, {}, {})
    assert cifar10.recipe["data"] == "cifar10" and cifar10.positive_control is None


@pytest.mark.slow
def test_cifar_preset_runs_end_to_end_on_a_tiny_cifar100(tmp_path):
    from test_data import write_cifar

    from attnvision.data.cifar import CIFAR100

    write_cifar(tmp_path / "data", CIFAR100, per_batch=48)
    out = tmp_path / "study"
    result = CliRunner().invoke(app, ["compare", "--preset", "cifar", "--model", "resnet20", "--attn", "none,se",
                                      "--seed", "0", "--epochs", "2", "--milestones", "1", "--val-size", "16",
                                      "--batch-size", "16", "--data-dir", str(tmp_path / "data"), "--jobs", "2",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "runs" / "se-s0" / "metrics.json").read_text())
    assert config["data"] == "cifar100" and config["epochs"] == 2 and "test_final" in config
    saved = (out / "runs" / "se-s0" / "config.yaml").read_text()
    assert "milestones:\n- 1\n" in saved and "crop_pad: 4" in saved and "weight_decay: 0.0005" in saved
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert re.search(r"Positive control( FAILED)?: se", markdown) and "Holm verdict (5%)" in markdown
    assert "positive_control: se" in (out / "study.yaml").read_text()


def test_pareto_front_keeps_the_undominated_points():
    points = [(1.0, 90.0), (2.0, 91.0), (1.5, 89.0), (3.0, 90.5), (4.0, 92.0)]
    assert pareto_front(points) == [0, 1, 4]


def test_paired_comparison_counts_discordant_images(tmp_path):
    targets = torch.zeros(100, dtype=torch.long)

    def run(name: str, right: int) -> Path:
        logits = torch.zeros(100, 3)
        logits[:right, 0] = 1  # right on the first `right` images
        logits[right:, 1] = 1
        (tmp_path / name).mkdir()
        torch.save({"split": "test", "logits": logits.half(), "targets": targets}, tmp_path / name / PREDICTIONS)
        return tmp_path / name

    result = paired_comparison({0: run("a", 60)}, {0: run("b", 50)}, "single")
    assert result["per_seed"][0]["only_a"] == 10 and result["per_seed"][0]["only_b"] == 0
    assert result["per_seed"][0]["p"] == pytest.approx(2 / 2**10)
    assert result["ci"]["mean"] == pytest.approx(10.0) and result["ci"]["low"] > 0
    assert result["resolvable"] == pytest.approx(100 * 2.8 * 10**0.5 / 100)


def synthetic_study(tmp_path: Path, study: Study, accuracy: dict[str, list[float]], images: int = 1000) -> dict:
    """The report's data for finished runs with these test accuracies per configuration and seed, each
    with saved predictions right on its first accuracy·N/100 test images; no training."""
    targets = torch.zeros(images, dtype=torch.long)
    runs = []
    for name, values in accuracy.items():
        for seed, acc in zip(study.seed, values):
            folder = tmp_path / f"{name}-s{seed}"
            folder.mkdir()
            logits = torch.zeros(images, 2)
            logits[: round(acc * images / 100), 0] = 1
            logits[round(acc * images / 100):, 1] = 1
            torch.save({"split": "test", "logits": logits.half(), "targets": targets}, folder / PREDICTIONS)
            runs.append({"part": "runs", "cell": f"{name}-s{seed}", "configuration": name, "seed": seed,
                         "folder": str(folder), "status": "finished", "metric": "acc", "task": "single",
                         "test": acc, "test_final": acc - 0.5, "best_val": acc, "params": 1, "macs": 1,
                         "epoch_time_s": 1.0, "train_time_s": 1.0, "images_per_s": 1.0, "threads": 1, "history": []})
    configurations = configuration_rows(study, runs, {})
    return {"study": study, "out": tmp_path, "runs": runs, "configurations": configurations, "curves": {},
            "localization": [], "explain": None, "environment": {}, "cost_settings": None,
            "noise": seed_noise(configurations), "positive_control": positive_control(study, configurations)}


def markdown_of(data: dict) -> str:
    return render(document(data, {}, None), REPORT_MD)


def test_seed_interval_holm_and_detectable_effect_on_synthetic_runs(tmp_path):
    from scipy import stats as scipy_stats

    study = Study(attn=[None, "se", "eca"], seed=[0, 1, 2], positive_control="se")
    accuracy = {"none": [80.0, 80.5, 79.5], "se": [82.0, 82.6, 81.9], "eca": [80.2, 80.1, 80.9]}
    data = synthetic_study(tmp_path, study, accuracy)
    rows = {r["configuration"]: r for r in data["configurations"]}
    diffs = [a - b for a, b in zip(accuracy["se"], accuracy["none"])]
    expected = scipy_stats.ttest_rel(accuracy["se"], accuracy["none"])
    low, high = expected.confidence_interval(0.95)
    se = rows["se"]
    assert se["seed_ci"]["low"] == pytest.approx(low) and se["seed_ci"]["high"] == pytest.approx(high)
    assert se["p"] == pytest.approx(expected.pvalue) and se["p_test"] == "t over seeds"
    eca_p = scipy_stats.ttest_rel(accuracy["eca"], accuracy["none"]).pvalue
    assert eca_p > expected.pvalue  # so Holm multiplies se's p by 2 and eca's by 1 (at least se's adjusted p)
    assert se["holm_p"] == pytest.approx(2 * expected.pvalue) and se["holm"] == "better"
    assert rows["eca"]["holm_p"] == pytest.approx(max(eca_p, 2 * expected.pvalue))
    assert rows["eca"]["holm"] == "not significant"
    assert se["delta"] == pytest.approx(sum(diffs) / 3)
    assert se["test_final_mean"] == pytest.approx(82.1667 - 0.5, abs=1e-3)
    pooled = (sum(torch.tensor(v).var().item() for v in accuracy.values()) / 3) ** 0.5  # equal n: mean of variances
    assert data["noise"]["sigma"] == pytest.approx(pooled, rel=1e-5) and data["noise"]["df"] == 6
    assert se["mde"] == pytest.approx(2.8 * pooled * (2 / 3) ** 0.5, rel=1e-5)
    assert data["noise"]["binomial_se"] == pytest.approx(100 * (0.8 * 0.2 / 1000) ** 0.5)
    assert data["noise"]["images"] == 1000
    assert data["positive_control"]["appeared"] is True
    markdown = markdown_of(data)
    assert "surviving: se (+2.17 pp" in markdown and "Positive control: se beats none" in markdown
    assert "binomial standard error of 1.26 pp" in markdown and "MDE, seeds (pp)" in markdown
    assert "| 95% CI of Δ, seeds |" in markdown and "| final epoch test acc (%) |" in markdown
    csv_fields = {c.csv for c in CONFIGURATION_COLUMNS}
    assert {"test_final", "seed_ci_low", "seed_ci_high", "p", "p_test", "holm_p", "holm", "mde"} <= csv_fields


def test_one_seed_uses_mcnemar_in_holm_and_a_failed_control_is_said(tmp_path):
    study = Study(attn=[None, "se", "eca"], seed=[0], positive_control="se")
    data = synthetic_study(tmp_path, study, {"none": [80.0], "se": [79.8], "eca": [83.0]})
    rows = {r["configuration"]: r for r in data["configurations"]}
    assert rows["se"]["seed_ci"] is None and rows["se"]["p_test"] == "McNemar" and "mde" not in rows["se"]
    assert rows["eca"]["holm_p"] == pytest.approx(min(1, 2 * rows["eca"]["paired"]["per_seed"][0]["p"]))
    assert rows["eca"]["holm"] == "better" and rows["se"]["holm"] == "not significant"
    assert data["positive_control"]["appeared"] is False
    markdown = markdown_of(data)
    assert "Positive control FAILED: se" in markdown and "no null result in it should be read" in markdown
    assert "seed-to-seed variation is not measured" in markdown and "(McNemar)" in markdown


def test_positive_control_must_be_a_compared_configuration():
    with pytest.raises(ValueError, match="positive_control 'cbam' is not a configuration other than the baseline"):
        Study(attn=[None, "se"], positive_control="cbam").check()
    with pytest.raises(ValueError, match="positive_control 'none'"):
        Study(attn=[None, "se"], positive_control="none").check()


# ----------------------------------------------------------------------------- the real browser

def browser():
    """A headless Chromium driven through chromedriver, or a reason to skip."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no chromium/chromedriver: `make setup` installs Debian's chromium and chromium-driver where "
                    "apt and root are available")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


@pytest.mark.slow
def test_report_renders_and_sorts_in_a_real_browser(study, tmp_path):
    out, _ = study
    driver = browser()
    try:
        driver.get((out / "report.html").resolve().as_uri())
        rows = driver.find_elements("css selector", "#results tbody tr")
        assert len(rows) == 2
        assert driver.execute_script("return document.querySelectorAll('#plots svg').length") >= 3
        assert driver.execute_script(
            "var g = document.getElementById('gallery'); return g.complete && g.naturalWidth > 0")
        assert len(driver.find_elements("css selector", "#localization tbody tr")) >= 2
        header = driver.find_elements("css selector", "#results th")[2]  # test accuracy
        column = "return Array.from(document.querySelectorAll('#results tbody tr')).map(r => r.cells[2].dataset.sort)"
        header.click()
        ascending = [float(v) for v in driver.execute_script(column)]
        header.click()
        descending = [float(v) for v in driver.execute_script(column)]
        assert ascending == sorted(ascending) and descending == sorted(ascending, reverse=True)
        assert "asc" not in header.get_attribute("class") and "desc" in header.get_attribute("class")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
    finally:
        driver.quit()


def test_jobs_share_the_cores(monkeypatch):
    from attnvision.study import execute

    monkeypatch.setattr(execute.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert execute.default_jobs() == (8, 1)  # one single-threaded run per core: fastest measured on CPU
    assert execute.default_jobs(2) == (2, 4) and execute.default_jobs(16) == (16, 1)

"""What happens when things go wrong (issue 11): bad numbers and paths, crashes between checkpoint
writes, two runs in one folder, a full disk, NaN losses. Every case ends in a clear message and a
non-zero exit, or in a correct run folder; never in a traceback, a silent substitute or a wrong number."""

from __future__ import annotations

import csv
import contextlib
import errno
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_train import tiny_config
from typer.testing import CliRunner

import attnvision.checkpoint as checkpoint_mod
import attnvision.run_folder as run_folder
import attnvision.train as train_mod
from attnvision.checkpoint import DiskFullError, load_checkpoint, save_checkpoint
from attnvision.cli import app
from attnvision.config import TrainConfig
from attnvision.evaluate import evaluate_checkpoint
from attnvision.train import DivergedError, lr_factor, repair_best, train

SMALL_MODEL = '{"layers": [1, 1, 1]}'  # resnet8: the CLI runs below only need a model that trains


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_clean_error(result, *words: str, code: int = 2) -> None:
    """Exit ``code`` with one error paragraph naming ``words``, and no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "error:" in result.output and "\n\n" not in result.output.strip()
    unwrapped = "".join(result.output.split())  # rich wraps long lines anywhere, paths included
    for word in words:
        assert "".join(word.split()) in unwrapped, result.output


def small_config(data_dir: Path, out: Path, **kw) -> TrainConfig:
    """Two epochs of resnet14 on 192 images: a cheap run whose second epoch is clearly its best
    (validation accuracy 7% then 27%)."""
    return replace(tiny_config(data_dir, out), model_kw={"layers": [2, 2, 2]}, train_subset=192, lr=0.1, **kw)


def tiny_cli(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data-dir", str(data_dir), "--val-size", "100", "--epochs", "1", "--batch-size", "32",
            "--model-kw", SMALL_MODEL, "--accelerator", "cpu", "--no-progress", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def finished_run(fmnist_dir, tmp_path_factory) -> Path:
    """A finished one-epoch run; copy it before changing it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(small_config(fmnist_dir, out, epochs=1), progress=False)
    return out


@pytest.fixture
def no_data_loading(monkeypatch):
    """Make loading data a test failure: the errors below must come before it."""
    def refuse(cfg):
        raise AssertionError("data was loaded before the error")
    monkeypatch.setattr(train_mod, "load_bundle", refuse)


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("option, value, message", [
    ("--epochs", "0", "epochs must be an integer ≥ 1, got 0"),
    ("--epochs", "-1", "epochs must be an integer ≥ 1, got -1"),
    ("--batch-size", "0", "batch_size must be an integer ≥ 1"),
    ("--batch-size", "-5", "batch_size must be an integer ≥ 1"),
    ("--train-subset", "0", "train_subset must be an integer ≥ 1, got 0"),
    ("--train-subset", "-3", "train_subset must be an integer ≥ 1"),
    ("--crop-pad", "-1", "crop_pad must be an integer ≥ 0"),
    ("--label-smoothing", "2", "label_smoothing must be a finite number in [0, 1], got 2.0"),
    ("--val-size", "0", "val_size must be an integer ≥ 1"),
    ("--lr", "nan", "lr must be a finite number > 0, got nan"),
    ("--lr", "inf", "lr must be a finite number > 0, got inf"),
    ("--lr", "0", "lr must be a finite number > 0"),
    ("--warmup-epochs", "-1", "warmup_epochs must be a finite number ≥ 0"),
    ("--seed", "-1", "seed must be an integer in [0, 4294967295]"),
])
def test_bad_numbers_are_refused_before_anything_happens(fmnist_dir, tmp_path, no_data_loading, option, value,
                                                         message):
    result = cli(*tiny_cli(fmnist_dir, tmp_path / "run", option, value))
    assert_clean_error(result, message)
    assert not (tmp_path / "run").exists()


def test_config_files_and_resume_are_checked_by_the_same_rules(tmp_path):
    with pytest.raises(ValueError, match="epochs must be an integer ≥ 1, got 1.5"):
        TrainConfig.from_dict({"epochs": 1.5}).validate()
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got True"):
        TrainConfig.from_dict({"lr": True}).validate()
    save_checkpoint({"config": asdict(TrainConfig(train_subset=0)), "epoch": 1}, tmp_path / "run" / "last.pt")
    with pytest.raises(ValueError, match="train_subset must be an integer ≥ 1, got 0"):
        train(TrainConfig(), resume=tmp_path / "run", progress=False)


def test_crop_pad_is_checked_against_the_image_size(fmnist_dir, tmp_path):
    result = cli(*tiny_cli(fmnist_dir, tmp_path / "run", "--crop-pad", "28"))
    assert_clean_error(result, "crop_pad 28 is not smaller than the 28×28 images", "at most 27")


INTEGERS = st.sampled_from([0, -1, 1, 2, 3, 64, 10**12])
NUMBERS = st.sampled_from([0.0, -1.0, 1e-3, 0.05, 0.5, 1.0, 2.0, 1e300, math.inf, -math.inf, math.nan])
# one or two options at a time, so that most examples get past parsing to data, training and writing
OPTION_VALUES = st.lists(st.one_of([st.tuples(st.just("--epochs"), st.sampled_from([-1, 0, 1, 2]))]
                                   + [st.tuples(st.just(o), INTEGERS) for o in
                                      ("--batch-size", "--train-subset", "--val-size", "--crop-pad", "--seed")]
                                   + [st.tuples(st.just(o), NUMBERS) for o in
                                      ("--lr", "--weight-decay", "--warmup-epochs", "--label-smoothing")]),
                         min_size=1, max_size=2, unique_by=lambda pair: pair[0])


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=OPTION_VALUES)
def test_any_option_values_give_a_run_or_a_clean_error(fmnist_dir, tmp_path_factory, values):
    out = tmp_path_factory.mktemp("prop") / "run"
    # 128 training images unless the example sets --train-subset itself (a later option wins)
    result = cli(*tiny_cli(fmnist_dir, out, "--train-subset", "128", *(str(a) for pair in values for a in pair)))
    if result.exit_code == 0:
        assert (out / "metrics.json").is_file() and (out / "best.pt").is_file()
    else:
        assert_clean_error(result, code=result.exit_code)


# ----------------------------------------------------------------------------- silent substitutes


def test_missing_data_dir_is_an_error_for_train_and_eval(fmnist_dir, finished_run, tmp_path):
    assert_clean_error(cli(*tiny_cli(tmp_path / "typo", tmp_path / "run")), "typo does not exist")
    assert not (tmp_path / "run" / "metrics.json").exists()
    result = cli("eval", "--checkpoint", str(finished_run / "best.pt"), "--data-dir", str(tmp_path / "typo"))
    assert_clean_error(result, "typo does not exist")


def test_train_subset_trains_on_exactly_that_many_images(fmnist_dir, tmp_path):
    result = cli(*tiny_cli(fmnist_dir, tmp_path / "run", "--train-subset", "64"))
    assert result.exit_code == 0, result.output
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]
    assert round(final["images_per_s"] * final["epoch_time_s"]) == 64  # images trained on in the epoch


# ----------------------------------------------------------------------------- crashes and resume


@pytest.fixture(scope="module")
def straight_run(fmnist_dir, tmp_path_factory) -> dict:
    cfg = small_config(fmnist_dir, tmp_path_factory.mktemp("straight") / "run")
    metrics = train(cfg, progress=False)
    assert metrics["best_val"]["epoch"] == 2, "epoch 2 must be the best, or the crash after its last.pt tests nothing"
    return metrics


@pytest.mark.parametrize("writes_before_kill", [1, 2, 3, 4])
def test_a_kill_between_checkpoint_writes_never_gives_a_wrong_number(fmnist_dir, tmp_path, monkeypatch,
                                                                     straight_run, writes_before_kill):
    """Writes: epoch 1 last.pt, best.pt; epoch 2 last.pt, best.pt (then log.csv). Killed after
    ``writes_before_kill`` of them, the resumed run must report what the uninterrupted one did and
    its log.csv must hold every epoch (a kill after epoch 2's checkpoints once lost its row)."""
    real_save, done = train_mod.save_checkpoint, []

    def save_then_die(state, path):
        real_save(state, path)
        done.append(Path(path).name)
        if len(done) == writes_before_kill:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(train_mod, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            train(small_config(fmnist_dir, tmp_path / "run"), progress=False)
    resumed = train(TrainConfig(), resume=tmp_path / "run", progress=False)
    assert resumed["test"] == straight_run["test"]
    assert resumed["best_val"] == straight_run["best_val"]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == straight_run["best_val"]["epoch"]
    assert [row["epoch"] for row in csv.DictReader(open(tmp_path / "run" / "log.csv"))] == ["1", "2"]


def test_repair_best_rewrites_from_last_or_refuses(tmp_path):
    state = {"epoch": 3, "best": {"epoch": 3}, "model": {"w": torch.ones(1)}}
    save_checkpoint({"epoch": 2}, tmp_path / "best.pt")
    repair_best(tmp_path, state)  # the kill fell between last.pt and best.pt of epoch 3
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 3
    with pytest.raises(ValueError, match="best.pt holds epoch 3 but .*last.pt records epoch 2 as the best"):
        repair_best(tmp_path, {"epoch": 4, "best": {"epoch": 2}})
    (tmp_path / "best.pt").unlink()
    with pytest.raises(ValueError, match="best.pt is missing but .*last.pt records epoch 2 as the best"):
        repair_best(tmp_path, {"epoch": 4, "best": {"epoch": 2}})


def test_resume_removes_temporary_files_of_a_killed_write(finished_run, tmp_path):
    run = shutil.copytree(finished_run, tmp_path / "run")
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    train(TrainConfig(), resume=run, progress=False)
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_nan_in_the_first_epoch_says_there_is_no_checkpoint(fmnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "build_loss", lambda cfg, task: lambda logits, y: logits.sum() * float("nan"))
    with pytest.raises(DivergedError, match="no checkpoint was written") as e:
        train(small_config(fmnist_dir, tmp_path / "run"), progress=False)
    assert "epoch 0" not in str(e.value) and not (tmp_path / "run" / "last.pt").exists()


def test_resume_refuses_other_options_and_extends_with_epochs(finished_run, tmp_path):
    run = shutil.copytree(finished_run, tmp_path / "run")
    assert_clean_error(cli("train", "--resume", str(run), "--lr", "0.5", "--no-hflip"), "--lr, --hflip",
                       "only --epochs can")
    assert_clean_error(cli("train", "--resume", str(run), "--epochs", "0"), "--epochs 0 is fewer than the 1 epochs")
    result = cli("train", "--resume", str(run), "--epochs", "2", "--no-progress")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["final"]["epoch"] == 2
    assert load_checkpoint(run / "last.pt")["config"]["epochs"] == 2


# ----------------------------------------------------------------------------- the run folder


def test_a_second_process_cannot_take_a_locked_run_folder(fmnist_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # the module alone, not the package: importing torch would take most of this test's time
    holder = subprocess.Popen([sys.executable, "-c", "import importlib.util, sys, time; from pathlib import Path; "
                               "spec = importlib.util.spec_from_file_location('run_folder', sys.argv[2]); "
                               "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
                               "module.RunLock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(120)",
                               str(out), run_folder.__file__], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert (out / ".lock").read_text().split()[0] == str(holder.pid)
        assert_clean_error(cli(*tiny_cli(fmnist_dir, out)), f"in use by another run (process {holder.pid}",
                           "pick another --out")
        assert not (out / "metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()
    result = cli(*tiny_cli(fmnist_dir, out))  # the dead holder's lock is taken over
    assert result.exit_code == 0, result.output
    assert (out / "metrics.json").is_file() and (out / ".lock").read_text() == ""
    run_folder.RunLock(out).release()  # and released at the end


@pytest.mark.parametrize("case", ["existing file", "below a file"])
def test_out_must_be_a_creatable_folder(fmnist_dir, tmp_path, no_data_loading, case):
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if case == "existing file" else tmp_path / "f" / "run"
    words = ("is an existing file",) if case == "existing file" else ("a part of that path is a file",)
    assert_clean_error(cli(*tiny_cli(fmnist_dir, out)), str(out), *words, "pick another --out")


@contextlib.contextmanager
def tmpfs(where: Path, options: str):
    """A tmpfs mounted at ``where`` (root only), always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_out_on_a_read_only_file_system(fmnist_dir, tmp_path, no_data_loading):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        assert_clean_error(cli(*tiny_cli(fmnist_dir, ro / "run")), "cannot create run folder", "Read-only file system",
                           "writable file system")


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path):
    with tmpfs(tmp_path / "small", "size=1m") as small:
        save_checkpoint({"epoch": 1, "w": torch.zeros(1000)}, small / "last.pt")
        with pytest.raises(DiskFullError, match=r"disk full while writing .*last.pt: it needs at least .* MB and "
                                                r".* MB are free .*; the previous last.pt is intact. Free space"):
            save_checkpoint({"epoch": 2, "w": torch.zeros(400_000)}, small / "last.pt")
        assert load_checkpoint(small / "last.pt")["epoch"] == 1
        assert [p.name for p in small.iterdir()] == ["last.pt"], "temporary file left behind"


def test_a_full_disk_during_training_is_a_message(fmnist_dir, tmp_path):
    # room for config.yaml, TensorBoard events and one resnet8 last.pt (~0.6 MB), not for best.pt too
    with tmpfs(tmp_path / "small", "size=1000k") as small:
        result = cli(*tiny_cli(fmnist_dir, small / "run"))
        assert_clean_error(result, "disk full while writing", "best.pt", "Free space there", code=1)
        assert load_checkpoint(small / "run" / "last.pt")["epoch"] == 1


# ----------------------------------------------------------------------------- smaller cases


@pytest.mark.parametrize("lambdas", ["abc", "0.1,,0.2", "0.1,nan"])
def test_boost_names_a_bad_lambdas_option(tmp_path, lambdas):
    assert_clean_error(cli("boost", "--checkpoint", str(tmp_path / "best.pt"), "--lambdas", lambdas), "--lambdas",
                       lambdas)


def test_model_mismatch_is_summarised(finished_run, tmp_path):
    state = load_checkpoint(finished_run / "best.pt")
    weights = state["model"]
    for key in [k for k in weights if k.startswith("layer3")]:
        weights["extra." + key] = weights.pop(key)
    weights["head.fc.weight"] = torch.zeros(3, 64)
    save_checkpoint(state, tmp_path / "odd.pt")
    with pytest.raises(ValueError) as e:
        evaluate_checkpoint(tmp_path / "odd.pt")
    message = str(e.value)
    assert re.search(r"\d+ missing \(e\.g\. layer3\.0\.\w+", message)
    assert re.search(r"\d+ unexpected \(e\.g\. extra\.layer3", message)
    assert "1 of another shape (e.g. head.fc.weight: file (3, 64) vs model (10, 64))" in message
    assert len(message) < 700


def test_unknown_model_kw_lists_the_valid_ones(fmnist_dir, tmp_path):
    result = cli(*tiny_cli(fmnist_dir, tmp_path / "run", "--model-kw", '{"widht": "large"}'))  # the last one counts
    assert_clean_error(result, "unexpected keyword argument 'widht'", "width", "attn_kw", "head_kw")


@pytest.mark.parametrize("accelerator", ["tpu", "mps"])  # never available on a Linux test machine
def test_an_unavailable_accelerator_is_a_message(fmnist_dir, tmp_path, no_data_loading, accelerator):
    assert_clean_error(cli(*tiny_cli(fmnist_dir, tmp_path / "run", "--accelerator", accelerator)), accelerator)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- schedules and durability


def test_lr_factor_warmup_cosine_and_steps():
    cfg = TrainConfig(epochs=4, warmup_epochs=1, schedule="cosine")
    f = lr_factor(cfg, steps_per_epoch=10)
    assert [f(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])  # > 0 from step 0
    assert f(10) == pytest.approx(1.0)  # warmup done: cosine starts at its peak
    assert f(25) == pytest.approx(0.5)  # half-way through the 30 cosine steps
    assert f(39) == pytest.approx(0.5 * (1 + math.cos(math.pi * 29 / 30)))  # last step, just above 0
    assert f(40) == pytest.approx(0.0, abs=1e-12)
    step = lr_factor(replace(cfg, schedule="step", warmup_epochs=0, step_epochs=2, step_gamma=0.1), 10)
    assert [step(s) for s in (0, 19, 20, 39, 40)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert lr_factor(replace(cfg, warmup_epochs=0), 10)(0) == pytest.approx(1.0)


def test_atomic_write_fsyncs_file_then_renames_then_fsyncs_folder(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def rename(src, dst):
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_mod.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint_mod.os, "replace", rename)
    save_checkpoint({"epoch": 1}, tmp_path / "ck.pt")
    assert calls == ["fsync file", "replace", "fsync folder"]


def test_other_os_errors_are_not_taken_for_a_full_disk(tmp_path, monkeypatch):
    def broken(obj, f):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError) as e:
        save_checkpoint({"epoch": 1}, tmp_path / "ck.pt")
    assert not isinstance(e.value, DiskFullError)

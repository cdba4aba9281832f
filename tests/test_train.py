"""The trainer end to end on a tiny dataset: run folder, exact resume, NaN guard, eval, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import attnvision.train as train_mod
from attnvision.checkpoint import load_checkpoint, save_checkpoint
from attnvision.cli import app
from attnvision.config import TrainConfig
from attnvision.evaluate import evaluate_checkpoint, full_fp32_on_cuda
from attnvision.train import DivergedError, train

ATTNVISION = str(Path(sys.executable).parent / "attnvision")


def tiny_config(data_dir: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(data_dir=str(data_dir), val_size=100, epochs=2, batch_size=32, lr=0.05,
                       warmup_epochs=0.5, out=str(out), accelerator="cpu", **kw)


def test_run_folder_contents_and_learning(fmnist_dir, tmp_path):
    metrics = train(replace(tiny_config(fmnist_dir, tmp_path / "run"), epochs=3), progress=False)
    run = tmp_path / "run"
    assert {"metrics.json", "log.csv", "best.pt", "last.pt", "config.yaml", "tb"} <= {p.name for p in run.iterdir()}
    assert any((run / "tb").iterdir()), "TensorBoard events missing"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for key in ("final", "best_val", "test", "wall_time_s", "train_time_s", "images_per_s", "params", "macs"):
        assert key in saved
    assert saved["test"]["checkpoint"] == "best.pt"
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert saved["best_val"]["val_acc"] == max(float(r["val_acc"]) for r in rows)
    assert saved["test"]["acc"] > 40, "the bar pattern is easy: training must beat chance (10%) clearly"


def test_resume_continues_exactly(fmnist_dir, tmp_path, interrupted_after_first_epoch):
    straight = train(tiny_config(fmnist_dir, tmp_path / "a"), progress=False)
    interrupted_after_first_epoch(tiny_config(fmnist_dir, tmp_path / "b"))

    resumed = train(TrainConfig(), resume=tmp_path / "b", progress=False)
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert resumed["test"] == straight["test"]
    assert [r["val_acc"] for r in a["history"]] == [r["val_acc"] for r in b["history"]]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(fmnist_dir, tmp_path, monkeypatch,
                                                     interrupted_after_first_epoch):
    interrupted_after_first_epoch(tiny_config(fmnist_dir, tmp_path / "run"))
    good = load_checkpoint(tmp_path / "run" / "last.pt")

    monkeypatch.setattr(train_mod, "build_loss", lambda cfg, task: lambda logits, y: logits.sum() * float("nan"))
    with pytest.raises(DivergedError, match="last good checkpoint"):
        train(TrainConfig(), resume=tmp_path / "run", progress=False)
    kept = load_checkpoint(tmp_path / "run" / "last.pt")
    assert kept["epoch"] == good["epoch"] == 1
    assert all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])


def test_eval_reproduces_test_accuracy(fmnist_dir, tmp_path):
    metrics = train(tiny_config(fmnist_dir, tmp_path / "run"), progress=False)
    result = evaluate_checkpoint(tmp_path / "run" / "best.pt")
    assert result["acc"] == pytest.approx(metrics["test"]["acc"], abs=1e-9)
    assert result["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-6)

    cli = CliRunner().invoke(app, ["eval", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["acc"] == pytest.approx(metrics["test"]["acc"], abs=1e-9)


def test_final_epoch_is_scored_on_test_when_it_is_not_the_best(fmnist_dir, tmp_path, monkeypatch):
    real_validate, calls = train_mod.validate, []

    def first_epoch_best(run):
        calls.append(1)
        return {**real_validate(run), "acc": 100.0 - len(calls)}  # validation says epoch 1 is best

    monkeypatch.setattr(train_mod, "validate", first_epoch_best)
    metrics = train(tiny_config(fmnist_dir, tmp_path / "run"), progress=False)
    assert metrics["best_val"]["epoch"] == 1 and metrics["test"]["epoch"] == 1
    assert metrics["test_final"]["checkpoint"] == "last.pt" and metrics["test_final"]["epoch"] == 2
    last = evaluate_checkpoint(tmp_path / "run" / "last.pt")
    assert metrics["test_final"]["acc"] == pytest.approx(last["acc"], abs=1e-9)
    assert metrics["test"]["acc"] == pytest.approx(evaluate_checkpoint(tmp_path / "run" / "best.pt")["acc"], abs=1e-9)
    monkeypatch.setattr(train_mod, "validate", real_validate)
    again = train(replace(tiny_config(fmnist_dir, tmp_path / "again"), epochs=1), progress=False)
    assert again["test_final"] == again["test"]  # the best epoch is the last: the same weights, scored once


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"], "temporary file left behind"


@pytest.mark.parametrize("content, message", [
    (b"this is not a checkpoint", "not a readable PyTorch checkpoint"),
    (None, "not an attnvision checkpoint"),
])
def test_bad_checkpoints_are_reported(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"conv1.weight": torch.zeros(1)}, path)  # e.g. a torchvision weight file
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)
    cli = CliRunner().invoke(app, ["eval", "--checkpoint", str(path)])
    assert cli.exit_code == 2
    assert message in cli.output and "Traceback" not in cli.output


def test_truncated_checkpoint_is_reported(fmnist_dir, tmp_path):
    train(replace(tiny_config(fmnist_dir, tmp_path / "run"), epochs=1), progress=False)
    data = (tmp_path / "run" / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt, truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_cli_errors_name_the_problem(fmnist_dir, tmp_path):
    runner = CliRunner()
    bad_attn = runner.invoke(app, ["train", "--attn", "sen", "--data-dir", str(fmnist_dir), "--out", str(tmp_path / "x")])
    assert bad_attn.exit_code == 2
    assert "unknown attention module 'sen'" in bad_attn.output and "cbam" in bad_attn.output
    bad_model = runner.invoke(app, ["train", "--model", "resnet21", "--data-dir", str(fmnist_dir), "--out", str(tmp_path / "y")])
    assert bad_model.exit_code == 2 and "resnet20" in bad_model.output
    bad_data = runner.invoke(app, ["train", "--data", "mnist", "--out", str(tmp_path / "z")])
    assert bad_data.exit_code == 2 and "fashion-mnist" in bad_data.output
    bad_head_option = runner.invoke(app, ["train", "--heads", "4", "--data-dir", str(fmnist_dir), "--val-size", "100",
                                          "--out", str(tmp_path / "w")])
    assert bad_head_option.exit_code == 2 and "head 'gap'" in bad_head_option.output
    assert "in_features, num_classes" in bad_head_option.output and "Traceback" not in bad_head_option.output


def test_cli_list_shows_every_registry():
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0
    for word in ("attention modules", "cbam", "channel+spatial", "self-attention", "stage", "heads", "gap",
                 "models", "resnet50", "datasets", "fashion-mnist"):
        assert word in result.output


def test_ddp_two_cpu_processes_agree(fmnist_dir, tmp_path):
    """A 2-process DDP run over gloo: both ranks must end with identical parameters."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [ATTNVISION, "train", "--data-dir", str(fmnist_dir), "--val-size", "100", "--epochs", "1",
           "--batch-size", "32", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
           "--no-progress", "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    first, second = metrics["rank_param_checksums"]
    assert first == second


def test_multilabel_training_with_csra_on_scenes(fmnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVISION_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(data="fashion-mnist-scenes", data_dir=str(fmnist_dir), task="multilabel",
                      data_kw={"n_train": 160, "n_test": 64}, val_size=32, head="csra",
                      model_kw={"head_kw": {"heads": 4, "lam": 0.1}}, epochs=1, batch_size=32, lr=0.01,
                      head_lr=0.1, schedule="step", out=str(tmp_path / "run"), accelerator="cpu")
    metrics = train(cfg, progress=False)
    assert metrics["task"] == "multilabel" and metrics["selection_metric"] == "mAP"
    for key in ("mAP", "CF1", "OF1", "top3_CF1"):
        assert 0 <= metrics["test"][key] <= 100
    assert evaluate_checkpoint(tmp_path / "run" / "best.pt")["mAP"] == pytest.approx(metrics["test"]["mAP"])
    lrs = {g["lr"] for g in load_checkpoint(tmp_path / "run" / "last.pt")["optimizer"]["param_groups"]}
    assert lrs == {0.01, 0.1}, "head and backbone keep separate learning rates"
    with pytest.raises(ValueError, match="dataset 'fashion-mnist' is single"):
        train(TrainConfig(data_dir=str(fmnist_dir), val_size=100, task="multilabel", out=str(tmp_path / "x")),
              progress=False)


def test_train_config_reruns_a_run_with_flags_overriding_the_file(fmnist_dir, tmp_path):
    runner = CliRunner()
    first = runner.invoke(app, ["train", "--data-dir", str(fmnist_dir), "--val-size", "100", "--train-subset", "128",
                                "--epochs", "1", "--batch-size", "64", "--attn", "se", "--no-progress",
                                "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["train", "--config", str(tmp_path / "a" / "config.yaml"), "--out", str(tmp_path / "b"),
                                "--no-progress"])
    assert again.exit_code == 0, again.output
    a, b = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in "ab")
    assert a["test"] == b["test"] and a["final"]["train_loss"] == b["final"]["train_loss"]  # exactly the same run
    longer = runner.invoke(app, ["train", "--config", str(tmp_path / "a" / "config.yaml"), "--epochs", "2",
                                 "--out", str(tmp_path / "c"), "--no-progress"])
    assert longer.exit_code == 0, longer.output
    saved = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())
    assert saved["epochs"] == 2 and saved["attn"] == "se" and saved["train_subset"] == 128
    same_folder = runner.invoke(app, ["train", "--config", str(tmp_path / "a" / "config.yaml"), "--no-progress"])
    assert same_folder.exit_code == 2 and "holds a run already" in " ".join(same_folder.output.split())
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == a  # nothing overwritten
    missing = runner.invoke(app, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())


def test_flags_override_one_model_kw_key_and_keep_the_rest_of_the_file(fmnist_dir, tmp_path):
    """train --config FILE --heads 4 once dropped the file's other model_kw keys (width, λ)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(fmnist_dir), "val_size": 100, "train_subset": 64, "epochs": 1,
                                      "batch_size": 64, "head": "csra",
                                      "model_kw": {"width": "large", "head_kw": {"lam": 0.3}}}))
    runner = CliRunner()

    def model_kw(out: str, *flags: str) -> dict:
        result = runner.invoke(app, ["train", "--config", str(config), *flags, "--out", str(tmp_path / out),
                                     "--no-progress"])
        assert result.exit_code == 0, result.output
        return yaml.safe_load((tmp_path / out / "config.yaml").read_text())["model_kw"]

    assert model_kw("a", "--heads", "4") == {"width": "large", "head_kw": {"lam": 0.3, "heads": 4}}
    assert model_kw("b", "--heads", "4", "--model-kw", '{"head_kw": {"lam": 0.2}}') == \
        {"width": "large", "head_kw": {"lam": 0.2, "heads": 4}}
    twice = runner.invoke(app, ["train", "--config", str(config), "--heads", "4", "--model-kw",
                                '{"head_kw": {"heads": 2}}', "--out", str(tmp_path / "c")])
    assert twice.exit_code == 2 and "give each value once" in " ".join(twice.output.split())
    assert not (tmp_path / "c").exists()


def test_bf16_mixed_precision_trains_and_true_precisions_are_refused(fmnist_dir, tmp_path):
    metrics = train(replace(tiny_config(fmnist_dir, tmp_path / "run"), epochs=1, precision="bf16-mixed"),
                    progress=False)
    assert 0 <= metrics["test"]["acc"] <= 100 and metrics["final"]["train_loss"] > 0
    assert evaluate_checkpoint(tmp_path / "run" / "best.pt")["acc"] == pytest.approx(metrics["test"]["acc"])
    with pytest.raises(ValueError, match="unknown precision 'bf16-true'"):
        train(replace(tiny_config(fmnist_dir, tmp_path / "x"), precision="bf16-true"), progress=False)


def test_wrong_input_channels_name_both_numbers():
    from attnvision import create_model

    model = create_model("resnet20", 10, in_chans=3)
    with pytest.raises(ValueError, match=r"expects input \(B, 3, H, W\) but got \(2, 1, 28, 28\).*in_chans=1"):
        model(torch.zeros(2, 1, 28, 28))


def test_cli_profile_json():
    result = CliRunner().invoke(app, ["profile", "--model", "resnet20", "--attn", "eca", "--img-size", "32",
                                      "--num-classes", "10", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["params"] == 272_474 + 3 * 3 + 3 * 3 + 3 * 3  # ECA adds k=3 weights per block (C=16/32/64)
    assert report["macs"] > 40e6 and report["latency_ms_b1"] > 0 and report["latency_ms_b32"] > 0


def test_version_and_python_m():
    from attnvision import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"attnvision {__version__}"
    out = subprocess.run([sys.executable, "-m", "attnvision", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"attnvision {__version__}"


LABEL_SEQUENCE_MODELS = [("resnet20", "sat", {}), ("dram", None, {})]


@pytest.mark.parametrize("model, head, model_kw", LABEL_SEQUENCE_MODELS, ids=["sat", "dram"])
def test_label_sequence_models_train_on_scenes_and_resume_exactly(fmnist_dir, tmp_path, monkeypatch,
                                                                   interrupted_after_first_epoch, model, head,
                                                                   model_kw):
    """Models that emit one label per step train through the trainer on their own objective, are
    scored by the multi-label metrics (exact-set accuracy included) and resume bit for bit (dropout
    and sampled glimpses draw from the checkpointed RNG)."""
    monkeypatch.setenv("ATTNVISION_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(data="fashion-mnist-scenes", data_dir=str(fmnist_dir), data_kw={"n_train": 128, "n_test": 32},
                      val_size=32, model=model, head=head, model_kw=model_kw, epochs=2, batch_size=32, lr=0.01,
                      warmup_epochs=0, out=str(tmp_path / "a"), accelerator="cpu")
    straight = train(cfg, progress=False)
    for key in ("mAP", "CF1", "OF1", "exact"):
        assert 0 <= straight["test"][key] <= 100
    assert evaluate_checkpoint(tmp_path / "a" / "best.pt")["exact"] == pytest.approx(straight["test"]["exact"])
    interrupted_after_first_epoch(replace(cfg, out=str(tmp_path / "b")))
    resumed = train(TrainConfig(), resume=tmp_path / "b", progress=False)
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in "ab")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert resumed["test"] == straight["test"]
    with pytest.raises(ValueError, match="pass --mixup-prob 0 --cutmix-prob 0"):
        train(replace(cfg, mixup_prob=0.5, out=str(tmp_path / "c")), progress=False)
    with pytest.raises(ValueError, match="trains on multi-label data"):
        train(replace(cfg, data="fashion-mnist", data_kw={}, val_size=100, out=str(tmp_path / "d")), progress=False)


def test_true_fp32_turns_tf32_off_and_mixed_precisions_leave_it():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        full_fp32_on_cuda("bf16-mixed")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        full_fp32_on_cuda("32-true")
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

"""``--compile``: training, eval, profile and the study's costs through torch.compile, with
plain checkpoints, exact resume, the compile time apart, and the eager fallback.

Real compilation (Inductor, C++ kernels) is kept to one test, of a 3-block ResNet on 28×28
images (its training step, then inference at one batch shape); the fallback, profile's and the
study's plumbing use stand-ins for torch.compile."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from attnvision.checkpoint import load_checkpoint
from attnvision.cli import app
from attnvision.compiled import Compiled
from attnvision.config import TrainConfig
from attnvision.evaluate import evaluate_checkpoint
from attnvision.profile import profile_model
from attnvision.study.grid import build_study
from attnvision.study.measure import measure_costs
from attnvision.study.report import CONFIGURATION_COLUMNS, TERMINAL, costs_note, shown_columns
from attnvision.train import train

SMALL = {"layers": [1, 1, 1]}  # resnet20's stem, one block per stage and its head: seconds to compile
FALLBACK = "torch.compile failed for resnet20 + no attention, running it eagerly"


def tiny_config(data_dir, out, **kw) -> TrainConfig:
    """10 steps per epoch; evaluation in batches of 100, which split 100 validation and 200 test
    images into one shape: one inference graph to compile."""
    return TrainConfig(data_dir=str(data_dir), val_size=100, epochs=2, batch_size=50, lr=0.05, warmup_epochs=0.5,
                       model_kw=SMALL, out=str(out), accelerator="cpu", **kw)


def no_compile(model: nn.Module, **kwargs) -> nn.Module:
    """A stand-in for torch.compile that compiles nothing: the plumbing around it, in seconds."""
    return model


def test_compiled_training_resumes_exactly_and_writes_plain_checkpoints(fmnist_dir, tmp_path, capfd,
                                                                         interrupted_after_first_epoch):
    eager = train(tiny_config(fmnist_dir, tmp_path / "eager"), progress=False)
    straight = train(tiny_config(fmnist_dir, tmp_path / "a", compile=True), progress=False)
    interrupted_after_first_epoch(tiny_config(fmnist_dir, tmp_path / "b", compile=True))
    first_process = load_checkpoint(tmp_path / "b" / "last.pt")["compile_time_s"]
    resumed = train(TrainConfig(), resume=tmp_path / "b", progress=False)
    assert "torch.compile failed" not in capfd.readouterr().err  # compiled for real, not the fallback

    plain, a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in ("eager", "a", "b"))
    assert a.keys() == plain.keys() and list(a["model"]) == list(plain["model"])  # no "_orig_mod." prefixes
    assert a["optimizer"]["state"].keys() == plain["optimizer"]["state"].keys()
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    assert resumed["test"] == straight["test"]
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["compile"] is True

    # the compiling step is timed apart, once per process (b's two add up), and left out of the epoch
    # times (compiling takes seconds, the tiny epochs a fraction of one)
    assert eager["compile_time_s"] == 0 and straight["compile_time_s"] > 0
    assert resumed["compile_time_s"] > first_process > 0
    assert straight["wall_time_s"] > straight["train_time_s"] + straight["compile_time_s"]

    # checkpoints of compiled runs load into the plain model: eval, with and without --compile (whose
    # kernels round differently: a near-tie may flip, 0.5 points per image of 200)
    best = tmp_path / "a" / "best.pt"
    assert evaluate_checkpoint(best)["acc"] == pytest.approx(straight["test"]["acc"], abs=1e-9)
    result = CliRunner().invoke(app, ["eval", "--checkpoint", str(best), "--compile", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["acc"] == pytest.approx(straight["test"]["acc"], abs=1.0)
    assert "torch.compile failed" not in capfd.readouterr().err


class FailingCompile:
    """A stand-in for torch.compile that fails where Inductor can: at the wrap, at the first
    forward, or at the first backward (which compiles lazily)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __call__(self, model: nn.Module, **kwargs) -> nn.Module:
        if self.where == "wrap":
            raise RuntimeError("Dynamo is not supported on this Python\nsecond line")
        return FailingModel(model, self.where)


class FailingModel(nn.Module):
    def __init__(self, model: nn.Module, where: str) -> None:
        super().__init__()
        self.model, self.where = model, where

    def forward(self, x):
        if self.where == "forward":
            raise RuntimeError("\nC++ compile error: no compiler found\nmore detail")
        return FailingBackward.apply(self.model(x))


class FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("C++ compile error in the backward")


@pytest.mark.parametrize("where", ["wrap", "forward", "backward"])
def test_compile_failure_says_so_once_and_trains_eagerly(fmnist_dir, tmp_path, monkeypatch, capfd, where):
    eager = train(replace(tiny_config(fmnist_dir, tmp_path / "eager"), epochs=1), progress=False)
    monkeypatch.setattr(torch, "compile", FailingCompile(where))
    fallen = train(replace(tiny_config(fmnist_dir, tmp_path / "fallen", compile=True), epochs=1), progress=False)
    lines = [line for line in capfd.readouterr().err.splitlines() if "torch.compile failed" in line]
    first_line = {"wrap": "Dynamo is not supported on this Python", "forward": "C++ compile error: no compiler found",
                  "backward": "C++ compile error in the backward"}[where]
    assert lines == [f"{FALLBACK}: RuntimeError: {first_line}"]
    assert fallen["status"] == "completed"
    if where != "backward":  # nothing ran compiled: the run is the eager run, bit for bit
        plain, fell = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("eager", "fallen"))
        assert all(torch.equal(plain[key], fell[key]) for key in plain)
        assert fallen["test"] == eager["test"]


def test_profile_times_the_compiled_model_apart(monkeypatch, capfd):
    monkeypatch.setattr(torch, "compile", no_compile)
    result = profile_model("resnet20", img_size=28, in_chans=1, num_classes=10, batch_sizes=(1, 4), repeats=2,
                           warmup=1, compile=True, **SMALL)
    assert result["compile_time_s"] > 0 and result["latency_ms_b4"] > 0
    assert result["compiled_latency_ms_b1"] > 0 and result["compiled_latency_ms_b4"] > 0
    assert "torch.compile failed" not in capfd.readouterr().err

    table = CliRunner().invoke(app, ["profile", "--model", "resnet20", "--img-size", "28", "--in-chans", "1",
                                     "--num-classes", "10", "--repeats", "1", "--compile"])
    assert table.exit_code == 0, table.output
    for row in ("compiled latency, batch 1", "compiled latency, batch 32", "compile time", "speed-up over PyTorch eager"):
        assert row in " ".join(table.output.split())

    monkeypatch.setattr(torch, "compile", FailingCompile("forward"))
    failed = profile_model("resnet20", img_size=28, in_chans=1, num_classes=10, batch_sizes=(2,), repeats=1,
                           warmup=0, compile=True, **SMALL)
    assert "compile_time_s" not in failed and "compiled_latency_ms_b2" not in failed and failed["latency_ms_b2"] > 0
    assert f"{FALLBACK}: RuntimeError: C++ compile error" in capfd.readouterr().err


def test_study_costs_add_the_compile_speedup_per_configuration(fmnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", no_compile)
    recipe = {"data_dir": str(fmnist_dir), "val_size": 100, "batch_size": 8, "model_kw": SMALL}
    study = build_study(None, None, {"attn": [None, "se"]}, {**recipe, "compile": True})
    costs = measure_costs(study, study.cells(tmp_path / "study"), tmp_path, threads=1, rounds=2, repeats=1, steps=1)
    assert costs["settings"]["compile"] is True
    for row in costs["configurations"].values():
        assert row["compile_speedup"]["median"] > 0 and row["compiled_train_step_ms"]["median"] > 0
        assert row["compile_time_s"] > 0
    titles = [c.title for c in shown_columns(CONFIGURATION_COLUMNS, list(costs["configurations"].values()), TERMINAL)]
    assert "compile speed-up ×" in titles
    assert "torch.compile" in costs_note(costs["settings"])

    eager = build_study(None, None, {"attn": [None, "se"]}, recipe)
    (tmp_path / "eager").mkdir()
    costs = measure_costs(eager, eager.cells(tmp_path / "eager"), tmp_path / "eager", threads=1, rounds=1,
                          repeats=1, steps=1)
    assert "compile" not in costs["settings"]  # the costs.json of studies from before --compile stay valid
    assert not any("compile_speedup" in row for row in costs["configurations"].values())
    titles = [c.title for c in shown_columns(CONFIGURATION_COLUMNS, list(costs["configurations"].values()), TERMINAL)]
    assert "compile speed-up ×" not in titles


def test_every_model_of_a_process_is_compiled_past_dynamos_per_code_limit(monkeypatch):
    """Models built from the same classes share their forward's code object, whose Dynamo cache
    holds 8 graphs: the ninth and later models must still compile (not run eagerly unnoticed)."""
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="eager", **kw))
    torch._dynamo.reset()
    counters.clear()
    layers = [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softsign, nn.Mish, nn.Hardswish,
              nn.Hardtanh, nn.LogSigmoid, nn.Tanhshrink]

    class Wrapper(nn.Module):  # one class and code object, a different inner module type per model
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) + 1

    x = torch.randn(2, 3)
    for layer in layers:
        model = Wrapper(layer())
        compiled = Compiled(model, layer.__name__)
        torch.testing.assert_close(compiled(x), model(x))
        assert compiled.active
    assert counters["stats"]["unique_graphs"] == len(layers)  # one graph per model, none left to eager

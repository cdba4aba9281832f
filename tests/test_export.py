"""``attnvision export``: ONNX and TorchScript files of trained checkpoints, the preprocessing they
record, their outputs against PyTorch's, and clear refusals.

Coverage of the registries: every attention module (and two composed gates) on resnet20, every
head on resnet20, and every model family with its default options, with random weights on 6
random 28×28 images (32×32 for ViT's 16-pixel patches), exported with a dynamic batch, the
stricter case: verified one image per call and all 6 in one call. Where the ONNX exporter cannot
export a model, the error must name the operator and the fix, and the fix (TorchScript) must work.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from attnvision import create_model, list_attn, list_heads, list_models
from attnvision.checkpoint import load_checkpoint, save_checkpoint
from attnvision.cli import app
from attnvision.config import TrainConfig
from attnvision.evaluate import load_run
from attnvision.exported import METADATA_FILE, ExportError, export_model, load_exported, verify
from attnvision.train import train

README = Path(__file__).resolve().parents[1] / "README.md"
METADATA = {"mean": [0.5], "std": [0.25]}
UNFOLD = "operator Unfold .*--format torchscript"
ONNX_REFUSED = {  # what the TorchScript-based ONNX exporter cannot export, and the operator its error names
    "sasa": UNFOLD, "halo": UNFOLD, "bottleneck": UNFOLD, "sanet20": UNFOLD,
    "dram": "operator adaptive_avg_pool2d .*divides the input size.*--format torchscript",
}
MODELS = ["resnet20", "resnet18", "resnet50", "attention56", "sanet20", "evanet20", "vit_tiny", "dram"]
SAME_CODE = {"resnet32": "resnet20", "resnet44": "resnet20", "resnet56": "resnet20", "resnet110": "resnet20",
             "resnet34": "resnet18", "resnet101": "resnet50", "attention92": "attention56"}  # deeper, same blocks


def exports_and_matches(model: torch.nn.Module, format: str, dynamic_batch: bool = True, side: int = 28) -> dict:
    """Export ``model`` and verify it on 6 random images (``verify`` raises beyond the tolerance)."""
    torch.manual_seed(0)
    images = torch.randn(6, model.in_chans, side, side)
    data = export_model(model.eval(), images, format, dynamic_batch, METADATA)
    result = verify(load_exported(data, format), model, images, dynamic_batch)
    assert result["max_abs_diff"] <= result["tolerance"] and result["top1_agreement"] == 6
    return result


@pytest.mark.parametrize("attn", list_attn() + ["gate:channel=se,spatial=cbam",
                                                 "gate:channel=eca,spatial=coord,order=parallel"])
def test_every_attention_module_exports_to_onnx_or_names_the_operator(attn, capfd):
    # aa takes no stride: stage 1 only; a refused module meets its operator in stage 1 as well, in a third of the time
    one_stage = attn == "aa" or attn in ONNX_REFUSED
    model = create_model("resnet20", 10, attn=attn, in_chans=1, **({"attn_stages": [1]} if one_stage else {}))
    if attn not in ONNX_REFUSED:
        exports_and_matches(model, "onnx")
        return
    with pytest.raises(ExportError, match=ONNX_REFUSED[attn]):
        exports_and_matches(model, "onnx")
    assert "Torch IR graph" not in capfd.readouterr().out  # the exporter's graph dump is kept off the terminal
    # the fix the message gives is tested on sanet20, built of SASA layers


@pytest.mark.parametrize("head", list_heads())
def test_every_head_exports_to_onnx(head):
    exports_and_matches(create_model("resnet20", 10, head=head, in_chans=1), "onnx")


def test_every_model_family_is_covered():
    assert set(list_models()) == set(MODELS) | set(SAME_CODE)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_exports_to_onnx_or_names_the_operator(name):
    model, side = create_model(name, 10, in_chans=1), 32 if name == "vit_tiny" else 28
    if name not in ONNX_REFUSED:
        exports_and_matches(model, "onnx", side=side)
        return
    with pytest.raises(ExportError, match=ONNX_REFUSED[name]):
        exports_and_matches(model, "onnx", side=side)
    exports_and_matches(model, "torchscript", dynamic_batch=False, side=side)


def test_label_sequence_models_export_their_inference_path():
    """DRAM and the show-attend-tell head take targets only in training; eval mode decodes greedily
    from emission means, so the exported graph is deterministic and equals forward(x)."""
    exports_and_matches(create_model("resnet20", 10, head="sat", in_chans=1), "torchscript")
    # DRAM's retina builds its sampling grid at the traced batch size: a dynamic batch is refused
    # with the reason and the fix, a fixed one works (test_every_model_exports_...)
    with pytest.raises(ExportError, match="batch size 1: .*traced at batch size 2.*without --dynamic-batch"):
        exports_and_matches(create_model("dram", 10, in_chans=1), "torchscript")


def test_verify_catches_a_wrong_export():
    model = create_model("resnet20", 10, in_chans=1).eval()
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        offset = model(images).abs().max().item() * 1e-3  # 10× the relative tolerance
    with pytest.raises(ExportError, match="differ from PyTorch's by up to .* at batch size 1"):
        verify(lambda x: model(x) + offset, model, images, dynamic_batch=False)
    with pytest.raises(ExportError, match="fails at batch size 4: .*without --dynamic-batch"):
        verify(lambda x: model(x.view(1, 1, 28, 28)), model, images, dynamic_batch=True)


# A trained run through the command line


@pytest.fixture(scope="module")
def run(fmnist_dir, tmp_path_factory) -> Path:
    """A resnet20 + CBAM run (CBAM: adaptive max pooling in its channel gate), one short epoch."""
    out = tmp_path_factory.mktemp("export") / "run"
    train(TrainConfig(data_dir=str(fmnist_dir), val_size=100, epochs=1, batch_size=64, lr=0.05, train_subset=128,
                      attn="cbam", out=str(out), accelerator="cpu"), progress=False)
    return out


def export(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def said(result) -> str:
    """What a command printed, as one line (rich wraps long lines at the terminal's width)."""
    return " ".join(result.output.split())


def test_cli_onnx_records_preprocessing_and_matches_pytorch(run, fmnist_dir, tmp_path):
    result = export("--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "model.onnx"), "--dynamic-batch",
                    "--data-dir", str(fmnist_dir), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 32 and report["top1_agreement"] == 32
    assert report["max_abs_diff"] <= report["tolerance"] < 0.01  # trained logits are O(10)

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    cfg, bundle, model, _, _ = load_run(run / "best.pt", str(fmnist_dir))
    assert meta == report["metadata"]
    assert (meta["mean"], meta["std"], meta["class_names"]) == (list(bundle.mean), list(bundle.std), bundle.class_names)
    assert meta["input_size"] == [1, 28, 28] and meta["task"] == "single" and meta["batch_size"] is None
    assert (meta["model"], meta["attn"], meta["head"]) == ("resnet20", "cbam", None)
    assert session.get_inputs()[0].shape == ["batch", 1, 28, 28]

    # the recorded constants applied to raw pixels, as a server would, give PyTorch's logits
    pixels = bundle.test.images[:5].numpy().astype(np.float32) / 255
    x = (pixels - np.float32(meta["mean"])[:, None, None]) / np.float32(meta["std"])[:, None, None]
    with torch.no_grad():
        expected = model.cpu()(torch.from_numpy(x))
    torch.testing.assert_close(torch.from_numpy(session.run(["logits"], {"image": x})[0]), expected,
                               rtol=1e-4, atol=1e-4)

    printed = export("--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "fixed.onnx"),
                     "--data-dir", str(fmnist_dir))
    assert printed.exit_code == 0, printed.output
    assert "batch size 1" in said(printed) and "verified on 32 test images: max |exported - PyTorch| =" in said(printed)
    fixed = ort.InferenceSession(str(tmp_path / "fixed.onnx"), providers=["CPUExecutionProvider"])
    assert fixed.get_inputs()[0].shape == [1, 1, 28, 28]


def test_cli_torchscript_records_preprocessing(run, fmnist_dir, tmp_path):
    result = export("--checkpoint", str(run / "best.pt"), "--format", "torchscript", "--out",
                    str(tmp_path / "model.pt"), "--data-dir", str(fmnist_dir), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["max_abs_diff"] <= report["tolerance"] and report["metadata"]["batch_size"] == 1
    extra = {METADATA_FILE: ""}
    scripted = torch.jit.load(str(tmp_path / "model.pt"), _extra_files=extra)
    assert json.loads(extra[METADATA_FILE]) == report["metadata"]
    _, bundle, model, _, _ = load_run(run / "best.pt", str(fmnist_dir))
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model.cpu()(x))


def test_cli_bad_input_is_one_line_and_writes_nothing(run, fmnist_dir, tmp_path):
    missing = export("--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx"))
    assert missing.exit_code == 2 and "checkpoint not found" in said(missing)
    unknown = export("--checkpoint", str(run / "best.pt"), "--format", "tflite", "--out", str(tmp_path / "m.onnx"))
    assert unknown.exit_code == 2 and "unknown --format 'tflite'; valid: onnx, torchscript" in said(unknown)
    folder = export("--checkpoint", str(run / "best.pt"), "--out", str(tmp_path))
    assert folder.exit_code == 2 and "is a folder: give a file name" in said(folder)

    # a checkpoint of a model the ONNX exporter refuses: the run's config and data with DRAM's weights
    state = load_checkpoint(run / "best.pt")
    state["config"].update(model="dram", attn=None)
    state["model"] = create_model("dram", 10, in_chans=1).state_dict()
    save_checkpoint(state, tmp_path / "dram.pt")
    refused = export("--checkpoint", str(tmp_path / "dram.pt"), "--out", str(tmp_path / "m.onnx"),
                     "--data-dir", str(fmnist_dir))
    assert refused.exit_code == 2 and re.search(ONNX_REFUSED["dram"], said(refused))
    for result in (missing, unknown, folder, refused):
        assert result.output.startswith("error:") and "Traceback" not in result.output
    assert not (tmp_path / "m.onnx").exists()


def readme_snippet() -> str:
    """The Python block of the README's export section."""
    section = README.read_text().split("## Export and serve a trained model", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_inference_snippet_predicts_as_pytorch(run, fmnist_dir, tmp_path, monkeypatch, capsys):
    assert export("--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "model.onnx"),
                  "--data-dir", str(fmnist_dir)).exit_code == 0
    _, bundle, model, _, _ = load_run(run / "best.pt", str(fmnist_dir))
    Image.fromarray(bundle.test.images[0, 0].numpy()).save(tmp_path / "image.png")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    namespace: dict = {}
    exec(compile(readme_snippet(), str(README), "exec"), namespace)
    x = (bundle.test.images[:1].float() / 255 - bundle.mean[0]) / bundle.std[0]
    with torch.no_grad():
        expected = model.cpu()(x)
    torch.testing.assert_close(torch.from_numpy(namespace["logits"]), expected, rtol=1e-4, atol=1e-4)
    assert capsys.readouterr().out.strip() == bundle.class_names[int(expected.argmax())]


def test_profile_times_the_exported_model_in_onnxruntime():
    from attnvision.profile import profile_model

    small = {"img_size": 28, "in_chans": 1, "num_classes": 10, "repeats": 1, "warmup": 0}
    result = profile_model("resnet20", attn="cbam", batch_sizes=(1, 3), runtimes=["onnxruntime"], **small)
    assert result["export_time_s"] > 0 and result["latency_ms_b3"] > 0
    assert result["onnxruntime_latency_ms_b1"] > 0 and result["onnxruntime_latency_ms_b3"] > 0  # one dynamic graph
    refused = profile_model("resnet20", attn="sasa", attn_stages=[1], batch_sizes=(2,), runtimes=["onnxruntime"],
                            **small)
    assert re.search(UNFOLD, refused["onnxruntime_error"]) and "onnxruntime_latency_ms_b2" not in refused
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; valid: onnxruntime"):
        profile_model("resnet20", runtimes=["tensorrt"], **small)

    table = CliRunner().invoke(app, ["profile", "--model", "resnet20", "--img-size", "28", "--in-chans", "1",
                                     "--num-classes", "10", "--repeats", "1", "--runtime", "onnxruntime"])
    assert table.exit_code == 0, table.output
    for row in ("onnxruntime latency, batch 1", "onnxruntime latency, batch 32", "ONNX export time",
                "speed-up over PyTorch eager"):
        assert row in " ".join(table.output.split())
    unknown = CliRunner().invoke(app, ["profile", "--model", "resnet20", "--runtime", "tensorrt"])
    assert unknown.exit_code == 2 and "unknown runtime 'tensorrt'" in unknown.output

"""The training-free max-pooling boost (CSRA Fig. 1)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from attnvision import create_model
from attnvision.boost import avg_max_scores, boost, fixed_lambda
from attnvision.cli import app
from attnvision.config import TrainConfig
from attnvision.train import train


class NullFabric:
    def autocast(self):
        return torch.autocast("cpu", enabled=False)


def batches(x, y, size=3):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def test_avg_is_the_model_output_and_max_is_the_best_location():
    torch.manual_seed(0)
    model = create_model("resnet20", 5, in_chans=1).eval()
    x, y = torch.randn(7, 1, 13, 11), torch.arange(7) % 5
    y_avg, y_max, targets = avg_max_scores(NullFabric(), model, batches(x, y))
    with torch.no_grad():
        torch.testing.assert_close(y_avg, model(x), rtol=1e-5, atol=1e-5)
        feats = model.forward_features(x)  # (7, 64, 4, 3)
        per_location = torch.stack([model.head.fc(feats[:, :, i, j]) for i in range(feats.shape[2])
                                    for j in range(feats.shape[3])], dim=2)
    torch.testing.assert_close(y_max, per_location.amax(2), rtol=1e-5, atol=1e-5)
    assert torch.equal(targets, y)


def test_needs_a_gap_head():
    model = create_model("resnet20", 5, in_chans=1, head="csra").eval()
    with pytest.raises(ValueError, match="GAP"):
        avg_max_scores(NullFabric(), model, batches(torch.randn(2, 1, 8, 8), torch.zeros(2)))


def test_fixed_lambda_follows_the_paper():
    assert fixed_lambda("resnet50") == 0.02 and fixed_lambda("vit_tiny") == 0.2


def test_boost_report_on_a_trained_checkpoint(fmnist_dir, tmp_path):
    metrics = train(TrainConfig(data_dir=str(fmnist_dir), val_size=100, epochs=1, batch_size=32, lr=0.05,
                                out=str(tmp_path / "run"), accelerator="cpu"), progress=False)
    result = boost(tmp_path / "run" / "best.pt", lambdas=(0.1, 0.5))
    assert result["baseline"] == pytest.approx(metrics["test"]["acc"], abs=1e-9)
    assert set(result["test_sweep"]) == {"0.0", "0.02", "0.1", "0.5"}
    chosen = result["chosen_lambda"]
    assert result["val_sweep"][str(chosen)] == max(result["val_sweep"].values())
    assert result["boosted"] == result["test_sweep"][str(chosen)]
    assert result["fixed_lambda"] == 0.02 and result["fixed"] == result["test_sweep"]["0.02"]

    cli = CliRunner().invoke(app, ["boost", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--lambdas", "0.1,0.5",
                                   "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["boosted"] == result["boosted"]

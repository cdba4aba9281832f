"""A run rebuilt and scored: the model and data a ``TrainConfig`` describes, the loss it trains
with, predictions over a split, and the metrics the trainer, ``eval``, ``boost``, ``explain`` and
the study all compute the same way.

The checkpoint is chosen on the validation split by ``selection_metric`` (top-1 accuracy for
single-label data, mAP for multi-label data). Everything here reads runs; nothing trains, so what
only reads runs (explanations, reports) stands on this module and never on the trainer.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from .backbones import create_model
from .backbones.weights import state_dict_differences
from .checkpoint import load_checkpoint
from .compiled import Compiled
from .config import TrainConfig
from .data import BatchLoader, DatasetBundle, ShardSplit, load_dataset
from .losses import AsymmetricLoss, BCEWithLogits
from .metrics import accuracy, multilabel_metrics

SPLITS = ("train", "val", "test")


def load_bundle(cfg: TrainConfig) -> DatasetBundle:
    """The run's data: its dataset, validation split and training subset."""
    bundle = load_dataset(cfg.data, data_dir=cfg.data_dir, val_size=cfg.val_size, seed=cfg.split_seed,
                          stream=cfg.stream, **cfg.data_kw)
    if cfg.train_subset is not None:
        bundle.train = bundle.train.subset(torch.arange(min(cfg.train_subset, len(bundle.train))))
    if cfg.permute_labels:
        if isinstance(bundle.train, ShardSplit):
            raise ValueError("--permute-labels reorders the training labels, which shards hold inside their tar files: "
                             "pass --data-dir with the dataset's own files")
        order = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(cfg.split_seed))
        bundle.train = replace(bundle.train, targets=bundle.train.targets[order])
    return bundle


def build_model(cfg: TrainConfig, bundle: DatasetBundle) -> nn.Module:
    return create_model(cfg.model, bundle.num_classes, attn=cfg.attn, head=cfg.head,
                        in_chans=bundle.in_chans, **cfg.model_kw)


def build_loss(cfg: TrainConfig, task: str) -> nn.Module:
    name = cfg.loss or ("ce" if task == "single" else "bce")
    valid = {"single": ("ce",), "multilabel": ("bce", "asl")}[task]
    if name not in valid:
        raise ValueError(f"loss '{name}' does not fit {task} data; valid: {', '.join(valid)}")
    if name == "ce":
        return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    return BCEWithLogits() if name == "bce" else AsymmetricLoss()


def selection_metric(task: str) -> str:
    """The validation metric that picks the best checkpoint."""
    return "acc" if task == "single" else "mAP"


def task_metrics(task: str, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy (%) for single-label data; mAP, CP, CR, CF1, OP, OR, OF1 and their top-3
    variants (%) for multi-label data."""
    if task == "single":
        return {"acc": accuracy(logits, targets)}
    return {k: v for k, v in multilabel_metrics(logits, targets).items() if isinstance(v, float)}


def split_scores(logits: torch.Tensor, targets: torch.Tensor, loss_fn: nn.Module, task: str) -> dict:
    """Loss and ``task_metrics`` of a split's logits."""
    return {"loss": loss_fn(logits, targets).item(), **task_metrics(task, logits, targets)}


def gather(fabric, t: torch.Tensor) -> torch.Tensor:
    """Concatenate per-rank tensors of different lengths along dim 0, in rank order."""
    if fabric.world_size == 1:
        return t
    sizes = fabric.all_gather(torch.tensor([len(t)], device=t.device)).flatten().tolist()
    padded = torch.cat([t, t.new_zeros((max(sizes) - len(t),) + t.shape[1:])])
    everything = fabric.all_gather(padded)
    return torch.cat([everything[r, :n] for r, n in enumerate(sizes)])


@torch.no_grad()
def predict(fabric, model: nn.Module, loader: BatchLoader, hflip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits float32 (N, K) and targets of a whole split, in split order (sharded over ranks,
    gathered). ``hflip``: the mean of the logits of each image and its mirror image (test-time
    augmentation; ``TrainConfig.tta_hflip``).

    ``model`` is the bare module, not the DDP wrapper: ranks may see different batch counts here,
    and DDP's forward would wait on collectives the other ranks never join."""
    model.eval()
    logits, targets = [], []
    for x, y in loader:
        with fabric.autocast():
            out = model(x).float()
            if hflip:
                out = (out + model(x.flip(3)).float()) / 2
        logits.append(out)
        targets.append(y)
    return gather(fabric, torch.cat(logits)), gather(fabric, torch.cat(targets))


def evaluate(fabric, model: nn.Module, loader: BatchLoader, loss_fn: nn.Module, task: str,
             hflip: bool = False) -> dict:
    """Loss and ``task_metrics`` over a whole split (see ``predict``)."""
    return split_scores(*predict(fabric, model, loader, hflip), loss_fn, task)


def split_loader(cfg: TrainConfig, bundle: DatasetBundle, split: str, fabric) -> BatchLoader:
    """An in-order, unaugmented loader over this rank's share of one split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
    return BatchLoader(getattr(bundle, split), cfg.batch_size * 2, mean=bundle.mean, std=bundle.std, train=False,
                       rank=fabric.global_rank, world_size=fabric.world_size, device=fabric.device,
                       channels_last=cfg.channels_last, workers=cfg.workers)


def load_model_state(model: nn.Module, state_dict: dict, path: str | Path) -> None:
    """``model.load_state_dict`` whose error summarises the key differences (counts, a few names)."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError:
        raise ValueError(f"{path}: weights do not fit the model its config describes "
                         f"({state_dict_differences(model, state_dict)}); was it written by another "
                         "version of attnvision?") from None


def evaluated_weights(state: dict) -> dict:
    """The weights a checkpoint is evaluated with: the moving average when the run kept one
    (``TrainConfig.ema_decay``), else the trained weights."""
    return state["ema"] if "ema" in state else state["model"]


def load_run(path: str | Path, data_dir: str | None = None):
    """The config, data and trained model (``evaluated_weights``) of a checkpoint, and a
    single-process Fabric to run it on. Returns (cfg, bundle, model, fabric, state); the model is
    in eval mode on ``fabric.device``."""
    from lightning.fabric import Fabric

    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"])
    if data_dir is not None:
        cfg.data_dir = data_dir
    bundle = load_bundle(cfg)
    model = build_model(cfg, bundle)
    load_model_state(model, evaluated_weights(state), path)
    fabric = Fabric(accelerator="auto", devices=1, precision=cfg.precision)
    full_fp32_on_cuda(cfg.precision)
    model = model.to(fabric.device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    return cfg, bundle, model.eval(), fabric, state


def full_fp32_on_cuda(precision: str) -> None:
    """With ``precision="32-true"``, CUDA convolutions and matrix products run in full fp32. PyTorch
    lets cuDNN convolutions use TF32 (a 10-bit mantissa) by default, so a "32-true" run on a GPU
    would differ from the same run on a CPU by far more than round-off; the mixed precisions are
    left as Fabric sets them."""
    if precision == "32-true":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def evaluate_checkpoint(path: str | Path, data_dir: str | None = None, split: str = "test",
                        compile: bool = False) -> dict:
    """Rebuild the model and data of a checkpoint and evaluate one split (single process); with
    ``compile``, through torch.compile (``compiled.Compiled``: eagerly where compilation fails)."""
    cfg, bundle, model, fabric, state = load_run(path, data_dir)
    if compile:
        model = Compiled(model, f"{cfg.model} + {cfg.attn or 'no attention'}")
    loader = split_loader(cfg, bundle, split, fabric)
    result = evaluate(fabric, model, loader, build_loss(cfg, bundle.task), bundle.task, cfg.tta_hflip)
    return {"checkpoint": str(path), "split": split, "epoch": state["epoch"], **result}

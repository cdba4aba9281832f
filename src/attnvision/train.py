"""Training and evaluation on top of Lightning Fabric.

Fabric supplies devices, precision (e.g. ``bf16-mixed`` on GPU) and DDP (multi-GPU, multi-node,
or several CPU processes over gloo); everything else is a plain PyTorch loop:

    data (in memory) → TensorLoader (batched augmentation) → model → loss → Fabric backward → step

One run folder holds ``config.yaml``, ``log.csv`` (one row per epoch), TensorBoard events,
``last.pt`` (every epoch), ``best.pt`` (best validation score) and ``metrics.json``.
The checkpoint is chosen on the validation split (top-1 accuracy for single-label data, mAP for
multi-label data); the test split is evaluated once, with the best-validation weights, at the end.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import yaml
from torch import nn
from tqdm import tqdm

from .backbones import create_model
from .checkpoint import load_checkpoint, save_checkpoint
from .data import DatasetBundle, TensorLoader, load_dataset
from .losses import AsymmetricLoss, BCEWithLogits
from .metrics import accuracy, multilabel_metrics
from .profile import count_macs, count_params


@dataclass
class TrainConfig:
    """Everything that defines a run. Saved in the run folder and in every checkpoint."""

    data: str = "fashion-mnist"
    data_dir: str | None = None
    data_kw: dict = field(default_factory=dict)  # dataset-specific, e.g. {"canvas_size": 64}
    task: str | None = None  # "single" or "multilabel", checked against the dataset; None: the dataset's
    val_size: int | None = None  # None: the dataset's default (5,000 for Fashion-MNIST)
    split_seed: int = 0  # fixed across run seeds so that all runs share one validation split
    train_subset: int | None = None  # use only the first N training samples (short recipes)
    model: str = "resnet20"
    attn: str | None = None
    head: str | None = None  # None: the model's own head (gap for ResNets, eva for evanet20)
    model_kw: dict = field(default_factory=dict)  # e.g. {"width": "large", "attn_kw": {...}}
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    lr: float = 0.1
    head_lr: float | None = None  # a separate LR for the head (CSRA: 0.1 head, 0.01 backbone)
    momentum: float = 0.9
    weight_decay: float = 5e-4  # not applied to biases and normalisation parameters
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  # "cosine" (to 0) or "step" (× step_gamma every step_epochs)
    step_epochs: int = 4
    step_gamma: float = 0.1
    loss: str | None = None  # None: "ce" for single-label, "bce" for multi-label; or "asl"
    label_smoothing: float = 0.0
    crop_pad: int = 2
    hflip: bool = True
    seed: int = 0
    channels_last: bool = True
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    out: str = "runs/default"

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)

    def validate(self) -> None:
        """Fail fast, before any data is loaded, on names and choices that cannot work."""
        from .attention import ATTENTION
        from .backbones import MODELS
        from .data import DATASETS
        from .heads import HEADS

        DATASETS.get(self.data)
        MODELS.get(self.model)
        if self.attn:
            ATTENTION.get(self.attn)
        if self.head:
            HEADS.get(self.head)
        for name, value, valid in (("optimizer", self.optimizer, ("sgd", "adamw")),
                                   ("schedule", self.schedule, ("cosine", "step")),
                                   ("loss", self.loss, (None, "ce", "bce", "asl")),
                                   ("task", self.task, (None, "single", "multilabel")),
                                   # "-true" modes would also need inputs cast to the weights' dtype
                                   ("precision", self.precision, ("32-true", "bf16-mixed", "16-mixed"))):
            if value not in valid:
                raise ValueError(f"unknown {name} '{value}'; valid: {', '.join(v for v in valid if v)}")


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def param_groups(model: nn.Module, weight_decay: float, lr: float, head_lr: float | None = None) -> list[dict]:
    """Weight decay on weight matrices and kernels only: biases and norm scales/shifts (ndim ≤ 1)
    are excluded, as in Goyal et al. 2017 and most modern recipes. With ``head_lr`` the head's
    parameters get their own learning rate."""
    groups = []
    head_ids = {id(p) for p in model.head.parameters()} if head_lr is not None else set()
    for group_lr, is_head in ((lr, False), (head_lr, True)):
        params = [p for p in model.parameters() if p.requires_grad and (id(p) in head_ids) == is_head]
        groups += [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, "lr": group_lr},
                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": group_lr}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.lr, cfg.head_lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int):
    """LR multiplier per step: linear warmup to 1 over ``warmup_epochs``, then cosine decay to 0 at
    the last step, or a step decay by ``step_gamma`` every ``step_epochs`` epochs."""
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    total_steps = cfg.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if cfg.schedule == "step":
            return cfg.step_gamma ** (step // (cfg.step_epochs * steps_per_epoch))
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


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


def build_model(cfg: TrainConfig, bundle: DatasetBundle) -> nn.Module:
    return create_model(cfg.model, bundle.num_classes, attn=cfg.attn, head=cfg.head,
                        in_chans=bundle.in_chans, **cfg.model_kw)


def load_bundle(cfg: TrainConfig) -> DatasetBundle:
    bundle = load_dataset(cfg.data, data_dir=cfg.data_dir, val_size=cfg.val_size, seed=cfg.split_seed,
                          **cfg.data_kw)
    if cfg.train_subset:
        bundle.train = bundle.train.subset(torch.arange(min(cfg.train_subset, len(bundle.train))))
    return bundle


def gather(fabric, t: torch.Tensor) -> torch.Tensor:
    """Concatenate per-rank tensors of different lengths along dim 0, in rank order."""
    if fabric.world_size == 1:
        return t
    sizes = fabric.all_gather(torch.tensor([len(t)], device=t.device)).flatten().tolist()
    padded = torch.cat([t, t.new_zeros((max(sizes) - len(t),) + t.shape[1:])])
    everything = fabric.all_gather(padded)
    return torch.cat([everything[r, :n] for r, n in enumerate(sizes)])


def task_metrics(task: str, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy (%) for single-label data; mAP, CP, CR, CF1, OP, OR, OF1 and their top-3
    variants (%) for multi-label data."""
    if task == "single":
        return {"acc": accuracy(logits, targets)}
    return {k: v for k, v in multilabel_metrics(logits, targets).items() if isinstance(v, float)}


@torch.no_grad()
def evaluate(fabric, model: nn.Module, loader: TensorLoader, loss_fn: nn.Module, task: str) -> dict:
    """Loss and ``task_metrics`` over a whole split (sharded over ranks, gathered).

    ``model`` is the bare module, not the DDP wrapper: ranks may see different batch counts here,
    and DDP's forward would wait on collectives the other ranks never join."""
    model.eval()
    logits, targets = [], []
    for x, y in loader:
        with fabric.autocast():
            logits.append(model(x).float())
        targets.append(y)
    logits, targets = gather(fabric, torch.cat(logits)), gather(fabric, torch.cat(targets))
    return {"loss": loss_fn(logits, targets).item(), **task_metrics(task, logits, targets)}


def param_checksum(model: nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def _write_log(path: Path, history: list[dict]) -> None:
    if not history:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def train(cfg: TrainConfig, resume: str | Path | None = None, progress: bool = True) -> dict:
    """Train (or resume) a run; returns the metrics written to ``metrics.json``.

    ``resume`` is a run folder: its ``last.pt`` supplies config, weights, optimizer, schedule,
    RNG and history, and training continues at the next epoch exactly as if never stopped.
    """
    from lightning.fabric import Fabric
    from lightning.fabric.loggers import TensorBoardLogger

    state = None
    if resume is not None:
        state = load_checkpoint(Path(resume) / "last.pt")
        cfg = TrainConfig.from_dict(state["config"])
        cfg.out = str(resume)
    cfg.validate()
    out = Path(cfg.out)

    fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                    strategy=cfg.strategy, precision=cfg.precision,
                    loggers=TensorBoardLogger(str(out), name="", version="tb"))
    fabric.launch()
    fabric.seed_everything(cfg.seed, verbose=False)
    if fabric.device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    bundle = load_bundle(cfg)
    if cfg.task not in (None, bundle.task):
        raise ValueError(f"--task {cfg.task} but dataset '{cfg.data}' is {bundle.task}")
    task, metric = bundle.task, selection_metric(bundle.task)
    loss_fn = build_loss(cfg, task)
    model = build_model(cfg, bundle)
    macs = count_macs(model, (bundle.in_chans, *bundle.img_size))
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = build_optimizer(model, cfg)

    train_loader = TensorLoader(bundle.train, cfg.batch_size, mean=bundle.mean, std=bundle.std, train=True,
                                crop_pad=cfg.crop_pad, hflip=cfg.hflip, seed=cfg.seed, rank=fabric.global_rank,
                                world_size=fabric.world_size, device=fabric.device, channels_last=cfg.channels_last)
    val_loader = split_loader(cfg, bundle, "val", fabric)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(bundle.train)} training images are fewer than one batch per process "
                         f"({cfg.batch_size} × {fabric.world_size}): lower --batch-size")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))

    start_epoch, history, best, train_time = 0, [], {"epoch": -1, f"val_{metric}": -math.inf}, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start_epoch, history, best, train_time = state["epoch"], state["history"], state["best"], state["train_time_s"]
    model, optimizer = fabric.setup(model, optimizer)

    if fabric.global_rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    dataset_info = {"task": task, "num_classes": bundle.num_classes, "in_chans": bundle.in_chans,
                    "class_names": bundle.class_names, "mean": list(bundle.mean), "std": list(bundle.std)}

    def checkpoint(epoch: int) -> dict:
        return {"config": asdict(cfg), "model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch,
                **({"cuda_rng": torch.cuda.get_rng_state_all()} if fabric.device.type == "cuda" else {}),
                "history": history, "best": best, "train_time_s": train_time, "dataset": dataset_info}

    wall_start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=fabric.device, dtype=torch.float64)
        correct = torch.zeros((), device=fabric.device, dtype=torch.long)
        seen, t0 = 0, time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not progress or fabric.global_rank != 0, mininterval=0.5)
        for step, (x, y) in enumerate(bar):
            with fabric.autocast():
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            if task == "single":
                correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if step % 10 == 9 or step == steps_per_epoch - 1:
                # host sync only every 10 steps; all ranks decide together, or a lone rank that stops
                # would leave the others waiting in the next all-reduce
                mean_loss = loss_sum.item() / seen
                if not math.isfinite(fabric.all_reduce(loss_sum.clone(), reduce_op="sum").item()):  # in place
                    raise DivergedError(
                        f"loss became {mean_loss} at epoch {epoch + 1}, step {step + 1}; "
                        f"the last good checkpoint is kept at {out / 'last.pt'} (epoch {epoch}). "
                        "Lower --lr or raise --warmup-epochs."
                    )
                bar.set_postfix(loss=f"{mean_loss:.4f}", **({"acc": f"{100 * correct.item() / seen:.2f}"}
                                                             if task == "single" else {}),
                                img_s=f"{seen * fabric.world_size / (time.perf_counter() - t0):.0f}")
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        train_stats = fabric.all_reduce(torch.stack([loss_sum, correct.double(), torch.tensor(
            float(seen), device=fabric.device, dtype=torch.float64)]), reduce_op="sum")
        val = evaluate(fabric, model.module, val_loader, loss_fn, task)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": (train_stats[0] / train_stats[2]).item(),
               **({"train_acc": (100 * train_stats[1] / train_stats[2]).item()} if task == "single" else {}),
               **{f"val_{k}": v for k, v in val.items()}, "epoch_time_s": epoch_time,
               "images_per_s": train_stats[2].item() / epoch_time}
        history.append(row)
        is_best = val[metric] > best[f"val_{metric}"]
        if is_best:
            best = {"epoch": epoch + 1, **{f"val_{k}": v for k, v in val.items()}}
        fabric.log_dict({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
        if fabric.global_rank == 0:
            ckpt = checkpoint(epoch + 1)
            save_checkpoint(ckpt, out / "last.pt")
            if is_best:
                save_checkpoint(ckpt, out / "best.pt")
            _write_log(out / "log.csv", history)
            train_acc = f"train {row['train_acc']:.2f}%  " if task == "single" else ""
            print(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  {train_acc}"
                  f"val {metric} {val[metric]:.2f}%  {row['images_per_s']:.0f} img/s  {epoch_time:.1f}s", flush=True)
        fabric.barrier()

    best_state = load_checkpoint(out / "best.pt", map_location=fabric.device)
    model.module.load_state_dict(best_state["model"])
    test = evaluate(fabric, model.module, split_loader(cfg, bundle, "test", fabric), loss_fn, task)
    metrics = {
        "status": "completed",
        "run": str(out),
        "model": cfg.model, "attn": cfg.attn, "head": cfg.head, "data": cfg.data, "task": task, "seed": cfg.seed,
        "selection_metric": metric,
        "params": count_params(model.module),
        "macs": macs,
        "epochs": cfg.epochs,
        "final": history[-1],
        "best_val": best,
        "test": {"checkpoint": "best.pt", "epoch": best["epoch"], **test},
        "train_time_s": train_time,
        "wall_time_s": time.perf_counter() - wall_start,
        "images_per_s": sum(r["images_per_s"] * r["epoch_time_s"] for r in history) / train_time,
        "world_size": fabric.world_size,
    }
    if fabric.world_size > 1:
        sums = fabric.all_gather(torch.tensor([param_checksum(model.module)], device=fabric.device)).flatten()
        metrics["rank_param_checksums"] = sums.tolist()
    if fabric.global_rank == 0:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def load_run(path: str | Path, data_dir: str | None = None):
    """The config, data and trained model of a checkpoint, and a single-process Fabric to run it on.
    Returns (cfg, bundle, model, fabric, state); the model is in eval mode on ``fabric.device``."""
    from lightning.fabric import Fabric

    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"])
    if data_dir is not None:
        cfg.data_dir = data_dir
    bundle = load_bundle(cfg)
    model = build_model(cfg, bundle)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the model its config describes: {e}") from None
    fabric = Fabric(accelerator="auto", devices=1, precision=cfg.precision)
    model = model.to(fabric.device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    return cfg, bundle, model.eval(), fabric, state


def split_loader(cfg: TrainConfig, bundle: DatasetBundle, split: str, fabric) -> TensorLoader:
    """An in-order, unaugmented loader over this rank's share of one split."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split '{split}'; valid: train, val, test")
    return TensorLoader(getattr(bundle, split), cfg.batch_size * 2, mean=bundle.mean, std=bundle.std, train=False,
                        rank=fabric.global_rank, world_size=fabric.world_size, device=fabric.device,
                        channels_last=cfg.channels_last)


def evaluate_checkpoint(path: str | Path, data_dir: str | None = None, split: str = "test") -> dict:
    """Rebuild the model and data of a checkpoint and evaluate one split (single process)."""
    cfg, bundle, model, fabric, state = load_run(path, data_dir)
    loader = split_loader(cfg, bundle, split, fabric)
    result = evaluate(fabric, model, loader, build_loss(cfg, bundle.task), bundle.task)
    return {"checkpoint": str(path), "split": split, "epoch": state["epoch"], **result}

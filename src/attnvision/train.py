"""Training and evaluation on top of Lightning Fabric.

Fabric supplies devices, precision (e.g. ``bf16-mixed`` on GPU) and DDP (multi-GPU, multi-node,
or several CPU processes over gloo); everything else is a plain PyTorch loop:

    data (in memory) → TensorLoader (batched augmentation) → model → loss → Fabric backward → step

One run folder holds ``config.yaml``, ``log.csv`` (one row per epoch), TensorBoard events,
``last.pt`` (every epoch), ``best.pt`` (best validation score), ``metrics.json``,
``test_predictions.pt`` (the test split's logits, float16, and targets) and ``.lock``
(``run_folder.RunLock``, held while a run lasts).
The checkpoint is chosen on the validation split (top-1 accuracy for single-label data, mAP for
multi-label data); the test split is evaluated once, with the best-validation weights, at the end.
"""

from __future__ import annotations

import csv
import io
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
from .backbones.weights import state_dict_differences
from .checkpoint import atomic_torch_save, atomic_write_text, load_checkpoint, save_checkpoint
from .data import DatasetBundle, TensorLoader, load_dataset
from .losses import AsymmetricLoss, BCEWithLogits
from .metrics import accuracy, multilabel_metrics
from .profile import count_macs, count_params
from .run_folder import RunLock, make_run_folder, remove_temp_files


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric option: ``low`` ≤ value ≤ ``high`` (> ``low`` with
    ``above``), finite, and an integer where ``kind`` is int (a float option also takes an int)."""

    kind: type
    low: float | None = None
    high: float | None = None
    above: bool = False

    def problem(self, value) -> str | None:
        """What is wrong with ``value``, or None."""
        want = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            want += f" in {'(' if self.above else '['}{self.low}, {self.high}]"
        elif self.low is not None:
            want += f" {'>' if self.above else '≥'} {self.low}"
        kinds = (int,) if self.kind is int else (int, float)
        if (isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value)
                or (self.low is not None and (value <= self.low if self.above else value < self.low))
                or (self.high is not None and value > self.high)):
            return f"must be {want}, got {value!r}"
        return None


def option(default=None, valid: Range | tuple | None = None, help: str = "", factory=None):
    """A TrainConfig field with its help text and valid values (a Range or a tuple of choices)
    beside it: the help of the ``train`` and ``compare`` flags, and the rule ``TrainConfig.validate``
    applies to CLI flags, config files and resumed runs alike. ``factory`` makes a mutable default."""
    metadata = {"help": help, **({"valid": valid} if valid is not None else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


POSITIVE_INT = Range(int, 1)
SEED = Range(int, 0, 2**32 - 1)  # Lightning's seed_everything replaces seeds outside this with 0


@dataclass
class TrainConfig:
    """Everything that defines a run. Saved in the run folder and in every checkpoint. Each field's
    help is that of its ``attnvision train`` flag (``--data-dir`` for ``data_dir``)."""

    data: str = option("fashion-mnist", help="dataset name (see `attnvision list`)")
    data_dir: str | None = option(None, help="folder with the dataset files (default: $ATTNVISION_DATA, system paths)")
    data_kw: dict = option(factory=dict, help='dataset options as JSON, e.g. \'{"canvas_size": 64}\'')
    task: str | None = option(None, (None, "single", "multilabel"), "single or multilabel: checked against the dataset")
    val_size: int | None = option(None, POSITIVE_INT, "validation images carved from the training set "
                                  "(default: the dataset's, 5000 for Fashion-MNIST)")
    split_seed: int = option(0, SEED, "seed of the train/validation split, fixed across run seeds so that all "
                             "runs share one validation split")
    train_subset: int | None = option(None, POSITIVE_INT, "train on the first N training images only (short recipes)")
    model: str = option("resnet20", help="model name")
    attn: str | None = option(None, help="attention module inside the backbone (none if omitted)")
    head: str | None = option(None, help="classification head (default: the model's own, e.g. gap)")
    model_kw: dict = option(factory=dict, help='more model options as JSON, e.g. \'{"layers": [2, 2, 2], "shortcut": "A"}\'')
    epochs: int = option(15, POSITIVE_INT, "training epochs")
    batch_size: int = option(128, POSITIVE_INT, "images per step (per process)")
    optimizer: str = option("sgd", ("sgd", "adamw"), "sgd (Nesterov momentum) or adamw")
    lr: float = option(0.1, Range(float, 0, above=True), "peak learning rate")
    head_lr: float | None = option(None, Range(float, 0, above=True),
                                   "separate learning rate for the head (CSRA: 0.1 head, 0.01 backbone)")
    momentum: float = option(0.9, Range(float, 0, 1, above=True), "SGD's Nesterov momentum")
    weight_decay: float = option(5e-4, Range(float, 0), "weight decay, not applied to biases and normalisation parameters")
    warmup_epochs: float = option(1.0, Range(float, 0), "linear learning-rate warm-up, in epochs")
    schedule: str = option("cosine", ("cosine", "step"), "cosine (to 0) or step (× step-gamma every step-epochs)")
    step_epochs: int = option(4, POSITIVE_INT, "step schedule: epochs between decays")
    step_gamma: float = option(0.1, Range(float, 0, 1, above=True), "step schedule: factor per decay")
    loss: str | None = option(None, (None, "ce", "bce", "asl"), "ce (single-label default), bce (multi-label default), asl")
    label_smoothing: float = option(0.0, Range(float, 0, 1), "label smoothing of the cross-entropy")
    crop_pad: int = option(2, Range(int, 0), "random-crop padding in pixels (0: no crop)")
    hflip: bool = option(True, help="random horizontal flips")
    seed: int = option(0, SEED, "seed of initialisation, augmentation and batch order")
    channels_last: bool = option(True, help="channels-last memory format")
    # results depend on the thread count (reductions split differently), so a run records it
    threads: int | None = option(None, POSITIVE_INT, "CPU threads of this process (default: torch's, one per core)")
    accelerator: str = option("auto", help="cpu, gpu, auto")
    devices: int = option(1, POSITIVE_INT, "devices (GPUs or CPU processes) per node")
    num_nodes: int = option(1, POSITIVE_INT, "nodes")
    strategy: str = option("auto", help="auto, ddp, …")
    # "-true" modes would also need inputs cast to the weights' dtype
    precision: str = option("32-true", ("32-true", "bf16-mixed", "16-mixed"), "32-true, bf16-mixed, 16-mixed")
    out: str = option("runs/default", help="run folder")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)

    def validate(self) -> None:
        """Fail fast, before any data is loaded, on values, names and choices that cannot work."""
        from .attention import ATTENTION
        from .backbones import MODELS
        from .data import DATASETS
        from .heads import HEADS

        for f in fields(self):
            valid, value = f.metadata.get("valid"), getattr(self, f.name)
            if isinstance(valid, tuple) and value not in valid:
                raise ValueError(f"unknown {f.name} '{value}'; valid: {', '.join(v for v in valid if v)}")
            if isinstance(valid, Range) and not (value is None and f.default is None):
                problem = valid.problem(value)
                if problem:
                    raise ValueError(f"{f.name} {problem}")
        DATASETS.get(self.data)
        MODELS.get(self.model)
        if self.attn:
            ATTENTION.get(self.attn)
        if self.head:
            HEADS.get(self.head)


PREDICTIONS = "test_predictions.pt"


def read_yaml_mapping(path: str | Path, what: str, example: str) -> dict:
    """The mapping a YAML file holds (a run's config.yaml, a study's grid), or a ValueError naming
    the file and, with ``example``, what it should hold."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} {path} must hold a mapping {example}")
    return value


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
    if cfg.train_subset is not None:
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
def predict(fabric, model: nn.Module, loader: TensorLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits float32 (N, K) and targets of a whole split, in split order (sharded over ranks,
    gathered).

    ``model`` is the bare module, not the DDP wrapper: ranks may see different batch counts here,
    and DDP's forward would wait on collectives the other ranks never join."""
    model.eval()
    logits, targets = [], []
    for x, y in loader:
        with fabric.autocast():
            logits.append(model(x).float())
        targets.append(y)
    return gather(fabric, torch.cat(logits)), gather(fabric, torch.cat(targets))


def split_scores(logits: torch.Tensor, targets: torch.Tensor, loss_fn: nn.Module, task: str) -> dict:
    """Loss and ``task_metrics`` of a split's logits."""
    return {"loss": loss_fn(logits, targets).item(), **task_metrics(task, logits, targets)}


def evaluate(fabric, model: nn.Module, loader: TensorLoader, loss_fn: nn.Module, task: str) -> dict:
    """Loss and ``task_metrics`` over a whole split (see ``predict``)."""
    return split_scores(*predict(fabric, model, loader), loss_fn, task)


def param_checksum(model: nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def _write_log(path: Path, history: list[dict]) -> None:
    if not history:
        return
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, text.getvalue())


def load_model_state(model: nn.Module, state_dict: dict, path: str | Path) -> None:
    """``model.load_state_dict`` whose error summarises the key differences (counts, a few names)."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError:
        raise ValueError(f"{path}: weights do not fit the model its config describes "
                         f"({state_dict_differences(model, state_dict)}); was it written by another "
                         "version of attnvision?") from None


def repair_best(out: Path, state: dict) -> None:
    """Make ``best.pt`` hold the best epoch that ``last.pt`` (``state``) records.

    Each epoch writes last.pt before best.pt, so a kill between the two leaves a last.pt whose own
    epoch is the best one next to an older (or no) best.pt: rewrite best.pt from it. Any other
    mismatch is not what a crash leaves, so it is refused rather than reported with wrong weights."""
    path, best_epoch = out / "best.pt", state["best"]["epoch"]
    found = load_checkpoint(path)["epoch"] if path.is_file() else -1  # -1: train's "no best yet"
    if found == best_epoch:
        return
    if best_epoch == state["epoch"]:
        save_checkpoint(state, path)
        return
    holds = f"holds epoch {found}" if found != -1 else "is missing"
    raise ValueError(f"{path} {holds} but {out / 'last.pt'} records epoch {best_epoch} as the best: the run "
                     "folder was changed outside this run; restore its best.pt or start a new run")


def claim_run_folder(fabric, out: Path, state: dict | None) -> RunLock | None:
    """Rank 0 creates and locks ``out``, deletes temporary files a killed write left and, on resume,
    repairs best.pt; a new run refuses a folder that holds a run. All ranks raise the same error when that fails (a rank that stopped alone
    would leave the others waiting). Returns rank 0's lock (None on other ranks)."""
    lock, error = None, None
    if fabric.global_rank == 0:
        try:
            make_run_folder(out)
            lock = RunLock(out)
            remove_temp_files(out)
            if state is not None:
                repair_best(out, state)
            elif (out / "last.pt").is_file() or (out / "metrics.json").is_file():
                raise ValueError(f"run folder {out} holds a run already: continue it with --resume {out}, "
                                 "or pick another --out (nothing is overwritten)")
        except (ValueError, OSError) as e:
            if lock is not None:
                lock.release()
            error = str(e)
    error = fabric.broadcast(error)
    if error:
        raise ValueError(error)
    return lock


def train(cfg: TrainConfig, resume: str | Path | None = None, progress: bool = True,
          epochs: int | None = None) -> dict:
    """Train (or resume) a run; returns the metrics written to ``metrics.json``.

    ``resume`` is a run folder: its ``last.pt`` supplies config, weights, optimizer, schedule,
    RNG and history, and training continues at the next epoch exactly as if never stopped
    (``cfg`` is not used). ``epochs`` (with ``resume`` only) extends the run to that many epochs;
    the LR schedule is then that of the new length, so the LR steps up where a cosine schedule
    had decayed it. The run folder is locked while the run lasts.
    """
    from lightning.fabric import Fabric
    from lightning.fabric.loggers import TensorBoardLogger

    state = None
    if resume is not None:
        state = load_checkpoint(Path(resume) / "last.pt")
        cfg = TrainConfig.from_dict(state["config"])
        cfg.out = str(resume)
        if epochs is not None:
            if epochs < state["epoch"]:
                raise ValueError(f"--epochs {epochs} is fewer than the {state['epoch']} epochs {resume} has "
                                 "already trained; pass more to extend it, or none to finish it")
            cfg.epochs = epochs
    elif epochs is not None:
        raise ValueError("epochs= extends a resumed run; set cfg.epochs for a new one")
    cfg.validate()
    out = Path(cfg.out)

    try:
        fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                        strategy=cfg.strategy, precision=cfg.precision,
                        loggers=TensorBoardLogger(str(out), name="", version="tb"))
    except (RuntimeError, ImportError) as e:  # "No supported gpu backend found!", torch_xla missing for tpu
        raise ValueError(f"cannot run on accelerator '{cfg.accelerator}' with {cfg.devices} device(s), strategy "
                         f"'{cfg.strategy}' here: {e}") from None
    fabric.launch()
    lock = claim_run_folder(fabric, out, state)
    try:
        return _train(fabric, cfg, state, out, progress)
    finally:
        if lock is not None:
            lock.release()


def _train(fabric, cfg: TrainConfig, state: dict | None, out: Path, progress: bool) -> dict:
    """The body of ``train``, run with the run folder claimed."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    fabric.seed_everything(cfg.seed, verbose=False)
    if fabric.device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    bundle = load_bundle(cfg)
    if cfg.task not in (None, bundle.task):
        raise ValueError(f"--task {cfg.task} but dataset '{cfg.data}' is {bundle.task}")
    task, metric = bundle.task, selection_metric(bundle.task)
    if cfg.crop_pad >= min(bundle.img_size):
        raise ValueError(f"crop_pad {cfg.crop_pad} is not smaller than the {bundle.img_size[0]}×{bundle.img_size[1]} "
                         f"images of '{cfg.data}': pass at most {min(bundle.img_size) - 1} (0: no crop)")
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
        load_model_state(model, state["model"], out / "last.pt")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start_epoch, history, best, train_time = state["epoch"], state["history"], state["best"], state["train_time_s"]
    model, optimizer = fabric.setup(model, optimizer)

    if fabric.global_rank == 0:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(asdict(cfg), sort_keys=False))
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
                    kept = (f"the last good checkpoint is kept at {out / 'last.pt'} (epoch {epoch})" if epoch
                            else "no checkpoint was written (this was the first epoch)")
                    raise DivergedError(f"loss became {mean_loss} at epoch {epoch + 1}, step {step + 1}; {kept}. "
                                        "Lower --lr or raise --warmup-epochs.")
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
            # last.pt first: a kill before best.pt is written leaves what resume needs to redo it (repair_best)
            save_checkpoint(ckpt, out / "last.pt")
            if is_best:
                save_checkpoint(ckpt, out / "best.pt")
            _write_log(out / "log.csv", history)
            train_acc = f"train {row['train_acc']:.2f}%  " if task == "single" else ""
            print(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  {train_acc}"
                  f"val {metric} {val[metric]:.2f}%  {row['images_per_s']:.0f} img/s  {epoch_time:.1f}s", flush=True)
        fabric.barrier()

    if best["epoch"] < 1:
        raise DivergedError(f"the validation {metric} was never a finite number, so no best checkpoint exists; "
                            "lower --lr or raise --warmup-epochs")
    best_state = load_checkpoint(out / "best.pt", map_location=fabric.device)
    if best_state["epoch"] != best["epoch"]:  # the lock and repair_best rule this out; a wrong number is worse
        raise ValueError(f"{out / 'best.pt'} holds epoch {best_state['epoch']}, not the best epoch "
                         f"{best['epoch']}: the run folder was changed outside this run")
    model.module.load_state_dict(best_state["model"])
    logits, targets = predict(fabric, model.module, split_loader(cfg, bundle, "test", fabric))
    test = split_scores(logits, targets, loss_fn, task)
    if fabric.global_rank == 0:  # per-image outcomes, for paired tests between runs on the same images
        atomic_torch_save({"split": "test", "logits": logits.half().cpu(), "targets": targets.cpu()},
                          out / PREDICTIONS)
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
        "threads": torch.get_num_threads(),
        "device": str(fabric.device),
    }
    if fabric.world_size > 1:
        sums = fabric.all_gather(torch.tensor([param_checksum(model.module)], device=fabric.device)).flatten()
        metrics["rank_param_checksums"] = sums.tolist()
    if fabric.global_rank == 0:
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
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
    load_model_state(model, state["model"], path)
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

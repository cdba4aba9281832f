"""The trainer: a plain PyTorch loop on top of Lightning Fabric.

Fabric supplies devices, precision (e.g. ``bf16-mixed`` on GPU) and DDP (multi-GPU, multi-node,
or several CPU processes over gloo); everything else is a plain PyTorch loop:

    data (in memory, or files decoded by worker processes) → BatchLoader (batched augmentation)
        → model → loss → Fabric backward → step

``train`` claims the run folder (``run_folder``: its file names and lock), then runs the phases

    set_up → restore (on resume) → per epoch: train_epoch (train_step × steps) → validate → record_epoch
           → save_epoch → score_last_on_test → score_best_on_test → finish (metrics.json)

with the run's progress in one ``Progress`` object: ``checkpoint_state`` (what ``last.pt`` holds)
and ``restore`` (what a resume reads back) sit side by side. What a run *is* lives in ``config``,
how a run is rebuilt and scored in ``evaluate``; nothing outside the trainer needs this module.
The checkpoint is chosen on the validation split (``evaluate.selection_metric``); the test split
is evaluated once, with the best-validation weights, at the end (``test`` in metrics.json), and,
when the best epoch is not the last, once more with the last epoch's weights (``test_final``: what
a recipe that keeps its final weights would report; never used for selection).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from .checkpoint import atomic_torch_save, atomic_write_text, load_checkpoint, save_checkpoint
from .compiled import Compiled
from .config import TrainConfig
from .backbones import load_weights
from .data import Augmentation, BatchLoader, DatasetBundle
from .data.mixing import Mixing, mix_batch
from .ema import WeightEMA
from .evaluate import (build_loss, build_model, evaluate, evaluated_weights, full_fp32_on_cuda, load_bundle,
                       load_model_state, predict, selection_metric, split_loader, split_scores)
from .label_sequence import takes_targets
from .profile import count_macs, count_params
from .run_folder import (BEST, CONFIG, LAST, LOG, METRICS, PREDICTIONS, TENSORBOARD, RunLock, holds_run,
                         make_run_folder, remove_temp_files)


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def param_groups(model: nn.Module, weight_decay: float, lr: float, head_lr: float | None = None) -> list[dict]:
    """Weight decay on weight matrices and kernels only: biases and norm scales/shifts (ndim ≤ 1)
    are excluded, as in Goyal et al. 2017 and most modern recipes. With ``head_lr`` the head's
    parameters get their own learning rate."""
    groups = []
    if head_lr is not None and not hasattr(model, "head"):
        raise ValueError(f"--head-lr sets the learning rate of a model's head, and {type(model).__name__} has none: "
                         "drop --head-lr")
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


ONECYCLE_RISE, ONECYCLE_START, ONECYCLE_END = 0.3, 1 / 25, 1 / 25e4  # torch's OneCycleLR defaults


def lr_factor(cfg: TrainConfig, steps_per_epoch: int):
    """LR multiplier per step (``schedule``):

    - cosine / linear: linear warm-up to 1 over ``warmup_epochs``, then cosine or linear decay to 0
      at the last step;
    - step: warm-up, then × ``step_gamma`` every ``step_epochs`` epochs (counted from step 0), or
      after each epoch listed in ``milestones`` when it lists any;
    - onecycle (Smith & Topin 2019): a linear rise from 1/25 to 1 over the first 30% of steps, then
      cosine decay to 1/25e4 at the last step. Deviations: torch's OneCycleLR rises along a cosine
      too, and the paper also cycles momentum inversely; here momentum stays fixed.
    """
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    total_steps = cfg.epochs * steps_per_epoch
    rise_steps = max(round(ONECYCLE_RISE * total_steps), 1)

    def factor(step: int) -> float:
        if cfg.schedule == "onecycle":
            if step < rise_steps:
                return ONECYCLE_START + (1 - ONECYCLE_START) * step / rise_steps
            progress = min((step - rise_steps) / max(total_steps - rise_steps, 1), 1.0)
            return ONECYCLE_END + (1 - ONECYCLE_END) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if cfg.schedule == "step":
            if cfg.milestones:
                return cfg.step_gamma ** sum(step >= m * steps_per_epoch for m in cfg.milestones)
            return cfg.step_gamma ** (step // (cfg.step_epochs * steps_per_epoch))
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        if cfg.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


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


def repair_best(out: Path, state: dict) -> None:
    """Make ``best.pt`` hold the best epoch that ``last.pt`` (``state``) records.

    Each epoch writes last.pt before best.pt, so a kill between the two leaves a last.pt whose own
    epoch is the best one next to an older (or no) best.pt: rewrite best.pt from it. Any other
    mismatch is not what a crash leaves, so it is refused rather than reported with wrong weights."""
    path, best_epoch = out / BEST, state["best"]["epoch"]
    found = load_checkpoint(path)["epoch"] if path.is_file() else -1  # -1: train's "no best yet"
    if found == best_epoch:
        return
    if best_epoch == state["epoch"]:
        save_checkpoint(state, path)
        return
    holds = f"holds epoch {found}" if found != -1 else "is missing"
    raise ValueError(f"{path} {holds} but {out / LAST} records epoch {best_epoch} as the best: the run "
                     "folder was changed outside this run; restore its best.pt or start a new run")


def claim_run_folder(fabric, out: Path, state: dict | None) -> RunLock | None:
    """Rank 0 creates and locks ``out``, deletes temporary files a killed write left and, on resume,
    repairs best.pt; a new run refuses a folder that holds a run. All ranks raise the same error
    when that fails (a rank that stopped alone would leave the others waiting). Returns rank 0's
    lock (None on other ranks)."""
    lock, error = None, None
    if fabric.global_rank == 0:
        try:
            make_run_folder(out)
            lock = RunLock(out)
            remove_temp_files(out)
            if state is not None:
                repair_best(out, state)
            elif holds_run(out):
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
        state = load_checkpoint(Path(resume) / LAST)
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
                        loggers=TensorBoardLogger(str(out), name="", version=TENSORBOARD))
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


@dataclass
class Progress:
    """How far a run has come: with the model, optimizer, scheduler and RNG states, what ``last.pt``
    holds (``checkpoint_state``) and what a resume reads back (``restore``)."""

    epoch: int  # completed epochs
    history: list[dict]  # log.csv's rows, one per completed epoch
    best: dict  # {"epoch": e, "val_<metric>": ...}: the best validation epoch so far (-1: none yet)
    train_time_s: float = 0.0  # seconds spent in training epochs (validation and compiling steps excluded)
    compile_time_s: float = 0.0  # seconds of the compiling first training step of each process (--compile)

    @classmethod
    def start(cls, metric: str) -> "Progress":
        return cls(epoch=0, history=[], best={"epoch": -1, f"val_{metric}": -math.inf})


@dataclass
class Run:
    """What ``set_up`` builds and every later phase uses. ``model`` and ``optimizer`` are Fabric's
    wrappers once ``train`` has set them up (``model.module`` is the bare model)."""

    cfg: TrainConfig
    fabric: object
    out: Path
    bundle: DatasetBundle
    metric: str
    loss_fn: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: BatchLoader
    val_loader: BatchLoader
    macs: int
    mixing: Mixing
    ema: WeightEMA | None  # the moving average of the weights, when ``ema_decay`` is set
    compiled: Compiled | None = None  # with ``compile``: the model as ``train_step`` calls it, through torch.compile
    compiling: bool = False  # whether the next training step is this process's first compiled one

    @property
    def task(self) -> str:
        return self.bundle.task

    @property
    def takes_targets(self) -> bool:
        """Whether the model trains on its own objective (``label_sequence.takes_targets``)."""
        return takes_targets(getattr(self.model, "module", self.model))

    @property
    def evaluated_model(self) -> nn.Module:
        """The weights validation, selection and the test see: the moving average when kept."""
        return self.ema.module if self.ema is not None else self.model.module

    def setup_fabric(self) -> None:
        """Hand model and optimizer to Fabric (device, precision, DDP); the average follows the model.
        With ``compile``, training steps call Fabric's model through torch.compile, while validation,
        the average and checkpoints keep the plain module."""
        self.model, self.optimizer = self.fabric.setup(self.model, self.optimizer)
        if self.ema is not None:
            self.ema.module.to(self.fabric.device)
        if self.cfg.compile:
            self.compiled = Compiled(self.model, f"{self.cfg.model} + {self.cfg.attn or 'no attention'}")
            self.compiling = self.compiled.active


def check_label_sequence_model(cfg: TrainConfig, bundle: DatasetBundle, model: nn.Module) -> None:
    """A model that emits one label per step trains on label sets: multi-label data, unmixed."""
    if not takes_targets(model):
        return
    if bundle.task != "multilabel":
        raise ValueError(f"model '{cfg.model}' with head '{cfg.head}' emits a set of labels and trains on "
                         f"multi-label data, but '{cfg.data}' is {bundle.task}-label: pick a multi-label dataset "
                         "(e.g. fashion-mnist-scenes)")
    if cfg.mixup_prob or cfg.cutmix_prob:
        raise ValueError(f"model '{cfg.model}' with head '{cfg.head}' trains on label sets, which mixup and CutMix "
                         "do not give: pass --mixup-prob 0 --cutmix-prob 0")


def set_up(fabric, cfg: TrainConfig, out: Path) -> Run:
    """Seeds and threads, then data, loss, model, optimizer, loaders and schedule, each checked
    against the others."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    fabric.seed_everything(cfg.seed, verbose=False)
    if fabric.device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        full_fp32_on_cuda(cfg.precision)
    bundle = load_bundle(cfg)
    if cfg.task not in (None, bundle.task):
        raise ValueError(f"--task {cfg.task} but dataset '{cfg.data}' is {bundle.task}")
    if cfg.crop_pad >= min(bundle.img_size):
        raise ValueError(f"crop_pad {cfg.crop_pad} is not smaller than the {bundle.img_size[0]}×{bundle.img_size[1]} "
                         f"images of '{cfg.data}': pass at most {min(bundle.img_size) - 1} (0: no crop)")
    loss_fn = build_loss(cfg, bundle.task)
    model = build_model(cfg, bundle)
    check_label_sequence_model(cfg, bundle, model)
    macs = count_macs(model, (bundle.in_chans, *bundle.img_size))
    model = model.to(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    optimizer = build_optimizer(model, cfg)
    augment = Augmentation(cfg.augment, cfg.crop_pad, cfg.hflip, cfg.erase_prob, bundle.img_size)
    train_loader = BatchLoader(bundle.train, cfg.batch_size, mean=bundle.mean, std=bundle.std, train=True,
                               augment=augment, seed=cfg.seed, rank=fabric.global_rank, world_size=fabric.world_size,
                               device=fabric.device, channels_last=cfg.channels_last, workers=cfg.workers)
    if bundle.streamed and fabric.global_rank == 0:
        print(f"streaming {len(bundle.train)} training images of '{cfg.data}' ({cfg.workers} decoding processes)",
              flush=True)
    if len(train_loader) == 0:
        raise ValueError(f"{len(bundle.train)} training images are fewer than one batch per process "
                         f"({cfg.batch_size} × {fabric.world_size}): lower --batch-size")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, len(train_loader)))
    mixing = Mixing(cfg.mixup_prob, cfg.mixup_alpha, cfg.cutmix_prob, cfg.cutmix_alpha)
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    return Run(cfg, fabric, out, bundle, selection_metric(bundle.task), loss_fn, model, optimizer, scheduler,
               train_loader, split_loader(cfg, bundle, "val", fabric), macs, mixing, ema)


def load_pretrained(run: Run) -> None:
    """A new run's backbone from ``cfg.weights`` (the file's classifier left out); every backbone
    tensor must come from the file, or the run would start half pretrained."""
    report = load_weights(run.model, run.cfg.weights, classifier=False)
    missing = report["missing"]
    if missing:
        raise ValueError(f"--weights {run.cfg.weights} lacks {len(missing)} backbone tensors of model '{run.cfg.model}' "
                         f"(e.g. {', '.join(missing[:3])}): pass the weight file of this architecture")
    if run.fabric.global_rank == 0:
        print(f"loaded {report['loaded']} tensors from {run.cfg.weights}; the head starts from its initialisation",
              flush=True)


def checkpoint_state(run: Run, progress: Progress) -> dict:
    """What ``last.pt`` and ``best.pt`` hold (``restore`` reads it back)."""
    b = run.bundle
    return {"config": asdict(run.cfg), "model": run.model.module.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "rng": torch.get_rng_state(), "epoch": progress.epoch,
            **({"cuda_rng": torch.cuda.get_rng_state_all()} if run.fabric.device.type == "cuda" else {}),
            **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
            "history": progress.history, "best": progress.best, "train_time_s": progress.train_time_s,
            "compile_time_s": progress.compile_time_s,
            "dataset": {"task": b.task, "num_classes": b.num_classes, "in_chans": b.in_chans,
                        "class_names": b.class_names, "mean": list(b.mean), "std": list(b.std)}}


def restore(run: Run, state: dict) -> Progress:
    """Put a ``checkpoint_state`` back (before Fabric's set-up): training goes on as if never stopped."""
    load_model_state(run.model, state["model"], run.out / LAST)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if run.ema is not None:
        load_model_state(run.ema.module, state["ema"], run.out / LAST)
    # checkpoints written before --compile existed hold no compile_time_s
    return Progress(state["epoch"], state["history"], state["best"], state["train_time_s"],
                    state.get("compile_time_s", 0.0))


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple:
    """One optimizer step on a batch, mixed first when mixing is on; then the moving average.
    Returns the loss, the logits and the targets the accuracy is counted against (the larger
    share of a mixed pair), all detached."""
    x, y = mix_batch(x, y, run.mixing, run.bundle.num_classes, run.task, rng) if run.mixing.active else (x, y)

    def forward_backward(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        with run.fabric.autocast():
            if run.takes_targets:  # a label-sequence model computes its own objective (label_sequence.py)
                logits, loss = model(x, y)
            else:
                logits = model(x)
                loss = run.loss_fn(logits.float(), y)
        run.optimizer.zero_grad(set_to_none=True)
        run.fabric.backward(loss)
        return logits, loss

    # the backward is part of the compiled step: it compiles (and may fail) at its first call too
    logits, loss = run.compiled.step(forward_backward) if run.compiled is not None else forward_backward(run.model)
    if run.cfg.grad_clip is not None:
        run.fabric.clip_gradients(run.model, run.optimizer, max_norm=run.cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update(run.model.module)
    hard = y.argmax(1) if run.task == "single" and y.ndim == 2 else y
    return loss.detach(), logits.detach(), hard


def check_finite(run: Run, loss_sum: torch.Tensor, seen: int, epoch: int, step: int) -> float:
    """The epoch's mean loss so far; ``DivergedError`` when it is not finite on any rank (all ranks
    decide together, or a lone rank that stops would leave the others waiting in an all-reduce)."""
    mean_loss = loss_sum.item() / seen
    if not math.isfinite(run.fabric.all_reduce(loss_sum.clone(), reduce_op="sum").item()):  # in place
        kept = (f"the last good checkpoint is kept at {run.out / LAST} (epoch {epoch})" if epoch
                else "no checkpoint was written (this was the first epoch)")
        raise DivergedError(f"loss became {mean_loss} at epoch {epoch + 1}, step {step + 1}; {kept}. "
                            "Lower --lr or raise --warmup-epochs.")
    return mean_loss


def train_epoch(run: Run, epoch: int, show_progress: bool) -> dict:
    """One epoch of training steps; returns its lr, train loss (and accuracy), time and img/s,
    summed over ranks, and the seconds of a compiling step (``compile_time_s``), which the time and
    img/s leave out. A loss that is not finite stops the run (``DivergedError``)."""
    cfg, fabric, task = run.cfg, run.fabric, run.task
    run.model.train()
    run.train_loader.set_epoch(epoch)
    rng = np.random.default_rng([cfg.seed, epoch, fabric.global_rank])  # mixing: a function of the epoch
    loss_sum = torch.zeros((), device=fabric.device, dtype=torch.float64)
    correct = torch.zeros((), device=fabric.device, dtype=torch.long)
    seen, t0, steps = 0, time.perf_counter(), len(run.train_loader)
    compile_s, untimed = 0.0, 0  # the compiling step's seconds and images
    bar = tqdm(run.train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not show_progress or fabric.global_rank != 0, mininterval=0.5)
    for step, (x, y) in enumerate(bar):
        loss, logits, hard = train_step(run, x, y, rng)
        if run.compiling:
            loss.item()  # waits for the device: the compiling step ends here
            compile_s, untimed, run.compiling = time.perf_counter() - t0, len(y), False
        loss_sum += loss * len(y)
        if task == "single":
            correct += (logits.argmax(1) == hard).sum()
        seen += len(y)
        if step % 10 == 9 or step == steps - 1:  # host sync only every 10 steps
            mean_loss = check_finite(run, loss_sum, seen, epoch, step)
            rate = (seen - untimed) * fabric.world_size / (time.perf_counter() - t0 - compile_s)
            bar.set_postfix(loss=f"{mean_loss:.4f}", **({"acc": f"{100 * correct.item() / seen:.2f}"}
                                                         if task == "single" else {}), img_s=f"{rate:.0f}")
    seconds = time.perf_counter() - t0 - compile_s
    counts = torch.tensor([seen, seen - untimed], device=fabric.device, dtype=torch.float64)
    loss_total, right, images, timed = fabric.all_reduce(torch.stack([loss_sum, correct.double(), *counts]),
                                                         reduce_op="sum").tolist()
    return {"lr": run.optimizer.param_groups[0]["lr"], "train_loss": loss_total / images,
            **({"train_acc": 100 * right / images} if task == "single" else {}),
            "epoch_time_s": seconds, "images_per_s": timed / seconds, "compile_time_s": compile_s}


def validate(run: Run) -> dict:
    """Validation scores of the evaluated weights; with a moving average, also the raw weights'
    selection metric (``raw_<metric>``), to show what the average buys."""
    scores = evaluate(run.fabric, run.evaluated_model, run.val_loader, run.loss_fn, run.task, run.cfg.tta_hflip)
    if run.ema is not None:
        raw = evaluate(run.fabric, run.model.module, run.val_loader, run.loss_fn, run.task, run.cfg.tta_hflip)
        scores[f"raw_{run.metric}"] = raw[run.metric]
    return scores


def record_epoch(run: Run, progress: Progress, trained: dict, val: dict) -> bool:
    """Add the epoch's log row, track the best validation epoch, log to TensorBoard; returns
    whether this epoch is the best so far."""
    progress.epoch += 1
    progress.train_time_s += trained["epoch_time_s"]
    progress.compile_time_s += trained.pop("compile_time_s")
    val = {f"val_{k}": v for k, v in val.items()}
    timing = {k: trained.pop(k) for k in ("epoch_time_s", "images_per_s")}
    row = {"epoch": progress.epoch, **trained, **val, **timing}
    progress.history.append(row)
    is_best = val[f"val_{run.metric}"] > progress.best[f"val_{run.metric}"]
    if is_best:
        progress.best = {"epoch": progress.epoch, **val}
    run.fabric.log_dict({k: v for k, v in row.items() if k != "epoch"}, step=progress.epoch)
    return is_best


def save_epoch(run: Run, progress: Progress, is_best: bool) -> None:
    """Rank 0 writes last.pt, best.pt (when best) and log.csv, and prints the epoch's line."""
    if run.fabric.global_rank != 0:
        return
    state = checkpoint_state(run, progress)
    # last.pt first: a kill before best.pt is written leaves what resume needs to redo it (repair_best)
    save_checkpoint(state, run.out / LAST)
    if is_best:
        save_checkpoint(state, run.out / BEST)
    _write_log(run.out / LOG, progress.history)
    row, metric = progress.history[-1], run.metric
    train_acc = f"train {row['train_acc']:.2f}%  " if run.task == "single" else ""
    print(f"epoch {progress.epoch}/{run.cfg.epochs}  loss {row['train_loss']:.4f}  {train_acc}"
          f"val {metric} {row[f'val_{metric}']:.2f}%  {row['images_per_s']:.0f} img/s  {row['epoch_time_s']:.1f}s",
          flush=True)


def score_last_on_test(run: Run, progress: Progress) -> dict | None:
    """The last epoch's weights (still in the model) scored on the test split, when the best
    validation epoch is another one (None otherwise: ``test`` holds the same weights' scores)."""
    if progress.best["epoch"] == progress.epoch:
        return None
    logits, targets = predict(run.fabric, run.evaluated_model, split_loader(run.cfg, run.bundle, "test", run.fabric),
                              run.cfg.tta_hflip)
    return {"checkpoint": LAST, "epoch": progress.epoch, **split_scores(logits, targets, run.loss_fn, run.task)}


def score_best_on_test(run: Run, progress: Progress) -> dict:
    """Evaluate the test split once, with the best validation epoch's weights; rank 0 saves the
    per-image logits (``PREDICTIONS``) for paired tests between runs on the same images."""
    best_epoch = progress.best["epoch"]
    if best_epoch < 1:
        raise DivergedError(f"the validation {run.metric} was never a finite number, so no best checkpoint exists; "
                            "lower --lr or raise --warmup-epochs")
    best_state = load_checkpoint(run.out / BEST, map_location=run.fabric.device)
    if best_state["epoch"] != best_epoch:  # the lock and repair_best rule this out; a wrong number is worse
        raise ValueError(f"{run.out / BEST} holds epoch {best_state['epoch']}, not the best epoch "
                         f"{best_epoch}: the run folder was changed outside this run")
    run.evaluated_model.load_state_dict(evaluated_weights(best_state))
    logits, targets = predict(run.fabric, run.evaluated_model, split_loader(run.cfg, run.bundle, "test", run.fabric),
                              run.cfg.tta_hflip)
    if run.fabric.global_rank == 0:
        atomic_torch_save({"split": "test", "logits": logits.half().cpu(), "targets": targets.cpu()},
                          run.out / PREDICTIONS)
    return {"checkpoint": BEST, "epoch": best_epoch, **split_scores(logits, targets, run.loss_fn, run.task)}


def finish(run: Run, progress: Progress, test: dict, test_final: dict | None, wall_time_s: float) -> dict:
    """metrics.json: what the run is, its best validation and test scores (``test_final``: the last
    epoch's, the same as ``test`` when the best epoch is the last), its costs."""
    cfg, fabric, history = run.cfg, run.fabric, progress.history
    metrics = {
        "status": "completed",
        "run": str(run.out),
        "model": cfg.model, "attn": cfg.attn, "head": cfg.head, "data": cfg.data, "task": run.task, "seed": cfg.seed,
        "selection_metric": run.metric,
        "params": count_params(run.model.module),
        "macs": run.macs,
        "epochs": cfg.epochs,
        "final": history[-1],
        "best_val": progress.best,
        "test": test,
        "test_final": test if test_final is None else test_final,
        "train_time_s": progress.train_time_s,
        "compile_time_s": progress.compile_time_s,
        "wall_time_s": wall_time_s,
        "images_per_s": sum(r["images_per_s"] * r["epoch_time_s"] for r in history) / progress.train_time_s,
        "world_size": fabric.world_size,
        "threads": torch.get_num_threads(),
        "device": str(fabric.device),
    }
    if fabric.world_size > 1:
        sums = fabric.all_gather(torch.tensor([param_checksum(run.model.module)], device=fabric.device)).flatten()
        metrics["rank_param_checksums"] = sums.tolist()
    if fabric.global_rank == 0:
        atomic_write_text(run.out / METRICS, json.dumps(metrics, indent=2))
    return metrics


def _train(fabric, cfg: TrainConfig, state: dict | None, out: Path, show_progress: bool) -> dict:
    """The body of ``train``, run with the run folder claimed: the phases in order."""
    run = set_up(fabric, cfg, out)
    if state is None and cfg.weights is not None:
        load_pretrained(run)
    progress = Progress.start(run.metric) if state is None else restore(run, state)
    run.setup_fabric()
    if fabric.global_rank == 0:
        atomic_write_text(out / CONFIG, yaml.safe_dump(asdict(cfg), sort_keys=False))
        # the log is the checkpoint's history: a kill after last.pt but before log.csv loses no row
        _write_log(out / LOG, progress.history)
    wall_start = time.perf_counter()
    for epoch in range(progress.epoch, cfg.epochs):
        trained = train_epoch(run, epoch, show_progress)
        val = validate(run)
        save_epoch(run, progress, record_epoch(run, progress, trained, val))
        fabric.barrier()
    test_final = score_last_on_test(run, progress)
    test = score_best_on_test(run, progress)
    return finish(run, progress, test, test_final, time.perf_counter() - wall_start)

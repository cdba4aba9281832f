"""The streaming loader at the papers' scale (issue 20): loader-only throughput at 448² against what
a resnet101 training step consumes, what a single image's decode costs and what would make it
cheaper, and resident memory while streaming a 100,000-image COCO-2014-layout folder.

    .venv/bin/python benchmarks/stream_loader.py --json docs/runs/stream-loader/results.json \\
        --simplejpeg /tmp/avbench/simplejpeg --pillow-simd /tmp/avbench/pillow-simd

runs every part in order (``fixture throughput decode model memory``; name some to run only those)
on a fixture generated in a temporary folder and deleted at the end (``--root DIR`` puts it there,
reused when it is already complete; ``--keep`` keeps it). Smoke test at tiny sizes:

    .venv/bin/python benchmarks/stream_loader.py --images 600 --val-images 50 --seconds 2 --rounds 1 \\
        --decode-seconds 0.5 --model-size 64 --model-batch 2 --model-steps 1 --json /tmp/stream-smoke.json

The optional decoders are installed outside the project, never as its dependencies:

    .venv/bin/pip install --no-deps --target /tmp/avbench/simplejpeg simplejpeg
    CC="cc -mavx2" .venv/bin/pip install --no-deps --no-cache-dir --target /tmp/avbench/pillow-simd pillow-simd

Parts:

- ``fixture``: ``--images`` + ``--val-images`` files in train2014/ (the latter are what
  ``load_dataset(..., val_size=--val-images)`` carves off, so the train split is exactly
  ``--images``), ``--val-images`` in val2014/, annotations with 1-3 random categories of COCO's 80
  ids per image. Content: ``--bases`` distinct 640×480 images (a smooth field plus texture at four
  scales plus per-pixel noise, tuned so that a JPEG at quality 90 is about as large as an average
  COCO train2014 file, ~150 KB), each encoded once; every file is a copy of one of them under
  its own name. Also ``resized448/``: the bases squished to 448×448 (the loader's own bilinear
  resize) and re-encoded at quality 90, the "pre-resized shards" of the decode part.
- ``throughput``: ``BatchLoader`` over the first ``--subset`` training images (batch 16, 448²,
  train order, recipe ``basic`` without crop or flip = decode only, ``csra`` = decode + random
  resized crop + flip in the main process) with each of ``--workers``; each setting runs
  ``--seconds`` from its first batch (worker start-up timed apart), settings interleaved over
  ``--rounds`` rounds (order reversed every other round); median over rounds. Also the main
  process's share alone: augmentation + normalisation of a decoded uint8 batch.
- ``decode``: one image at a time in one process, one thread, ``--decode-seconds`` per method per
  round: Pillow decode only; decode + squish to 448 (``images.decode_image``, what a worker does
  per image); the same from a pre-resized 448×448 file; squish alone; at 224 with and without
  Pillow's JPEG draft mode (DCT-domain downscale: other pixels than the reference path);
  simplejpeg (libjpeg-turbo through numpy) decode alone, + Pillow squish, and of the pre-resized
  file; the Pillow rows and simplejpeg + squish again with Pillow-SIMD, in a child process with it
  first on the path.
- ``model``: resnet101 (default GAP head, 80 classes) training step at ``--model-size``² on this
  CPU: forward + BCE loss + backward + SGD step, channels_last, float32, all PyTorch threads,
  ``--model-steps`` after one untimed step; the per-image MACs of resnet101 and resnet50 at 224²
  to scale a published GPU figure (``GPU_REFERENCE``) to resnet101 at 448².
- ``memory``: ``load_dataset("coco2014", stream=True, img_size=448)`` on the fixture, then one
  epoch of the whole train split through ``BatchLoader`` (``--memory-workers``,
  ``--memory-recipe``); every ``--memory-every`` images the main process's and the workers' RSS
  and PSS (``/proc/<pid>/status``, ``smaps_rollup``), and the main process's peak (VmHWM, reset
  after loading so that it covers streaming alone).

``model`` and ``memory`` each run in a fresh interpreter (the same script, ``--child``), so that
their memory readings start from a bare one. Writes everything to ``--json`` (after every part)
and prints markdown tables.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PARTS = ("fixture", "throughput", "decode", "model", "memory")
RESULT = "RESULT "  # a child process's result line
PARSER_OPTIONS: list = []  # the parser's options, for passing them on to a child process
SIZE = 448  # the papers' training size (CSRA, ASL, Query2Label on COCO)
SOURCE_W, SOURCE_H = 640, 480  # COCO's typical image
QUALITY = 90
# COCO's 80 category ids (1-90 with gaps)
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
# Texture of the synthetic bases: amplitude of random fields at cell sizes 160, 40, 10, 3 pixels
# and of per-pixel noise; chosen so that a 640×480 JPEG at quality 90 is ~150 KB, about an average
# COCO train2014 file (the 82,783-image archive is about 13 GB).
FIELD_CELLS = (160, 40, 10, 3)
FIELD_AMPS = (60.0, 40.0, 30.0, 20.0)
PIXEL_NOISE = 9.0
# What a GPU consumes: NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/
# README.md, "Training performance results" (pytorch-21.03 NGC container), 1 GPU, ResNet-50 v1.5 at
# 224², images/s. Scaled here to resnet101 at 448² by the ratio of MACs and (224/448)².
GPU_REFERENCE = {
    "source": "NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "
              "'Training performance results', 1 GPU, pytorch-21.03 NGC container (ResNet-50 v1.5, 224x224)",
    "resnet50_224_img_s": {"A100 80GB, mixed precision": 2470, "A100 80GB, TF32": 938,
                           "V100 16GB, mixed precision": 1200, "V100 16GB, FP32": 367},
}


# ---------------------------------------------------------------- memory readings


def proc_memory(pid: int | str = "self") -> dict:
    """MiB: VmRSS, VmHWM (peak RSS) from /proc/<pid>/status and Pss from smaps_rollup (RSS with
    pages shared between processes divided among them)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return out


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the DataLoader's workers)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    return sorted(kids)


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: 5 > /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal:"))
    import PIL
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2**20, 1), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "pillow": PIL.__version__, "python": platform.python_version()}


# ---------------------------------------------------------------- fixture


def base_image(rng: np.random.Generator) -> Image.Image:
    """A 640×480 RGB image: a random colour plus random fields at several scales plus pixel noise."""
    h, w = SOURCE_H, SOURCE_W
    out = np.zeros((h, w, 3), np.float32) + rng.uniform(60, 190, 3).astype(np.float32)
    for cell, amp in zip(FIELD_CELLS, FIELD_AMPS):
        gh, gw = -(-h // cell) + 1, -(-w // cell) + 1
        grid = rng.normal(0, amp, (gh, gw, 3)).astype(np.float32)
        up = np.stack([np.asarray(Image.fromarray(grid[..., c], "F").resize((gw * cell, gh * cell),
                                                                              Image.Resampling.BICUBIC))
                       for c in range(3)], -1)
        out += up[:h, :w]
    out += rng.normal(0, PIXEL_NOISE, (h, w, 1)).astype(np.float32)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def fixture_complete(root: Path) -> dict | None:
    info = root / "fixture.json"
    return json.loads(info.read_text()) if info.is_file() else None


def write_fixture(root: Path, images: int, val_images: int, bases: int, seed: int = 0) -> dict:
    """The COCO-2014 layout under ``root`` (see the module docstring). Returns its description."""
    from attnvision.data.images import decode_image

    n_train = images + val_images  # val_size=val_images is carved from train2014
    root.mkdir(parents=True, exist_ok=True)
    need = (n_train + val_images + 2 * bases) * 200_000  # bytes, with room: files are ~150 KB
    free = shutil.disk_usage(root).free
    if need > 0.9 * free:
        raise SystemExit(f"the fixture needs about {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free at {root}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    encoded = [jpeg_bytes(base_image(rng)) for _ in range(bases)]
    t_bases = time.perf_counter() - t0
    (root / "resized448").mkdir(parents=True, exist_ok=True)
    (root / "bases").mkdir(exist_ok=True)
    for k, data in enumerate(encoded):
        (root / "bases" / f"base{k:04d}.jpg").write_bytes(data)
        small = decode_image(root / "bases" / f"base{k:04d}.jpg", "RGB", (SIZE, SIZE))
        (root / "resized448" / f"base{k:04d}.jpg").write_bytes(jpeg_bytes(Image.fromarray(small)))
    t_resized = time.perf_counter() - t0 - t_bases
    categories = [{"id": c, "name": f"class{c}", "supercategory": "synthetic"} for c in COCO_IDS]
    written = 0
    for part, count in (("train2014", n_train), ("val2014", val_images)):
        (root / part).mkdir(exist_ok=True)
        entries, annotations = [], []
        for i in range(count):
            image_id = i + 1
            name = f"COCO_{part}_{image_id:012d}.jpg"
            data = encoded[i % bases]
            (root / part / name).write_bytes(data)
            written += len(data)
            entries.append({"id": image_id, "file_name": name, "height": SOURCE_H, "width": SOURCE_W})
            for cat in rng.choice(COCO_IDS, size=int(rng.integers(1, 4)), replace=False).tolist():
                annotations.append({"image_id": image_id, "category_id": cat, "id": len(annotations) + 1,
                                    "bbox": [10.0, 10.0, 100.0, 80.0], "area": 8000.0, "iscrowd": 0,
                                    "segmentation": [[10, 10, 110, 10, 110, 90, 10, 90]]})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{part}.json").write_text(
            json.dumps({"images": entries, "annotations": annotations, "categories": categories}))
    seconds = time.perf_counter() - t0
    sizes = [len(d) for d in encoded]
    resized = [p.stat().st_size for p in sorted((root / "resized448").iterdir())]
    info = {"root": str(root), "train2014_files": n_train, "val2014_files": val_images, "train_split": images,
            "bases": bases, "source_size": [SOURCE_W, SOURCE_H], "quality": QUALITY,
            "mean_file_kb": statistics.mean(sizes) / 1000, "mean_resized448_kb": statistics.mean(resized) / 1000,
            "total_gb": written / 1e9, "annotation_mb": (root / "annotations" / "instances_train2014.json").stat().st_size / 1e6,
            "seconds_total": seconds, "seconds_bases": t_bases, "seconds_resized": t_resized,
            "seconds_files": seconds - t_bases - t_resized}
    (root / "fixture.json").write_text(json.dumps(info, indent=1))
    return info


# ---------------------------------------------------------------- throughput


def make_augment(recipe: str, size: tuple[int, int]):
    from attnvision.data import Augmentation

    if recipe == "basic":  # no crop, no flip: the loader's decode and normalisation alone
        return Augmentation("basic", crop_pad=0, hflip=False, size=size)
    return Augmentation(recipe, crop_pad=0, hflip=True, size=size)


def loader_rate(split, bundle, recipe: str, workers: int, batch: int, seconds: float, epoch: int) -> dict:
    """Images/s of ``BatchLoader`` batches (float32, normalised, augmented) from the first batch on,
    for ``seconds``; start-up (workers forked, first batch decoded) timed apart."""
    from attnvision.data import BatchLoader

    loader = BatchLoader(split, batch, bundle.mean, bundle.std, train=True, augment=make_augment(recipe, split.img_size),
                         seed=0, workers=workers)
    t0 = time.perf_counter()
    first = None
    n = restarts = 0
    while True:
        loader.set_epoch(epoch + restarts)
        done = False
        for x, _ in loader:
            if first is None:
                first = time.perf_counter()
                continue
            n += len(x)
            if time.perf_counter() - first >= seconds:
                done = True
                break
        if done:
            break
        restarts += 1  # the subset ran out: next epoch (workers forked again, counted in the time)
    elapsed = time.perf_counter() - first
    return {"img_s": n / elapsed, "images": n, "seconds": elapsed, "startup_s": first - t0, "epoch_restarts": restarts}


def augment_rate(recipe: str, batch: int, seconds: float, mean, std) -> float:
    """Images/s of the main process's share: augmentation + normalisation of a decoded uint8 batch."""
    import torch

    x = torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=torch.uint8)
    aug = make_augment(recipe, (SIZE, SIZE))
    m = torch.tensor(mean).view(1, -1, 1, 1) * 255
    s = torch.tensor(std).view(1, -1, 1, 1) * 255
    g = torch.Generator().manual_seed(0)
    ((aug(x, g) - m) / s).contiguous()  # warm-up (kornia builds its ops)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ((aug(x, g) - m) / s).contiguous()
        n += batch
    return n / (time.perf_counter() - t0)


def run_throughput(root: Path, args) -> dict:
    import torch

    from attnvision.data import load_dataset

    bundle = load_dataset("coco2014", data_dir=root, stream=True, img_size=SIZE, val_size=args.val_images)
    split = bundle.train.subset(torch.arange(min(args.subset, len(bundle.train))))
    settings = [(r, w) for r in args.recipes for w in args.workers]
    runs: dict[str, list[dict]] = {f"{r}/w{w}": [] for r, w in settings}
    augment: dict[str, list[float]] = {r: [] for r in args.recipes}
    for rnd in range(args.rounds):
        order = settings if rnd % 2 == 0 else settings[::-1]
        for recipe, workers in order:
            res = loader_rate(split, bundle, recipe, workers, args.batch, args.seconds, epoch=100 * rnd)
            runs[f"{recipe}/w{workers}"].append(res)
            print(f"  round {rnd}: {recipe:5s} workers {workers}: {res['img_s']:6.1f} img/s "
                  f"({res['images']} images in {res['seconds']:.1f} s, start-up {res['startup_s']:.2f} s)", flush=True)
        for recipe in args.recipes:
            augment[recipe].append(augment_rate(recipe, args.batch, min(args.seconds, 10), bundle.mean, bundle.std))
    table = {key: {"img_s_median": statistics.median(r["img_s"] for r in rs), "img_s": [r["img_s"] for r in rs],
                   "startup_s_median": statistics.median(r["startup_s"] for r in rs), "runs": rs}
             for key, rs in runs.items()}
    return {"subset": len(split), "batch": args.batch, "img_size": SIZE, "seconds_per_setting": args.seconds,
            "rounds": args.rounds, "loader": table,
            "main_process_augment_normalise_img_s": {r: {"median": statistics.median(v), "rounds": v}
                                                     for r, v in augment.items()}}


# ---------------------------------------------------------------- decode


def decode_methods(files: list[Path], resized: list[Path], simplejpeg_ok: bool, pil_only: bool) -> dict:
    """name → (callable of one index, list length). Each call decodes (or resizes) one image."""
    from attnvision.data.images import decode_image

    bilinear = Image.Resampling.BILINEAR

    def pil_decode(i):
        with Image.open(files[i]) as img:
            return np.asarray(img.convert("RGB"))

    decoded = [Image.open(p).convert("RGB") for p in files[:32]]

    def draft224(i):
        with Image.open(files[i]) as img:
            img.draft("RGB", (224, 224))  # libjpeg scales by 1/2 in the DCT: 320×240, then the squish
            return np.asarray(img.convert("RGB").resize((224, 224), bilinear))

    methods = {
        "pil_decode_640x480": pil_decode,
        "decode_image_448": lambda i: decode_image(files[i], "RGB", (SIZE, SIZE)),
        "decode_image_448_from_preresized": lambda i: decode_image(resized[i], "RGB", (SIZE, SIZE)),
        "squish_only_448": lambda i: np.asarray(decoded[i % len(decoded)].resize((SIZE, SIZE), bilinear)),
        "decode_image_224": lambda i: decode_image(files[i], "RGB", (224, 224)),
        "draft_decode_224": draft224,
    }
    if simplejpeg_ok:  # with ``pil_only`` (another Pillow): only the row that uses that Pillow
        import simplejpeg

        def sj(path):
            return simplejpeg.decode_jpeg(path.read_bytes(), colorspace="RGB")

        if not pil_only:
            methods["simplejpeg_decode_640x480"] = lambda i: sj(files[i])
            methods["simplejpeg_decode_preresized_448"] = lambda i: sj(resized[i])
        methods["simplejpeg_decode_pil_squish_448"] = lambda i: np.asarray(
            Image.fromarray(sj(files[i])).resize((SIZE, SIZE), bilinear))
    return methods


def decode_child(root: Path, seconds: float, simplejpeg_ok: bool, pil_only: bool) -> None:
    """Runs in a child process (one thread): prints {method: images/s} as JSON."""
    import PIL

    files = sorted((root / "bases").iterdir())
    resized = sorted((root / "resized448").iterdir())
    methods = decode_methods(files, resized, simplejpeg_ok, pil_only)
    rates = {}
    for name, fn in methods.items():
        for i in range(min(8, len(files))):  # warm-up: file cache, Pillow's plugins
            fn(i)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn(n % len(files))
            n += 1
        rates[name] = n / (time.perf_counter() - t0)
    print(json.dumps({"pillow": PIL.__version__, "pil_path": PIL.__file__, "rates": rates}))


def run_decode(root: Path, args) -> dict:
    impls = {"pillow": None}
    notes = {}
    if args.pillow_simd:
        impls["pillow-simd"] = args.pillow_simd
    else:
        notes["pillow-simd"] = "not measured: no --pillow-simd folder given"
    simplejpeg_ok = False
    if args.simplejpeg:
        check = subprocess.run([sys.executable, "-c", "import simplejpeg"], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": args.simplejpeg})
        simplejpeg_ok = check.returncode == 0
        if not simplejpeg_ok:
            notes["simplejpeg"] = f"not measured: import failed: {check.stderr.strip()[-300:]}"
    else:
        notes["simplejpeg"] = "not measured: no --simplejpeg folder given"
    results: dict[str, dict[str, list[float]]] = {}
    versions = {}
    for rnd in range(args.rounds):
        for impl, path in (impls.items() if rnd % 2 == 0 else list(impls.items())[::-1]):
            paths = [p for p in (path, args.simplejpeg if simplejpeg_ok else None) if p]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(paths)}
            cmd = [sys.executable, __file__, "--decode-child", "--root", str(root), "--decode-seconds",
                   str(args.decode_seconds)] + (["--simplejpeg", args.simplejpeg] if simplejpeg_ok else [])
            if impl != "pillow":
                cmd.append("--pil-only")
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                notes[impl] = f"failed: {out.stderr.strip()[-500:]}"
                continue
            got = json.loads(out.stdout.strip().splitlines()[-1])
            versions[impl] = {"version": got["pillow"], "path": got["pil_path"]}
            for name, rate in got["rates"].items():
                results.setdefault(f"{impl}:{name}", []).append(rate)
            print(f"  round {rnd}: {impl} done", flush=True)
    return {"seconds_per_method": args.decode_seconds, "rounds": args.rounds, "threads": 1, "versions": versions,
            "notes": notes,
            "img_s": {k: {"median": statistics.median(v), "rounds": v} for k, v in results.items()}}


# ---------------------------------------------------------------- model


def run_model(args) -> dict:
    import torch
    import torch.nn.functional as F

    from attnvision import create_model
    from attnvision.profile import count_macs, train_step_time

    torch.manual_seed(0)
    macs = {name: count_macs(create_model(name, 1000), (3, 224, 224)) for name in ("resnet50", "resnet101")}
    model = create_model("resnet101", 80).to(memory_format=torch.channels_last)
    x = torch.randn(args.model_batch, 3, args.model_size, args.model_size).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(args.model_batch, 80) < 0.05).float()
    reset_peak()
    step = train_step_time(model, x, lambda out: F.binary_cross_entropy_with_logits(out, y), steps=args.model_steps)
    peak = proc_memory().get("VmHWM")
    rate = args.model_batch / step
    ratio = macs["resnet101"] / macs["resnet50"]
    scale = ratio * (SIZE / 224) ** 2
    need = {gpu: r / scale for gpu, r in GPU_REFERENCE["resnet50_224_img_s"].items()}
    return {"model": "resnet101", "head": "gap (default)", "classes": 80, "img_size": args.model_size,
            "batch": args.model_batch, "steps": args.model_steps, "threads": torch.get_num_threads(),
            "step_s": step, "img_s": rate, "peak_rss_mib": peak,
            "macs_224": macs, "resnet101_over_resnet50_macs": ratio,
            "gpu_reference": GPU_REFERENCE,
            "gpu_resnet101_img_s_estimate": need,
            "gpu_estimate_method": f"resnet50 224² img/s ÷ {ratio:.3f} (MACs resnet101/resnet50) "
                                   f"÷ {(SIZE / 224) ** 2:.2f} (({SIZE}/224)²)"}


# ---------------------------------------------------------------- memory


def run_memory(root: Path, args) -> dict:
    from attnvision.data import BatchLoader, load_dataset

    before = proc_memory()
    t0 = time.perf_counter()
    bundle = load_dataset("coco2014", data_dir=root, stream=True, img_size=SIZE, val_size=args.val_images)
    load_s = time.perf_counter() - t0
    loaded = proc_memory()
    reset_ok = reset_peak()
    split = bundle.train
    loader = BatchLoader(split, args.batch, bundle.mean, bundle.std, train=True,
                         augment=make_augment(args.memory_recipe, split.img_size), seed=0, workers=args.memory_workers)
    loader.set_epoch(0)
    me = os.getpid()
    samples = []
    n, next_sample = 0, 0
    t0 = time.perf_counter()

    def sample() -> dict:
        workers = [proc_memory(pid) for pid in children(me)]
        main = proc_memory()
        return {"images": n, "seconds": time.perf_counter() - t0, "main_rss_mib": main.get("VmRSS"),
                "main_pss_mib": main.get("Pss"), "main_peak_mib": main.get("VmHWM"), "workers": len(workers),
                "workers_rss_mib": sum(w.get("VmRSS", 0) for w in workers),
                "workers_pss_mib": sum(w.get("Pss", 0) for w in workers),
                "workers_peak_mib": max((w.get("VmHWM", 0) for w in workers), default=0),
                "total_pss_mib": main.get("Pss", 0) + sum(w.get("Pss", 0) for w in workers)}

    for x, _ in loader:
        n += len(x)
        if n >= next_sample:
            samples.append(sample())
            next_sample += args.memory_every
            if len(samples) % 10 == 0:
                s = samples[-1]
                print(f"  {n:7d} images, {s['seconds']:6.0f} s: main RSS {s['main_rss_mib']:.0f} MiB, "
                      f"workers RSS {s['workers_rss_mib']:.0f} MiB, total PSS {s['total_pss_mib']:.0f} MiB", flush=True)
    samples.append(sample())
    samples[-1]["workers"] = "exited"
    elapsed = time.perf_counter() - t0
    steady = [s for s in samples if s["images"] >= 1000 and s["workers"] != "exited"]
    return {"img_size": SIZE, "batch": args.batch, "workers": args.memory_workers, "recipe": args.memory_recipe,
            "train_images": len(split), "streamed": n, "seconds": elapsed, "img_s": n / elapsed,
            "load_dataset_s": load_s, "rss_before_load_mib": before.get("VmRSS"), "rss_after_load_mib": loaded.get("VmRSS"),
            "peak_during_load_mib": loaded.get("VmHWM"), "peak_reset_after_load": reset_ok,
            "main_peak_while_streaming_mib": samples[-1]["main_peak_mib"],
            "steady_total_pss_mib": {"min": min(s["total_pss_mib"] for s in steady),
                                     "max": max(s["total_pss_mib"] for s in steady)} if steady else None,
            "in_memory_uint8_gb": len(split) * 3 * SIZE * SIZE / 1e9,
            "samples": samples}


def in_child(part: str, root: Path, args) -> dict:
    """Run ``part`` (model, memory) in a fresh interpreter with the same options, its output passed
    through; returns its result."""
    cmd = [sys.executable, __file__, "--child", part, "--root", str(root)]
    for action in PARSER_OPTIONS:
        value = getattr(args, action.dest)
        if action.dest in ("root", "json", "keep", "child", "decode_child", "pil_only") or value is None:
            continue
        cmd += [action.option_strings[0], *map(str, value if isinstance(value, list) else [value])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    result = None
    for line in proc.stdout:
        if line.startswith(RESULT):
            result = json.loads(line[len(RESULT):])
        else:
            print(line, end="", flush=True)
    if proc.wait() != 0 or result is None:
        raise SystemExit(f"the {part} part failed (exit {proc.returncode}): {' '.join(cmd)}")
    return result


# ---------------------------------------------------------------- report


def print_report(res: dict) -> None:
    if "fixture" in res:
        f = res["fixture"]
        print(f"\nfixture: {f['train2014_files']} + {f['val2014_files']} files of {f['mean_file_kb']:.0f} KB "
              f"({f['total_gb']:.1f} GB; pre-resized 448² {f['mean_resized448_kb']:.0f} KB) in "
              f"{f.get('seconds_total', 0):.0f} s")
    if "throughput" in res:
        t = res["throughput"]
        print(f"\n| recipe | workers | img/s (median of {t['rounds']}) | rounds | start-up (s) |\n|---|---:|---:|---|---:|")
        for key, row in t["loader"].items():
            recipe, w = key.split("/w")
            print(f"| {recipe} | {w} | {row['img_s_median']:.1f} | {', '.join(f'{v:.1f}' for v in row['img_s'])} "
                  f"| {row['startup_s_median']:.2f} |")
        for recipe, row in t["main_process_augment_normalise_img_s"].items():
            print(f"main process alone, {recipe}: augment + normalise {row['median']:.0f} img/s")
    if "decode" in res:
        d = res["decode"]
        print(f"\n| decoder:method (one thread) | img/s (median of {d['rounds']}) | ms/image |\n|---|---:|---:|")
        for key, row in d["img_s"].items():
            print(f"| {key} | {row['median']:.1f} | {1000 / row['median']:.2f} |")
        for k, v in d["notes"].items():
            print(f"{k}: {v}")
    if "model" in res:
        m = res["model"]
        print(f"\nresnet101 {m['batch']}×3×{m['img_size']}² training step: {m['step_s']:.1f} s, {m['img_s']:.2f} img/s "
              f"({m['threads']} threads, peak RSS {m['peak_rss_mib']:.0f} MiB)")
        for gpu, r in m["gpu_resnet101_img_s_estimate"].items():
            print(f"  {gpu}: {r:.0f} img/s (est., {m['gpu_estimate_method']})")
    if "memory" in res:
        m = res["memory"]
        print(f"\nstreamed {m['streamed']} images in {m['seconds']:.0f} s ({m['img_s']:.1f} img/s); "
              f"RSS {m['rss_before_load_mib']:.0f} MiB before load_dataset, {m['rss_after_load_mib']:.0f} after "
              f"(peak {m['peak_during_load_mib']:.0f}); in memory: {m['in_memory_uint8_gb']:.1f} GB")
        print("| images | main RSS | main peak | workers RSS (sum) | total PSS |\n|---:|---:|---:|---:|---:|")
        marks = sorted({min(mark, m["streamed"]) for mark in (1000, 10000, 50000, m["streamed"])})
        for mark in marks:
            s = next((s for s in m["samples"] if s["images"] >= mark and s["workers"] != "exited"), m["samples"][-1])
            print(f"| {s['images']} | {s['main_rss_mib']:.0f} | {s['main_peak_mib']:.0f} | {s['workers_rss_mib']:.0f} "
                  f"| {s['total_pss_mib']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", help=f"measurements to run, of {', '.join(PARTS)} (default: all, in order)")
    parser.add_argument("--root", type=Path, help="fixture folder (default: a new temporary folder)")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temporary fixture folder goes")
    parser.add_argument("--keep", action="store_true", help="keep the fixture")
    parser.add_argument("--images", type=int, default=100_000, help="images of the train split")
    parser.add_argument("--val-images", type=int, default=500, help="validation (carved from train2014) and val2014 images")
    parser.add_argument("--bases", type=int, default=256, help="distinct image contents")
    parser.add_argument("--subset", type=int, default=8192, help="throughput: training images iterated")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=["basic", "csra"], choices=["basic", "csra", "q2l"])
    parser.add_argument("--seconds", type=float, default=20.0, help="throughput: seconds per setting and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decode-seconds", type=float, default=5.0)
    parser.add_argument("--simplejpeg", help="folder with simplejpeg installed (pip install --target)")
    parser.add_argument("--pillow-simd", help="folder with Pillow-SIMD installed (pip install --target)")
    parser.add_argument("--model-size", type=int, default=SIZE)
    parser.add_argument("--model-batch", type=int, default=16)
    parser.add_argument("--model-steps", type=int, default=3)
    parser.add_argument("--memory-workers", type=int, default=2)
    parser.add_argument("--memory-recipe", default="basic", choices=["basic", "csra", "q2l"])
    parser.add_argument("--memory-every", type=int, default=1000, help="memory: images between samples")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--decode-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pil-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("model", "memory"), help=argparse.SUPPRESS)
    PARSER_OPTIONS[:] = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    args = parser.parse_args()
    if args.decode_child:
        decode_child(args.root, args.decode_seconds, bool(args.simplejpeg), args.pil_only)
        return
    if args.child:  # a part run in a fresh process: its memory readings start from a bare interpreter
        result = run_model(args) if args.child == "model" else run_memory(args.root, args)
        print(RESULT + json.dumps(result), flush=True)
        return
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; valid: {', '.join(PARTS)}")
    parts = [p for p in PARTS if p in (args.parts or PARTS)]
    started = time.perf_counter()
    res: dict = {"command": " ".join([".venv/bin/python", "benchmarks/stream_loader.py", *sys.argv[1:]]),
                 "machine": machine(), "parts": parts, "seconds": {}, "load_average_1min": {"start": os.getloadavg()[0]}}
    needs_fixture = any(p in parts for p in ("fixture", "throughput", "decode", "memory"))
    made = needs_fixture and args.root is None
    root = Path(tempfile.mkdtemp(prefix="attnvision-stream-", dir=args.tmp_dir)) if made else args.root
    try:
        if needs_fixture:
            info = fixture_complete(root)
            if info is None or info["train_split"] != args.images or info["val2014_files"] != args.val_images:
                print(f"fixture: writing {args.images + 2 * args.val_images} images to {root}", flush=True)
                info = write_fixture(root, args.images, args.val_images, args.bases)
            else:
                print(f"fixture: reusing {root} (made in {info['seconds_total']:.0f} s)", flush=True)
                info = {**info, "reused": True}
            res["fixture"] = info
            res["load_average_1min"]["fixture"] = os.getloadavg()[0]
        for part in parts:
            if part == "fixture":
                continue
            print(f"{part} …", flush=True)
            t0 = time.perf_counter()
            if part == "throughput":
                res["throughput"] = run_throughput(root, args)
            elif part == "decode":
                res["decode"] = run_decode(root, args)
            else:  # model, memory
                res[part] = in_child(part, root, args)
            res["seconds"][part] = time.perf_counter() - t0
            res["load_average_1min"][part] = os.getloadavg()[0]  # includes this script's own processes
            if args.json:  # after every part, so an interrupted run keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(res, indent=1))
    finally:
        if needs_fixture and not args.keep and (made or fixture_complete(root)):
            t0 = time.perf_counter()
            shutil.rmtree(root, ignore_errors=True)
            res["seconds"]["delete_fixture"] = time.perf_counter() - t0
    res["seconds"]["total"] = time.perf_counter() - started
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    print_report(res)


if __name__ == "__main__":
    main()

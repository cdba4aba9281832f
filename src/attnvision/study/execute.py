"""Running a study's cells: each is ``attnvision train --config <cell>/config.yaml`` in its own
process, so that a crash stays in its cell, threads can be pinned per cell and the command that
rebuilds a row is the one that built it.

- A cell whose run folder has ``metrics.json`` is finished and skipped; one with ``last.pt`` but
  no metrics (interrupted) is resumed exactly (``--resume``); a folder that holds a run of other
  options is an error, never overwritten.
- A failing cell writes ``failed.json`` (its error and log) and the others go on.
- ``jobs`` cells run at once, each with ``threads`` CPU threads (and one GPU each where there are
  GPUs). On this project's 2-core reference machine (issue 10's measurement: ``attnvision train
  --attn se --train-subset 6000 --epochs 1``, two runs) two 1-thread cells at once trained at
  637 img/s each against 999 img/s for one 2-thread cell (1.27× the throughput), and two unpinned
  ones oversubscribed the cores (225 img/s each): hence one thread per cell by default on CPU.
- Executors: ``local`` (a thread per job slot, each driving one process at a time) or ``ray``
  (one Ray task per cell with ``num_cpus=threads`` and ``num_gpus=1`` on GPU machines, on the
  cluster at ``ray_address`` or a local Ray); results land in the same run folders either way, which
  on a cluster is checked first: every node must see the study folder, the data and this Python by
  the same paths (``cluster``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict

import yaml

from ..checkpoint import atomic_write_text
from ..run_folder import CONFIG, LAST
from .cluster import check_cells_paths
from .grid import Cell
from .layout import FAILED


def default_jobs(jobs: int | None = None) -> tuple[int, int]:
    """(jobs, threads per cell): by default one cell per GPU, else one single-threaded cell per
    core; the cores shared evenly between ``jobs`` cells when it is given."""
    import torch

    cores = os.cpu_count() or 1
    if jobs is None:
        jobs = torch.cuda.device_count() if torch.cuda.is_available() else cores
    return jobs, max(1, cores // jobs)


def cell_command(cell: Cell, resume: bool) -> list[str]:
    """The ``attnvision train`` command of a cell (config.yaml written by ``prepare``)."""
    base = [sys.executable, "-m", "attnvision", "train"]
    if resume:
        return base + ["--resume", str(cell.folder), "--no-progress"]
    return base + ["--config", str(cell.folder / CONFIG), "--no-progress"]


def prepare(cell: Cell) -> bool:
    """Write the cell's config.yaml (when it has not started) and clear an old failure; returns
    whether to resume."""
    cell.folder.mkdir(parents=True, exist_ok=True)
    (cell.folder / FAILED).unlink(missing_ok=True)
    if (cell.folder / LAST).is_file():
        return True
    atomic_write_text(cell.folder / CONFIG, yaml.safe_dump(asdict(cell.config), sort_keys=False))
    return False


def run_process(command: list[str], env: dict, cwd: str, log_path: str, prefix: str) -> tuple[int, str]:
    """Run one cell's process in ``cwd`` with its output appended to ``log_path`` (absolute) and
    its per-epoch lines echoed with ``prefix``; returns (exit code, last error line or output tail)."""
    tail: list[str] = []
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(map(shlex.quote, command))}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **env}, cwd=cwd, bufsize=1)
        for line in process.stdout:
            log.write(line)
            log.flush()  # a cell's log can be followed while it runs
            tail = (tail + [line.rstrip()])[-20:]
            if line.startswith(("epoch ", "error:")):
                print(f"  [{prefix}] {line.rstrip()}", flush=True)
        code = process.wait()
    starts = [i for i, line in enumerate(tail) if line.startswith("error:")]
    if starts:  # the CLI's one error message, to the end of the output
        return code, " ".join(line.strip() for line in tail[starts[-1]:]).removeprefix("error:").strip()
    return code, "\n".join(tail[-8:])


def cell_env(threads: int, gpu: int | None) -> dict:
    # COLUMNS: the CLI's messages on one line each in the log, not wrapped at 80 columns
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
           "COLUMNS": "1000"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def run_cells(cells: list[Cell], jobs: int, threads: int, executor: str = "local",
              ray_address: str | None = None) -> dict[str, str]:
    """Train every cell that is not finished; returns {cell name: "finished" | "failed: <error>"}.
    Prints one line per cell (k of n, eta) and the trainer's per-epoch lines."""
    states = {cell.key: cell.state for cell in cells}
    todo = [cell for cell in cells if states[cell.key] != "finished"]
    done = len(cells) - len(todo)
    print(f"{len(cells)} cells: {done} finished, {len(todo)} to train ({jobs} at once, {threads} thread(s) each, "
          f"{executor} executor)", flush=True)
    results = {k: state for k, state in states.items() if state == "finished"}
    if not todo:
        return results
    lock, durations = threading.Lock(), []

    def report(cell: Cell, code: int, message: str, seconds: float) -> None:
        nonlocal done
        with lock:
            done += 1
            durations.append(seconds)
            if code == 0:
                results[cell.key] = "finished"
                outcome = summary(cell)
            else:
                results[cell.key] = f"failed: {message}"
                atomic_write_text(cell.folder / FAILED, json.dumps(
                    {"error": message, "exit_code": code, "log": str(cell.log)}, indent=2))
                outcome = f"FAILED ({message})"
            left = len(cells) - done
            eta = sum(durations) / len(durations) * left / jobs  # mean cell time, ``jobs`` cells at once
            print(f"[{done}/{len(cells)}] {cell.key}: {outcome} in {seconds:.0f} s; "
                  f"eta {eta / 60:.1f} min", flush=True)

    if executor == "ray":
        run_on_ray(todo, threads, ray_address, report)
        return results
    gpus = gpu_count()
    slots = list(range(jobs))
    slot_lock = threading.Lock()

    def work(cell: Cell) -> None:
        with slot_lock:
            slot = slots.pop()
        try:
            t0 = time.perf_counter()
            resume = prepare(cell)
            print(f"start {cell.key}{' (resuming)' if resume else ''}", flush=True)
            code, message = run_process(cell_command(cell, resume), cell_env(threads, slot % gpus if gpus else None),
                                        os.getcwd(), str(cell.log.resolve()), cell.name)
            report(cell, code, message, time.perf_counter() - t0)
        finally:
            with slot_lock:
                slots.append(slot)

    with ThreadPoolExecutor(jobs) as pool:
        for future in as_completed([pool.submit(work, cell) for cell in todo]):
            future.result()
    return results


def summary(cell: Cell) -> str:
    metrics = cell.metrics
    metric = metrics["selection_metric"]
    return f"test {metric} {metrics['test'][metric]:.2f}%"


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_on_ray(cells: list[Cell], threads: int, ray_address: str | None, report) -> None:
    """One Ray task per cell: ``num_cpus=threads``, one GPU each on a cluster with GPUs; first
    ``cluster.check_cells_paths``: every node must see the paths the cells use."""
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'ray[default]' (part of attnvision's dev "
                         "install)") from None
    ray.init(address=ray_address, include_dashboard=False, log_to_driver=True, ignore_reinit_error=True)
    try:
        nodes = check_cells_paths(cells)  # before any cell starts, not as a cell failing on another node
        print(f"the Ray cluster's {len(nodes)} node(s) see the paths the cells use (study folder, working folder, "
              "data, Python)", flush=True)
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(num_cpus=threads, num_gpus=gpus)(run_process)
        # a node's workers have the environment of its `ray start`, not the driver's: the cells get the
        # driver's data folder, the one the check saw
        data = {"ATTNVISION_DATA": os.environ["ATTNVISION_DATA"]} if os.environ.get("ATTNVISION_DATA") else {}
        pending = {}
        for cell in cells:
            resume = prepare(cell)
            env = {**cell_env(threads, None), **data}
            pending[task.remote(cell_command(cell, resume), env, os.getcwd(), str(cell.log.resolve()),
                                cell.name)] = (cell, time.perf_counter())
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell, t0 = pending.pop(ready[0])
            code, message = ray.get(ready[0])
            report(cell, code, message, time.perf_counter() - t0)
    finally:
        ray.shutdown()

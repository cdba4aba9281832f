"""Local self-attention (SASA) memory and speed: attnvision's blocked layer vs a naive unfold.

The naive version is the common public approach (e.g. leaderj1001/Stand-Alone-Self-Attention):
unfold K and V into every pixel's k×k window, (B, C, k², H·W), with the same math and parameters
as ``SelfAttention2d``. The two outputs are checked against each other first.

Each (implementation, size) pair runs forward + backward in a fresh subprocess. On CPU (Linux),
peak memory, after a small warm-up pass, is the resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs just
before the first pass) minus the resident set at that moment. Large allocations are forced to mmap
(MALLOC_MMAP_THRESHOLD_), so freed tensors go back to the OS and RSS follows live memory. On CUDA
it is torch.cuda.max_memory_allocated. Time is the fastest of ``--reps`` passes after the measured
one: on a shared CPU the minimum is the least disturbed estimate.

    python benchmarks/local_attention.py [--batch 8] [--sizes 56 32] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from attnvision.attention.sasa import SelfAttention2d

CHANNELS, HEADS, KERNEL = 64, 8, 7


def naive_unfold(m: SelfAttention2d, x: torch.Tensor) -> torch.Tensor:
    """Same function as ``m(x)`` (stride 1), with k²-fold copies of K and V."""
    b, _, h, w = x.shape
    n, d, k, r = m.heads, m.head_dim, m.kernel_size, m.kernel_size // 2
    q, key, val = m.qkv(x).chunk(3, dim=1)
    key = F.unfold(key, k, padding=r).view(b, n, d, k * k, h * w)
    val = F.unfold(val, k, padding=r).view(b, n, d, k * k, h * w)
    q = q.reshape(b, n, d, 1, h * w)
    rel = torch.cat([m.rel_row.view(k, 1, n, d // 2).expand(k, k, n, d // 2),
                     m.rel_col.view(1, k, n, d // 2).expand(k, k, n, d // 2)], -1).reshape(k * k, n, d)
    logits = (q * key).sum(2) * d ** -0.5 + torch.einsum("bndl,knd->bnkl", q[:, :, :, 0], rel)
    inside = F.unfold(x.new_ones(1, 1, h, w), k, padding=r).view(1, 1, k * k, h * w) > 0
    attn = logits.masked_fill(~inside, float("-inf")).softmax(2)
    return (attn[:, :, None] * val).sum(3).view(b, n * d, h, w)


def _setup(size: int, batch: int, device: str) -> tuple[SelfAttention2d, torch.Tensor]:
    torch.manual_seed(0)
    m = SelfAttention2d(CHANNELS, kernel_size=KERNEL, heads=HEADS).to(device)
    return m, torch.randn(batch, CHANNELS, size, size, device=device, requires_grad=True)


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child(impl: str, size: int, batch: int, reps: int, device: str) -> dict:
    m, x = _setup(size, batch, device)
    fn = m if impl == "sasa" else (lambda t: naive_unfold(m, t))

    def step(inp: torch.Tensor = x) -> None:
        fn(inp).square().mean().backward()
        inp.grad = None
        m.zero_grad(set_to_none=True)

    # a small pass first, so that one-time costs (kernel code paged in, thread pools) are not counted
    step(torch.randn(1, CHANNELS, 24, 24, device=device, requires_grad=True))

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark VmHWM to VmRSS
            f.write("5")
        base = _proc_status_kb("VmRSS")
        step()
        peak = (_proc_status_kb("VmHWM") - base) * 1024
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"peak_mb": peak / 2**20, "time_ms": 1000 * min(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sizes", type=int, nargs="+", default=[56, 32])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--child", nargs=2, metavar=("IMPL", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.batch, args.reps, args.device)))
        return

    m, x = _setup(min(args.sizes), 2, args.device)
    with torch.no_grad():
        err = (m(x) - naive_unfold(m, x)).abs().max().item()
    print(f"max |blocked - naive| = {err:.2e} (float32); device {args.device}, "
          f"{torch.get_num_threads()} threads, batch {args.batch}, C={CHANNELS}, heads={HEADS}, k={KERNEL}\n")

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    rows = []
    for size in args.sizes:
        res = {}
        for impl in ("naive", "sasa"):
            cmd = [sys.executable, __file__, "--child", impl, str(size), "--batch", str(args.batch),
                   "--reps", str(args.reps), "--device", args.device]
            res[impl] = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
        rows.append((size, res))
    print("| input | implementation | fwd+bwd time (ms) | peak memory (MiB) |")
    print("|---|---|---|---|")
    for size, res in rows:
        for impl, name in (("naive", "naive unfold (k² K/V copies)"), ("sasa", "SelfAttention2d (halo/dense)")):
            print(f"| {size}×{size} | {name} | {res[impl]['time_ms']:.1f} | {res[impl]['peak_mb']:.1f} |")
    print()
    for size, res in rows:
        print(f"{size}×{size}: memory {res['naive']['peak_mb'] / res['sasa']['peak_mb']:.1f}× lower, "
              f"time {res['naive']['time_ms'] / res['sasa']['time_ms']:.2f}× faster")


if __name__ == "__main__":
    main()

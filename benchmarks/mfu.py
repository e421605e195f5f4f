"""How close a CPU training step comes to the CPU's own matrix-product limit, and what bounds it.

    python benchmarks/mfu.py [--models poyo_mini poyo_1.3M poyo_11.8M] [--precisions 32-true bf16-mixed]

For each model and precision: the training step of ``benchmarks/vs_torch_brain.py``'s workload
(batch 32 windows of 100 units x 20 Hz, packed ``loop`` kernel, dropout on, AdamW), its model
FLOPs (``torch.utils.flop_counter``: the matrix products of forward and backward, no padding),
the achieved FLOP/s, and that as a fraction of this CPU's measured matmul throughput in the same
precision (a 2048x512x2048 product, as in ``--matmul``). A profile of one step then splits the
time into matrix products (``mm``, ``bmm``, ``addmm``, ...), dtype copies, elementwise
arithmetic, softmax, dropout masks, the optimiser and the rest: the largest share that is not a
matrix product is what bounds the step. The process first calls
:func:`poyo.memory.keep_freed_memory`, as ``poyo train`` does (``--default-allocator``: glibc's
defaults instead, under which every step faults its largest tensors in afresh).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import model as bench  # noqa: E402  (benchmarks/model.py: FLOP counting)
from vs_torch_brain import poyo_step, workload  # noqa: E402

from poyo.memory import keep_freed_memory  # noqa: E402
from poyo.model import POYOConfig  # noqa: E402
from poyo.training.precision import cpu_bf16_support  # noqa: E402

CATEGORIES = {  # profiler op name -> category (first match on a substring)
    "matrix products": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul", "aten::linear"),
    "dtype copies": ("aten::copy_", "aten::_to_copy", "aten::clone"),
    "dropout masks": ("aten::random_", "aten::ge", "aten::bernoulli"),
    "softmax": ("softmax",),
    "layer norm": ("layer_norm",),
    "optimiser": ("_foreach", "aten::addcdiv", "aten::addcmul", "aten::lerp", "aten::sqrt"),
    "elementwise": ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::gelu", "aten::where", "aten::masked_fill",
                    "aten::remainder", "aten::cos", "aten::sin", "aten::complex"),
    "gather, cat, embedding": ("aten::cat", "aten::index", "aten::embedding", "aten::split", "aten::stack"),
}  # fmt: skip


def matmul_gflops(dtype: torch.dtype, size=(2048, 512, 2048), repeats: int = 20) -> float:
    m, k, n = size
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - t0) / 1e9


def category(op: str) -> str:
    return next((c for c, keys in CATEGORIES.items() if any(k in op for k in keys)), "other")


def breakdown(step) -> dict[str, float]:
    """Share of one step's self CPU time per category."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    shares: dict[str, float] = {}
    for e in prof.key_averages():
        if e.key.startswith(("aten::", "Optimizer")) or "softmax" in e.key:
            c = category(e.key)
            shares[c] = shares.get(c, 0.0) + e.self_cpu_time_total
    total = sum(shares.values())
    return {c: v / total for c, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["poyo_mini", "poyo_1.3M", "poyo_11.8M"])
    p.add_argument(
        "--precisions", nargs="+", default=None, help="default: 32-true, plus bf16-mixed where the CPU has bf16 units"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--default-allocator", action="store_true", help="glibc's defaults, not poyo train's")
    a = p.parse_args()
    kept = not a.default_allocator and keep_freed_memory()
    units = cpu_bf16_support()
    precisions = a.precisions or (["32-true", "bf16-mixed"] if units else ["32-true"])
    peak = {"32-true": matmul_gflops(torch.float32)}
    if "bf16-mixed" in precisions:
        peak["bf16-mixed"] = matmul_gflops(torch.bfloat16)
    print(f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"bf16 matrix units: {units or 'none'}; allocator: {'keep_freed_memory()' if kept else 'glibc defaults'}")  # fmt: skip
    print("matmul 2048x512x2048: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()) + "\n")
    rows = []
    for name in a.models:
        config = POYOConfig.from_name(name)
        samples = workload(config, a.batch_size)
        counter_model = bench.build(config).train()
        flops = bench.model_flops(counter_model, samples, "cpu")
        for precision in precisions:
            step = poyo_step(config, samples, "loop", precision, 100)
            step()
            times = []
            for _ in range(a.steps):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            s = statistics.median(times)
            shares = breakdown(step)
            rows.append((name, precision, s, flops, shares))
            gflops = flops / s / 1e9
            bound = next(c for c in shares if c != "matrix products")
            print(
                f"{name:11s} {precision:>10s}: {s * 1e3:7.0f} ms/step, {flops / 1e9:6.1f} GFLOP/step, {gflops:6.1f} GFLOP/s = "
                f"{gflops / peak[precision]:5.1%} of the matmul limit; time in matrix products {shares.get('matrix products', 0):.0%}, "
                f"largest other: {bound} {shares[bound]:.0%}",
                flush=True,
            )
    print("\nshare of self CPU time per category (one profiled step):")
    cats = list(CATEGORIES) + ["other"]
    print(f"{'model':11s} {'precision':>10s} " + " ".join(f"{c[:12]:>12s}" for c in cats))
    for name, precision, _, _, shares in rows:
        print(f"{name:11s} {precision:>10s} " + " ".join(f"{shares.get(c, 0):12.0%}" for c in cats))


if __name__ == "__main__":
    main()

"""How close a CPU training step comes to the CPU's own matrix-product limit, and what bounds it.

    python benchmarks/mfu.py [--models poyo_mini poyo_1.3M poyo_11.8M] [--precisions 32-true bf16-mixed]

For each model and precision: the training step of ``benchmarks/vs_torch_brain.py``'s workload
(batch 32 windows of 100 units x 20 Hz, packed ``loop`` kernel, dropout on, AdamW), its model
FLOPs (``torch.utils.flop_counter``: the matrix products of forward and backward, no padding),
the achieved FLOP/s, and that as a fraction of this CPU's measured matmul throughput in the same
precision (a 2048x512x2048 product, as in ``--matmul``). One more step, each operator timed as it
is dispatched, then splits the time into matrix products (``mm``, ``bmm``, ``addmm``, ...), dtype
conversions (bf16 <-> fp32: what "fewer casts" would remove), same-dtype copies, elementwise
arithmetic, softmax, dropout masks, the optimiser and the rest: the largest share that is not a
matrix product is what bounds the step (``--sites``: where the bf16 step's conversions come from,
by line of poyo's code). The process first calls
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
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import model as bench  # noqa: E402  (benchmarks/model.py: FLOP counting)
from vs_torch_brain import poyo_step, workload  # noqa: E402

import poyo  # noqa: E402
from poyo.memory import keep_freed_memory  # noqa: E402
from poyo.model import POYOConfig  # noqa: E402
from poyo.training.precision import cpu_bf16_support  # noqa: E402

CATEGORIES = {  # aten op (name without a trailing "_") -> category; conversions are told apart by dtype
    "matrix products": ("mm", "bmm", "addmm", "baddbmm", "matmul", "linear"),
    "same-dtype copies": ("copy", "_to_copy", "clone", "constant_pad_nd", "slice_backward"),
    "dropout masks": ("random", "ge", "bernoulli"),
    "softmax": ("_softmax", "_softmax_backward_data"),
    "layer norm": ("native_layer_norm", "native_layer_norm_backward"),
    "optimiser": ("_foreach", "addcdiv", "addcmul", "lerp", "sqrt"),
    "elementwise": ("mul", "add", "sub", "div", "gelu", "gelu_backward", "where", "masked_fill", "remainder", "cos",
                    "sin", "complex", "neg", "sum", "fill", "zero"),
    "gather, cat, embedding": ("cat", "index", "index_select", "embedding", "embedding_dense_backward", "split", "stack"),
}  # fmt: skip
CONVERSIONS = "dtype conversions"  # copy_ / _to_copy between two dtypes (bf16 <-> fp32 around the fp32 islands)


def matmul_gflops(dtype: torch.dtype, size=(2048, 512, 2048), repeats: int = 20) -> float:
    m, k, n = size
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - t0) / 1e9


def converted_from(func, args, out) -> torch.dtype | None:
    """The source dtype of a ``copy_`` or ``_to_copy`` whose result has another dtype; else None."""
    name = func.overloadpacket.__name__.rstrip("_")
    if name in ("copy", "_to_copy") and isinstance(out, torch.Tensor):
        src = args[1] if name == "copy" else args[0]
        if isinstance(src, torch.Tensor) and src.dtype != out.dtype:
            return src.dtype
    return None


def category(func, args, out) -> str:
    """The category of one aten call: by its name, and a copy whose source and result dtypes differ
    is a dtype conversion."""
    if converted_from(func, args, out) is not None:
        return CONVERSIONS
    name = func.overloadpacket.__name__.rstrip("_")
    if name.startswith("_foreach"):
        name = "_foreach"
    return next((c for c, names in CATEGORIES.items() if name in names), "other")


class _OpClock(TorchDispatchMode):
    """Wall time of every aten call, summed per category (:func:`category`); with ``sites``, the
    conversions' time also per place in poyo's code that asked for them."""

    def __init__(self, sites: bool = False):
        super().__init__()
        self.seconds: dict[str, float] = {}
        self.sites: dict[tuple[str, str], list] | None = {} if sites else None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        c = category(func, args, out)
        dt = time.perf_counter() - t0
        self.seconds[c] = self.seconds.get(c, 0.0) + dt
        if self.sites is not None and c == CONVERSIONS:
            src = converted_from(func, args, out)
            key = (_poyo_site(), f"{str(src)[6:]} -> {str(out.dtype)[6:]}")
            entry = self.sites.setdefault(key, [0, 0, 0.0])
            entry[0], entry[1], entry[2] = entry[0] + 1, entry[1] + out.numel(), entry[2] + dt
        return out


_PACKAGE = os.path.dirname(poyo.__file__) + os.sep  # poyo's own source files start with this


def _poyo_site() -> str:
    """The innermost frame of poyo's own code on the stack (none in the backward pass)."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith(_PACKAGE):
            return f"{frame.filename[len(_PACKAGE) :]}:{frame.lineno} {frame.name}"
    return "outside poyo (the backward pass, the optimiser)"


def print_sites(clock: _OpClock, top: int = 8) -> None:
    """Print where a step's dtype conversions came from (``clock`` timed it with ``sites``): time,
    calls and elements per site."""
    total = sum(v[2] for v in clock.sites.values())
    print(f"  dtype conversions: {total * 1e3:.1f} ms of operator time in one step, by where poyo asked for them:")
    for (site, kind), (n, numel, sec) in sorted(clock.sites.items(), key=lambda kv: -kv[1][2])[:top]:
        print(f"    {sec * 1e3:7.1f} ms  {n:4d} calls  {numel / 1e6:7.2f} M elements  {kind:18s} {site}")


def breakdown(step, sites: bool = False) -> tuple[dict[str, float], _OpClock]:
    """Share of one step's operator time per category, largest first, and the clock that timed it
    (``sites``: it also holds where the step's conversions came from, for :func:`print_sites`).

    Each aten call is timed where it is dispatched (a ``TorchDispatchMode``), which tells a bf16 <->
    fp32 conversion from a same-dtype copy by its dtypes; the profiler's self times cannot, and a
    ``copy_`` there was counted as a conversion whatever it copied."""
    clock = _OpClock(sites)
    with clock:
        step()
    total = sum(clock.seconds.values())
    return {c: v / total for c, v in sorted(clock.seconds.items(), key=lambda kv: -kv[1])}, clock


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["poyo_mini", "poyo_1.3M", "poyo_11.8M"])
    p.add_argument(
        "--precisions", nargs="+", default=None, help="default: 32-true, plus bf16-mixed where the CPU has bf16 units"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--default-allocator", action="store_true", help="glibc's defaults, not poyo train's")
    p.add_argument("--sites", action="store_true", help="also where each step's dtype conversions come from")
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
            shares, clock = breakdown(step, sites=a.sites and precision != "32-true")
            rows.append((name, precision, s, flops, shares))
            gflops = flops / s / 1e9
            bound = next(c for c in shares if c != "matrix products")
            print(
                f"{name:11s} {precision:>10s}: {s * 1e3:7.0f} ms/step, {flops / 1e9:6.1f} GFLOP/step, {gflops:6.1f} GFLOP/s = "
                f"{gflops / peak[precision]:5.1%} of the matmul limit; time in matrix products {shares.get('matrix products', 0):.0%}, "
                f"largest other: {bound} {shares[bound]:.0%}",
                flush=True,
            )
            if clock.sites is not None:
                print_sites(clock)
    print("\nshare of operator time per category (one step, each aten call timed):")
    cats = ["matrix products", CONVERSIONS, *list(CATEGORIES)[1:], "other"]
    print(f"{'model':11s} {'precision':>10s} " + " ".join(f"{c[:12]:>12s}" for c in cats))
    for name, precision, _, _, shares in rows:
        print(f"{name:11s} {precision:>10s} " + " ".join(f"{shares.get(c, 0):12.0%}" for c in cats))


if __name__ == "__main__":
    main()

"""Why CPU training uses poyo's own attention kernel and rounds matrix shapes in bf16.

    python benchmarks/cpu_attention.py [--repeats 10]

1. Forward + backward of ``F.scaled_dot_product_attention`` against
   :func:`poyo.model.attention.math_attention` (plain products and softmax), no dropout, for the
   shapes of a poyo_1.3M step: latent self-attention, and one window's encoder and decoder
   cross-attention. fp32 and bf16.
2. The same kernels forward only, under ``torch.inference_mode`` (evaluation, streaming), and a
   whole poyo_1.3M evaluation forward (a packed batch of 32 windows, 100 units at 20 Hz) with
   each kernel (``POYO_CPU_ATTENTION=sdpa`` against the default), alternated in one process:
   why bf16 inference also runs the plain products.
3. The cost of a bf16 matrix product with a shape never seen before against the same product
   again: oneDNN compiles a kernel per new shape, which packed batches (a new token count every
   step) would pay at nearly every product without :class:`poyo.model.layers.Linear`'s rounding.
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model as bench  # noqa: E402  (benchmarks/model.py: the benchmark session's model)
from vs_torch_brain import workload  # noqa: E402  (benchmarks/, beside this script)

from poyo.data import collate_packed  # noqa: E402
from poyo.model import POYOConfig  # noqa: E402
from poyo.model.attention import math_attention  # noqa: E402
from poyo.training.precision import cpu_bf16_support  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "poyo" / "configs" / "model"
SHAPES = {  # name: (query shape, key shape), heads before tokens as SDPA takes them
    "latent self-attention, batch 32": ((32, 8, 128, 64), (32, 8, 128, 64)),
    "encoder, one window (2,000 spikes)": ((2, 128, 64), (2, 2000, 64)),
    "decoder, one window (100 queries)": ((2, 100, 64), (2, 128, 64)),
}


def timed(fn, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e3


def eval_forward(repeats: int) -> None:
    """poyo_1.3M's evaluation forward on one packed batch with SDPA and with the default kernels, in
    turn; medians, and the largest difference between the two predictions."""
    config = POYOConfig.from_yaml(CONFIGS / "poyo_1.3M.yaml")
    batch = collate_packed(workload(config, 32))  # benchmarks/vs_torch_brain.py's batch
    model = bench.build(config).eval()
    print("\npoyo_1.3M evaluation forward, packed batch of 32 windows (median ms, kernels in turn):")
    for dtype in (torch.float32, torch.bfloat16):
        times, preds = {"sdpa": [], "math": []}, {}
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            for r in range(repeats + 1):
                for kernel in times:
                    os.environ["POYO_CPU_ATTENTION"] = kernel
                    t0 = time.perf_counter()
                    preds[kernel] = model(batch)["cursor_velocity_2d"].float()
                    if r:  # the first round warms up
                        times[kernel].append(time.perf_counter() - t0)
        os.environ.pop("POYO_CPU_ATTENTION")
        sdpa, ours = (statistics.median(times[k]) * 1e3 for k in ("sdpa", "math"))
        diff = (preds["sdpa"] - preds["math"]).abs().max().item()
        print(f"  {str(dtype)[6:]:9s} POYO_CPU_ATTENTION=sdpa {sdpa:7.1f}  default {ours:7.1f}  {sdpa / ours:5.2f}x"
              f"   largest difference {diff:.1e}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; bf16 units: {cpu_bf16_support()}\n"
    )
    print(f"{'shape':36s} {'dtype':>9s} {'SDPA ms':>8s} {'math ms':>8s} {'SDPA/math':>9s}   (forward + backward)")
    torch.manual_seed(0)
    for name, (qs, ks) in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            q, k, v = (torch.randn(s).to(dtype).requires_grad_() for s in (qs, ks, ks))
            g = torch.randn(qs).to(dtype)
            sdpa = timed(lambda q=q, k=k, v=v, g=g: F.scaled_dot_product_attention(q, k, v).backward(g), a.repeats)
            ours = timed(lambda q=q, k=k, v=v, g=g: math_attention(q, k, v).backward(g), a.repeats)
            print(f"{name:36s} {str(dtype)[6:]:>9s} {sdpa:8.2f} {ours:8.2f} {sdpa / ours:8.2f}x")

    print(f"\n{'shape':36s} {'dtype':>9s} {'SDPA ms':>8s} {'math ms':>8s} {'SDPA/math':>9s}   (forward, inference)")
    with torch.inference_mode():
        for name, (qs, ks) in SHAPES.items():
            for dtype in (torch.float32, torch.bfloat16):
                q, k, v = (torch.randn(s).to(dtype) for s in (qs, ks, ks))
                sdpa = timed(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v), 5 * a.repeats)
                ours = timed(lambda q=q, k=k, v=v: math_attention(q, k, v), 5 * a.repeats)
                print(f"{name:36s} {str(dtype)[6:]:>9s} {sdpa:8.2f} {ours:8.2f} {sdpa / ours:8.2f}x")
    eval_forward(a.repeats)

    print("\nbf16 product [2, 64, 64] x [2, 64, n], 100 values of n:")
    w = torch.randn(2, 64, 64).bfloat16()
    for label in ("first time (new shapes)", "again (seen shapes)"):
        t0 = time.perf_counter()
        for n in range(3000, 3100):
            w @ torch.randn(2, 64, n).bfloat16()
        print(f"  {label:24s} {(time.perf_counter() - t0) * 10:.2f} ms per product")


if __name__ == "__main__":
    main()

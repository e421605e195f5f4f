"""Why CPU training uses poyo's own attention kernel and rounds matrix shapes in bf16.

    python benchmarks/cpu_attention.py [--repeats 10]

1. Forward + backward of ``F.scaled_dot_product_attention`` against
   :func:`poyo.model.attention.math_attention` (plain products and softmax), no dropout, for the
   shapes of a poyo_1.3M step: latent self-attention, and one window's encoder and decoder
   cross-attention. fp32 and bf16.
2. The cost of a bf16 matrix product with a shape never seen before against the same product
   again: oneDNN compiles a kernel per new shape, which packed batches (a new token count every
   step) would pay at nearly every product without :class:`poyo.model.layers.Linear`'s rounding.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poyo.model.attention import math_attention  # noqa: E402
from poyo.training.precision import cpu_bf16_support  # noqa: E402

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

    print("\nbf16 product [2, 64, 64] x [2, 64, n], 100 values of n:")
    w = torch.randn(2, 64, 64).bfloat16()
    for label in ("first time (new shapes)", "again (seen shapes)"):
        t0 = time.perf_counter()
        for n in range(3000, 3100):
            w @ torch.randn(2, 64, n).bfloat16()
        print(f"  {label:24s} {(time.perf_counter() - t0) * 10:.2f} ms per product")


if __name__ == "__main__":
    main()

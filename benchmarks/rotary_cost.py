"""What the rotary rotation costs a CPU training step, and what rotating only half the head saves.

    python benchmarks/rotary_cost.py [--model poyo_1.3M] [--precision bf16-mixed] [--rounds 8]

Three ways to run the same step (``benchmarks/vs_torch_brain.py``'s workload: batch 32 windows of
100 units x 20 Hz, packed, dropout on, AdamW), each on its own model with the same seed, timed one
step at a time in alternation:

* ``shipped``: :meth:`poyo.model.rotary.RotaryTime.rotate` as it is (in bf16/fp16 only the rotated
  half of each head is cast to float32 and multiplied);
* ``full head``: the whole head cast to float32, one complex product, cast back (the float32 path
  applied to bf16 features: what poyo did before);
* ``no rotation``: features left unrotated, a wrong model, shown only as the floor the rotation
  could at best reach.

Prints the median per way and the median of the per-round ratios to ``full head``.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from vs_torch_brain import poyo_step, workload  # noqa: E402

from poyo.model import POYOConfig  # noqa: E402
from poyo.model.rotary import RotaryTime  # noqa: E402

SHIPPED = RotaryTime.rotate


def full_head(self: RotaryTime, x: torch.Tensor, rot) -> torch.Tensor:
    return SHIPPED(self, x.float(), rot).to(x.dtype)


def no_rotation(self: RotaryTime, x: torch.Tensor, rot) -> torch.Tensor:
    return x


WAYS = {"shipped": SHIPPED, "full head": full_head, "no rotation": no_rotation}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="poyo_1.3M")
    p.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=8)
    a = p.parse_args()
    if a.rounds < 1 or a.batch_size < 1:
        p.error("--rounds and --batch-size must be >= 1")
    config = POYOConfig.from_name(a.model)
    samples = workload(config, a.batch_size)
    steps, times = {}, {way: [] for way in WAYS}
    try:
        for way, fn in WAYS.items():
            RotaryTime.rotate = fn
            steps[way] = poyo_step(config, samples, "loop", a.precision, 100)
            steps[way]()  # warm-up (oneDNN kernels for these shapes)
        for _ in range(a.rounds):
            for way, fn in WAYS.items():
                RotaryTime.rotate = fn
                start = time.perf_counter()
                steps[way]()
                times[way].append(time.perf_counter() - start)
    finally:
        RotaryTime.rotate = SHIPPED
    print(
        f"{a.model}, {a.precision}, batch {a.batch_size}; {platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; {a.rounds} rounds"
    )
    for way in WAYS:
        ratios = [t / f for t, f in zip(times[way], times["full head"])]
        print(
            f"  {way:12s} median {statistics.median(times[way]) * 1e3:7.1f} ms/step, "
            f"ratio to full head {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()

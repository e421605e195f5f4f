"""What dropout costs a CPU training step, with PyTorch's masks and with poyo's.

    python benchmarks/dropout_cost.py                        # poyo_1.3M, both ways alternated, ratio
    python benchmarks/dropout_cost.py --mode mask --rounds 3 # one way only (for farm-bench A/B runs)

PyTorch draws dropout masks (SDPA's attention dropout, ``nn.Dropout``) with ``bernoulli_``;
poyo draws them on CPU from 16-bit random integers, four per 64-bit draw (:func:`poyo.model.attention.keep_mask`).
``POYO_CPU_ATTENTION=sdpa`` switches back to PyTorch's (and to its SDPA kernel), which is how ``--mode sdpa``
runs. Each round times ``--steps`` training steps (forward, backward, AdamW) of the model on
the same packed batch of real windows of the quick start's synthetic set, once per mode, in
alternation; the table gives the median per mode and the median of the per-round ratios.
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

from benchmarks.train_speed import READOUT, dataset, model_for  # noqa: E402
from poyo.data import RandomFixedWindowSampler, collate_packed  # noqa: E402


def step_time(model, batch, opt, steps: int, mode: str) -> float:
    os.environ["POYO_CPU_ATTENTION"] = mode
    start = time.perf_counter()
    for _ in range(steps):
        loss, _ = model.loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="poyo_1.3M")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="steps per round and mode")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mode", choices=["both", "mask", "sdpa"], default="both")
    p.add_argument("--root", type=Path, default=ROOT / "data" / "processed" / "synthetic_reaching")
    a = p.parse_args()
    torch.manual_seed(0)
    ds = dataset(a.root)
    model = model_for(a.model, ds).train()
    ds.transform = model.tokenizer([READOUT])
    windows = list(RandomFixedWindowSampler(ds.sampling_intervals("train"), 1.0, seed=0))[: a.batch_size]
    batch = collate_packed([ds[w] for w in windows])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    modes = ["mask", "sdpa"] if a.mode == "both" else [a.mode]
    for mode in modes:
        step_time(model, batch, opt, 2, mode)  # warm-up
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(a.rounds):
        for mode in modes:
            times[mode].append(step_time(model, batch, opt, a.steps, mode))
    c = model.config
    print(
        f"{a.model}: dropout ffn {c.ffn_dropout}, lin {c.lin_dropout}, attention {c.atn_dropout}; batch {a.batch_size} windows, "
        f"{len(batch['input']['timestamps'])} input tokens; {torch.get_num_threads()} threads, {platform.machine()}"
    )
    for mode in modes:
        label = "poyo masks (16-bit integers)" if mode == "mask" else "PyTorch masks (bernoulli_)"
        print(f"  {label:30s} median {statistics.median(times[mode]) * 1e3:7.1f} ms/step over {a.rounds} rounds")
    if a.mode == "both":
        ratios = [s / m for m, s in zip(times["mask"], times["sdpa"])]
        print(
            f"  speed-up (PyTorch / poyo, per round): median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x"
        )


if __name__ == "__main__":
    main()

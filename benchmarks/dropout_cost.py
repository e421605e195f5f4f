"""What dropout costs a CPU training step, with PyTorch's masks and with poyo's.

    python benchmarks/dropout_cost.py                        # poyo_1.3M, the three ways alternated, ratios
    python benchmarks/dropout_cost.py --precision bf16-mixed # under bf16 autocast
    python benchmarks/dropout_cost.py --mode mask --rounds 3 # one way only (for farm-bench A/B runs)

PyTorch draws dropout masks (SDPA's attention dropout, ``nn.Dropout``) with ``bernoulli_``;
poyo draws them on CPU from 8-bit random integers, eight per 64-bit draw (:func:`poyo.model.attention.keep_mask`),
in the dtype of the features they multiply (``--mode mask``). ``--mode mask16`` draws 16 bits per entry,
four per draw, as poyo did before the second 2026-12-05 change. ``--mode bool`` draws 16-bit masks as
bool, as poyo did before the first (each product then converts them with a copy, forward and
backward). ``POYO_CPU_ATTENTION=sdpa`` switches back to PyTorch's masks (and to its SDPA kernel),
which is how ``--mode sdpa`` runs. Each round times ``--steps`` training steps (forward, backward,
AdamW) of the model on the same packed batch of real windows of the quick start's synthetic set,
once per mode, in alternation; the table gives the median per mode and the median of the
per-round ratios to ``mask``.
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
from poyo.model import attention, layers  # noqa: E402

KEEP_MASK, DROP_BITS = attention.keep_mask, attention._DROP_BITS
LABELS = {
    "mask": "poyo masks, features' dtype",
    "mask16": "16-bit entries, four per draw",
    "bool": "16-bit masks as bool",
    "sdpa": "PyTorch masks (bernoulli_)",
}


def bool_mask(shape, p, device, dtype=None):
    return KEEP_MASK(shape, p, device)  # the dtype asked for is ignored: a bool mask, as before


def step_time(model, batch, opt, steps: int, mode: str, precision: str) -> float:
    os.environ["POYO_CPU_ATTENTION"] = "sdpa" if mode == "sdpa" else "math"
    attention.keep_mask = layers.keep_mask = bool_mask if mode == "bool" else KEEP_MASK
    attention._DROP_BITS = 16 if mode in ("mask16", "bool") else DROP_BITS
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
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
    p.add_argument("--mode", choices=["all", *LABELS], default="all")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    p.add_argument("--root", type=Path, default=ROOT / "data" / "processed" / "synthetic_reaching")
    a = p.parse_args()
    torch.manual_seed(0)
    ds = dataset(a.root)
    model = model_for(a.model, ds).train()
    ds.transform = model.tokenizer([READOUT])
    windows = list(RandomFixedWindowSampler(ds.sampling_intervals("train"), 1.0, seed=0))[: a.batch_size]
    batch = collate_packed([ds[w] for w in windows])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    modes = list(LABELS) if a.mode == "all" else [a.mode]
    try:
        for mode in modes:
            step_time(model, batch, opt, 2, mode, a.precision)  # warm-up
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(a.rounds):
            for mode in modes:
                times[mode].append(step_time(model, batch, opt, a.steps, mode, a.precision))
    finally:
        attention.keep_mask = layers.keep_mask = KEEP_MASK
        attention._DROP_BITS = DROP_BITS
        os.environ.pop("POYO_CPU_ATTENTION", None)
    c = model.config
    print(
        f"{a.model}, {a.precision}: dropout ffn {c.ffn_dropout}, lin {c.lin_dropout}, attention {c.atn_dropout}; "
        f"batch {a.batch_size} windows, {len(batch['input']['timestamps'])} input tokens; "
        f"{torch.get_num_threads()} threads, {platform.machine()}"
    )
    for mode in modes:
        line = f"  {LABELS[mode]:30s} median {statistics.median(times[mode]) * 1e3:7.1f} ms/step over {a.rounds} rounds"
        if a.mode == "all":
            ratios = [t / m for m, t in zip(times["mask"], times[mode])]
            line += (
                f", {statistics.median(ratios):.3f}x the time of mask (per round {min(ratios):.3f}-{max(ratios):.3f})"
            )
        print(line)


if __name__ == "__main__":
    main()

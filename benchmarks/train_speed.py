"""Training throughput on the synthetic set, and whether data loading keeps up.

    python benchmarks/train_speed.py                          # poyo_1.3M and poyo_11.8M, batch 32
    python benchmarks/train_speed.py --models poyo_mini --batch-size 64 --workers 0 1 2
    python benchmarks/train_speed.py --models poyo_1.3M --compile    # also with trainer.compile's compiled stack

For each model: training steps/s, samples/s and spike tokens/s of the model alone
(forward, backward and AdamW step on batches already in memory, the real windows of the
default synthetic set with unit dropout, packed layout). Then the DataLoader's rate for
the same chain (read, dropout, tokenize, collate) with each worker count, and whether the
training would wait for data ("starves") on this machine. ``--compile`` adds a row per
model with its latent stack compiled as ``trainer.compile=true`` compiles it
(:func:`poyo.training.compile.compile_latent_stack`), timed after the warm-up steps (whose
total, compilation included, is printed). fp32, on the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poyo.data import Compose, Dataset, RandomFixedWindowSampler, UnitDropout, collate_packed, seed_worker  # noqa: E402
from poyo.model import POYO, POYOConfig  # noqa: E402
from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure  # noqa: E402
from poyo.readouts import ReadoutConfig  # noqa: E402
from poyo.training.compile import compile_latent_stack  # noqa: E402
from poyo.training.optim import build_optimizer  # noqa: E402

READOUT = ReadoutConfig(
    "cursor_velocity_2d",
    std=10.0,
    weights={"movement_phases.reach_period": 5.0},
    eval_intervals=["movement_phases.reach_period"],
)


def dataset(root: Path) -> Dataset:
    ensure(root, SyntheticConfig(), progress=False)
    return Dataset(root, behaviour=["cursor.vel"], intervals=["movement_phases.reach_period"], validate=False)


def model_for(name: str, ds: Dataset) -> POYO:
    return POYO(
        POYOConfig.from_name(name),
        unit_ids=ds.unit_ids,
        session_ids=ds.session_ids,
        seed=0,
    )


def model_rate(name: str, ds: Dataset, batch_size: int, steps: int, warmup: int, compile: bool = False) -> dict:
    model = model_for(name, ds).train()
    if compile and not compile_latent_stack(model, "cpu"):
        raise SystemExit("torch.compile cannot build on this machine (see the warning above)")
    chain = Compose([UnitDropout(min_units=30, mode_units=100, max_units=300, peak=4.0), model.tokenizer([READOUT])])
    windows = list(RandomFixedWindowSampler(ds.sampling_intervals("train"), 1.0, seed=0))
    batches = []
    for b in range(warmup + steps):
        idx = windows[b * batch_size : (b + 1) * batch_size]
        batches.append(collate_packed([chain(ds.read(i), ds.rng(i)) for i in idx]))
    opt = build_optimizer(model, name="adamw", lr=3.125e-5 * batch_size)
    tokens = 0
    start = time.perf_counter()
    for k, batch in enumerate(batches):
        if k == warmup:
            t0 = time.perf_counter()
        loss, _ = model.loss(model(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k >= warmup:
            tokens += int((batch["input"]["token_type"] == 0).sum())
    dt = time.perf_counter() - t0
    return dict(
        model=name + (" compiled" if compile else ""),
        warmup_s=t0 - start,
        params=model.num_parameters(embeddings=False),
        step_s=dt / steps,
        samples_s=steps * batch_size / dt,
        spike_tokens_s=tokens / dt,
    )


def loader_rate(ds: Dataset, name: str, batch_size: int, workers: int, batches: int) -> float:
    model = model_for(name, ds)
    ds.transform = Compose(
        [UnitDropout(min_units=30, mode_units=100, max_units=300, peak=4.0), model.tokenizer([READOUT])]
    )
    sampler = list(RandomFixedWindowSampler(ds.sampling_intervals("train"), 1.0, seed=1))
    loader = torch.utils.data.DataLoader(
        ds,
        sampler=sampler,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_packed,
        worker_init_fn=seed_worker,
        drop_last=True,
    )
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            next(it)
        except StopIteration:
            break
        n += batch_size
    rate = n / (time.perf_counter() - t0)
    ds.transform = None
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=ROOT / "data" / "processed" / "synthetic_reaching")
    p.add_argument("--models", nargs="+", default=["poyo_1.3M", "poyo_11.8M"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--loader-batches", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="also time each model under torch.compile")
    a = p.parse_args()
    torch.manual_seed(0)
    ds = dataset(a.root)
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; batch {a.batch_size}, packed\n"
    )
    rates = {w: loader_rate(ds, a.models[0], a.batch_size, w, a.loader_batches) for w in a.workers}
    print("data loader (read, unit dropout, tokenize, collate):")
    for w, r in rates.items():
        print(f"  {w} workers: {r:8.0f} windows/s" + (f" ({r / w:.0f} per worker)" if w else ""))
    print(
        f"\n{'model':20s} {'params':>11s} {'s/step':>7s} {'samples/s':>10s} {'spike tok/s':>12s}  data loading with {max(a.workers)} workers"
    )
    for name, compiled in [(n, c) for n in a.models for c in ([False, True] if a.compile else [False])]:
        r = model_rate(name, ds, a.batch_size, a.steps, max(a.warmup, 4) if compiled else a.warmup, compiled)
        spare = rates[max(a.workers)] / r["samples_s"]
        verdict = f"keeps up ({spare:.0f}x what training takes)" if spare >= 1 else f"STARVES ({spare:.2f}x)"
        print(
            f"{r['model']:20s} {r['params']:11,d} {r['step_s']:7.3f} {r['samples_s']:10.1f} {r['spike_tokens_s']:12,.0f}  {verdict}",
            flush=True,
        )
        if compiled:
            print(f"{'':20s} (warm-up steps incl. compilation: {r['warmup_s']:.1f} s)")
    print("\n(on CPU the loader's workers share the cores with training; the ratio is an upper bound)")


if __name__ == "__main__":
    main()

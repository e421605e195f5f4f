"""Data-loading throughput on the synthetic brainset (1 s windows, ~100 units).

    python benchmarks/data_loading.py [--root DIR] [--windows N] [--workers 0 1 2]

Prints (1) where the time of one window goes in a single process: HDF5 read, unit
dropout, the model's tokenizer, packed collate; (2) DataLoader windows/s for each
worker count, total and per worker, for the whole chain (read -> dropout -> tokenize ->
collate); and (3) what the main process spends taking one collated batch from a worker that
has it ready: tensors sent by file descriptor (PyTorch's default on Linux, ``seed_worker``)
against by shared-memory name (poyo's loaders, ``init_worker``), the two alternated.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poyo.data import (  # noqa: E402
    Compose,
    Dataset,
    RandomFixedWindowSampler,
    UnitDropout,
    collate_packed,
    init_worker,
    seed_worker,
)
from poyo.data.session import CachedFile, open_file  # noqa: E402
from poyo.model import Tokenizer  # noqa: E402
from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure  # noqa: E402
from poyo.readouts import ReadoutConfig  # noqa: E402


def stage_times(ds: Dataset, indices, dropout, tokenizer) -> dict[str, float]:
    """Seconds per window spent in each stage, read in one process."""
    t = {"read": 0.0, "unit dropout": 0.0, "tokenize": 0.0, "collate": 0.0}
    batch = []
    for idx in indices:
        a = time.perf_counter()
        w = ds.read(idx)
        b = time.perf_counter()
        w = dropout(w, ds.rng(idx))
        c = time.perf_counter()
        batch.append(tokenizer(w))
        d = time.perf_counter()
        if len(batch) == 64:
            collate_packed(batch)
            batch = []
        e = time.perf_counter()
        t["read"] += b - a
        t["unit dropout"] += c - b
        t["tokenize"] += d - c
        t["collate"] += e - d
    return {k: v / len(indices) for k, v in t.items()}


def read_paths(ds: Dataset, indices) -> tuple[float, float]:
    """Seconds per window read through plain h5py handles vs handles that cache their
    dataset lookups (what ``Dataset`` uses), alternating window by window."""
    plain = {sid: open_file(s.path) for sid, s in ds.sessions.items()}
    cached = {sid: CachedFile(open_file(s.path)) for sid, s in ds.sessions.items()}
    t_plain = t_cached = 0.0
    for idx in indices:
        s = ds.sessions[idx.session]
        a = time.perf_counter()
        s.read(plain[idx.session], idx.start, idx.end)
        b = time.perf_counter()
        s.read(cached[idx.session], idx.start, idx.end)
        t_plain, t_cached = t_plain + b - a, t_cached + time.perf_counter() - b
    for f in [*plain.values(), *cached.values()]:
        f.close()
    return t_plain / len(indices), t_cached / len(indices)


def loader_rate(ds: Dataset, indices, workers: int, batch_size: int = 64) -> float:
    loader = torch.utils.data.DataLoader(
        ds,
        sampler=indices,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_packed,
        worker_init_fn=init_worker,
        prefetch_factor=4 if workers else None,
    )
    it = iter(loader)
    next(it)  # exclude worker start-up
    t0 = time.perf_counter()
    n = 0
    for b in it:
        n += len(b["session_id"])
    return n / (time.perf_counter() - t0)


def fetch_ms(ds: Dataset, indices, batch_size: int = 21, rounds: int = 5, per_round: int = 20) -> dict[str, float]:
    """Median ms the main process waits in ``next()`` for a batch two workers already hold (each
    call follows a pause long enough for them to be ahead), per way of sending its tensors;
    rounds alternate the two ways."""
    times: dict[str, list[float]] = {"by descriptor": [], "by name": []}
    for _ in range(rounds):
        for name, init in (("by descriptor", seed_worker), ("by name", init_worker)):
            loader = torch.utils.data.DataLoader(
                ds, sampler=indices, batch_size=batch_size, num_workers=2, collate_fn=collate_packed,
                worker_init_fn=init,
            )  # fmt: skip
            it = iter(loader)
            next(it)
            for _ in range(per_round):
                time.sleep(0.1)
                t = time.perf_counter()
                next(it)
                times[name].append(time.perf_counter() - t)
            del it
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/processed/synthetic_reaching"))
    parser.add_argument("--windows", type=int, default=4000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()

    cfg = SyntheticConfig(min_units=80, max_units=120)  # ~100 units per session
    root = ensure(args.root.with_name(args.root.name + "_100units"), cfg)
    dropout = UnitDropout(30, 100, 300)
    ds = Dataset(root, behaviour=["cursor.vel"], intervals=["movement_phases.reach_period"])
    readout = ReadoutConfig("cursor_velocity_2d", std=10.0, weights={"movement_phases.reach_period": 5.0})
    tokenizer = Tokenizer(
        {u: i for i, u in enumerate(ds.unit_ids)},
        {s: i for i, s in enumerate(ds.session_ids)},
        [readout],
        ["cursor_velocity_2d"],
        num_latents_per_step=16,
    )
    ds.transform = Compose([dropout, tokenizer])
    sampler = RandomFixedWindowSampler(ds.sampling_intervals("train"), 1.0, seed=0)
    indices = []
    while len(indices) < args.windows:
        sampler.set_epoch(len(indices))
        indices.extend(sampler)
    indices = indices[: args.windows]
    units = np.mean([len(s.unit_ids) for s in ds.sessions.values()])
    spikes = np.mean([len(ds.read(i).spike_times) for i in indices[:500]])

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"
    )
    print(
        f"data: {len(ds.session_ids)} sessions, {units:.0f} units/session, {spikes:.0f} spikes per 1 s window (before dropout)\n"
    )

    stage_times(ds, indices[:200], dropout, tokenizer)  # warm the page cache
    t = stage_times(ds, indices, dropout, tokenizer)
    total = sum(t.values())
    print(f"single process, per window ({len(indices)} windows): {total * 1e3:.3f} ms = {1 / total:.0f} windows/s")
    for k, v in t.items():
        print(f"  {k:16s} {v * 1e6:8.1f} us  {100 * v / total:5.1f}%")
    plain, cached = read_paths(ds, indices)
    print(
        f"\nHDF5 read per window: plain h5py handles {plain * 1e6:.1f} us, cached dataset lookups {cached * 1e6:.1f} us ({plain / cached:.2f}x faster)\n"
    )
    print(f"{'workers':>7s} {'windows/s':>10s} {'per worker':>10s}")
    for w in args.workers:
        rate = loader_rate(ds, indices, w)
        print(f"{w:7d} {rate:10.0f} {rate / max(w, 1):10.0f}")
    fetch = fetch_ms(ds, indices)
    batch = collate_packed([ds[i] for i in indices[:21]])
    tensors = sum(
        isinstance(v, torch.Tensor) for g in batch.values() for v in (g.values() if isinstance(g, dict) else [g])
    )
    print(
        f"\ntaking a ready batch of 21 windows ({tensors} tensors) from a worker, median of "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in fetch.items())
    )


if __name__ == "__main__":
    main()

"""The one entry point: ``python train.py [overrides]``.

For now (before the model lands) it prepares the data (generating the synthetic set
when missing), validates every session, prints a per-session summary and streams
one epoch of training windows through the DataLoader.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from poyo.data import Dataset, RandomFixedWindowSampler, UnitDropout, collate_packed, collate_padded, seed_worker
from poyo.data import intervals as ivs


def prepare_data(cfg: DictConfig) -> Path:
    root = Path(to_absolute_path(cfg.data_root)) / cfg.dataset.name
    if cfg.dataset.get("generate"):
        from brainsets_pipelines.synthetic_reaching import SyntheticConfig, ensure

        ensure(root, SyntheticConfig(**OmegaConf.to_container(cfg.dataset.generate)))
    return root


def summary_table(ds: Dataset) -> str:
    w = max(len(sid) for sid in ds.session_ids)
    head = f"{'session':{w}s} {'units':>5s} {'spikes':>8s} {'Hz/unit':>7s} {'length':>7s} {'train':>6s} {'valid':>6s} {'test':>6s}"
    rows = [head, "-" * len(head)]
    for sid, s in ds.sessions.items():
        dur = s.end - s.start
        split = [ivs.total_length(s.splits[k]) if s.splits[k] is not None else 0.0 for k in ("train", "valid", "test")]
        rows.append(
            f"{sid:{w}s} {len(s.unit_ids):5d} {s.num_spikes:8d} {s.num_spikes / len(s.unit_ids) / dur:7.1f} "
            f"{dur:6.0f}s {split[0]:5.0f}s {split[1]:5.0f}s {split[2]:5.0f}s"
        )
    return "\n".join(rows)


def to_sample(window) -> dict:
    """Raw tensors of a window (spikes and behaviour), until the model's tokenizer lands."""
    key = next(iter(window.behaviour))
    beh = window.behaviour[key]
    return {
        "spikes": {"timestamps": torch.from_numpy(window.spike_times.astype(np.float32)), "unit_index": torch.from_numpy(window.spike_units)},
        "behaviour": {"timestamps": torch.from_numpy(beh.timestamps.astype(np.float32)), "values": torch.from_numpy(np.asarray(beh.values, np.float32))},
        "absolute_start": window.start,
        "session_id": window.session_id,
    }


def collate_windows(windows, layout: str) -> dict:
    samples = [to_sample(w) for w in windows]
    return collate_packed(samples) if layout == "packed" else collate_padded(samples)


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if cfg.layout not in ("packed", "padded"):
        raise ValueError(f"layout must be 'packed' or 'padded', got {cfg.layout!r}")
    root = prepare_data(cfg)
    ds = Dataset(
        root,
        behaviour=list(cfg.dataset.behaviour),
        intervals=list(cfg.dataset.intervals),
        transform=UnitDropout(**cfg.dataset.unit_dropout),
        seed=cfg.seed,
        validate=cfg.validate_data,
        progress=True,
    )
    print(f"\n{len(ds.session_ids)} sessions, {len(ds.subject_ids)} subjects, {len(ds.unit_ids)} units in {root}\n")
    print(summary_table(ds))

    sampler = RandomFixedWindowSampler(ds.sampling_intervals("train"), cfg.window_length, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(
        ds,
        sampler=sampler,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        collate_fn=partial(collate_windows, layout=cfg.layout),
        worker_init_fn=seed_worker,
        persistent_workers=False,
    )
    n_windows = n_spikes = 0
    t0 = time.perf_counter()
    for i, batch in enumerate(tqdm(loader, desc="streaming training windows", unit="batch")):
        if cfg.max_batches is not None and i >= cfg.max_batches:
            break
        n_windows += len(batch["session_id"])
        n_spikes += int(batch["spikes"]["mask"].sum()) if cfg.layout == "padded" else int(batch["spikes"]["cu_seqlens"][-1])
    elapsed = time.perf_counter() - t0
    print(
        f"\n{n_windows} training windows ({cfg.layout} batches of {cfg.batch_size}, {cfg.num_workers} workers) in {elapsed:.1f} s: "
        f"{n_windows / elapsed:.0f} windows/s, {n_spikes / max(n_windows, 1):.0f} spikes per window after unit dropout"
    )
    if sampler.skipped:
        print(f"({sampler.skipped} training intervals shorter than {cfg.window_length} s were skipped)")


if __name__ == "__main__":
    main()

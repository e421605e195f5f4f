"""The one entry point: ``python train.py [overrides]``.

For now (before training lands) it prepares the data (generating the synthetic set when
missing), validates every session, prints a per-session summary, builds the model from
``configs/model/``, streams one epoch of training windows through unit dropout, the
model's tokenizer and the collate, and runs the untrained model on the first batches.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import hydra
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from poyo.data import Compose, Dataset, RandomFixedWindowSampler, UnitDropout, collate_packed, collate_padded, seed_worker
from poyo.data import intervals as ivs
from poyo.model import POYO, ReadoutConfig
from poyo.model.tokenizer import behaviour_keys, interval_keys


def prepare_data(cfg: DictConfig) -> Path:
    root = Path(to_absolute_path(cfg.data_root)) / cfg.dataset.name
    if cfg.dataset.get("generate"):
        from brainsets_pipelines.synthetic_reaching import SyntheticConfig, ensure

        ensure(root, SyntheticConfig(**OmegaConf.to_container(cfg.dataset.generate)))
    return root


def readout_configs(cfg: DictConfig) -> list[ReadoutConfig]:
    return [ReadoutConfig(**r) for r in OmegaConf.to_container(cfg.dataset.readouts)]


def build_model(cfg: DictConfig, ds: Dataset) -> POYO:
    """The model named by ``cfg.model``, with the dataset's units and sessions in its vocabularies."""
    kwargs = OmegaConf.to_container(cfg.model)
    kwargs.pop("name", None)
    readouts = [r.name for r in readout_configs(cfg)]
    return POYO(**kwargs, readouts=readouts, unit_ids=ds.unit_ids, session_ids=ds.session_ids, seed=cfg.seed)


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


def collate(samples, layout: str) -> dict:
    return collate_packed(samples) if layout == "packed" else collate_padded(samples)


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if cfg.layout not in ("packed", "padded"):
        raise ValueError(f"layout must be 'packed' or 'padded', got {cfg.layout!r}")
    root = prepare_data(cfg)
    readouts = readout_configs(cfg)
    ds = Dataset(
        root,
        behaviour=behaviour_keys(readouts),
        intervals=interval_keys(readouts),
        seed=cfg.seed,
        validate=cfg.validate_data,
        progress=True,
    )
    print(f"\n{len(ds.session_ids)} sessions, {len(ds.subject_ids)} subjects, {len(ds.unit_ids)} units in {root}\n")
    print(summary_table(ds))

    model = build_model(cfg, ds)
    print(
        f"\nmodel {cfg.model.name}: {model.num_parameters(embeddings=False):,} parameters "
        f"+ {model.num_parameters() - model.num_parameters(embeddings=False):,} in the unit/session vocabularies"
    )
    ds.transform = Compose([UnitDropout(**cfg.dataset.unit_dropout), model.tokenizer(readouts)])

    sampler = RandomFixedWindowSampler(ds.sampling_intervals("train"), cfg.window_length, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(
        ds,
        sampler=sampler,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        collate_fn=partial(collate, layout=cfg.layout),
        worker_init_fn=seed_worker,
        persistent_workers=False,
    )
    n_windows = n_spikes = 0
    losses, model_time = [], 0.0
    model.eval()
    t0 = time.perf_counter()
    for i, batch in enumerate(tqdm(loader, desc="streaming training windows", unit="batch")):
        if cfg.max_batches is not None and i >= cfg.max_batches:
            break
        n_windows += len(batch["session_id"])
        n_spikes += int(batch["input"]["mask"].sum()) if cfg.layout == "padded" else int(batch["input"]["cu_seqlens"][-1])
        if i < cfg.model_batches:
            a = time.perf_counter()
            with torch.no_grad():
                loss, _ = model.loss(model(batch), batch)
            model_time += time.perf_counter() - a
            losses.append(float(loss))
    elapsed = time.perf_counter() - t0
    print(
        f"\n{n_windows} training windows ({cfg.layout} batches of {cfg.batch_size}, {cfg.num_workers} workers) in {elapsed:.1f} s: "
        f"{n_windows / elapsed:.0f} windows/s, {n_spikes / max(n_windows, 1):.0f} tokens per window after unit dropout"
    )
    if losses:
        print(f"untrained model on {len(losses)} batches: loss {sum(losses) / len(losses):.3f}, {model_time / len(losses) * 1000:.0f} ms per forward pass")
    if sampler.skipped:
        print(f"({sampler.skipped} training intervals shorter than {cfg.window_length} s were skipped)")


if __name__ == "__main__":
    main()

"""Each DataLoader worker opens its own files, under fork and spawn, with identical results."""

import multiprocessing as mp
import os

import numpy as np
import pytest
import torch

from poyo.data import Dataset, RandomFixedWindowSampler, UnitDropout, init_worker, seed_worker


class Probe:
    """Return what a worker read, plus which process read it and what it holds open."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, index):
        w = self.dataset[index]
        return w.spike_times, w.unit_ids.tolist(), os.getpid(), self.dataset.open_files()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_two_workers_match_single_process(synthetic_root, method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"{method} not available here")
    ds = Dataset(synthetic_root, transform=UnitDropout(5, 15, 40), seed=3)
    idx = list(RandomFixedWindowSampler(ds.sampling_intervals("train"), 1.0, seed=1))[:24]
    expected = [ds[i] for i in idx]  # the main process opens files too, before forking
    assert ds.open_files()
    loader = torch.utils.data.DataLoader(
        Probe(ds),
        sampler=idx,
        batch_size=None,
        num_workers=2,
        multiprocessing_context=method,
        worker_init_fn=seed_worker,
    )
    got = list(loader)
    pids = {g[2] for g in got}
    assert len(pids) == 2 and os.getpid() not in pids
    for (times, units, _, opened), w in zip(got, expected):
        np.testing.assert_array_equal(times, w.spike_times)
        assert units == w.unit_ids.tolist()
        assert opened  # the worker holds its own handles
    ds.close()


class Strategy:
    """Return the worker's tensor sharing strategy and a tensor that must arrive intact."""

    def __getitem__(self, index):
        return torch.multiprocessing.get_sharing_strategy(), torch.arange(index, index + 1000, dtype=torch.int64)

    def __len__(self):
        return 6


def test_init_worker_sends_by_name_and_leaves_the_main_process_alone():
    """poyo's loaders send batches by shared-memory name (one socket connection per tensor
    otherwise); the main process's own strategy must not change."""
    before = torch.multiprocessing.get_sharing_strategy()
    loader = torch.utils.data.DataLoader(Strategy(), batch_size=None, num_workers=2, worker_init_fn=init_worker)
    got = list(loader)
    assert [g[0] for g in got] == ["file_system"] * 6
    for i, (_, t) in enumerate(got):
        torch.testing.assert_close(t, torch.arange(i, i + 1000, dtype=torch.int64))
    assert torch.multiprocessing.get_sharing_strategy() == before

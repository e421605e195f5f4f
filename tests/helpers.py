"""Settings and assertions shared by several test files."""

from __future__ import annotations

import numpy as np
import torch

from poyo.data import SequentialFixedWindowSampler

#: A model small enough for many forward/backward passes in a test (two latent layers, two heads).
TINY = dict(dim=32, depth=2, dim_head=16, num_latents_per_step=4, cross_heads=2, self_heads=2)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative distance ``|a - b| / |b|`` in fp32 (whatever dtypes ``a`` and ``b`` have)."""
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def tokenized_windows(dataset, tokenizer, n: int, split: str = "valid", drop_short: bool = False) -> list:
    """``n`` one-second windows of ``split`` (half-overlapping), spread evenly over it, tokenized."""
    windows = list(
        SequentialFixedWindowSampler(dataset.sampling_intervals(split), 1.0, step=0.5, drop_short=drop_short)
    )
    return [tokenizer(dataset[windows[i]]) for i in np.linspace(0, len(windows) - 1, n).astype(int)]


def assert_gradients_close(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], tag: str, tol: float = 1e-4):
    """Same parameters with gradients, each within ``tol`` of the reference's largest entry
    (relative, so tiny and large gradients are judged alike); ``tag`` names the run on failure."""
    assert grads.keys() == ref.keys(), (tag, sorted(grads.keys() ^ ref.keys()))
    for name, g in grads.items():
        scale = ref[name].abs().max().clamp_min(1e-6)
        err = float((g - ref[name]).abs().max() / scale)
        assert err < tol, f"{tag}: gradient of {name} differs by {err:.2e} of its largest entry"

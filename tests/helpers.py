"""Assertions shared by several test files."""

from __future__ import annotations

import torch


def assert_gradients_close(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], tag: str, tol: float = 1e-4):
    """Same parameters with gradients, each within ``tol`` of the reference's largest entry
    (relative, so tiny and large gradients are judged alike); ``tag`` names the run on failure."""
    assert grads.keys() == ref.keys(), (tag, sorted(grads.keys() ^ ref.keys()))
    for name, g in grads.items():
        scale = ref[name].abs().max().clamp_min(1e-6)
        err = float((g - ref[name]).abs().max() / scale)
        assert err < tol, f"{tag}: gradient of {name} differs by {err:.2e} of its largest entry"

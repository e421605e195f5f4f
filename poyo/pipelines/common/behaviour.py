"""Behaviour helpers shared by the reaching pipelines: derivatives, outliers, masks to intervals."""

from __future__ import annotations

import numpy as np
from temporaldata import Interval

from poyo.pipelines.common.session import interval, merge


def contiguous_blocks(t: np.ndarray, max_gap_factor: float = 5.0) -> list[np.ndarray]:
    """Index arrays of the runs of ``t`` without gaps longer than ``max_gap_factor`` sampling periods."""
    if len(t) < 2:
        return [np.arange(len(t))]
    dt = np.diff(t)
    breaks = np.flatnonzero(dt > max_gap_factor * np.median(dt)) + 1
    return np.split(np.arange(len(t)), breaks)


def derivative(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """d x / d t within each contiguous block (never across a gap); NaN for one-sample blocks."""
    out = np.full_like(x, np.nan, dtype=np.float64)
    for b in contiguous_blocks(t):
        if len(b) >= 2:
            out[b] = np.gradient(x[b], t[b], axis=0)
    return out


def mask_to_intervals(t: np.ndarray, mask: np.ndarray, pad: float = 0.0) -> Interval:
    """The stretches of ``t`` where ``mask`` holds, widened by ``pad`` seconds and merged."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return Interval(start=np.zeros(0), end=np.zeros(0))
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    step = np.median(np.diff(t)) if len(t) > 1 else 0.0
    return merge(interval(t[starts] - pad, t[ends] + step + pad))


def series_domain(t: np.ndarray) -> Interval:
    """``[first sample, last sample + one period)`` for each contiguous block."""
    step = np.median(np.diff(t)) if len(t) > 1 else 1e-3
    blocks = contiguous_blocks(t)
    return merge(interval([t[b[0]] for b in blocks], [t[b[-1]] + step for b in blocks]))

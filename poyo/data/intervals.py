"""Sets of half-open time intervals ``[start, end)`` as ``(n, 2)`` float64 arrays.

temporaldata's ``Interval`` carries lazy HDF5 state and Python-loop set operations;
the reader and the samplers only need a few vectorised operations on plain arrays.
"""

from __future__ import annotations

import numpy as np


def as_intervals(start, end=None) -> np.ndarray:
    """Build an ``(n, 2)`` array from ``start``/``end`` arrays or from an ``(n, 2)`` array."""
    if end is None:
        arr = np.asarray(start, dtype=np.float64)
        if arr.ndim == 1 and arr.size == 2:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"intervals must have shape (n, 2), got {arr.shape}")
        return arr
    s = np.atleast_1d(np.asarray(start, dtype=np.float64))
    e = np.atleast_1d(np.asarray(end, dtype=np.float64))
    if s.shape != e.shape or s.ndim != 1:
        raise ValueError(f"start and end must be 1-D of equal length, got {s.shape} and {e.shape}")
    return np.stack([s, e], axis=1)


def empty() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.float64)


def problem(iv: np.ndarray) -> str | None:
    """Describe what makes ``iv`` an invalid sorted disjoint set, or return None."""
    if iv.size and not np.all(np.isfinite(iv)):
        return "contains NaN or infinite bounds"
    bad = np.flatnonzero(iv[:, 1] < iv[:, 0])
    if bad.size:
        i = bad[0]
        return f"interval {i} ends before it starts ({iv[i, 0]:.6g} > {iv[i, 1]:.6g})"
    back = np.flatnonzero(iv[1:, 0] < iv[:-1, 1])
    if back.size:
        i = back[0]
        return (
            f"intervals {i} [{iv[i, 0]:.6g}, {iv[i, 1]:.6g}) and {i + 1} "
            f"[{iv[i + 1, 0]:.6g}, {iv[i + 1, 1]:.6g}) overlap or are not sorted"
        )
    return None


def total_length(iv: np.ndarray) -> float:
    return float(np.sum(iv[:, 1] - iv[:, 0])) if len(iv) else 0.0


def intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection of two sorted disjoint interval sets."""
    if len(a) == 0 or len(b) == 0:
        return empty()
    # Pairs (i, j) that can overlap: for each a_i, the b's whose end is after a_i's start
    # and whose start is before a_i's end.
    lo = np.searchsorted(b[:, 1], a[:, 0], side="right")
    hi = np.searchsorted(b[:, 0], a[:, 1], side="left")
    counts = np.maximum(hi - lo, 0)
    ai = np.repeat(np.arange(len(a)), counts)
    bj = np.concatenate([np.arange(l, h) for l, h in zip(lo, hi) if h > l]) if counts.sum() else np.zeros(0, int)
    s = np.maximum(a[ai, 0], b[bj, 0])
    e = np.minimum(a[ai, 1], b[bj, 1])
    keep = e > s
    return np.stack([s[keep], e[keep]], axis=1)


def overlap_length(a: np.ndarray, b: np.ndarray) -> float:
    return total_length(intersect(a, b))


def clip(iv: np.ndarray, start: float, end: float) -> np.ndarray:
    """The parts of ``iv`` inside ``[start, end)``, shifted so that ``start`` becomes 0."""
    if len(iv) == 0:
        return empty()
    i0 = np.searchsorted(iv[:, 1], start, side="right")
    i1 = np.searchsorted(iv[:, 0], end, side="left")
    part = iv[i0:i1].copy()
    np.clip(part, start, end, out=part)
    part = part[part[:, 1] > part[:, 0]]
    return part - start


def contains(iv: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Boolean mask of the times ``t`` that fall inside any interval of ``iv``."""
    t = np.asarray(t)
    if len(iv) == 0:
        return np.zeros(t.shape, dtype=bool)
    k = np.searchsorted(iv[:, 0], t, side="right") - 1
    inside = k >= 0
    kk = np.clip(k, 0, None)
    return inside & (t < iv[kk, 1])


def first_seconds(iv: np.ndarray, seconds: float) -> np.ndarray:
    """The earliest ``seconds`` of ``iv`` (sorted, disjoint): whole intervals, then part of one."""
    if not seconds >= 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    if len(iv) == 0:
        return empty()
    ends_at = np.cumsum(iv[:, 1] - iv[:, 0])
    n = int(np.searchsorted(ends_at, seconds, side="left"))  # intervals fully or partly needed
    if n >= len(iv):
        return iv.copy()
    out = iv[: n + 1].copy()
    before = ends_at[n - 1] if n else 0.0
    out[n, 1] = out[n, 0] + (seconds - before)
    return out[out[:, 1] > out[:, 0]]

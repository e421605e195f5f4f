"""Window augmentations: ``transform(window, rng) -> window``.

Each call receives the generator of its own sample (see ``Dataset.rng``), so results
do not depend on worker count, worker order or start method.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from poyo.data.window import Window


class Compose:
    """Apply transforms in order, sharing the sample's generator."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"transforms must be callables f(window, rng), got {t!r}")

    def __call__(self, window: Window, rng: np.random.Generator) -> Window:
        for t in self.transforms:
            window = t(window, rng)
        return window


class UnitDropout:
    """Keep a random subset of the window's units.

    The number kept, ``n``, follows a triangle-shaped density on the integers
    ``min_units..max_units``: weight 1 at both ends rising linearly to ``peak`` at
    ``mode_units``. It is drawn exactly by inverse CDF (the reference implementation's
    rejection step used a random proposal and flattened the triangle). A population of
    at most ``min_units`` units is left whole; a draw of ``n`` at or above the
    population size keeps every unit. Defaults are POYO-MP's (30, 100, 300, 4).
    """

    def __init__(self, min_units: int = 30, mode_units: int = 100, max_units: int = 300, peak: float = 4.0):
        if not (1 <= min_units <= mode_units <= max_units):
            raise ValueError(f"need 1 <= min_units <= mode_units <= max_units, got {min_units}, {mode_units}, {max_units}")
        if not peak >= 1.0:
            raise ValueError(f"peak must be >= 1 (the weight at the ends), got {peak}")
        self.min_units, self.mode_units, self.max_units, self.peak = int(min_units), int(mode_units), int(max_units), float(peak)
        n = np.arange(self.min_units, self.max_units + 1)
        w = np.ones(len(n))
        rise = n <= self.mode_units
        if self.mode_units > self.min_units:
            w[rise] = 1 + (self.peak - 1) * (n[rise] - self.min_units) / (self.mode_units - self.min_units)
        else:
            w[rise] = self.peak
        if self.max_units > self.mode_units:
            w[~rise] = 1 + (self.peak - 1) * (self.max_units - n[~rise]) / (self.max_units - self.mode_units)
        self.support = n
        self.pmf = w / w.sum()
        self._cdf = np.cumsum(self.pmf)
        self._cdf[-1] = 1.0

    def sample_count(self, rng: np.random.Generator, size=None):
        """Draw the number of units to keep (before capping by the population size)."""
        u = rng.random(size)
        return self.support[np.searchsorted(self._cdf, u, side="right")]

    def __call__(self, window: Window, rng: np.random.Generator) -> Window:
        total = len(window.unit_ids)
        if total <= self.min_units:
            return window
        n = int(self.sample_count(rng))
        if n >= total:
            return window
        keep = np.sort(rng.choice(total, size=n, replace=False))
        new_index = np.full(total, -1, dtype=np.int64)
        new_index[keep] = np.arange(n)
        mapped = new_index[window.spike_units]
        kept = mapped >= 0
        return window.replace(unit_ids=window.unit_ids[keep], spike_times=window.spike_times[kept], spike_units=mapped[kept])


class OutputSampler:
    """Keep at most ``max_samples`` random behaviour samples per series (sorted in time),
    to bound the number of output queries per window."""

    def __init__(self, max_samples: int, keys: Sequence[str] | None = None):
        if not (isinstance(max_samples, (int, np.integer)) and max_samples >= 1):
            raise ValueError(f"max_samples must be a positive integer, got {max_samples!r}")
        self.max_samples, self.keys = int(max_samples), None if keys is None else list(keys)

    def __call__(self, window: Window, rng: np.random.Generator) -> Window:
        behaviour = dict(window.behaviour)
        for key in self.keys if self.keys is not None else list(behaviour):
            if key not in behaviour:
                raise KeyError(f"OutputSampler: window of session '{window.session_id}' has no behaviour '{key}' (has {list(behaviour)})")
            series = behaviour[key]
            if len(series) > self.max_samples:
                behaviour[key] = series.select(np.sort(rng.choice(len(series), size=self.max_samples, replace=False)))
        return window.replace(behaviour=behaviour)

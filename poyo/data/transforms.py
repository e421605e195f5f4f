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
        return keep_units(window, int(self.sample_count(rng)), rng)


class FractionUnitDropout:
    """Keep a random share of the window's units, whatever the population size.

    The number kept, ``n``, is drawn on ``ceil(min_fraction * U) .. U`` (``U`` the units in
    the window) with a density rising linearly from 1 to ``peak`` at ``U``: mostly nearly
    all units, sometimes half. :class:`UnitDropout`'s absolute counts (30 to 300, made for
    populations of hundreds) leave a population of a few dozen units untouched; a small
    recording needs the augmentation most.
    """

    def __init__(self, min_fraction: float = 0.5, peak: float = 4.0):
        if not 0 < min_fraction <= 1:
            raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
        if not peak >= 1.0:
            raise ValueError(f"peak must be >= 1 (the weight at min_fraction), got {peak}")
        self.min_fraction, self.peak = float(min_fraction), float(peak)
        self._cdf: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def pmf(self, units: int) -> tuple[np.ndarray, np.ndarray]:
        """(counts, probabilities) for a population of ``units``."""
        lo = max(1, int(np.ceil(self.min_fraction * units)))
        n = np.arange(lo, units + 1)
        w = 1 + (self.peak - 1) * (n - lo) / max(units - lo, 1)
        return n, w / w.sum()

    def __call__(self, window: Window, rng: np.random.Generator) -> Window:
        total = len(window.unit_ids)
        if total not in self._cdf:
            n, p = self.pmf(total)
            cdf = np.cumsum(p)
            cdf[-1] = 1.0
            self._cdf[total] = (n, cdf)
        n, cdf = self._cdf[total]
        return keep_units(window, int(n[np.searchsorted(cdf, rng.random(), side="right")]), rng)


def keep_units(window: Window, n: int, rng: np.random.Generator) -> Window:
    """``window`` with a random subset of ``n`` of its units (all of them if ``n`` is not smaller)."""
    total = len(window.unit_ids)
    if n >= total:
        return window
    keep = np.sort(rng.choice(total, size=n, replace=False))
    new_index = np.full(total, -1, dtype=np.int64)
    new_index[keep] = np.arange(n)
    mapped = new_index[window.spike_units]
    kept = mapped >= 0
    regions = None if window.unit_regions is None else window.unit_regions[keep]
    return window.replace(
        unit_ids=window.unit_ids[keep],
        spike_times=window.spike_times[kept],
        spike_units=mapped[kept],
        unit_regions=regions,
    )


def unit_dropout(**settings):
    """The unit dropout a config describes: ``min_fraction`` (and ``peak``) for
    :class:`FractionUnitDropout`, else ``min_units``/``mode_units``/``max_units`` for :class:`UnitDropout`."""
    return FractionUnitDropout(**settings) if "min_fraction" in settings else UnitDropout(**settings)


class SpikeJitter:
    """Move every spike by an independent uniform shift in ``[-max_shift, +max_shift]`` seconds.

    Decoding behaviour should not hinge on when exactly inside a few milliseconds a spike
    fell, and for spikes re-timed from binned counts that position is made up. Shifted
    spikes that leave the window are dropped; the rest stay sorted.
    """

    def __init__(self, max_shift: float):
        if not (np.isfinite(max_shift) and max_shift > 0):
            raise ValueError(f"max_shift must be a positive number of seconds, got {max_shift}")
        self.max_shift = float(max_shift)

    def __call__(self, window: Window, rng: np.random.Generator) -> Window:
        t = window.spike_times + rng.uniform(-self.max_shift, self.max_shift, len(window.spike_times))
        keep = (t >= 0) & (t < window.duration)
        order = np.argsort(t[keep], kind="stable")
        return window.replace(spike_times=t[keep][order], spike_units=window.spike_units[keep][order])


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

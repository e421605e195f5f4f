"""Samplers yield :class:`WindowIndex` (session, start, end, seed) for a :class:`Dataset`.

All three are deterministic: the random one given ``seed`` and the epoch (set with
:meth:`RandomFixedWindowSampler.set_epoch`, as with torch's DistributedSampler), the
two evaluation ones always.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from poyo.data import intervals as ivs
from poyo.data.window import WindowIndex


def _check(intervals: Mapping[str, np.ndarray], window_length: float) -> dict[str, np.ndarray]:
    if not isinstance(intervals, Mapping) or not intervals:
        raise ValueError("sampling intervals must be a non-empty {session_id: (n, 2) array} mapping")
    if not (np.isfinite(window_length) and window_length > 0):
        raise ValueError(f"window_length must be a positive number of seconds, got {window_length}")
    out = {}
    for sid, iv in intervals.items():
        iv = ivs.as_intervals(iv)
        if (msg := ivs.problem(iv)) is not None:
            raise ValueError(f"session '{sid}': sampling intervals: {msg}")
        out[sid] = iv
    return out


def _too_short(sid: str, iv: np.ndarray, window_length: float) -> ValueError:
    longest = float(np.max(iv[:, 1] - iv[:, 0])) if len(iv) else 0.0
    return ValueError(
        f"session '{sid}': window_length {window_length:g} s is longer than every sampling interval "
        f"(longest {longest:.3f} s, {len(iv)} interval(s)); use a shorter window or drop this session"
    )


def tile(start: float, end: float, window_length: float, step: float) -> np.ndarray:
    """Window starts covering ``[start, end)``: every ``step``, plus one flush with the end."""
    n = int(np.floor((end - start - window_length) / step + 1e-9)) + 1
    starts = start + step * np.arange(max(n, 0))
    if n <= 0 or starts[-1] + window_length < end - 1e-9:
        starts = np.append(starts, end - window_length)
    return starts


class RandomFixedWindowSampler:
    """Training windows: each interval is tiled with back-to-back windows at a random
    offset that changes every epoch, and all windows are shuffled.

    Intervals shorter than the window are skipped (a session with no usable interval
    raises). With ``num_replicas > 1`` every rank draws the same permutation and takes
    every ``num_replicas``-th window, truncated so that ranks get equal counts.

    ``half_windows``: the share of the epoch's windows that are half as long. That many of the
    tiled windows, drawn anew each epoch, are cut into their two halves, so the windows still
    cover each interval once and their count is the same every epoch (0.5 for a model trained
    from scratch on a lab's own recording: it helped 2 s windows on simulated head direction and
    tied on S1; benchmarks/README.md, "Half of the windows half as long").
    """

    def __init__(
        self,
        intervals: Mapping[str, np.ndarray],
        window_length: float,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        half_windows: float = 0.0,
    ):
        self.intervals = _check(intervals, window_length)
        if not (isinstance(half_windows, (int, float)) and 0.0 <= half_windows < 1.0):
            raise ValueError(f"half_windows must be a share in [0, 1), got {half_windows!r}")
        if not (isinstance(num_replicas, int) and num_replicas >= 1 and 0 <= rank < num_replicas):
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")
        self.window_length = float(window_length)
        self.seed, self.num_replicas, self.rank = int(seed), num_replicas, rank
        self.epoch = 0
        self.skipped = 0
        for sid, iv in self.intervals.items():
            lengths = iv[:, 1] - iv[:, 0]
            if not (lengths >= self.window_length).any():
                raise _too_short(sid, iv, self.window_length)
            self.skipped += int((lengths < self.window_length).sum())
        whole = sum(int(np.floor((iv[:, 1] - iv[:, 0]) / self.window_length + 1e-9).sum()) for iv in self.intervals.values())
        # cutting k of the whole windows gives 2k halves among whole + k windows: 2k / (whole + k) = share
        self.half_windows = float(half_windows)
        self._cut = int(round(whole * self.half_windows / (2.0 - self.half_windows)))
        self._total = whole + self._cut
        if self._total < num_replicas:
            raise ValueError(f"only {self._total} windows for {num_replicas} replicas")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._total // self.num_replicas

    def _windows(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        sessions, starts = [], []
        for k, (sid, iv) in enumerate(self.intervals.items()):
            lengths = iv[:, 1] - iv[:, 0]
            n = np.floor(lengths / self.window_length + 1e-9).astype(np.int64)
            use = n > 0
            slack = lengths[use] - n[use] * self.window_length
            offset = rng.uniform(0.0, 1.0, size=use.sum()) * slack
            first = iv[use, 0] + offset
            counts = n[use]
            within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            starts.append(np.repeat(first, counts) + within * self.window_length)
            sessions.append(np.full(counts.sum(), k))
        return np.concatenate(sessions), np.concatenate(starts)

    def __iter__(self) -> Iterator[WindowIndex]:
        rng = np.random.default_rng([self.seed, self.epoch])
        sessions, starts = self._windows(rng)
        lengths = np.full(len(starts), self.window_length)
        if self._cut:
            cut = rng.choice(len(starts), size=self._cut, replace=False)
            half = self.window_length / 2
            sessions = np.concatenate([sessions, sessions[cut]])
            starts = np.concatenate([starts, starts[cut] + half])
            lengths[cut] = half
            lengths = np.concatenate([lengths, np.full(self._cut, half)])
        order = rng.permutation(len(starts))
        seeds = rng.integers(0, 2**63 - 1, size=len(starts))
        n = len(self)
        mine = order[self.rank : n * self.num_replicas : self.num_replicas]
        names = list(self.intervals)
        for j, i in enumerate(mine):
            s = float(starts[i])
            yield WindowIndex(names[sessions[i]], s, s + float(lengths[i]), int(seeds[self.rank + j * self.num_replicas]))


class SequentialFixedWindowSampler:
    """Evaluation windows in order: every interval tiled with windows every ``step``
    seconds (default: the window length), the last one flush with the interval's end.

    Intervals shorter than the window raise, or are skipped with ``drop_short=True``.
    """

    def __init__(self, intervals: Mapping[str, np.ndarray], window_length: float, *, step: float | None = None, drop_short: bool = False):
        self.intervals = _check(intervals, window_length)
        self.window_length = float(window_length)
        self.step = self.window_length if step is None else float(step)
        if not (0 < self.step <= self.window_length):
            raise ValueError(f"step must be in (0, window_length={self.window_length}], got {step}; larger steps leave gaps")
        self.windows: list[WindowIndex] = []
        self.interval_ids: list[int] = []  # for each window, its interval's position over all sessions
        k = 0
        for sid, iv in self.intervals.items():
            short = (iv[:, 1] - iv[:, 0]) < self.window_length - 1e-9
            if short.all():
                raise _too_short(sid, iv, self.window_length)
            if short.any() and not drop_short:
                i = int(np.flatnonzero(short)[0])
                raise ValueError(
                    f"session '{sid}': interval {i} [{iv[i, 0]:.3f}, {iv[i, 1]:.3f}) is shorter than window_length "
                    f"{self.window_length:g} s ({int(short.sum())} such interval(s)); pass drop_short=True to skip them"
                )
            for s0, s1 in iv[~short]:
                for st in tile(s0, s1, self.window_length, self.step):
                    self.windows.append(WindowIndex(sid, float(st), float(st) + self.window_length, 0))
                    self.interval_ids.append(k)
                k += 1
        self.num_intervals = k

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[WindowIndex]:
        return iter(self.windows)


class DistributedStitchingSampler:
    """Evaluation under data parallelism: whole intervals go to one rank, so each rank
    can stitch its own predictions and no behaviour sample is split between ranks.

    Intervals are dealt largest first to the rank with the fewest windows so far
    (ties to the lowest rank); within a rank they keep dataset order. The union over
    ranks is exactly the windows of :class:`SequentialFixedWindowSampler`.
    """

    def __init__(
        self,
        intervals: Mapping[str, np.ndarray],
        window_length: float,
        *,
        step: float | None = None,
        drop_short: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if not (isinstance(num_replicas, int) and num_replicas >= 1 and 0 <= rank < num_replicas):
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")
        full = SequentialFixedWindowSampler(intervals, window_length, step=step, drop_short=drop_short)
        self.window_length, self.step = full.window_length, full.step
        self.num_replicas, self.rank = num_replicas, rank
        ids = np.asarray(full.interval_ids)
        sizes = np.bincount(ids, minlength=full.num_intervals)
        owner = np.empty(full.num_intervals, dtype=np.int64)
        load = np.zeros(num_replicas, dtype=np.int64)
        for k in np.argsort(-sizes, kind="stable"):
            r = int(np.argmin(load))
            owner[k] = r
            load[r] += sizes[k]
        self.load = load
        mine = owner[ids] == rank
        self.windows = [w for w, m in zip(full.windows, mine) if m]
        self.interval_ids = ids[mine].tolist()

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[WindowIndex]:
        return iter(self.windows)


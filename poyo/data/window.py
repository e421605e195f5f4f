"""What ``poyo.data`` hands to transforms and the tokenizer: one window of one session.

All times inside a :class:`Window` are relative to its start (the window spans
``[0, end - start)``); ``start``/``end`` keep the absolute position for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np


class WindowIndex(NamedTuple):
    """What samplers yield and ``Dataset.__getitem__`` takes.

    ``seed`` makes every random transform of this sample reproducible no matter
    which DataLoader worker reads it.
    """

    session: str
    start: float
    end: float
    seed: int = 0


@dataclass
class Series:
    """Samples of one behaviour field inside a window.

    ``sample_index`` is each sample's integer position in the session's array, so
    predictions from overlapping windows can be stitched without comparing floats.
    """

    timestamps: np.ndarray  # (n,) float64, relative to the window start
    values: np.ndarray  # (n, ...) the stored dtype
    sample_index: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.timestamps)

    def select(self, keep: np.ndarray) -> "Series":
        return Series(self.timestamps[keep], self.values[keep], self.sample_index[keep])


@dataclass
class Window:
    session_id: str  # globally unique: "<brainset>/<session>"
    start: float  # absolute start time in the session (s)
    end: float  # absolute end time (s)
    unit_ids: np.ndarray  # (U,) str, globally unique "<brainset>/<session>/<unit>"
    spike_times: np.ndarray  # (S,) float64 in [0, end - start), sorted
    spike_units: np.ndarray  # (S,) int64 index into unit_ids
    behaviour: dict[str, Series] = field(default_factory=dict)  # key e.g. "cursor.vel"
    intervals: dict[str, np.ndarray] = field(default_factory=dict)  # (n, 2), relative, clipped
    subject_id: str = ""
    unit_regions: np.ndarray | None = None  # (U,) str brain region of each unit ("" = unknown); None = not recorded

    @property
    def duration(self) -> float:
        return self.end - self.start

    def replace(self, **changes) -> "Window":
        return replace(self, **changes)

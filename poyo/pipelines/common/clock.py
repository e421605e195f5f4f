"""Repairing recordings whose clock restarted mid-session (Churchland & Shenoy 2012).

The trial table shows a reset as a trial that starts before the previous one stopped. The
recording is cut into epochs there, and every epoch after the first is moved to start
``gap`` seconds after the previous one ended. Any series stored in recording order
(behaviour samples, one unit's spike times) restarts at the same points: it is cut where
its times decrease, and each piece is matched, in order, to the epoch whose original time
span contains it, and moved with it. A piece that fits no epoch cannot be placed and is
reported rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Epochs:
    start: np.ndarray  # original span of each epoch
    end: np.ndarray
    shift: np.ndarray  # seconds added to every time in the epoch

    @property
    def count(self) -> int:
        return len(self.start)


def find_epochs(trial_start: np.ndarray, trial_stop: np.ndarray, gap: float = 60.0) -> tuple[Epochs, np.ndarray]:
    """Epochs from a trial table in recording order, and the epoch of each trial."""
    trial_start, trial_stop = np.asarray(trial_start, float), np.asarray(trial_stop, float)
    resets = np.flatnonzero(trial_start[1:] < trial_stop[:-1]) + 1
    bounds = np.concatenate([[0], resets, [len(trial_start)]])
    start = np.array([trial_start[a:b].min() for a, b in zip(bounds[:-1], bounds[1:])])
    end = np.array([trial_stop[a:b].max() for a, b in zip(bounds[:-1], bounds[1:])])
    shift = np.zeros(len(start))
    for k in range(1, len(start)):
        shift[k] = (end[k - 1] + shift[k - 1] + gap) - start[k]
    which = np.repeat(np.arange(len(start)), np.diff(bounds))
    return Epochs(start, end, shift), which


class Unplaceable(ValueError):
    pass


def realign(times: np.ndarray, epochs: Epochs, slack: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``times`` (recording order) moved onto the repaired clock; also returns which
    samples to keep (those inside their epoch's span, give or take ``slack``).

    Each run between two decreases goes to the next epoch it overlaps most."""
    times = np.asarray(times, float)
    if epochs.count == 1 or len(times) == 0:
        return times + epochs.shift[0] if len(epochs.shift) else times, np.ones(len(times), bool)
    cuts = np.flatnonzero(np.diff(times) < 0) + 1
    pieces = np.split(np.arange(len(times)), cuts)
    out, keep = times.copy(), np.zeros(len(times), bool)
    e = 0
    for piece in pieces:
        lo, hi = times[piece].min(), times[piece].max()
        # the next epoch (in order) this run overlaps most; runs never go back to an earlier epoch
        overlap = np.minimum(hi, epochs.end[e:] + slack) - np.maximum(lo, epochs.start[e:] - slack)
        if len(overlap) == 0 or overlap.max() <= 0:
            raise Unplaceable(
                f"a run of {len(piece)} samples in [{lo:.3f}, {hi:.3f}] s overlaps no remaining clock epoch"
            )
        e += int(np.argmax(overlap))
        inside = (times[piece] >= epochs.start[e] - slack) & (times[piece] <= epochs.end[e] + slack)
        out[piece] += epochs.shift[e]
        keep[piece] = inside
        e += 1
    return out, keep

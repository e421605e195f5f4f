"""Closed-loop decoding: feed spikes as they arrive, ask for the behaviour now.

    dec = StreamingDecoder(model, session_id="synthetic_reaching/monkey_a_...", unit_ids=units)
    dec.push(times, units)          # absolute times (s), non-decreasing; units as ids or 0..U-1
    vx, vy = dec.predict(t_now)     # estimate at t_now from the spikes of (t_now - 1 s, t_now]

The decoder keeps the last ``window`` seconds of spikes in a ring buffer (older spikes
are dropped as time advances), and every ``predict`` runs the model on one window ending
at ``t_now`` with a single output query at its end, through the same tokenizer as
training. Predictions are returned in the behaviour's own units (the model's readout
normalisation is undone). The model runs in eval mode under ``torch.inference_mode``.

For the tightest latency call :func:`keep_freed_memory` (:mod:`poyo.memory`, importable
from here too) once at start-up (glibc only): every update allocates a few MB of
activations, and by default glibc returns such blocks to the system when they are freed, so
the next update pays page faults on fresh memory (``benchmarks/streaming.py`` measures the
difference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from poyo.data import intervals as ivs
from poyo.data.collate import collate_packed
from poyo.data.window import Series, Window
from poyo.memory import keep_freed_memory
from poyo.model import POYO
from poyo.readouts import ReadoutConfig, readouts_for

__all__ = ["StreamingDecoder", "keep_freed_memory"]


class StreamingDecoder:
    def __init__(
        self, model: POYO, *, session_id: str, unit_ids: Sequence[str], readout: str | None = None,
        config: ReadoutConfig | None = None, window: float = 1.0, capacity: int = 4096,
    ):  # fmt: skip
        if not isinstance(model, POYO):
            raise TypeError(f"expected a POYO model, got {type(model).__name__}")
        if not (isinstance(window, (int, float)) and np.isfinite(window) and window > 0):
            raise ValueError(f"window must be a finite number of seconds > 0, got {window!r}")
        if not (isinstance(capacity, int) and not isinstance(capacity, bool) and capacity >= 1):
            raise ValueError(f"capacity must be a positive number of spikes, got {capacity!r}")
        if config is None:
            configs = model.readout_configs or [ReadoutConfig(n) for n in model.readout_names]
            # the configs this session was trained with (multi-dataset models normalise per dataset)
            fed = readouts_for(configs, session_id)
            names = [r.name for r in fed]
            readout = readout or (names[0] if names else model.readout_names[0])
            if readout not in names:
                raise ValueError(
                    f"session '{session_id}' matches none of the model's configs for readout {readout!r} "
                    f"(patterns {[r.sessions for r in configs if r.name == readout]}); pass config=ReadoutConfig(...) with its normalisation"
                )
            config = fed[names.index(readout)]
        self.config: ReadoutConfig = ReadoutConfig(**{**config.to_dict(), "sessions": None})
        readout = self.config.name
        if readout not in model.readout_names:
            raise ValueError(f"readout {readout!r} is not a head of this model ({model.readout_names})")
        if self.config.spec.kind != "continuous":
            raise ValueError(f"streaming decodes continuous readouts; {readout!r} is {self.config.spec.kind}")
        self.unit_ids = np.asarray([str(u) for u in unit_ids])
        if len(self.unit_ids) == 0:
            raise ValueError("unit_ids is empty")
        self._unit_pos = {u: i for i, u in enumerate(self.unit_ids.tolist())}
        if len(self._unit_pos) != len(self.unit_ids):
            raise ValueError("unit_ids has duplicates")
        self.model = model.eval()
        self.session_id, self.window = session_id, float(window)
        model.check_window(self.window)
        # Fails here, not at the first spike, if the session or a unit is unknown to the model.
        self.tokenizer = model.tokenizer([self.config])
        self._empty_intervals = {k: ivs.empty() for k in self.config.interval_keys()}
        self._probe_window(0.0)
        self.device = next(model.parameters()).device
        self._times = np.empty(capacity, np.float64)
        self._units = np.empty(capacity, np.int64)
        self._n = 0
        self._last_t = -np.inf
        self._cut = -np.inf  # spikes at or before this time have been dropped from the buffer

    def _probe_window(self, end: float) -> None:
        self.tokenizer(self._window(end, np.zeros(0), np.zeros(0, np.int64)))

    def _window(self, end: float, times: np.ndarray, units: np.ndarray) -> Window:
        query = Series(
            timestamps=np.array([self.window]),
            values=np.full((1, self.config.spec.dim), np.nan),
            sample_index=np.zeros(1, np.int64),
        )
        return Window(
            session_id=self.session_id, start=end - self.window, end=end, unit_ids=self.unit_ids,
            spike_times=times - (end - self.window), spike_units=units,
            behaviour={self.config.key: query}, intervals=self._empty_intervals,
        )  # fmt: skip

    def reset(self) -> None:
        self._n, self._last_t, self._cut = 0, -np.inf, -np.inf

    def push(self, times, units) -> None:
        """Add spikes: ``times`` absolute and non-decreasing (also across calls); ``units``
        as ids from ``unit_ids`` or as integer positions in it."""
        times = np.asarray(times, np.float64).reshape(-1)
        units = np.asarray(units).reshape(-1)
        if len(times) != len(units):
            raise ValueError(f"push: {len(times)} times but {len(units)} units")
        if len(times) == 0:
            return
        if not np.isfinite(times).all():
            raise ValueError("push: spike times must be finite")
        if times[0] < self._last_t or np.any(np.diff(times) < 0):
            raise ValueError(
                f"push: spike times must not go back in time (last seen {self._last_t:.6f} s, got {times.min():.6f} s)"
            )
        if units.dtype.kind in "iu":
            if units.min() < 0 or units.max() >= len(self.unit_ids):
                raise ValueError(f"push: unit positions must be in 0..{len(self.unit_ids) - 1}")
            idx = units.astype(np.int64)
        else:
            try:
                idx = np.fromiter((self._unit_pos[str(u)] for u in units), np.int64, len(units))
            except KeyError:
                unknown = sorted({str(u) for u in units} - set(self._unit_pos))
                raise KeyError(f"push: units not given to this decoder: {unknown[:5]}") from None
        self._trim(times[-1] - self.window)
        need = self._n + len(times)
        if need > len(self._times):  # grow (rare): amortised doubling
            size = max(need, 2 * len(self._times))
            self._times = np.concatenate([self._times[: self._n], np.empty(size - self._n)])
            self._units = np.concatenate([self._units[: self._n], np.empty(size - self._n, np.int64)])
        self._times[self._n : need], self._units[self._n : need] = times, idx
        self._n, self._last_t = need, float(times[-1])

    def _trim(self, cutoff: float) -> None:
        self._cut = max(self._cut, cutoff)
        drop = int(np.searchsorted(self._times[: self._n], cutoff, side="right"))
        if drop:
            keep = self._n - drop
            self._times[:keep] = self._times[drop : self._n]
            self._units[:keep] = self._units[drop : self._n]
            self._n = keep

    @property
    def buffered(self) -> int:
        """Spikes currently held."""
        return self._n

    def predict(self, t_now: float) -> np.ndarray:
        """Behaviour estimate at ``t_now`` (in the behaviour's units), from the spikes in
        ``(t_now - window, t_now]``."""
        if not (isinstance(t_now, (int, float, np.floating, np.integer)) and np.isfinite(t_now)):
            raise ValueError(f"predict: t_now must be a finite time in seconds, got {t_now!r}")
        if t_now < self._last_t:
            raise ValueError(f"predict: t_now={t_now:.6f} is before the last spike pushed ({self._last_t:.6f})")
        if t_now - self.window < self._cut:  # an earlier call already dropped spikes this window needs
            raise ValueError(
                f"predict: t_now={t_now:.6f} needs the spikes after {t_now - self.window:.6f} s, but those up to "
                f"{self._cut:.6f} s were already dropped (by a later predict or push); predict times must not go "
                "back, or reset() and push the spikes again"
            )
        self._trim(t_now - self.window)
        times, units = self._times[: self._n], self._units[: self._n]
        sample = self.tokenizer(self._window(t_now, times, units))
        batch = collate_packed([sample])
        if self.device.type != "cpu":
            batch = {
                k: (
                    {
                        f: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                        for f, v in g.items()
                    }
                    if isinstance(g, dict)
                    else g
                )
                for k, g in batch.items()
            }
        with torch.inference_mode():
            pred = self.model(batch)[self.config.name][0].float().cpu().numpy()
        return self.config.denormalise(pred)

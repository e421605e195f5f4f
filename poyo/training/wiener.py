"""The classic baseline: a Wiener filter (ridge regression on binned spike-count history).

For every behaviour sample at time t the features are each unit's spike counts in
``lags`` bins of ``bin_s`` seconds before t (history ``lags * bin_s``). One decoder per
session and readout is fitted on the session's training split; the ridge penalty is
picked on the validation split; the test score uses the same evaluation samples as POYO
(inside the test split and the readout's evaluation intervals).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from poyo.data import intervals as ivs
from poyo.data.dataset import Dataset
from poyo.data.window import WindowIndex
from poyo.model.tokenizer import ReadoutConfig
from poyo.training.stitch import r2_score

ALPHAS = (1e-1, 1e0, 1e1, 1e2, 1e3, 1e4)


def history_features(spike_times: np.ndarray, spike_units: np.ndarray, n_units: int, t: np.ndarray, bin_s: float, lags: int) -> np.ndarray:
    """``(len(t), n_units * lags)`` spike counts in the ``lags`` bins before each time."""
    edges = t[:, None] - bin_s * np.arange(lags + 1)[None, :]  # (n, lags + 1), descending
    feats = np.empty((len(t), n_units, lags), np.float32)
    order = np.argsort(spike_units, kind="stable")
    bounds = np.searchsorted(spike_units[order], np.arange(n_units + 1))
    for u in range(n_units):
        s = spike_times[order[bounds[u] : bounds[u + 1]]]  # sorted: stable sort keeps time order
        cum = np.searchsorted(s, edges, side="left")
        feats[:, u, :] = cum[:, :-1] - cum[:, 1:]
    return feats.reshape(len(t), -1)


def _ridge(x: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> dict[float, np.ndarray]:
    """Ridge weights (with an unpenalised intercept) for each penalty, via one eigendecomposition."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    evals, evecs = np.linalg.eigh(xc.T @ xc)
    proj = evecs.T @ (xc.T @ yc)
    out = {}
    for a in alphas:
        w = evecs @ (proj / (evals + a)[:, None])
        out[a] = np.vstack([w, (my - mx @ w)[None]])
    return out


def _predict(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x @ w[:-1] + w[-1]


class WienerBaseline:
    """Fit per session on ``train``, choose the penalty on ``valid``, score ``test``."""

    def __init__(self, bin_s: float = 0.05, lags: int = 6, alphas: Sequence[float] = ALPHAS):
        if not (bin_s > 0 and lags >= 1 and alphas):
            raise ValueError(f"need bin_s > 0, lags >= 1 and some alphas, got {bin_s}, {lags}, {alphas}")
        self.bin_s, self.lags, self.alphas = float(bin_s), int(lags), tuple(alphas)

    def _session_arrays(self, ds: Dataset, sid: str, readout: ReadoutConfig):
        s = ds.sessions[sid]
        w = ds.read(WindowIndex(sid, s.start, s.end + 1e-6))
        series = w.behaviour[readout.key]
        t = series.timestamps + w.start
        x = history_features(w.spike_times + w.start, w.spike_units, len(w.unit_ids), t, self.bin_s, self.lags)
        y = np.asarray(series.values, np.float64).reshape(len(t), -1)
        ok = np.isfinite(y).all(1)
        if readout.eval_intervals is None:
            ev = np.ones(len(t), bool)
        else:
            ev = np.zeros(len(t), bool)
            for key in readout.eval_intervals:
                iv = w.intervals.get(key)
                if iv is None:
                    raise KeyError(f"session '{sid}': interval '{key}' was not loaded by the dataset")
                ev |= ivs.contains(iv + w.start, t)  # window intervals are relative to its start
        split = {k: ivs.contains(s.splits[k], t) & ok if s.splits[k] is not None else np.zeros(len(t), bool) for k in ("train", "valid", "test")}
        return x, y, split, ev, t, series.sample_index

    def evaluate(self, ds: Dataset, readout: ReadoutConfig, sessions: Sequence[str] | None = None) -> dict[str, dict]:
        """``{session: {"r2": test R², "alpha": chosen penalty, "pred", "sample_index", "time"}}``."""
        if readout.spec.kind != "continuous":
            raise ValueError(f"the Wiener baseline decodes continuous readouts, not '{readout.name}'")
        out = {}
        for sid in sessions if sessions is not None else ds.session_ids:
            x, y, split, ev, t, index = self._session_arrays(ds, sid, readout)
            tr, va, te = split["train"], split["valid"] & ev, split["test"] & ev
            if tr.sum() <= x.shape[1] // 10 or te.sum() < 2:
                continue
            weights = _ridge(x[tr], y[tr], self.alphas)
            if va.sum() >= 2:
                alpha = max(self.alphas, key=lambda a: r2_score(_predict(x[va], weights[a]), y[va]))
            else:
                alpha = self.alphas[len(self.alphas) // 2]
            pred = _predict(x[te], weights[alpha])
            out[sid] = {"r2": r2_score(pred, y[te]), "alpha": alpha, "pred": pred, "sample_index": index[te], "time": t[te]}
        return out

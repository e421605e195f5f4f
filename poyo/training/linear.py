"""The baselines POYO must beat: ridge regression on binned spike counts around each sample.

A fair linear decoder gets the information POYO gets. POYO reads a whole window, future
spikes included, so the ``window`` decoder sees bins before *and* after each behaviour
sample, spanning at most the window length; the ``causal`` decoder (a Wiener filter) sees
only bins before it, as an online decoder would. For each, how far back and ahead to look
(in ``step_s`` steps) and the ridge penalty are chosen on the validation split; the decoder
is fitted per session on the training split and scored on the same test samples as POYO
(inside the test split and the readout's evaluation intervals).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from poyo.data import intervals as ivs
from poyo.data.dataset import Dataset
from poyo.data.window import WindowIndex
from poyo.readouts import ReadoutConfig
from poyo.training.stitch import angular_error_deg, score

# ridge penalties, relative to the mean variance x samples of one feature
ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
VARIANTS = ("window", "causal")


def binned_counts(
    spike_times: np.ndarray,
    spike_units: np.ndarray,
    n_units: int,
    t: np.ndarray,
    bin_s: float,
    before: int,
    after: int,
    offset: float = 0.0,
) -> np.ndarray:
    """``(len(t), n_units, before + after)`` spike counts of each unit in ``bin_s`` bins around
    each time: ``before`` bins ending at ``t + offset``, then ``after`` bins starting there."""
    edges = (t + offset)[:, None] + bin_s * np.arange(-before, after + 1)[None, :]  # (n, bins + 1), ascending
    out = np.empty((len(t), n_units, before + after), np.float32)
    order = np.argsort(spike_units, kind="stable")
    bounds = np.searchsorted(spike_units[order], np.arange(n_units + 1))
    for u in range(n_units):
        s = spike_times[order[bounds[u] : bounds[u + 1]]]  # sorted: the stable sort keeps time order
        cum = np.searchsorted(s, edges, side="left")
        out[:, u, :] = cum[:, 1:] - cum[:, :-1]
    return out


def ridge_fits(gram: np.ndarray, xy: np.ndarray, alphas: Sequence[float]) -> dict[float, np.ndarray]:
    """Ridge weights for centred normal equations ``(gram + a I) w = xy``, one per penalty.

    With a > 0 the matrix is symmetric positive definite, so a Cholesky factorisation solves it
    in half the work of a general solve (this fit is most of the time a supervised run spends
    on its baselines); a general solve takes over if rounding leaves it not quite definite."""
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or len(xy) != len(gram):
        raise ValueError(f"need a square gram matrix and xy with as many rows, got {gram.shape} and {xy.shape}")
    scale = max(float(np.mean(np.diag(gram))), 1e-12)
    g = torch.from_numpy(np.asarray(gram, np.float64))
    b = torch.from_numpy(np.asarray(xy, np.float64))
    b = b[:, None] if b.ndim == 1 else b
    out = {}
    for a in alphas:
        m = g.clone()
        m.diagonal().add_(a * scale)
        factor, info = torch.linalg.cholesky_ex(m)
        w = torch.cholesky_solve(b, factor) if int(info) == 0 else torch.linalg.solve(m, b)
        out[a] = w.numpy().reshape(xy.shape)
    return out


def session_samples(ds: Dataset, sid: str, readout: ReadoutConfig, bin_s: float):
    """One session's behaviour samples as every baseline fits and scores them: ``(window,
    values (n, d), rows, absolute times, sample index)``, or None when the session has too few
    training (<= 10) or test (< 2) samples. Values are each angle's cos and sin for a circular
    readout. ``rows`` holds the indices of finite samples per split: ``valid`` and ``test``
    inside the readout's evaluation intervals, ``train`` thinned to about one per ``bin_s``
    bin (neighbours closer than a bin add little)."""
    s = ds.sessions[sid]
    w = ds.read(WindowIndex(sid, s.start, s.end + 1e-6))
    series = w.behaviour[readout.key]
    t = series.timestamps + w.start
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
    split = {
        k: ivs.contains(s.splits[k], t) & ok if s.splits[k] is not None else np.zeros(len(t), bool)
        for k in ("train", "valid", "test")
    }
    train = np.flatnonzero(split["train"])
    rows = {
        "train": train[np.unique(np.floor(t[train] / bin_s), return_index=True)[1]],
        "valid": np.flatnonzero(split["valid"] & ev),
        "test": np.flatnonzero(split["test"] & ev),
    }
    if len(rows["train"]) <= 10 or len(rows["test"]) < 2:
        return None
    if readout.spec.kind == "circular":  # regress each angle's cos and sin
        y = readout.encode(np.where(np.isfinite(y), y, 0.0))
    return w, y, rows, t, series.sample_index


class LinearBaseline:
    """Fit per session on ``train``, choose context and penalty on ``valid``, score ``test``.

    Args:
        bin_s: bin width (s).
        context_s: the most time the ``window`` decoder may span, before plus after each
            sample (POYO's window length).
        step_s: the context is chosen in steps of this many seconds.
        alphas: relative ridge penalties to choose from.
    """

    def __init__(
        self, bin_s: float = 0.05, context_s: float = 1.0, step_s: float = 0.25, alphas: Sequence[float] = ALPHAS
    ):
        if not (bin_s > 0 and context_s >= bin_s and step_s >= bin_s and alphas):
            raise ValueError(
                f"need bin_s > 0, context_s >= bin_s, step_s >= bin_s and some alphas, got {bin_s}, {context_s}, {step_s}, {alphas}"
            )
        self.bin_s, self.context_s, self.step_s, self.alphas = (
            float(bin_s),
            float(context_s),
            float(step_s),
            tuple(alphas),
        )

    def contexts(self, variant: str) -> list[tuple[int, int]]:
        """Candidate (bins before, bins after) for a variant."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        total = int(round(self.context_s / self.bin_s))
        step = max(1, int(round(self.step_s / self.bin_s)))
        before = list(range(step, total + 1, step)) or [total]
        if variant == "causal":
            return [(b, 0) for b in before]
        return [(b, a) for b in before for a in range(0, total - b + 1, step)]

    def evaluate(
        self, ds: Dataset, readout: ReadoutConfig, sessions: Sequence[str] | None = None
    ) -> dict[str, dict[str, dict]]:
        """``{variant: {session: {"r2", "before_s", "after_s", "alpha", "pred", "sample_index", "time"}}}``."""
        if readout.spec.kind == "categorical":
            raise ValueError(
                f"the linear baselines decode continuous and circular readouts, not '{readout.name}' (categorical)"
            )
        spec = readout.spec
        out: dict[str, dict[str, dict]] = {v: {} for v in VARIANTS}
        for sid in sessions if sessions is not None else ds.session_ids:
            samples = session_samples(ds, sid, readout, self.bin_s)
            if samples is None:
                continue
            w, y, rows, t, index = samples
            tr, va, te = rows["train"], rows["valid"], rows["test"]
            spikes = (w.spike_times + w.start, w.spike_units, len(w.unit_ids))
            for variant in VARIANTS:
                contexts = self.contexts(variant)
                most_before, most_after = max(b for b, _ in contexts), max(a for _, a in contexts)
                # causal: bins end at the sample; window: the bin holding the sample is centred on it
                offset = 0.0 if variant == "causal" else self.bin_s / 2
                x = {
                    k: binned_counts(*spikes, t[rows], self.bin_s, most_before, most_after, offset).reshape(
                        len(rows), -1
                    )
                    for k, rows in (("train", tr), ("valid", va), ("test", te))
                }
                mx, my = x["train"].mean(0, dtype=np.float64), y[tr].mean(0)
                xt = x["train"] - mx
                gram, xy = xt.T @ xt, xt.T @ (y[tr] - my)
                cols = np.arange(x["train"].shape[1]).reshape(len(w.unit_ids), most_before + most_after)
                best = None
                for before, after in contexts:
                    c = cols[:, most_before - before : most_before + after].ravel()
                    xv = x["valid"][:, c] - mx[c]  # once per context, not per penalty
                    for alpha, wt in ridge_fits(gram[np.ix_(c, c)], xy[c], self.alphas).items():
                        fit = score(spec, xv @ wt + my, y[va]) if len(va) >= 2 else 0.0
                        if best is None or fit > best[0]:
                            best = (fit, before, after, alpha, c, wt)
                _, before, after, alpha, c, wt = best
                pred = (x["test"][:, c] - mx[c]) @ wt + my
                out[variant][sid] = {
                    "r2": score(spec, pred, y[te]), "before_s": before * self.bin_s, "after_s": after * self.bin_s, "alpha": alpha,
                    "pred": pred, "sample_index": index[te], "time": t[te],
                }  # fmt: skip
                if spec.kind == "circular":
                    out[variant][sid]["angle_error_deg"] = angular_error_deg(pred, y[te], spec.dim)
        return out

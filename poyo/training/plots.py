"""A picture of decoding quality: true vs predicted behaviour on a few test trials."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from poyo.model.tokenizer import ReadoutConfig


def _trials(time: np.ndarray, gap: float) -> list[np.ndarray]:
    """Split sorted sample times into contiguous runs (test trials)."""
    breaks = np.flatnonzero(np.diff(time) > gap) + 1
    return np.split(np.arange(len(time)), breaks)


def segments(time: np.ndarray, n: int, max_seconds: float = 8.0) -> list[np.ndarray]:
    """Up to ``n`` readable stretches of sorted sample times, in time order: contiguous runs
    (trials) cut into pieces of at most ``max_seconds``, the longest ones, spread over the recording."""
    if len(time) < 2:
        return [np.arange(len(time))] if len(time) else []
    pieces = []
    for run in _trials(time, gap=5 * np.median(np.diff(time))):
        cut = np.floor((time[run] - time[run[0]]) / max_seconds).astype(int)
        pieces += [run[cut == k] for k in np.unique(cut)]
    length = np.array([time[p[-1]] - time[p[0]] for p in pieces])
    long = [p for p, d in zip(pieces, length) if d >= 0.5 * length.max()]  # skip short leftovers
    pick = np.unique(np.linspace(0, len(long) - 1, min(n, len(long))).round().astype(int))
    return [long[i] for i in pick]


def plot_test_trials(
    path,
    stitched: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    readout: ReadoutConfig | Sequence[ReadoutConfig],
    baseline: Mapping[str, Mapping] | None = None,
    scores: Mapping[str, Mapping[str, float]] | None = None,
    sessions: Sequence[str] | None = None,
    trials_per_session: int = 3,
) -> Path:
    """Write a PNG grid: one row per session, one column per test trial (or stretch of at most
    8 s of a long block, spread over it), both output dims.

    ``readout``: the head's config, or several configs of one head for datasets that
    normalise per brainset (each session is de-normalised with the config that fed it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = [readout] if isinstance(readout, ReadoutConfig) else list(readout)
    readout = configs[0]
    keys = [k for k in stitched if k[1] == readout.name and (sessions is None or k[0] in sessions)]
    if not keys:
        raise ValueError(f"nothing to plot for readout '{readout.name}'")
    keys = keys[: 3 if sessions is None else len(keys)]
    fig, axes = plt.subplots(len(keys), trials_per_session, figsize=(4 * trials_per_session, 2.6 * len(keys)), squeeze=False)
    for row, key in zip(axes, keys):
        s = stitched[key]
        order = np.argsort(s["time"])
        t, pred, true, ev = s["time"][order], s["pred"][order], s["target"][order], s["eval"][order]
        cfg = next((r for r in configs if r.name == readout.name and r.applies_to(key[0])), readout)
        pred, true = cfg.denormalise(pred), cfg.denormalise(true)
        base = None
        if baseline and key[0] in baseline:
            b = baseline[key[0]]
            base = dict(zip(b["sample_index"].tolist(), b["pred"]))
        idx_sorted = s["sample_index"][order]
        runs = segments(t, trials_per_session)
        for ax in row[len(runs) :]:
            ax.set_visible(False)
        for ax, run in zip(row, runs):
            for d, colour in zip(range(true.shape[1]), ("tab:blue", "tab:orange")):
                ax.plot(t[run], true[run, d], color="black", lw=1.2, label="true" if d == 0 else None)
                ax.plot(t[run], pred[run, d], color=colour, lw=1.2, label=f"POYO dim {d}")
                if base is not None:
                    bt = [(tt, base[i][d]) for tt, i in zip(t[run], idx_sorted[run]) if i in base]
                    if bt:
                        ax.plot(*zip(*bt), color=colour, lw=0.8, ls="--", alpha=0.7, label="linear" if d == 0 else None)
            ax.fill_between(t[run], 0, 1, where=ev[run], transform=ax.get_xaxis_transform(), color="grey", alpha=0.12, lw=0)
            ax.set_xlabel("time (s)")
        score = ""
        if scores and key[0] in scores and readout.name in scores[key[0]]:
            score = f"\nPOYO R² {scores[key[0]][readout.name]:.2f}"
            if baseline and key[0] in baseline:
                score += f", linear {baseline[key[0]]['r2']:.2f}"
        row[0].set_ylabel(f"{key[0].split('/')[-1]}{score}", fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{readout.name} ({', '.join(sorted({r.key for r in configs}))}) on test trials; shaded: evaluated samples", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

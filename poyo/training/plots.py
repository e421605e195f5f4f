"""A picture of decoding quality: true vs predicted behaviour on a few test trials."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from poyo.readouts import ReadoutConfig


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
    max_sessions: int = 3,
) -> Path:
    """Write a PNG grid: one row per session and output dim (one series per panel, so the
    dims are never confused), one column per test trial (or stretch of at most 8 s of a long
    block, spread over it). True values in black, POYO in colour, the window-matched linear
    decoder dashed. Angles (circular readouts) are drawn as points in degrees, so a wrap
    from +180 to -180 is not a line across the panel.

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
    keys = keys[: max_sessions if sessions is None else len(keys)]
    circular, dims = readout.spec.kind == "circular", readout.spec.dim
    prepared = []
    for key in keys:
        s = stitched[key]
        order = np.argsort(s["time"])
        cfg = next((r for r in configs if r.name == readout.name and r.applies_to(key[0])), readout)
        base = None
        if baseline and key[0] in baseline:
            b = baseline[key[0]]
            base = dict(zip(b["sample_index"].tolist(), cfg.decode(b["pred"]) if circular else np.asarray(b["pred"])))
        t = s["time"][order]
        runs = segments(t, trials_per_session)
        prepared.append(
            (
                key,
                cfg,
                t,
                cfg.decode(s["pred"][order]),
                cfg.decode(s["target"][order]),
                s["eval"][order],
                s["sample_index"][order],
                base,
                runs,
            )
        )
    columns = max(1, max(len(p[-1]) for p in prepared))
    fig, axes = plt.subplots(
        len(keys) * dims, columns, figsize=(3.8 * columns + 0.8, 1.9 * len(keys) * dims + 0.6), squeeze=False
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (key, cfg, t, pred, true, ev, idx, base, runs) in enumerate(prepared):
        to_deg = 360.0 / cfg.period if circular else 1.0
        for d in range(dims):
            row = axes[k * dims + d]
            colour = colours[d % len(colours)]
            style = dict(ls="none", marker=".", ms=2.5) if circular else dict(lw=1.2)
            for ax in row[len(runs) :]:
                ax.set_visible(False)
            for ax, run in zip(row, runs):
                ax.plot(t[run], true[run, d] * to_deg, color="black", label="true", **style)
                ax.plot(t[run], pred[run, d] * to_deg, color=colour, label="POYO", **style)
                if base is not None:
                    bt = [(tt, base[i][d] * to_deg) for tt, i in zip(t[run], idx[run]) if i in base]
                    if bt:
                        ax.plot(
                            *zip(*bt),
                            color="grey",
                            alpha=0.8,
                            label="linear",
                            **({**style, "ms": 1.5} if circular else dict(lw=0.8, ls="--")),
                        )
                ax.fill_between(
                    t[run], 0, 1, where=ev[run], transform=ax.get_xaxis_transform(), color="grey", alpha=0.12, lw=0
                )
                ax.tick_params(labelsize=7)
                if circular:
                    ax.set_ylim(-185, 185)
                    ax.set_yticks([-180, -90, 0, 90, 180])
            what = f"{cfg.key}" + (f"[{d}]" if dims > 1 or not circular else "")
            row[0].set_ylabel(f"{what} (deg)" if circular else what, fontsize=8)
            if d == 0:
                score = ""
                if scores and key[0] in scores and readout.name in scores[key[0]]:
                    score = f"  POYO R² {scores[key[0]][readout.name]:.2f}"
                    if baseline and key[0] in baseline:
                        score += f", linear {baseline[key[0]]['r2']:.2f}"
                row[0].set_title(f"{key[0]}{score}", fontsize=8, loc="left")
        for ax in axes[(k + 1) * dims - 1]:
            ax.set_xlabel("time (s)", fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper right", markerscale=3 if circular else 1)
    fig.suptitle(
        f"{readout.name} ({', '.join(sorted({r.key for r in configs}))}) on test data; shaded: evaluated samples",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

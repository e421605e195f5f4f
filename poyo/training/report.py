"""The test report: POYO's per-session R² beside the window-matched and causal linear
decoders (and, with ``baseline.gru=true``, the GRU decoders), as a table (printed, CSV, JSON)
and a plot of test trials."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from poyo.data import Dataset
from poyo.data import intervals as ivs
from poyo.readouts import ReadoutConfig
from poyo.training.gru import GRUBaseline
from poyo.training.linear import VARIANTS, LinearBaseline
from poyo.training.module import DataModule, POYOModule
from poyo.training.plots import plot_test_trials
from poyo.training.stitch import DEFAULT_CENTRE, angular_error_deg

GRU_COLUMNS = (("window", "gru_r2", "GRU R2"), ("causal", "gru_causal_r2", "GRU-c R2"))  # variant, column, header


def results_table(
    scores: dict, baselines: dict, readout: str, sessions: list[str], errors: dict | None = None
) -> tuple[str, list[dict]]:
    """POYO beside the window-matched and causal linear decoders, one row per session; a
    session without evaluable test samples is listed (n/a) and left out of the means.
    ``baselines`` holds ``{variant: {session: result}}`` for the linear variants and, when the
    GRU decoders ran, ``gru_window`` and ``gru_causal`` (columns ``gru_r2``, ``gru_causal_r2``).
    ``errors`` (``{session: degrees}``, circular readouts) adds mean angular error columns."""
    rows, out = [], []
    cols = [("poyo_r2", "POYO R2", 8), ("linear_r2", "linear R2", 10), ("causal_r2", "causal R2", 10)]
    grus = [(f"gru_{v}", col, name) for v, col, name in GRU_COLUMNS if f"gru_{v}" in baselines]
    cols += [(col, name, 10) for _, col, name in grus]
    if errors is not None:
        cols += [
            ("poyo_err_deg", "POYO err", 9),
            ("linear_err_deg", "linear err", 10),
            ("causal_err_deg", "causal err", 10),
            *[(col.replace("_r2", "_err_deg"), name.replace("R2", "err"), 10) for _, col, name in grus],
        ]
    w = max(len(s) for s in [*sessions, "mean over sessions"])
    head = f"{'session':{w}s} " + " ".join(f"{name:>{n}s}" for _, name, n in cols) + "   linear context"
    rows += [head, "-" * len(head)]
    fmt = lambda v: f"{v:.3f}" if np.isfinite(v) else "n/a"  # noqa: E731
    for sid in sorted(sessions):
        lin, cau = (baselines.get(v, {}).get(sid, {}) for v in VARIANTS)
        row = {
            "session": sid,
            "readout": readout,
            "poyo_r2": scores.get(sid, {}).get(readout, float("nan")),
            "linear_r2": lin.get("r2", np.nan),
            "causal_r2": cau.get("r2", np.nan),
            **{col: baselines[key].get(sid, {}).get("r2", np.nan) for key, col, _ in grus},
        }
        if errors is not None:
            row.update(
                poyo_err_deg=errors.get(sid, np.nan),
                linear_err_deg=lin.get("angle_error_deg", np.nan),
                causal_err_deg=cau.get("angle_error_deg", np.nan),
                **{
                    col.replace("_r2", "_err_deg"): baselines[key].get(sid, {}).get("angle_error_deg", np.nan)
                    for key, col, _ in grus
                },
            )
        context = f"-{lin['before_s']:g} s .. +{lin['after_s']:g} s" if lin else ""
        rows.append(f"{sid:{w}s} " + " ".join(f"{fmt(row[k]):>{n}s}" for k, _, n in cols) + f"   {context}")
        out.append(row)
    mean = {k: np.nanmean([r[k] for r in out]) if any(np.isfinite(r[k]) for r in out) else np.nan for k, _, _ in cols}
    rows += ["-" * len(head), f"{'mean over sessions':{w}s} " + " ".join(f"{fmt(mean[k]):>{n}s}" for k, _, n in cols)]
    if errors is not None:
        rows.append(
            "angles: R2 of each angle's (cos, sin) as one vector (0: always the mean vector); err: mean absolute angular error in degrees"
        )
    missing = [r["session"] for r in out if not np.isfinite(r["poyo_r2"])]
    if missing:
        rows.append(f"n/a: {len(missing)} session(s) without evaluable test samples (no finite behaviour inside the test split"
                    f" and evaluation intervals), left out of the means: {missing[:3]}")  # fmt: skip
    return "\n".join(rows), out


def report(
    module: POYOModule,
    dm: DataModule,
    readouts: list[ReadoutConfig],
    run_dir: Path,
    checkpoint: str,
    linear: LinearBaseline,
    gru: GRUBaseline | None = None,
    plot_sessions: int = 3,
) -> dict:
    """Print the per-session test table (POYO beside the linear baselines); write it as
    ``test_results.csv`` and ``.json``, and ``test_predictions.png`` (its first ``plot_sessions``
    sessions; 0: no plot). ``checkpoint`` says which weights POYO was tested with; ``gru`` adds
    the GRU decoders' columns."""
    first = readouts[0]
    head = [r for r in readouts if r.name == first.name]  # one config per brainset, or one for all
    sessions = [  # sessions without this behaviour (objective=both) have nothing to score
        s
        for s in dm.eval_set.session_ids
        if any(r.applies_to(s) and r.key in dm.eval_set.sessions[s].behaviour_keys for r in head)
    ]
    baselines: dict[str, dict] = {v: {} for v in VARIANTS}
    decodable = first.spec.kind != "categorical"
    errors = None
    if first.spec.kind == "circular":
        errors = {
            sid: angular_error_deg(st["pred"][st["eval"]], st["target"][st["eval"]], first.spec.dim)
            for (sid, name), st in (module.last_stitched or {}).items()
            if name == first.name and st["eval"].sum() >= 2
        }
    if decodable:
        for r in head:
            for variant, per in linear.evaluate(dm.eval_set, r, [s for s in sessions if r.applies_to(s)]).items():
                baselines[variant].update(per)
            if gru is not None:
                print(f"fitting the GRU decoders for {first.name} (baseline.gru) ...", flush=True)
                fits = gru.evaluate(dm.eval_set, r, [s for s in sessions if r.applies_to(s)], progress=True)
                for variant, per in fits.items():
                    baselines.setdefault(f"gru_{variant}", {}).update(per)
    table, rows = results_table(module.last_scores, baselines, first.name, sessions, errors)
    evals = sorted({str(r.eval_intervals) for r in head})
    centre = module.model.stitch_centres.get(first.name, DEFAULT_CENTRE)
    chosen = "chosen on validation" if first.name in module.model.stitch_centres else "the middle: none was chosen"
    stitching = f"windows stitched towards {centre:g} of each window's length ({chosen})"
    print(
        f"\ntest split, {first.name} (POYO: {checkpoint}, {stitching}; evaluation intervals {', '.join(evals)}; "
        f"linear: ridge on {linear.bin_s:g} s bins spanning up to {linear.context_s:g} s around each sample, "
        f"causal: bins before it only; context and penalty chosen on the validation split"
        + (
            f"; GRU: bidirectional over -{gru.before_s:g} s .. +{gru.after_s:g} s, GRU-c: causal over {gru.causal_s:g} s, "
            "sqrt counts, size, dropout and stopping chosen on the validation split"
            if gru is not None
            else ""
        )
        + f"):\n{table}"
        if decodable
        else f"\ntest split, {first.name} (POYO: {checkpoint}):\n{table}"
    )
    with open(run_dir / "test_results.csv", "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=list(rows[0]) if rows else ["session", "readout", "poyo_r2", "linear_r2", "causal_r2"]
        )
        writer.writeheader()
        writer.writerows(rows)
    if decodable and module.last_stitched and plot_sessions > 0:
        png = plot_test_trials(
            run_dir / "test_predictions.png",
            module.last_stitched,
            head,
            baselines["window"],
            module.last_scores,
            max_sessions=plot_sessions,
        )
        print(f"plot: {png}")
    summary = {"checkpoint": checkpoint, "stitch_centre": centre}
    for k in [k for k in (rows[0] if rows else ()) if k.endswith(("_r2", "_err_deg"))]:
        vals = [r[k] for r in rows if np.isfinite(r[k])]
        summary[k.replace("_r2", "_mean_r2").replace("_err_deg", "_mean_err_deg")] = (
            float(np.mean(vals)) if vals else None
        )
    summary["sessions"] = [
        {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows
    ]
    (run_dir / "test_results.json").write_text(json.dumps(summary, indent=1))
    return summary


def summary_table(ds: Dataset) -> str:
    w = max(len(sid) for sid in ds.session_ids)
    head = f"{'session':{w}s} {'units':>5s} {'spikes':>8s} {'Hz/unit':>7s} {'length':>7s} {'train':>6s} {'valid':>6s} {'test':>6s}"
    rows = [head, "-" * len(head)]
    for sid, s in ds.sessions.items():
        dur = s.end - s.start
        split = [ivs.total_length(s.splits[k]) if s.splits[k] is not None else 0.0 for k in ("train", "valid", "test")]
        rows.append(
            f"{sid:{w}s} {len(s.unit_ids):5d} {s.num_spikes:8d} {s.num_spikes / len(s.unit_ids) / dur:7.1f} "
            f"{dur:6.0f}s {split[0]:5.0f}s {split[1]:5.0f}s {split[2]:5.0f}s"
        )
    return "\n".join(rows)

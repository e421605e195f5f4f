"""The test report: POYO's per-session R² beside the window-matched and causal linear
decoders, as a table (printed, CSV, JSON) and a plot of test trials."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from poyo.model.tokenizer import ReadoutConfig
from poyo.training.linear import VARIANTS, LinearBaseline
from poyo.training.module import DataModule, POYOModule
from poyo.training.plots import plot_test_trials


def results_table(scores: dict, baselines: dict, readout: str, sessions: list[str]) -> tuple[str, list[dict]]:
    """POYO beside the window-matched and causal linear decoders, one row per session; a
    session without evaluable test samples is listed (n/a) and left out of the means."""
    rows, out = [], []
    w = max(len(s) for s in [*sessions, "mean over sessions"])
    head = f"{'session':{w}s} {'POYO R2':>8s} {'linear R2':>10s} {'causal R2':>10s}   linear context"
    rows += [head, "-" * len(head)]
    fmt = lambda v: f"{v:.3f}" if np.isfinite(v) else "n/a"  # noqa: E731
    for sid in sorted(sessions):
        p = scores.get(sid, {}).get(readout, float("nan"))
        lin, cau = (baselines.get(v, {}).get(sid, {}) for v in VARIANTS)
        context = f"-{lin['before_s']:g} s .. +{lin['after_s']:g} s" if lin else ""
        rows.append(f"{sid:{w}s} {fmt(p):>8s} {fmt(lin.get('r2', np.nan)):>10s} {fmt(cau.get('r2', np.nan)):>10s}   {context}")
        out.append({"session": sid, "readout": readout, "poyo_r2": p, "linear_r2": lin.get("r2", np.nan), "causal_r2": cau.get("r2", np.nan)})
    mean = {k: np.nanmean([r[k] for r in out]) if any(np.isfinite(r[k]) for r in out) else np.nan for k in ("poyo_r2", "linear_r2", "causal_r2")}
    rows += ["-" * len(head), f"{'mean over sessions':{w}s} {fmt(mean['poyo_r2']):>8s} {fmt(mean['linear_r2']):>10s} {fmt(mean['causal_r2']):>10s}"]
    missing = [r["session"] for r in out if not np.isfinite(r["poyo_r2"])]
    if missing:
        rows.append(f"n/a: {len(missing)} session(s) without evaluable test samples (no finite behaviour inside the test split"
                    f" and evaluation intervals), left out of the means: {missing[:3]}")  # fmt: skip
    return "\n".join(rows), out


def report(module: POYOModule, dm: DataModule, readouts: list[ReadoutConfig], run_dir: Path, checkpoint: str, linear: LinearBaseline) -> dict:
    """Print the per-session test table (POYO beside the linear baselines); write it as
    ``test_results.csv`` and ``.json``, and ``test_predictions.png``. ``checkpoint`` says
    which weights POYO was tested with."""
    first = readouts[0]
    head = [r for r in readouts if r.name == first.name]  # one config per brainset, or one for all
    sessions = [s for s in dm.eval_set.session_ids if any(r.applies_to(s) for r in head)]
    baselines: dict[str, dict] = {v: {} for v in VARIANTS}
    if first.spec.kind == "continuous":
        for r in head:
            for variant, per in linear.evaluate(dm.eval_set, r, [s for s in sessions if r.applies_to(s)]).items():
                baselines[variant].update(per)
    table, rows = results_table(module.last_scores, baselines, first.name, sessions)
    evals = sorted({str(r.eval_intervals) for r in head})
    print(
        f"\ntest split, {first.name} (POYO: {checkpoint}, stitched windows; evaluation intervals {', '.join(evals)}; "
        f"linear: ridge on {linear.bin_s:g} s bins spanning up to {linear.context_s:g} s around each sample, "
        f"causal: bins before it only; context and penalty chosen on the validation split):\n{table}"
        if first.spec.kind == "continuous" else f"\ntest split, {first.name} (POYO: {checkpoint}):\n{table}"
    )
    with open(run_dir / "test_results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["session", "readout", "poyo_r2", "linear_r2", "causal_r2"])
        writer.writeheader()
        writer.writerows(rows)
    if first.spec.kind == "continuous" and module.last_stitched:
        png = plot_test_trials(run_dir / "test_predictions.png", module.last_stitched, head, baselines["window"], module.last_scores)
        print(f"plot: {png}")
    summary = {"checkpoint": checkpoint}
    for k in ("poyo_r2", "linear_r2", "causal_r2"):
        vals = [r[k] for r in rows if np.isfinite(r[k])]
        summary[k.replace("_r2", "_mean_r2")] = float(np.mean(vals)) if vals else None
    summary["sessions"] = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
    (run_dir / "test_results.json").write_text(json.dumps(summary, indent=1))
    return summary

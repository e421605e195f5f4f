"""Perich, Gallego & Miller (2018): M1/PMd of four macaques, centre-out and random-target
reaching (DANDI 000688). Session ids: ``<subject initial>_<YYYYMMDD>_<center_out|random_target>_reaching``.

Per session: ``spikes``/``units`` (sorted units, or threshold crossings for monkey T),
``cursor`` (pos, vel, acc; cm, cm/s), ``trials`` (with ``is_valid``), ``movement_phases``
(``hold_period``, ``reach_period``, ``return_period``, ``invalid``, ``random_period``; random-target
sessions have ``hold_period`` and ``random_period``), ``cursor_outlier_segments`` (cursor
acceleration above 1500 cm/s² or position beyond ±10 cm, which the movement phases
exclude) and train/valid/test domains: valid trials split 70/10/20 with seed 42, train being
the rest of the recording minus 1 s around every held-out trial.
"""

from __future__ import annotations

import numpy as np
from temporaldata import Data, IrregularTimeSeries

from poyo.pipelines.common.behaviour import mask_to_intervals, series_domain
from poyo.pipelines.common.nwb import (
    NWBContentError,
    find_series,
    open_nwb,
    series_times,
    series_values,
    subject_of,
    trials_table,
    unit_trains,
)
from poyo.pipelines.common.runner import Asset, dandi_manifest
from poyo.pipelines.common.session import describe, interval, merge, spikes_from_trains, subtract, trial_splits

BRAINSET_ID = "perich_miller_population_2018"
DANDISET, VERSION = "000688", "draft"
SOURCE = "https://dandiarchive.org/dandiset/000688"
TASKS = {"CO": "center_out_reaching", "RT": "random_target_reaching"}
ACC_LIMIT, POS_LIMIT = 1500.0, 10.0


def session_id(path: str) -> str:
    """``sub-C/sub-C_ses-CO-20131003_behavior+ecephys.nwb`` -> ``c_20131003_center_out_reaching``."""
    name = path.split("/")[-1]
    try:
        subject = name.split("_")[0].removeprefix("sub-").lower()
        task, date = name.split("_ses-")[1].split("_")[0].split("-")[:2]
        return f"{subject}_{date}_{TASKS[task]}"
    except (IndexError, KeyError, ValueError):
        raise ValueError(
            f"{path}: not a Perich session file name (expected sub-X_ses-<CO|RT>-<YYYYMMDD>_....nwb)"
        ) from None


def manifest(raw_dir, args) -> list[Asset]:
    return dandi_manifest(raw_dir, args, DANDISET, VERSION, session_id)


def _center_out_phases(tr: dict, valid: np.ndarray) -> dict:
    nxt = np.append(tr["start_time"][1:], np.inf)
    v = valid
    return dict(
        hold_period=interval(tr["target_on_time"][v], tr["go_cue_time"][v]),
        reach_period=interval(tr["go_cue_time"][v], tr["stop_time"][v]),
        return_period=interval(tr["stop_time"][v], np.minimum(nxt[v], tr["stop_time"][v] + 1.0)),
        invalid=interval(tr["start_time"][~v], tr["stop_time"][~v]),
    )


def convert(asset: Asset) -> Data:
    path = asset.raw_path
    task = TASKS["CO"] if asset.session_id.endswith(TASKS["CO"]) else TASKS["RT"]
    with open_nwb(path) as nwb:
        trains, ids = unit_trains(nwb, path)
        pos_s = find_series(nwb, "Position/cursor_pos", path)
        t = series_times(pos_s)
        pos = series_values(pos_s)[:, :2]
        vel = series_values(find_series(nwb, "Velocity/cursor_vel", path))[:, :2]
        acc = series_values(find_series(nwb, "Acceleration/cursor_acc", path))[:, :2]
        if not (len(vel) == len(acc) == len(t)):
            raise NWBContentError(
                f"{path}: cursor_pos, cursor_vel and cursor_acc differ in length ({len(t)}, {len(vel)}, {len(acc)})"
            )
        required = ["result", "go_cue_time"] + (
            ["target_on_time", "target_id"] if task == TASKS["CO"] else ["num_attempted"]
        )
        tr = trials_table(nwb, path, required=required)
        meta = subject_of(nwb)
        date = nwb.session_start_time.strftime("%Y%m%d")
    domain = series_domain(t)
    cursor = IrregularTimeSeries(
        timestamps=t, pos=pos.astype(np.float32), vel=vel.astype(np.float32), acc=acc.astype(np.float32), domain=domain
    )
    bad = (np.linalg.norm(acc, axis=1) > ACC_LIMIT) | (np.abs(pos) > POS_LIMIT).any(axis=1)
    outliers = mask_to_intervals(t, bad, pad=0.05)

    result = np.char.strip(np.asarray(tr["result"]).astype(str))
    duration = tr["stop_time"] - tr["start_time"]
    if task == TASKS["CO"]:
        valid = (result == "R") & np.isfinite(tr["target_id"].astype(float)) & (duration > 0.5) & (duration < 6.0)
        phases = _center_out_phases(tr, valid)
    else:
        valid = (result == "R") & (tr["num_attempted"].astype(float) == 4) & (duration > 2.0) & (duration < 10.0)
        go = np.asarray(tr["go_cue_time"], np.float64)
        first_go = go[:, 0] if go.ndim == 2 else go
        phases = dict(hold_period=interval(tr["start_time"], first_go))
    phases = {k: subtract(v, outliers) for k, v in phases.items()}
    covered = merge(
        interval(np.concatenate([v.start for v in phases.values()]), np.concatenate([v.end for v in phases.values()]))
    )
    phases["random_period"] = subtract(subtract(domain, covered), outliers)

    trials = interval(tr["start_time"], tr["stop_time"], is_valid=valid)
    spikes, units, dropped = spikes_from_trains(trains, ids, domain=domain)
    ok = interval(tr["start_time"][valid], tr["stop_time"][valid])
    subject = meta.pop("subject")
    return Data(
        **describe(
            BRAINSET_ID,
            SOURCE,
            subject,
            asset.session_id,
            date=date,
            species=meta.get("species", "unknown"),
            recording_tech="UTAH_ARRAY_THRESHOLD_CROSSINGS" if subject.lower().startswith("t") else "UTAH_ARRAY_SPIKES",
        ),  # fmt: skip
        spikes=spikes,
        units=units,
        cursor=cursor,
        trials=trials,
        movement_phases=Data(**phases, domain=domain),
        cursor_outlier_segments=outliers,
        domain=domain,
        **trial_splits(domain, ok, (0.7, 0.1, 0.2), seed=42, gap=1.0),
    )

"""Churchland, Cunningham, Kaufman, Ryu & Shenoy (2012): maze reaching, two macaques,
Utah-array threshold crossings (DANDI 000070). Session ids: ``<subject>_<session>_maze``.

Per session: ``spikes``/``units``, ``cursor`` (pos, vel, acc), ``hand`` (pos_2d, vel_2d) and
``eye`` (pos) at 1 kHz, ``trials`` (target_on_time, go_cue_time, move_begins_time,
move_ends_time, is_valid), ``movement_phases`` (hold, reach, return) and
``cursor_outlier_segments``. Sessions whose clock restarted are repaired (see
:mod:`poyo.pipelines.common.clock`); units that cannot be placed on the repaired clock
are dropped and counted in ``units_dropped`` (an attribute of ``session``). The domain is the
trials; successful trials are split 70/10/20 (seed 42) and failed ones go to train.
"""

from __future__ import annotations

import numpy as np
from temporaldata import Data, IrregularTimeSeries

from poyo.pipelines.common.behaviour import derivative, mask_to_intervals
from poyo.pipelines.common.clock import Unplaceable, find_epochs, realign
from poyo.pipelines.common.nwb import (
    find_series,
    open_nwb,
    series_times,
    series_values,
    subject_of,
    trials_table,
    unit_trains,
)
from poyo.pipelines.common.runner import Asset, dandi_manifest
from poyo.pipelines.common.session import describe, interval, merge, spikes_from_trains, split_indices, subtract

BRAINSET_ID = "churchland_shenoy_neural_2012"
DANDISET, VERSION = "000070", "draft"
SOURCE = "https://dandiarchive.org/dandiset/000070"
ACC_LIMIT = 80000.0


def session_id(path: str) -> str:
    """``sub-Jenkins/sub-Jenkins_ses-20090912_behavior+ecephys.nwb`` -> ``jenkins_20090912_maze``."""
    name = path.split("/")[-1]
    if "_ses-" not in name:
        raise ValueError(f"{path}: not a Churchland session file name (expected sub-<name>_ses-<id>_....nwb)")
    return f"{name.split('_')[0].removeprefix('sub-').lower()}_{name.split('_ses-')[1].split('_')[0]}_maze"


def manifest(raw_dir, args) -> list[Asset]:
    return dandi_manifest(raw_dir, args, DANDISET, VERSION, session_id)


def convert(asset: Asset) -> Data:
    path = asset.raw_path
    with open_nwb(path) as nwb:
        tr = trials_table(nwb, path, required=["go_cue_time", "move_begins_time", "move_ends_time"])
        trains, ids = unit_trains(nwb, path)
        cur = find_series(nwb, "Position/Cursor", path)
        t_raw = series_times(cur)
        cursor_pos = series_values(cur)[:, :2]
        hand_pos = series_values(find_series(nwb, "Position/Hand", path))[:, :2]
        eye_pos = series_values(find_series(nwb, "Position/Eye", path))[:, :2]
        meta = subject_of(nwb)
        date = nwb.session_start_time.strftime("%Y%m%d")
    target_on = tr.get("target_presentation_time", tr.get("target_on_time", tr["go_cue_time"]))
    epochs, which = find_epochs(tr["start_time"], tr["stop_time"])
    shift = epochs.shift[which]
    start, stop = tr["start_time"] + shift, tr["stop_time"] + shift
    times = {k: np.asarray(v, float) + shift for k, v in (("target_on_time", target_on), ("go_cue_time", tr["go_cue_time"]),
                                                           ("move_begins_time", tr["move_begins_time"]), ("move_ends_time", tr["move_ends_time"]))}  # fmt: skip
    t, kept = realign(t_raw, epochs)  # behaviour must fit: a failure here fails the session
    t, cursor_pos, hand_pos, eye_pos = t[kept], cursor_pos[kept], hand_pos[kept], eye_pos[kept]
    placed, placed_ids = [], []
    for tr_times, uid in zip(trains, ids):
        try:
            u, ok = realign(tr_times, epochs)
        except Unplaceable:
            continue
        placed.append(np.sort(u[ok]))
        placed_ids.append(uid)
    dropped = len(trains) - len(placed)

    domain = merge(interval(start, stop))
    order = np.argsort(t, kind="stable")
    t, cursor_pos, hand_pos, eye_pos = t[order], cursor_pos[order], hand_pos[order], eye_pos[order]
    vel = derivative(t, cursor_pos)
    acc = derivative(t, vel)
    cursor = IrregularTimeSeries(
        timestamps=t,
        pos=cursor_pos.astype(np.float32),
        vel=vel.astype(np.float32),
        acc=acc.astype(np.float32),
        domain=domain,
    )
    hand = IrregularTimeSeries(
        timestamps=t,
        pos_2d=hand_pos.astype(np.float32),
        vel_2d=derivative(t, hand_pos).astype(np.float32),
        domain=domain,
    )
    eye = IrregularTimeSeries(timestamps=t, pos=eye_pos.astype(np.float32), domain=domain)
    outliers = mask_to_intervals(t, np.linalg.norm(np.nan_to_num(acc), axis=1) > ACC_LIMIT, pad=0.05)

    valid = (
        np.isfinite(times["go_cue_time"])
        & np.isfinite(times["move_begins_time"])
        & np.isfinite(times["move_ends_time"])
    )
    for flag in ("discard_trial", "is_discarded"):
        if flag in tr:
            valid &= ~tr[flag].astype(bool)
    if "task_success" in tr:
        valid &= tr["task_success"].astype(bool)
    trials = interval(start, stop, is_valid=valid, **times)
    v = valid
    phases = dict(
        hold_period=interval(times["target_on_time"][v], times["go_cue_time"][v]),
        reach_period=interval(times["move_begins_time"][v], times["move_ends_time"][v]),
        return_period=interval(times["move_ends_time"][v], stop[v]),
    )
    spikes, units, silent = spikes_from_trains(placed, placed_ids, domain=domain)

    idx = np.flatnonzero(v)
    _, va, te = split_indices(len(idx), (0.7, 0.1, 0.2), seed=42)
    valid_dom = merge(interval(start[idx[va]], stop[idx[va]]))
    test_dom = subtract(merge(interval(start[idx[te]], stop[idx[te]])), valid_dom)
    held = interval(
        np.concatenate([valid_dom.start, test_dom.start]) - 1.0, np.concatenate([valid_dom.end, test_dom.end]) + 1.0
    )
    train_dom = subtract(domain, held)  # 1 s away from every held-out trial
    subject = meta.pop("subject")
    d = describe(
        BRAINSET_ID,
        SOURCE,
        subject,
        asset.session_id,
        date=date,
        species=meta.get("species", "unknown"),
        recording_tech="UTAH_ARRAY_THRESHOLD_CROSSINGS",
    )
    d["session"].units_dropped = int(dropped + silent)
    d["session"].clock_epochs = int(epochs.count)
    return Data(
        **d, spikes=spikes, units=units, cursor=cursor, hand=hand, eye=eye, trials=trials,
        movement_phases=Data(**phases, domain=domain), cursor_outlier_segments=outliers, domain=domain,
        train_domain=train_dom, valid_domain=valid_dom, test_domain=test_dom,
    )  # fmt: skip

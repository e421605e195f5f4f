"""Bring your own NWB file: its Units table plus the behaviour series you name become a
session that ``train.py`` reads.

    python -m poyo.pipelines.nwb my_session.nwb --behaviour cursor.vel=Velocity/cursor_vel \\
        [--behaviour hand.pos=hand_pos ...] [--brainset my_lab] [--session-id s1] --processed-dir data/processed

Without ``--behaviour`` the session holds spikes only, spanning them (for self-supervised
training, ``objective=mtm``). ``GROUP.FIELD=SERIES`` stores the TimeSeries ``SERIES`` (a full path such as
``processing/behavior/Velocity/cursor_vel``, a suffix, or a bare name) as ``GROUP.FIELD``;
series sharing a GROUP must share their timestamps. Splits: with a trials table, trials are
split 70/10/20 (seed 42; or by a column of the table holding train/valid/test with
``--split-column``); without one, 10 time blocks are dealt 8/1/1. When a named series is
absent the error lists every series the file has. Each unit's brain region (the Units
table's ``brain_region`` or ``location`` column, else its electrode's ``location``) is kept as
``units.brain_region`` when the file records one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from temporaldata import Data, IrregularTimeSeries

from poyo.pipelines.common.behaviour import series_domain
from poyo.pipelines.common.blocks import block_splits
from poyo.pipelines.common.nwb import (
    NWBContentError,
    find_series,
    open_nwb,
    series_times,
    series_values,
    subject_of,
    unit_regions,
    unit_trains,
)
from poyo.pipelines.common.session import (
    clean_id,
    cut_counts,
    describe,
    import_summary,
    interval,
    merge,
    safe_name,
    session_path,
    spikes_domain,
    spikes_from_trains,
    subtract,
    trial_splits,
    write,
)

SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


def parse_behaviour(specs: list[str]) -> dict[str, dict[str, str]]:
    """``["cursor.vel=Velocity/cursor_vel"]`` -> ``{"cursor": {"vel": "Velocity/cursor_vel"}}``."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        key, sep, series = spec.partition("=")
        group, dot, field = key.partition(".")
        if not (sep and dot and group and field and series) or not (group + field).replace("_", "").isalnum():
            raise ValueError(f"--behaviour {spec!r}: expected GROUP.FIELD=SERIES, e.g. cursor.vel=Velocity/cursor_vel")
        if field in out.get(group, {}):
            raise ValueError(f"--behaviour: {key} given twice")
        out.setdefault(group, {})[field] = series
    return out


def _splits(nwb, domain, path, split_column: str | None) -> dict:
    trials = nwb.trials
    if trials is None or len(trials) == 0:
        return block_splits(domain, 10, (8, 1, 1), seed=42)
    start, stop = np.asarray(trials["start_time"][:], float), np.asarray(trials["stop_time"][:], float)
    if split_column is None:
        return trial_splits(domain, interval(start, stop), (0.7, 0.1, 0.2), seed=42, gap=1.0)
    if split_column not in trials.colnames:
        raise NWBContentError(
            f"{path}: the trials table has no column '{split_column}' (it has {list(trials.colnames)})"
        )
    labels = [SPLIT_NAMES.get(clean_id(v).lower()) for v in trials[split_column][:]]
    unknown = sorted({clean_id(v) for v, lab in zip(trials[split_column][:], labels) if lab is None})
    if unknown:
        raise NWBContentError(f"{path}: trials.{split_column} has values {unknown}; expected train/valid/test")
    pick = lambda name: merge(interval(start[[lab == name for lab in labels]], stop[[lab == name for lab in labels]]))  # noqa: E731
    valid, test = pick("valid"), pick("test")
    train = subtract(subtract(pick("train"), valid), test)
    inside = lambda iv: subtract(iv, subtract(iv, domain))  # noqa: E731
    return {"train_domain": inside(train), "valid_domain": inside(valid), "test_domain": inside(test)}


def convert_file(
    path,
    behaviour: dict[str, dict[str, str]],
    *,
    brainset: str,
    session_id: str | None = None,
    split_column: str | None = None,
) -> Data:
    path = Path(path)
    with open_nwb(path) as nwb:
        trains, ids = unit_trains(nwb, path)
        regions = unit_regions(nwb)
        groups = {}
        for group, fields in behaviour.items():
            t, values = None, {}
            for field, name in fields.items():
                s = find_series(nwb, name, path)
                ts = series_times(s)
                bad = np.flatnonzero(~np.isfinite(ts))
                if bad.size:
                    raise NWBContentError(
                        f"{path}: {group}.{field} ({name}): {bad.size} NaN or infinite timestamps, first at sample {int(bad[0])}"
                    )
                back = np.flatnonzero(np.diff(ts) <= 0)
                if back.size:
                    raise NWBContentError(
                        f"{path}: {group}.{field} ({name}): timestamps must increase; t[{int(back[0])}]={ts[back[0]]:.6f} >= t[{int(back[0]) + 1}]={ts[back[0] + 1]:.6f}"
                    )
                if t is not None and (len(ts) != len(t) or not np.allclose(ts, t)):
                    raise NWBContentError(
                        f"{path}: {group}.{field} ({name}) has other timestamps than the rest of '{group}'; give it its own group"
                    )
                t = ts
                values[field] = series_values(s).astype(np.float32)
            groups[group] = (t, values)
        meta = subject_of(nwb)
        date = nwb.session_start_time.strftime("%Y%m%d") if nwb.session_start_time else ""
        sid = clean_id(session_id or nwb.session_id or path.stem)
        if not groups:  # spikes only (self-supervised training): the session spans its spikes
            try:
                domain = spikes_domain(trains)
            except ValueError:
                raise NWBContentError(f"{path}: the Units table holds no spike times") from None
        else:
            first_t = np.concatenate([g[0] for g in groups.values()])
            domain = (
                series_domain(np.sort(first_t))
                if len(groups) == 1
                else merge(interval([g[0][0] for g in groups.values()], [g[0][-1] for g in groups.values()]))
            )
        splits = _splits(nwb, domain, path, split_column)
    series = {g: IrregularTimeSeries(timestamps=t, domain=domain, **v) for g, (t, v) in groups.items()}
    try:
        spikes, units, dropped = spikes_from_trains(trains, ids, domain=domain, regions=regions)
    except ValueError as e:
        raise NWBContentError(f"{path}: {e}") from None
    subject = meta.pop("subject")
    d = describe(
        safe_name(brainset, "brainset id"),
        str(path.name),
        subject,
        safe_name(sid, "session id"),
        date=date,
        species=meta.get("species", "unknown"),
    )
    d["session"].spikes_outside_behaviour = sum(len(t) for t in trains) - len(spikes.timestamps)
    d["session"].units_dropped = dropped
    for k, v in cut_counts(trains, domain).items():
        setattr(d["session"], k, v)
    return Data(**d, spikes=spikes, units=units, domain=domain, **series, **splits)


def main(argv=None, prog: str = "python -m poyo.pipelines.nwb") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Convert your own NWB file into a poyo session.")
    p.add_argument("nwb", type=Path, nargs="+", help="NWB file(s)")
    p.add_argument(
        "--behaviour",
        "-b",
        action="append",
        default=[],
        help="GROUP.FIELD=SERIES, e.g. cursor.vel=Velocity/cursor_vel (repeatable); none: spikes only, for objective=mtm",
    )
    p.add_argument("--brainset", default="my_nwb", help="folder and id prefix of the sessions (default my_nwb)")
    p.add_argument("--session-id", help="session id (one file only; default: the file's session_id, else its name)")
    p.add_argument("--split-column", help="a trials column holding train/valid/test labels")
    p.add_argument("--processed-dir", type=Path, default=Path("data/processed"))
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if args.session_id and len(args.nwb) > 1:
        p.error("--session-id needs exactly one file")
    try:
        behaviour = parse_behaviour(args.behaviour)
        safe_name(args.brainset, "--brainset")
    except ValueError as e:
        p.error(str(e))  # one line and exit status 2, no traceback
    keys = [f"{g}.{f}" for g, fields in behaviour.items() for f in fields]
    failed = 0
    for f in args.nwb:
        try:
            data = convert_file(
                f, behaviour, brainset=args.brainset, session_id=args.session_id, split_column=args.split_column
            )
            out = session_path(args.processed_dir, data.brainset.id, data.session.id)
            if out.exists() and not args.overwrite:
                print(f"{f}: {out} exists (use --overwrite)")
                continue
            write(data, out)
            print(
                f"{f} -> {out}: {len(data.units.id)} units, {len(data.spikes.timestamps)} spikes, "
                + (
                    f"behaviour {sorted(args.behaviour)}"
                    if args.behaviour
                    else "no behaviour (spikes only: it trains with objective=mtm, masked modelling)"
                )
            )
            for line in import_summary(data, keys, args.processed_dir):
                print(line)
        except Exception as e:  # one file's failure is reported with its name and does not stop the others
            failed += 1
            msg = str(e) if str(f) in str(e) else f"{f}: {e}"
            print(
                f"FAILED {msg}"
                if isinstance(e, (NWBContentError, ValueError, FileNotFoundError))
                else f"FAILED {f}: {type(e).__name__}: {e}",
                file=sys.stderr,
            )
    return 1 if failed else 0

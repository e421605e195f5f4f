"""Reading spikes and behaviour out of NWB files (pynwb), with errors that say what is there."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from poyo.pipelines.common.session import clean_id


class NWBContentError(ValueError):
    """An NWB file without what a pipeline needs; the message names the file and lists what it has."""


@contextmanager
def open_nwb(path):
    from pynwb import NWBHDF5IO

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NWB file")
    try:
        io = NWBHDF5IO(str(path), "r")
        nwbfile = io.read()
    except Exception as e:  # pynwb raises many kinds on damaged or non-NWB files
        raise NWBContentError(f"{path}: cannot be read as NWB: {e}") from e
    try:
        yield nwbfile
    finally:
        io.close()


def unit_trains(nwbfile, path="") -> tuple[list[np.ndarray], list[str]]:
    """One spike-time array per row of the Units table, and an id per unit.

    Ids are ``<electrode group>/elec<electrode>/unit_<row>`` where the table links
    electrodes, else the table's ``unit_name`` column, else ``unit_<table id>``.
    """
    units = nwbfile.units
    if units is None or len(units) == 0:
        raise NWBContentError(
            f"{path}: no Units table (or it is empty); this pipeline needs sorted units or threshold crossings"
        )
    n = len(units)
    trains = [np.asarray(units.get_unit_spike_times(i), np.float64).ravel() for i in range(n)]
    table_ids = [clean_id(i) for i in units.id[:]]
    if "electrodes" in units.colnames:
        ids = []
        for i in range(n):
            rows = units["electrodes"][i]  # a DataFrame of this unit's electrodes
            group = clean_id(rows["group_name"].iloc[0]) if "group_name" in rows.columns else "array"
            ids.append(f"{group}/elec{int(rows.index[0])}/unit_{table_ids[i]}")
    elif "unit_name" in units.colnames:
        ids = [clean_id(v) for v in units["unit_name"][:]]
    else:
        ids = [f"unit_{i}" for i in table_ids]
    return trains, ids


def unit_regions(nwbfile) -> list[str] | None:
    """Each unit's brain region: the Units table's ``brain_region`` or ``location`` column,
    else the ``location`` of its first electrode; None when the file records none."""
    units = nwbfile.units
    if units is None:
        return None
    n = len(units)
    for column in ("brain_region", "location"):
        if column in units.colnames:
            return [str(v) for v in units[column][:]]
    if "electrodes" in units.colnames:
        out = []
        for i in range(n):
            rows = units["electrodes"][i]
            out.append(str(rows["location"].iloc[0]) if "location" in rows.columns and len(rows) else "")
        if any(r and r.lower() not in ("unknown", "none", "nan") for r in out):
            return out
    return None


def _walk(nwbfile):
    """(path, TimeSeries) for every TimeSeries in acquisition and processing modules."""
    from pynwb.base import TimeSeries

    def inner(prefix, obj):
        if isinstance(obj, TimeSeries):
            yield prefix, obj
            return
        children = getattr(obj, "children", None) or []
        for child in children:
            yield from inner(f"{prefix}/{child.name}" if prefix else child.name, child)

    for name, obj in nwbfile.acquisition.items():
        yield from inner(f"acquisition/{name}", obj)
    for name, module in nwbfile.processing.items():
        yield from inner(f"processing/{name}", module)


def series_names(nwbfile) -> list[str]:
    return [p for p, _ in _walk(nwbfile)]


def find_series(nwbfile, name: str, path=""):
    """The TimeSeries called ``name``: a full path (``processing/behavior/Position/cursor_pos``),
    a path suffix (``Position/cursor_pos``) or a bare name, which must be unambiguous."""
    found = [(p, s) for p, s in _walk(nwbfile) if p == name or p.endswith("/" + name.strip("/"))]
    if len(found) == 1:
        return found[0][1]
    have = series_names(nwbfile)
    if not found:
        raise NWBContentError(f"{path}: no time series '{name}'; the file has: {have or 'none'}")
    raise NWBContentError(f"{path}: '{name}' is ambiguous, it matches {[p for p, _ in found]}; give the full path")


def series_times(series) -> np.ndarray:
    """Sample times of a TimeSeries, from ``timestamps`` or from ``starting_time`` and ``rate``."""
    if series.timestamps is not None:
        return np.asarray(series.timestamps[:], np.float64)
    n = len(series.data)
    return float(series.starting_time or 0.0) + np.arange(n) / float(series.rate)


def series_values(series) -> np.ndarray:
    values = np.asarray(series.data[:], np.float64)
    return values.reshape(len(values), -1)


def subject_of(nwbfile, default: str = "unknown") -> dict:
    s = nwbfile.subject
    if s is None:
        return {"subject": default}
    return {
        "subject": clean_id(s.subject_id or default),
        "species": clean_id(s.species) if s.species else "unknown",
        "sex": s.sex,
    }


def trials_table(nwbfile, path="", required=()) -> dict[str, np.ndarray]:
    """The trials table as columns (start_time, stop_time, ...); checks ``required`` columns."""
    if nwbfile.trials is None or len(nwbfile.trials) == 0:
        raise NWBContentError(f"{path}: no trials table")
    t = nwbfile.trials
    cols = {
        "start_time": np.asarray(t["start_time"][:], np.float64),
        "stop_time": np.asarray(t["stop_time"][:], np.float64),
    }
    for c in t.colnames:
        cols[c] = np.asarray(t[c][:])
    missing = [c for c in required if c not in cols]
    if missing:
        raise NWBContentError(f"{path}: the trials table lacks {missing} (it has {sorted(cols)})")
    return cols

"""One session file: its metadata read once, its windows read on demand.

Files are written by ``temporaldata.Data.to_hdf5`` (``brainsets``-style pipelines).
Windows are read straight from that layout with h5py: only the rows of the window
are touched (through the 1-second index that temporaldata stores next to every
irregular time series), nothing is deep-copied, and nothing here holds a file
handle, so a :class:`Session` pickles cleanly into DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from poyo.data import intervals as ivs
from poyo.data.window import Series, Window

SPLITS = ("train", "valid", "test")


class SessionFormatError(ValueError):
    """A session file that cannot be used; the message names file, session and field."""

    def __init__(self, path, message: str, *, session: str | None = None, field: str | None = None):
        where = [str(path)]
        if session:
            where.append(f"session '{session}'")
        if field:
            where.append(f"field '{field}'")
        super().__init__(": ".join(where) + ": " + message)
        self.path, self.session, self.field, self.message = str(path), session, field, message


def open_file(path) -> h5py.File:
    """Open a session file read-only, turning HDF5's errors into one that names the file."""
    path = Path(path)
    if not path.is_file():
        raise SessionFormatError(path, "no such file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise SessionFormatError(path, f"cannot be read as HDF5 (corrupt or truncated file?): {e}") from e


class CachedFile:
    """An open session file that remembers the datasets it has looked up by path.

    Resolving an HDF5 path costs tens of microseconds, more than reading a window's rows
    of it; a window read looks up about five paths. ``Dataset`` keeps one per open file.
    """

    def __init__(self, f: h5py.File):
        self.file = f
        self._datasets: dict[str, h5py.Dataset] = {}

    def __getitem__(self, path: str) -> h5py.Dataset:
        d = self._datasets.get(path)
        if d is None:
            d = self._datasets[path] = self.file[path]
        return d

    def close(self) -> None:
        self._datasets.clear()
        self.file.close()


def decode_strings(values) -> np.ndarray:
    """Stored strings (fixed-length bytes, variable-length bytes or str) as a ``str`` array.
    Bytes are UTF-8 (what poyo's pipelines write); others (e.g. Latin-1) are read as Latin-1,
    which maps every byte to one character, so ids stay distinct and stable."""
    arr = np.asarray(values)
    if arr.dtype.kind in "SO":
        return np.array([_as_str(v) for v in arr.ravel()], dtype=str).reshape(arr.shape)
    return arr.astype(str)


def _as_str(v) -> str:
    if isinstance(v, (bytes, np.bytes_)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(v).decode("latin-1")
    return str(v)


@dataclass
class _Irregular:
    """Where an irregular series lives and how to find a window's rows in it."""

    group: str
    fields: tuple[str, ...]
    t0: float  # time of grid[0]
    grid: np.ndarray  # grid[k] = first row with timestamp >= t0 + k
    n: int

    def rows(self, f: h5py.File, start: float, end: float) -> tuple[int, int, np.ndarray]:
        """Rows ``[i0, i1)`` with ``start <= t < end`` and their timestamps."""
        last = len(self.grid) - 1
        k0 = int(np.floor(start - self.t0))
        k1 = int(np.ceil(end - self.t0))
        lo = 0 if k0 < 0 else int(self.grid[min(k0, last)])
        hi = self.n if k1 > last else int(self.grid[max(k1, 0)])
        ts = f[f"{self.group}/timestamps"][lo:hi]
        a, b = np.searchsorted(ts, [start, end], side="left")
        return lo + int(a), lo + int(b), ts[a:b]


@dataclass
class _Regular:
    group: str
    fields: tuple[str, ...]
    t0: float
    rate: float
    n: int

    def rows(self, f: h5py.File, start: float, end: float) -> tuple[int, int, np.ndarray]:
        # Same snapping as temporaldata: a sample belongs to the window if t >= start.
        i0, i1 = np.ceil((np.array([start, end]) - self.t0) * self.rate - 1e-9).astype(np.int64)
        i0, i1 = int(np.clip(i0, 0, self.n)), int(np.clip(i1, 0, self.n))
        return i0, i1, self.t0 + np.arange(i0, i1) / self.rate


def _split_key(key: str) -> tuple[str, str]:
    """``"cursor.vel"`` -> (``"cursor"``, ``"vel"``); nested groups use more dots."""
    if not isinstance(key, str) or "." not in key:
        raise ValueError(f"behaviour keys look like 'group.field' (e.g. 'cursor.vel'), got {key!r}")
    group, _, name = key.rpartition(".")
    return group.replace(".", "/"), name


class Session:
    """Metadata of one session file and the reader of its windows.

    ``behaviour`` lists the series to read into every window (``"cursor.vel"``);
    each must exist, unless ``optional_behaviour`` (self-supervised objectives learn from
    sessions without behaviour): then a missing series is left out of ``behaviour_keys``.
    ``units.brain_region`` (one string per unit), when the file has it, is read into every
    window's ``unit_regions``. ``intervals`` lists interval sets to carry into windows
    (``"movement_phases.reach_period"``, or a top-level set such as
    ``"cursor_outlier_segments"``); a session without one gets an empty set. Either may
    also be a function of the global session id (datasets mixing brainsets whose
    behaviour lives under different keys).
    """

    def __init__(
        self, path, *, behaviour=(), intervals=(), brainset: str | None = None, optional_behaviour: bool = False
    ):
        self.path = Path(path)
        self._wanted = (behaviour, intervals)
        self.optional_behaviour = bool(optional_behaviour)
        with open_file(self.path) as f:
            self._read_metadata(f, brainset)

    # -- metadata ---------------------------------------------------------------------
    def require_behaviour(self) -> None:
        """Raise, naming the file and field, if a behaviour series was left out as missing."""
        if self.missing_behaviour:
            e = self.missing_behaviour[0]
            raise self._error(
                f"{e.message}; only self-supervised runs (objective=mtm) learn from sessions without behaviour "
                "(or leave the session out with `sessions=[...]`)",
                field=e.field,
            )

    def _error(self, message: str, field: str | None = None) -> SessionFormatError:
        return SessionFormatError(self.path, message, session=getattr(self, "local_id", None), field=field)

    def _group(self, f: h5py.File, name: str) -> h5py.Group:
        obj = f.get(name)
        if not isinstance(obj, h5py.Group):
            raise self._error("missing (the file has: " + ", ".join(sorted(f.keys())) + ")", field=name.replace("/", "."))
        return obj

    def _dataset(self, group: h5py.Group, name: str, field: str) -> h5py.Dataset:
        obj = group.get(name)
        if not isinstance(obj, h5py.Dataset):
            raise self._error(f"missing (present: {', '.join(sorted(group.keys()))})", field=field)
        return obj

    def _interval(self, f: h5py.File, name: str, *, required: bool) -> np.ndarray | None:
        field = name.replace("/", ".")
        if name not in f:
            if required:
                raise self._error("missing", field=field)
            return None
        g = f[name]
        if not isinstance(g, h5py.Group) or "start" not in g or "end" not in g:
            raise self._error("is not an interval set (needs 'start' and 'end')", field=field)
        iv = ivs.as_intervals(g["start"][()], g["end"][()])
        if (msg := ivs.problem(iv)) is not None:
            raise self._error(msg, field=field)
        return iv

    def _read_metadata(self, f: h5py.File, brainset: str | None) -> None:
        session = f.get("session")
        if not isinstance(session, h5py.Group) or "id" not in session.attrs:
            raise SessionFormatError(self.path, "missing (expected a 'session' group with an 'id' attribute)", field="session.id")
        self.local_id = _as_str(session.attrs["id"])
        if brainset is None:
            bs = f.get("brainset")
            brainset = _as_str(bs.attrs["id"]) if isinstance(bs, h5py.Group) and "id" in bs.attrs else self.path.parent.name
        self.brainset = brainset
        self.id = f"{brainset}/{self.local_id}"
        subj = f.get("subject")
        self.subject_id = f"{brainset}/{_as_str(subj.attrs['id'])}" if isinstance(subj, h5py.Group) and "id" in subj.attrs else ""
        self.task = _as_str(session.attrs.get("task", ""))

        local_units = decode_strings(self._dataset(self._group(f, "units"), "id", "units.id")[()])
        if local_units.ndim != 1 or len(local_units) == 0:
            raise self._error("must be a non-empty 1-D array of unit names", field="units.id")
        uniq, counts = np.unique(local_units, return_counts=True)
        if (counts > 1).any():
            raise self._error(f"duplicate unit ids, e.g. {uniq[counts > 1][:3].tolist()}", field="units.id")
        self.local_unit_ids = local_units
        self.unit_ids = np.char.add(f"{self.id}/", local_units)
        self.unit_regions = None
        if "brain_region" in f["units"]:
            regions = decode_strings(self._dataset(f["units"], "brain_region", "units.brain_region")[()])
            if regions.shape != local_units.shape:
                raise self._error(
                    f"has {regions.shape} entries for {len(local_units)} units (one region name per unit)",
                    field="units.brain_region",
                )
            self.unit_regions = regions

        self.domain = self._interval(f, "domain", required=True)
        self.splits = {s: self._interval(f, f"{s}_domain", required=False) for s in SPLITS}
        self._check_splits()

        behaviour, intervals = self._wanted
        self.behaviour_keys = tuple(behaviour(self.id) if callable(behaviour) else behaviour)
        self.interval_keys = tuple(intervals(self.id) if callable(intervals) else intervals)
        del self._wanted
        self._spikes = self._series_reader(f, "spikes", ("unit_index",))
        if not isinstance(self._spikes, _Irregular):
            raise self._error("must be an irregular time series", field="spikes")
        if self._spikes.n == 0:
            raise self._error("no spikes at all: there is nothing to decode from", field="spikes.timestamps")
        self._behaviour = {}
        self.missing_behaviour = []
        for key in self.behaviour_keys:
            group, name = _split_key(key)
            if self.optional_behaviour and not (isinstance(f.get(group), h5py.Group) and name in f[group]):
                try:  # the error a required series would raise, kept for require_behaviour()
                    self._series_reader(f, group, (name,))
                except SessionFormatError as e:
                    self.missing_behaviour.append(e)
                continue
            self._behaviour[key] = (self._series_reader(f, group, (name,)), name)
        self.behaviour_keys = tuple(self._behaviour)
        self.intervals = {k: self._interval(f, k.replace(".", "/"), required=False) for k in self.interval_keys}

    def _check_splits(self) -> None:
        present = {k: v for k, v in self.splits.items() if v is not None}
        for name, iv in present.items():
            outside = ivs.total_length(iv) - ivs.overlap_length(iv, self.domain)
            if outside > 1e-9:
                raise self._error(f"extends {outside:.3f} s beyond the session domain", field=f"{name}_domain")
        names = list(present)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                ov = ivs.overlap_length(present[a], present[b])
                if ov > 1e-9:
                    raise self._error(
                        f"overlaps {b}_domain by {ov:.3f} s (splits must be disjoint, otherwise evaluation leaks training data)",
                        field=f"{a}_domain",
                    )

    def _series_reader(self, f: h5py.File, group: str, fields: tuple[str, ...]):
        g = self._group(f, group)
        kind = _as_str(g.attrs.get("object", ""))
        for name in fields:
            self._dataset(g, name, f"{group.replace('/', '.')}.{name}")
        if kind == "RegularTimeSeries":
            n = len(g[fields[0]])
            dom = self._interval(f, f"{group}/domain", required=True)
            rate = float(g.attrs["sampling_rate"])
            if not np.isfinite(rate) or rate <= 0:
                raise self._error(f"sampling_rate must be > 0, got {rate}", field=group.replace("/", "."))
            return _Regular(group, fields, float(dom[0, 0]), rate, n)
        ts = self._dataset(g, "timestamps", f"{group.replace('/', '.')}.timestamps")
        n = len(ts)
        for name in fields:
            if len(g[name]) != n:
                raise self._error(
                    f"has {len(g[name])} rows but {group}.timestamps has {n}", field=f"{group.replace('/', '.')}.{name}"
                )
        dom = self._interval(f, f"{group}/domain", required=False)
        if "timestamp_indices_1s" in g and dom is not None and len(dom):
            grid, t0 = g["timestamp_indices_1s"][()], float(dom[0, 0])
        else:  # not written by temporaldata: build the index once
            all_ts = ts[()]
            t0 = float(all_ts[0]) if n else 0.0
            grid = np.searchsorted(all_ts, np.arange(t0, (all_ts[-1] if n else t0) + 2.0, 1.0))
        return _Irregular(group, fields, t0, np.asarray(grid, dtype=np.int64), n)

    # -- deep validation (reads whole arrays) -----------------------------------------
    def validate(self, f: h5py.File | None = None) -> None:
        """Check spike and behaviour arrays in full; raise :class:`SessionFormatError`."""
        if f is None:
            with open_file(self.path) as fh:
                return self.validate(fh)
        try:
            self._validate_arrays(f)
        except SessionFormatError:
            raise
        except (OSError, KeyError, ValueError) as e:  # unreadable chunks of a damaged file
            raise self._error(f"could not be read (corrupt or truncated file?): {e}") from e

    def _validate_arrays(self, f: h5py.File) -> None:
        ts = f["spikes/timestamps"][()]
        self._check_times(ts, "spikes.timestamps")
        dom = self._interval(f, "spikes/domain", required=False)
        for name, bounds in (("spikes.domain", dom), ("domain", self.domain)):
            if bounds is not None and len(ts):
                out = ~ivs.contains(bounds, ts)
                if out.any():
                    i = int(np.flatnonzero(out)[0])
                    raise self._error(
                        f"{int(out.sum())} spike(s) fall outside {name} (first: index {i}, t={ts[i]:.6f} s)",
                        field="spikes.timestamps",
                    )
        ui = f["spikes/unit_index"][()]
        if ui.dtype.kind not in "iu":
            raise self._error(f"must hold integers, got dtype {ui.dtype}", field="spikes.unit_index")
        n_units = len(self.unit_ids)
        bad = (ui < 0) | (ui >= n_units)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise self._error(
                f"{int(bad.sum())} value(s) outside [0, {n_units}) (units.id has {n_units} entries; first bad: index {i} = {ui[i]})",
                field="spikes.unit_index",
            )
        for key, (reader, _) in self._behaviour.items():
            if isinstance(reader, _Irregular):
                self._check_times(f[reader.group]["timestamps"][()], f"{reader.group.replace('/', '.')}.timestamps")

    def _check_times(self, ts: np.ndarray, field: str) -> None:
        if ts.ndim != 1:
            raise self._error(f"must be 1-D, got shape {ts.shape}", field=field)
        nan = ~np.isfinite(ts)
        if nan.any():
            raise self._error(f"{int(nan.sum())} NaN or infinite value(s), first at index {int(np.flatnonzero(nan)[0])}", field=field)
        back = np.flatnonzero(np.diff(ts) < 0)
        if back.size:
            i = int(back[0])
            raise self._error(f"not sorted: t[{i}]={ts[i]:.6f} > t[{i + 1}]={ts[i + 1]:.6f} ({back.size} decrease(s))", field=field)

    # -- windows ----------------------------------------------------------------------
    @property
    def start(self) -> float:
        return float(self.domain[0, 0])

    @property
    def end(self) -> float:
        return float(self.domain[-1, 1])

    @property
    def num_spikes(self) -> int:
        return self._spikes.n

    def behaviour_rate(self, key: str) -> float | None:
        """Sampling rate of a regular behaviour series, None for an irregular one."""
        reader, _ = self._behaviour[key]
        return reader.rate if isinstance(reader, _Regular) else None

    def read_behaviour(self, f: h5py.File | CachedFile, key: str, start: float, end: float) -> Series:
        """One behaviour series on ``[start, end)``, timestamps absolute (no spikes are read)."""
        if key not in self._behaviour:
            raise KeyError(f"session '{self.id}': behaviour '{key}' was not loaded (loaded: {sorted(self._behaviour)})")
        reader, name = self._behaviour[key]
        b0, b1, bt = reader.rows(f, start, end)
        return Series(bt, f[f"{reader.group}/{name}"][b0:b1], np.arange(b0, b1, dtype=np.int64))

    def read(self, f: h5py.File | CachedFile, start: float, end: float) -> Window:
        """Read the window ``[start, end)`` from the open file ``f`` of this session."""
        i0, i1, ts = self._spikes.rows(f, start, end)
        units = f["spikes/unit_index"][i0:i1].astype(np.int64, copy=False)
        behaviour = {}
        for key, (reader, name) in self._behaviour.items():
            b0, b1, bt = reader.rows(f, start, end)
            behaviour[key] = Series(bt - start, f[f"{reader.group}/{name}"][b0:b1], np.arange(b0, b1, dtype=np.int64))
        carried = {k: (ivs.clip(v, start, end) if v is not None else ivs.empty()) for k, v in self.intervals.items()}
        return Window(
            session_id=self.id,
            start=float(start),
            end=float(end),
            unit_ids=self.unit_ids,
            spike_times=ts - start,
            spike_units=units,
            behaviour=behaviour,
            intervals=carried,
            subject_id=self.subject_id,
            unit_regions=self.unit_regions,
        )

"""Sessions from plain arrays: spike times with unit ids, or binned spike counts, plus behaviour.

For recordings that live in a notebook or a ``.mat``/``.npz`` file rather than in NWB.
Both functions return a ``temporaldata.Data`` laid out like every other pipeline's
sessions (``write_session`` stores it under ``<processed>/<brainset>/<session>.h5``):

* :func:`from_spike_times`: ``spike_times`` (s) with one unit id per spike, or one array
  of times per unit; behaviour as ``{"GROUP.FIELD": (timestamps, values)}``.
* :func:`from_binned_counts`: a ``(bins, units)`` count matrix and behaviour sampled once per
  bin. Spike times inside a bin are unknown, so each count becomes that many spikes placed
  by a documented rule (``placement``): ``"uniform"`` (default; independent uniform times
  inside the bin, from a generator seeded with ``seed``), ``"even"`` (evenly spaced inside
  the bin) or ``"centre"`` (all at the bin's centre). The rule, bin size and seed are
  recorded in the session (``session.spike_placement``, ``session.bin_size_s``,
  ``session.placement_seed``). Behaviour of bin ``i`` is stamped at the bin's centre,
  ``start + (i + 0.5) * bin_size``.

Splits: with ``trials`` ((n, 2) start/end), whole trials are dealt 70/10/20 (seed 42) and
training keeps 1 s away from held-out trials; without, 10 equal time blocks are dealt 8/1/1
(seed 42). Spikes outside the behaviour's span are cut and counted
(``session.spikes_outside_behaviour``), as are units left without spikes
(``session.units_dropped``). Without behaviour (``behaviour=None`` or ``{}``; no ``-b`` on the
command line) the session holds spikes only and spans them (spike times: first to last spike;
counts: every bin): such a session trains with ``objective=mtm`` (masked modelling), not with a
behaviour readout. Bad input raises :class:`ArrayContentError` naming the array.

Command line (``.npz`` or MATLAB ``.mat`` files; keys name the arrays inside)::

    python -m poyo.pipelines.arrays s1_data.mat --counts spikes --bin-size 0.05 \\
        -b hand.vel=vel -b hand.pos=pos --brainset s1_miller --processed-dir data/processed
    python -m poyo.pipelines.arrays rec.npz --spike-times t --unit-ids unit \\
        -b head.dir=hd@hd_times --brainset my_lab
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from temporaldata import Data, IrregularTimeSeries, RegularTimeSeries

from poyo.pipelines.common.behaviour import series_domain
from poyo.pipelines.common.blocks import block_splits
from poyo.pipelines.common.session import (
    clean_id,
    cut_counts,
    describe,
    import_summary,
    interval,
    safe_name,
    session_path,
    spikes_domain,
    spikes_from_trains,
    trial_splits,
    write,
)

PLACEMENTS = ("uniform", "even", "centre")


class ArrayContentError(ValueError):
    """Arrays that cannot make a session; the message names the array at fault."""


RESERVED = ("spikes", "units", "domain", "session", "subject", "brainset", "device")  # the session file's own groups


def _field_key(key: str) -> tuple[str, str]:
    group, dot, field = str(key).partition(".")
    if not (dot and group and field and (group + field).replace("_", "").isalnum()):
        raise ArrayContentError(f"behaviour key {key!r}: expected GROUP.FIELD, e.g. 'cursor.vel' or 'head.dir'")
    if group in RESERVED or field == "timestamps" or group.endswith("_domain"):
        raise ArrayContentError(
            f"behaviour key {key!r}: '{group if group in RESERVED or group.endswith('_domain') else field}' holds the "
            "session's own data; name the series otherwise, e.g. 'hand.vel'"
        )
    return group, field


def _values(name: str, values, n: int | None = None, *, allow_nan: bool) -> np.ndarray:
    v = np.asarray(values)
    if v.dtype.kind not in "iufb":
        raise ArrayContentError(f"{name}: expected numbers, got dtype {v.dtype}")
    if v.ndim > 2:
        raise ArrayContentError(f"{name}: shape {v.shape}; expected (samples,) or (samples, dims)")
    v = v.astype(np.float32).reshape(len(v), -1) if v.ndim else v.reshape(1, 1).astype(np.float32)
    if n is not None and len(v) != n:
        raise ArrayContentError(f"{name}: {len(v)} samples but {n} timestamps (or bins); their lengths must match")
    if len(v) == 0:
        raise ArrayContentError(f"{name}: no samples (an empty recording)")
    bad = ~np.isfinite(v).all(axis=1)
    if bad.all():
        raise ArrayContentError(f"{name}: every sample is NaN or infinite")
    if bad.any() and not allow_nan:
        raise ArrayContentError(
            f"{name}: {int(bad.sum())} of {len(v)} samples are NaN or infinite (first at index {int(np.flatnonzero(bad)[0])}); "
            "pass allow_nan=True (--allow-nan) to keep them: such samples are then ignored in training and evaluation"
        )
    return v


def _times(name: str, t) -> np.ndarray:
    try:
        t = np.asarray(t, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ArrayContentError(f"{name}: timestamps must be numbers (seconds)") from None
    if len(t) == 0:
        raise ArrayContentError(f"{name}: no timestamps (an empty recording)")
    if not np.isfinite(t).all():
        raise ArrayContentError(
            f"{name}: {int((~np.isfinite(t)).sum())} NaN or infinite timestamps (first at index {int(np.flatnonzero(~np.isfinite(t))[0])})"
        )
    back = np.flatnonzero(np.diff(t) <= 0)
    if back.size:
        i = int(back[0])
        raise ArrayContentError(
            f"{name}: timestamps must increase strictly; t[{i}]={t[i]:.6f} >= t[{i + 1}]={t[i + 1]:.6f}"
        )
    return t


def _trains(spike_times, unit_ids) -> tuple[list[np.ndarray], list[str]]:
    """One sorted spike-time array per unit, and the unit names."""
    try:
        return _trains_of_numbers(spike_times, unit_ids)
    except (TypeError, ValueError) as e:  # a string among the times (ArrayContentError is ours: passed on)
        if isinstance(e, ArrayContentError):
            raise
        raise ArrayContentError(
            f"spike_times: spike times must be numbers (seconds), got {type(e).__name__}: {e}"
        ) from None


def _trains_of_numbers(spike_times, unit_ids) -> tuple[list[np.ndarray], list[str]]:
    if unit_ids is None or (
        isinstance(unit_ids, Sequence)
        and not isinstance(unit_ids, str)
        and len(unit_ids) == len(spike_times)
        and _is_ragged(spike_times)
    ):
        trains = [np.asarray(t, np.float64).ravel() for t in spike_times]  # one array per unit
        names = [clean_id(u) for u in unit_ids] if unit_ids is not None else [str(i) for i in range(len(trains))]
        if len(names) != len(trains):
            raise ArrayContentError(f"unit_ids: {len(names)} names for {len(trains)} spike trains")
    else:
        times = np.asarray(spike_times, np.float64).ravel()
        units = np.asarray(unit_ids).ravel()
        if len(units) != len(times):
            raise ArrayContentError(
                f"unit_ids: {len(units)} entries but spike_times has {len(times)} spikes; give one unit id per spike"
            )
        keys, index = np.unique(units, return_inverse=True)
        trains = [times[index == k] for k in range(len(keys))]
        names = [clean_id(k) for k in keys]
    if not trains or sum(len(t) for t in trains) == 0:
        raise ArrayContentError("spike_times: no spikes (an empty recording)")
    for name, t in zip(names, trains):
        if not np.isfinite(t).all():
            raise ArrayContentError(
                f"spike_times: unit '{name}' has {int((~np.isfinite(t)).sum())} NaN or infinite spike times"
            )
    if len(set(names)) != len(names):
        raise ArrayContentError(
            f"unit_ids: duplicate unit names, e.g. {sorted({n for n in names if names.count(n) > 1})[:3]}"
        )
    return [np.sort(t) for t in trains], names


def _is_ragged(x) -> bool:
    return len(x) > 0 and all(np.ndim(t) == 1 for t in x) and not np.isscalar(x[0])


def _trials(trials, domain) -> np.ndarray:
    """``trials`` as sorted ``(n, 2)`` start/end rows, refused when the shape is not that (a
    transposed or 3-column array would deal the wrong times) or when fewer than 3 trials
    overlap the recording (the splits need train, valid and test)."""
    try:
        tr = np.asarray(trials, np.float64)
    except (TypeError, ValueError):
        raise ArrayContentError("trials: expected numbers (an (n, 2) array of start/end times)") from None
    if tr.ndim != 2 or tr.shape[1] != 2:
        hint = " (transposed? its rows must be trials)" if tr.ndim == 2 and tr.shape[0] == 2 else ""
        raise ArrayContentError(f"trials: expected an (n, 2) array of start/end times, got shape {tr.shape}{hint}")
    if not np.isfinite(tr).all() or (tr[:, 1] <= tr[:, 0]).any():
        raise ArrayContentError("trials: every row must be a finite (start, end) with end > start")
    tr = tr[np.argsort(tr[:, 0], kind="stable")]
    start, end = float(domain.start[0]), float(domain.end[-1])
    inside = int(((tr[:, 1] > start) & (tr[:, 0] < end)).sum())
    if inside < 3:
        raise ArrayContentError(
            f"trials: {inside} of {len(tr)} trials overlap the recording [{start:.3f}, {end:.3f}) s; splitting by trials "
            "needs at least 3 (train, valid, test). Are they in seconds, on the spikes' clock? (leave --trials out to split by time blocks)"
        )
    return tr


def _session(
    trains, names, series: dict, domain, *, brainset, session_id, subject, trials, extra: dict, regions=None
) -> Data:
    try:  # ids become file and folder names
        brainset, session_id = safe_name(brainset, "brainset id"), safe_name(session_id, "session id")
    except ValueError as e:
        raise ArrayContentError(str(e)) from None
    given = sum(len(t) for t in trains)
    try:
        spikes, units, dropped = spikes_from_trains(trains, names, domain=domain, regions=regions)
    except ValueError as e:
        raise ArrayContentError(
            f"spike_times: {e} inside the behaviour's span [{domain.start[0]:.3f}, {domain.end[-1]:.3f}) s"
        ) from None
    if trials is not None:
        tr = _trials(trials, domain)
        splits = trial_splits(domain, interval(tr[:, 0], tr[:, 1]), (0.7, 0.1, 0.2), seed=42, gap=1.0)
    else:
        splits = block_splits(domain, 10, (8, 1, 1), seed=42)
    meta = describe(
        brainset,
        "arrays",
        subject or session_id,
        session_id,
        species="unknown",
        task="unknown",
        recording_tech="unknown",
    )
    for k, v in {
        **extra,
        "spikes_outside_behaviour": given - len(spikes.timestamps),
        "units_dropped": dropped,
        **cut_counts(trains, domain),
    }.items():
        setattr(meta["session"], k, v)
    return Data(**meta, spikes=spikes, units=units, domain=domain, **series, **splits)


def from_spike_times(
    spike_times,
    unit_ids,
    behaviour: Mapping[str, tuple] | None = None,
    *,
    brainset: str,
    session_id: str,
    subject: str | None = None,
    trials=None,
    allow_nan: bool = False,
    brain_regions: Mapping | None = None,
) -> Data:
    """A session from spike times and behaviour arrays.

    Args:
        spike_times: ``(n_spikes,)`` seconds, with ``unit_ids`` ``(n_spikes,)`` naming each
            spike's unit (ints or strings); or a list of per-unit time arrays, with
            ``unit_ids`` the list of their names (or None for 0, 1, ...).
        behaviour: ``{"GROUP.FIELD": (timestamps (n,), values (n,) or (n, d))}``; fields of
            one group must share their timestamps. None or ``{}``: spikes only (``objective=mtm``).
        trials: optional ``(n, 2)`` start/end times used for the splits.
        brain_regions: optional ``{unit id: region name}`` for every unit, written as
            ``units.brain_region`` (what region masking in ``objective=mtm`` uses).
    """
    trains, names = _trains(spike_times, unit_ids)
    regions = None
    if brain_regions is not None:
        lookup = {clean_id(k): str(v) for k, v in dict(brain_regions).items()}
        missing = [n for n in names if n not in lookup]
        if missing:
            raise ArrayContentError(f"brain_regions: no region for units {missing[:5]} (give one for every unit)")
        regions = [lookup[n] for n in names]
    groups: dict[str, tuple[np.ndarray, dict]] = {}
    for key, pair in _behaviour(behaviour).items():
        group, field = _field_key(key)
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ArrayContentError(f"behaviour '{key}': expected a (timestamps, values) pair")
        t = _times(f"behaviour '{key}' timestamps", pair[0])
        v = _values(f"behaviour '{key}'", pair[1], len(t), allow_nan=allow_nan)
        if group in groups:
            t0 = groups[group][0]
            if len(t0) != len(t) or not np.allclose(t0, t):
                raise ArrayContentError(
                    f"behaviour '{key}': other timestamps than the rest of group '{group}'; give it a group of its own"
                )
        groups.setdefault(group, (t, {}))[1][field] = v
    if groups:
        domain = series_domain(np.sort(np.concatenate([t for t, _ in groups.values()])))
    else:
        try:
            domain = spikes_domain(trains)
        except ValueError as e:
            raise ArrayContentError(f"spike_times: {e}") from None
    series = {g: IrregularTimeSeries(timestamps=t, domain=domain, **v) for g, (t, v) in groups.items()}
    return _session(
        trains,
        names,
        series,
        domain,
        brainset=brainset,
        session_id=clean_id(session_id),
        subject=subject,
        trials=trials,
        extra={},
        regions=regions,
    )


def _behaviour(behaviour) -> Mapping:
    """``behaviour`` as a mapping: None and ``{}`` mean spikes only."""
    if behaviour is None:
        return {}
    if not isinstance(behaviour, Mapping):
        raise ArrayContentError(
            f"behaviour: expected a mapping {{'GROUP.FIELD': ...}} (or None for spikes only), got {type(behaviour).__name__}"
        )
    return behaviour


def place_spikes(
    counts: np.ndarray, bin_size: float, start: float = 0.0, placement: str = "uniform", seed: int = 0
) -> list[np.ndarray]:
    """Per unit, spike times for a ``(bins, units)`` count matrix (see the module docstring)."""
    if placement not in PLACEMENTS:
        raise ArrayContentError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    rng = np.random.default_rng(seed)
    trains = []
    for u in range(counts.shape[1]):
        c = counts[:, u]
        bins = np.repeat(np.arange(len(c)), c)
        if placement == "uniform":
            frac = rng.random(len(bins))
        elif placement == "centre":
            frac = np.full(len(bins), 0.5)
        else:  # k-th of c spikes at (k + 0.5) / c of the bin
            rank = np.arange(len(bins)) - np.repeat(np.cumsum(c) - c, c)
            frac = (rank + 0.5) / np.repeat(c, c)
        trains.append(np.sort(start + (bins + frac) * bin_size))
    return trains


def from_binned_counts(
    counts,
    bin_size: float,
    behaviour: Mapping[str, np.ndarray] | None = None,
    *,
    brainset: str,
    session_id: str,
    start: float = 0.0,
    placement: str = "uniform",
    seed: int = 0,
    unit_ids: Sequence[str] | None = None,
    subject: str | None = None,
    trials=None,
    allow_nan: bool = False,
) -> Data:
    """A session from binned spike counts.

    Args:
        counts: ``(bins, units)`` non-negative integer counts; bin ``i`` covers
            ``[start + i * bin_size, start + (i + 1) * bin_size)``.
        behaviour: ``{"GROUP.FIELD": values}`` with one sample per bin, ``(bins,)`` or ``(bins, d)``;
            None or ``{}``: spikes only (``objective=mtm``).
        placement, seed: how counts become spike times (module docstring).
    """
    behaviour = _behaviour(behaviour)
    c = np.asarray(counts)
    if c.ndim != 2:
        raise ArrayContentError(f"counts: expected a (bins, units) matrix, got shape {c.shape}")
    if c.shape[0] == 0 or c.shape[1] == 0:
        raise ArrayContentError(f"counts: shape {c.shape} holds no bins or no units (an empty recording)")
    if c.dtype.kind not in "iuf" or (c.dtype.kind == "f" and not (np.isfinite(c).all() and (c == np.round(c)).all())):
        raise ArrayContentError(f"counts: spike counts must be whole numbers (dtype {c.dtype})")
    if (c < 0).any():
        raise ArrayContentError(
            f"counts: {int((c < 0).sum())} negative count(s), first at (bin, unit) {tuple(int(i) for i in np.argwhere(c < 0)[0])}"
        )
    if c.sum() == 0:
        raise ArrayContentError("counts: every count is 0 (no spikes)")
    if not (np.isfinite(bin_size) and 1e-4 <= bin_size <= 10.0):
        raise ArrayContentError(f"bin_size must be a number of seconds in [0.0001, 10], got {bin_size}")
    if not np.isfinite(start):
        raise ArrayContentError(f"start must be a finite time in seconds, got {start}")
    most = float(c.max())
    if most > 2000.0 * bin_size + 10 or float(c.sum()) > 2e9:  # above 2 kHz in a bin, or past what fits in memory
        raise ArrayContentError(
            f"counts: {most:.0f} spikes in one {bin_size:g} s bin ({most / bin_size:.3g} Hz), {float(c.sum()):.3g} in all: "
            "these are not spike counts of single units at this bin size (the wrong array, or the wrong --bin-size?)"
        )
    for key, values in behaviour.items():
        n = len(np.asarray(values))
        if n != len(c) and n == c.shape[1]:
            raise ArrayContentError(
                f"counts: shape {c.shape}, but behaviour '{key}' has {n} samples, one per column: is counts transposed? "
                "rows must be bins, columns units"
            )
    c = c.astype(np.int64)
    groups: dict[str, dict] = {}
    for key, values in behaviour.items():
        group, field = _field_key(key)
        groups.setdefault(group, {})[field] = _values(f"behaviour '{key}'", values, len(c), allow_nan=allow_nan)
    names = [clean_id(u) for u in unit_ids] if unit_ids is not None else [str(i) for i in range(c.shape[1])]
    if len(names) != c.shape[1]:
        raise ArrayContentError(f"unit_ids: {len(names)} names for {c.shape[1]} units (columns of counts)")
    domain = interval([start], [start + len(c) * bin_size])
    series = {
        g: RegularTimeSeries(sampling_rate=1.0 / bin_size, domain_start=start + bin_size / 2, **v)
        for g, v in groups.items()
    }
    trains = place_spikes(c, bin_size, start, placement, seed)
    rule = {
        "uniform": f"uniform random inside each bin (seed {seed})",
        "even": "evenly spaced inside each bin",
        "centre": "at the bin centre",
    }[placement]
    extra = {"spike_placement": rule, "bin_size_s": float(bin_size), "placement_seed": int(seed)}
    return _session(
        trains,
        names,
        series,
        domain,
        brainset=brainset,
        session_id=clean_id(session_id),
        subject=subject,
        trials=trials,
        extra=extra,
    )


def write_session(data: Data, processed_dir, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``<processed_dir>/<brainset>/<session>.h5`` (atomically); the ids must be
    plain names, so the file cannot land outside ``processed_dir``."""
    out = session_path(processed_dir, data.brainset.id, data.session.id)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True / --overwrite to replace it)")
    return write(data, out)


def load_arrays(path) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` or MATLAB ``.mat`` (v5 with scipy, v7.3 with h5py) file."""
    path = Path(path)
    if path.is_dir():
        raise ArrayContentError(f"{path}: a folder; give the .npz or .mat file inside it")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                out = {}
                for k in f.files:
                    try:
                        out[k] = f[k]
                    except ValueError:  # an object array: needs unpickling, which poyo never does
                        out[k] = ObjectArray(k)
                return out
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ArrayContentError(
                f"{path}: not a readable .npz file ({type(e).__name__}); write it with numpy.savez"
            ) from None
    if path.suffix == ".mat":
        try:
            from scipy.io import loadmat

            try:
                found = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
            except NotImplementedError:  # MATLAB v7.3 is HDF5; MATLAB stores arrays transposed
                import h5py

                with h5py.File(path, "r") as f:
                    found = {k: np.asarray(f[k]).T for k in f if isinstance(f[k], h5py.Dataset)}
        except ImportError as e:
            raise ImportError(f"{path}: reading .mat files needs scipy (pip install scipy)") from e
        except Exception as e:  # scipy's MatReadError and h5py's errors share no base class of their own
            raise ArrayContentError(f"{path}: not a readable .mat file ({type(e).__name__}: {str(e)[:80]})") from None
        if not found:
            raise ArrayContentError(f"{path}: the .mat file holds no arrays")
        return found
    raise ArrayContentError(f"{path}: unsupported file type '{path.suffix}'; use .npz or .mat")


class ObjectArray:
    """Stands for a ``.npz`` entry of Python objects: refused by name if asked for, ignored otherwise."""

    def __init__(self, key: str):
        self.key = key


def _parse_behaviour(specs: list[str], binned: bool) -> dict[str, tuple[str, str | None]]:
    """``["hand.vel=vel", "head.dir=hd@hd_t"]`` -> ``{"hand.vel": ("vel", None), "head.dir": ("hd", "hd_t")}``."""
    out = {}
    for spec in specs:
        key, sep, source = spec.partition("=")
        values, at, times = source.partition("@")
        if not (sep and values) or (at and not times):
            raise ArrayContentError(
                f"-b {spec!r}: expected GROUP.FIELD=KEY{'' if binned else '@TIMES_KEY'}, e.g. hand.vel=vel"
            )
        _field_key(key)
        if binned and at:
            raise ArrayContentError(f"-b {spec!r}: binned behaviour is stamped at the bin centres; drop '@{times}'")
        if not binned and not at:
            raise ArrayContentError(
                f"-b {spec!r}: with --spike-times, name the behaviour's timestamps too: {key}={values}@TIMES_KEY"
            )
        if key in out:
            raise ArrayContentError(f"-b: {key} given twice")
        out[key] = (values, times or None)
    return out


def main(argv=None, prog: str = "python -m poyo.pipelines.arrays") -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog=prog, description="Turn arrays in a .npz or .mat file into a poyo session.")
    p.add_argument("file", type=Path, help=".npz or .mat file holding the arrays")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--counts", metavar="KEY", help="(bins, units) spike-count matrix")
    src.add_argument(
        "--spike-times", metavar="KEY", help="spike times in seconds (with --unit-ids: one unit per spike)"
    )
    p.add_argument("--unit-ids", metavar="KEY", help="with --spike-times: each spike's unit")
    p.add_argument("--bin-size", type=float, help="with --counts: bin width in seconds")
    p.add_argument("--start", type=float, default=0.0, help="with --counts: start time of the first bin (s, default 0)")
    p.add_argument(
        "--placement",
        choices=PLACEMENTS,
        default="uniform",
        help="with --counts: where spikes go inside a bin (default uniform)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="with --counts --placement uniform: seed of the spike times (default 0)"
    )
    p.add_argument(
        "--behaviour",
        "-b",
        action="append",
        default=[],
        metavar="GROUP.FIELD=KEY[@TIMES_KEY]",
        help="a behaviour series, e.g. hand.vel=vel (repeatable); none: spikes only, for objective=mtm",
    )
    p.add_argument(
        "--trials", metavar="KEY", help="(n, 2) trial start/end times: split by trials instead of time blocks"
    )
    p.add_argument(
        "--allow-nan", action="store_true", help="keep NaN behaviour samples (ignored in training and evaluation)"
    )
    p.add_argument("--brainset", default="my_arrays", help="folder and id prefix of the session (default my_arrays)")
    p.add_argument("--session-id", help="session id (default: the file name without extension)")
    p.add_argument("--subject", help="subject id (default: the session id)")
    p.add_argument("--processed-dir", type=Path, default=Path("data/processed"))
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.counts and args.bin_size is None:
            raise ArrayContentError("--counts needs --bin-size (seconds per bin)")
        if args.spike_times and not args.unit_ids:
            raise ArrayContentError("--spike-times needs --unit-ids (the key of each spike's unit)")
        if args.processed_dir.exists() and not args.processed_dir.is_dir():
            raise ArrayContentError(f"--processed-dir {args.processed_dir}: a file, not a folder")
        if not np.isfinite(args.start):
            raise ArrayContentError(f"--start must be a finite time in seconds, got {args.start}")
        if args.seed < 0:
            raise ArrayContentError(f"--seed must be an integer >= 0, got {args.seed}")
        arrays = load_arrays(args.file)

        def get(key):
            if key not in arrays:
                raise ArrayContentError(f"{args.file}: no array '{key}' (it has {sorted(arrays)})")
            if isinstance(arrays[key], ObjectArray):
                raise ArrayContentError(
                    f"{args.file}: array '{key}' holds Python objects, which poyo does not unpickle; save it as numbers"
                )
            return arrays[key]

        spec = _parse_behaviour(args.behaviour, binned=bool(args.counts))
        common = dict(brainset=args.brainset, session_id=args.session_id or args.file.stem, subject=args.subject,
                      trials=get(args.trials) if args.trials else None, allow_nan=args.allow_nan)  # fmt: skip
        if args.counts:
            behaviour = {k: get(v) for k, (v, _) in spec.items()}
            data = from_binned_counts(
                get(args.counts),
                args.bin_size,
                behaviour,
                start=args.start,
                placement=args.placement,
                seed=args.seed,
                **common,
            )
        else:
            behaviour = {k: (get(t), get(v)) for k, (v, t) in spec.items()}
            data = from_spike_times(get(args.spike_times), get(args.unit_ids), behaviour, **common)
        out = write_session(data, args.processed_dir, overwrite=args.overwrite)
    except (ArrayContentError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    s = data.session
    print(
        f"{args.file} -> {out}: {len(data.units.id)} units, {len(data.spikes.timestamps)} spikes, "
        + (
            f"behaviour {sorted(spec)}"
            if spec
            else "no behaviour (spikes only: it trains with objective=mtm, masked modelling)"
        )
    )
    if getattr(s, "spike_placement", None):
        print(f"  spike times placed {s.spike_placement}, {s.bin_size_s:g} s bins")
    for line in import_summary(data, spec, args.processed_dir):
        print(line)
    return 0

"""Building and writing one session in the temporaldata layout that ``poyo.data`` reads.

Conventions (shared with brainsets): ``brainset``, ``subject``, ``session`` and ``device``
groups with an ``id``; ``units.id``; ``spikes`` (timestamps, unit_index); ``domain``;
``train_domain`` / ``valid_domain`` / ``test_domain``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from temporaldata import ArrayDict, Data, Interval, IrregularTimeSeries


def clean_id(value) -> str:
    """A unit or session id as ``str``: bytes are decoded (UTF-8, else Latin-1), whitespace stripped."""
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            value = bytes(value).decode("latin-1")
    return str(value).strip()


def id_array(ids) -> np.ndarray:
    """Ids for HDF5: plain ``str`` when all ASCII, else UTF-8 bytes (temporaldata refuses
    non-ASCII ``str``; ``poyo.data`` decodes bytes as UTF-8)."""
    ids = [clean_id(i) for i in ids]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ValueError(f"duplicate unit ids after cleaning, e.g. {dup}")
    if all(i.isascii() for i in ids):
        return np.array(ids, dtype=str)
    return np.array([i.encode("utf-8") for i in ids], dtype=object).astype("S")


def cut_counts(trains: list[np.ndarray], domain: Interval) -> dict[str, int]:
    """Where the spikes that ``domain`` cuts lie: before it, after it, or in its gaps (between
    its intervals), as session attributes an import summary reports."""
    t = np.concatenate([np.asarray(x, np.float64).ravel() for x in trains]) if trains else np.zeros(0)
    t = t[np.isfinite(t)]
    before, after = int((t < domain.start[0]).sum()), int((t >= domain.end[-1]).sum())
    inside = int(sum(((t >= a) & (t < b)).sum() for a, b in zip(domain.start, domain.end)))
    return {
        "spikes_before_behaviour": before,
        "spikes_after_behaviour": after,
        "spikes_in_behaviour_gaps": len(t) - before - after - inside,
    }


def import_summary(data: Data, behaviour_keys, processed_dir) -> list[str]:
    """Lines telling what an import left out or will ignore, so nothing is lost silently:
    spikes cut (before, after, or in gaps of the behaviour), units without spikes, NaN samples;
    then the command that trains on the session (written below ``processed_dir``)."""
    s, lines = data.session, []
    cut = int(getattr(s, "spikes_outside_behaviour", 0))
    if cut:
        parts = [
            f"{int(getattr(s, k, 0))} {w}"
            for k, w in (("spikes_before_behaviour", "before it"), ("spikes_after_behaviour", "after it"))
        ]
        gaps = int(getattr(s, "spikes_in_behaviour_gaps", 0))
        n_gaps = len(data.domain) - 1
        if gaps or n_gaps:
            parts.append(f"{gaps} in its {n_gaps} gap{'s' if n_gaps != 1 else ''}")
        placed = gaps + sum(int(getattr(s, k, 0)) for k in ("spikes_before_behaviour", "spikes_after_behaviour"))
        if cut > placed:  # spike times that are NaN or infinite are dropped too
            parts.append(f"{cut - placed} with non-finite times")
        lines.append(
            f"  cut {cut} spikes outside the behaviour's time span ({', '.join(parts)}): sessions hold spikes only where behaviour is known"
        )
    if int(getattr(s, "units_dropped", 0)):
        lines.append(f"  dropped {int(s.units_dropped)} units left without spikes")
    for key in sorted(behaviour_keys):
        group, _, field = key.partition(".")
        values = np.asarray(getattr(getattr(data, group), field))
        bad = int((~np.isfinite(values.reshape(len(values), -1)).all(1)).sum())
        if bad:
            lines.append(
                f"  {key}: {bad} of {len(values)} samples are NaN: kept, and ignored in training and evaluation"
            )
    default = Path(processed_dir) == Path("data/processed")
    lines.append(
        f"  train with: poyo train dataset={data.brainset.id}"
        + ("" if default else f" data_root={processed_dir}")
        + ("" if behaviour_keys else " objective=mtm   (no behaviour: self-supervised)")
    )
    return lines


def spikes_domain(trains: list[np.ndarray]) -> Interval:
    """The span of a spikes-only session (no behaviour to bound it): first spike to just
    after the last. Raises ValueError when there is no finite spike time."""
    every = np.concatenate([np.asarray(t, np.float64).ravel() for t in trains]) if trains else np.zeros(0)
    every = every[np.isfinite(every)]
    if not len(every):
        raise ValueError("no spikes (an empty recording)")
    return interval([float(every.min())], [float(every.max()) + 1e-3])


def spikes_from_trains(
    trains: list[np.ndarray], ids: list[str], domain: Interval | None = None, regions: list[str] | None = None
):
    """``spikes`` and ``units`` from one spike-time array per unit.

    Spikes outside ``domain`` are cut. Units without spikes (left) are dropped (they would
    get an embedding that is never trained); the number dropped is returned. ``regions``
    (one brain region name per unit, "" where unknown) become ``units.brain_region``.
    """
    if len(trains) != len(ids):
        raise ValueError(f"{len(trains)} spike trains but {len(ids)} unit ids")
    if regions is not None and len(regions) != len(ids):
        raise ValueError(f"{len(regions)} brain regions for {len(ids)} units (one per unit)")
    given = [np.asarray(t, np.float64).ravel() for t in trains]
    if domain is not None:  # session files hold only spikes inside their domain
        trains = [_inside(np.sort(t), domain) for t in given]
    keep = [i for i, t in enumerate(trains) if len(t)]
    if not keep:
        everything = np.concatenate(given) if given else np.zeros(0)
        everything = everything[np.isfinite(everything)]
        if not len(everything):
            raise ValueError("no unit has any spike")
        raise ValueError(
            f"no unit has any spike inside the behaviour's time range [{domain.start[0]:.3f}, {domain.end[-1]:.3f}) s: all "
            f"{len(everything)} spikes lie in [{everything.min():.3f}, {everything.max():.3f}] s (different clocks or units?)"
        )
    times = np.concatenate([np.asarray(trains[i], np.float64).ravel() for i in keep])
    index = np.concatenate([np.full(len(trains[i]), k, np.int64) for k, i in enumerate(keep)])
    bad = ~np.isfinite(times)
    times, index = times[~bad], index[~bad]
    order = np.argsort(times, kind="stable")
    times, index = times[order], index[order]
    spikes = IrregularTimeSeries(timestamps=times, unit_index=index, domain=domain if domain is not None else "auto")
    columns = dict(id=id_array([ids[i] for i in keep]), count=np.bincount(index, minlength=len(keep)).astype(np.int64))
    if regions is not None:
        columns["brain_region"] = np.array([str(regions[i]) for i in keep])
    units = ArrayDict(**columns)
    return spikes, units, len(trains) - len(keep)


def _inside(times: np.ndarray, domain: Interval) -> np.ndarray:
    keep = np.zeros(len(times), bool)
    for s, e in zip(domain.start, domain.end):
        a, b = np.searchsorted(times, [s, e], side="left")
        keep[a:b] = True
    return times[keep]


def interval(start, end, **fields) -> Interval:
    """An Interval from arrays, sorted by start, with rows where start >= end or NaN dropped."""
    start, end = np.asarray(start, np.float64).ravel(), np.asarray(end, np.float64).ravel()
    ok = np.isfinite(start) & np.isfinite(end) & (end > start)
    order = np.argsort(start[ok], kind="stable")
    cols = {k: np.asarray(v)[ok][order] for k, v in fields.items()}
    return Interval(start=start[ok][order], end=end[ok][order], **cols)


def merge(iv: Interval) -> Interval:
    """Overlapping or touching rows merged (a disjoint, sorted set)."""
    if len(iv) == 0:
        return Interval(start=np.zeros(0), end=np.zeros(0))
    order = np.argsort(iv.start)
    s, e = np.asarray(iv.start)[order], np.asarray(iv.end)[order]
    out_s, out_e = [s[0]], [e[0]]
    for a, b in zip(s[1:], e[1:]):
        if a <= out_e[-1]:
            out_e[-1] = max(out_e[-1], b)
        else:
            out_s.append(a)
            out_e.append(b)
    return Interval(start=np.array(out_s), end=np.array(out_e))


def subtract(a: Interval, b: Interval) -> Interval:
    """``a`` minus ``b`` (both made disjoint first); one pass over both, sorted."""
    a, b = merge(a), merge(b)
    out_s, out_e = [], []
    j = 0
    for s, e in zip(a.start, a.end):
        while j < len(b) and b.end[j] <= s:  # b rows wholly before this a row never matter again
            j += 1
        cur, k = s, j
        while k < len(b) and b.start[k] < e:
            if b.start[k] > cur:
                out_s.append(cur)
                out_e.append(b.start[k])
            cur = max(cur, b.end[k])
            k += 1
        if cur < e:
            out_s.append(cur)
            out_e.append(e)
    return Interval(start=np.array(out_s, np.float64), end=np.array(out_e, np.float64))


def intersect(a: Interval, b: Interval) -> Interval:
    return subtract(a, subtract(a, b))


def split_indices(n: int, fractions=(0.7, 0.1, 0.2), seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` with a fixed seed and cut it into train/valid/test by ``fractions``."""
    if n < 3:
        raise ValueError(f"need at least 3 trials to split into train/valid/test, got {n}")
    fractions = np.asarray(fractions, np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or abs(fractions.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions.tolist()}")
    order = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    return np.sort(order[n_valid + n_test :]), np.sort(order[:n_valid]), np.sort(order[n_valid : n_valid + n_test])


def trial_splits(
    domain: Interval, trials: Interval, fractions=(0.7, 0.1, 0.2), seed: int = 42, gap: float = 1.0
) -> dict:
    """Valid and test are whole held-out trials; train is the rest of the domain, minus a
    ``gap`` around every held-out trial so no training window sees their spikes."""
    _, va, te = split_indices(len(trials), fractions, seed)
    valid = intersect(interval(trials.start[va], trials.end[va]), domain)
    test = subtract(intersect(interval(trials.start[te], trials.end[te]), domain), valid)
    held = interval(np.concatenate([valid.start, test.start]) - gap, np.concatenate([valid.end, test.end]) + gap)
    return {"train_domain": subtract(domain, held), "valid_domain": valid, "test_domain": test}


def describe(brainset: str, source: str, subject: str, session: str, *, species: str = "MACACA_MULATTA", task: str = "REACHING",
             recording_tech: str = "UTAH_ARRAY_SPIKES", date: str = "", **subject_fields) -> dict:  # fmt: skip
    """The metadata groups, as plain ``Data`` (what brainsets' description classes store)."""
    return dict(
        brainset=Data(id=brainset, source=source),
        subject=Data(
            id=clean_id(subject), species=species, **{k: v for k, v in subject_fields.items() if v is not None}
        ),
        session=Data(id=clean_id(session), task=task, recording_date=date),
        device=Data(id=f"{clean_id(subject)}_{date or session}", recording_tech=recording_tech),
    )


def safe_name(value, what: str) -> str:
    """``value`` if it can name a file or folder by itself: no path separators, not ``.``/``..``
    or hidden, no control characters. Ids reach output paths, so they must not escape them."""
    v = clean_id(value)
    if not v or v in (".", "..") or v.startswith(".") or any(c in v for c in "/\\") or any(ord(c) < 32 for c in v):
        raise ValueError(
            f"{what} {str(value)!r} cannot name a file: use letters, digits, '_', '-' (no '/', '\\', leading '.' or control characters)"
        )
    if len(v.encode("utf-8")) > 200:  # file systems refuse names over 255 bytes; ids are also printed in every table
        raise ValueError(f"{what} is {len(v)} characters long ({v[:40]}...); use at most 200")
    return v


def session_path(processed_dir, brainset, session) -> Path:
    """``<processed_dir>/<brainset>/<session>.h5``, refusing ids that would point elsewhere."""
    return Path(processed_dir) / safe_name(brainset, "brainset id") / f"{safe_name(session, 'session id')}.h5"


def write(data: Data, path: Path) -> Path:
    """Write atomically (temp file, fsync, rename): a crash never leaves a half-written session."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        data.to_hdf5(f)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path

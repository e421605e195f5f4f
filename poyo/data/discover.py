"""What a brainset folder holds, so training needs no hand-written dataset config.

:func:`behaviour_fields` lists the behaviour series of a session file (every time-series
field but the spikes); :func:`choose_behaviour` picks the one to decode from the fields
all sessions share; :func:`angle_period` says whether that series is an angle.
"""

from __future__ import annotations

from collections.abc import Sequence

import h5py
import numpy as np

from poyo.data.dataset import find_session_files
from poyo.data.session import open_file

SERIES = ("RegularTimeSeries", "IrregularTimeSeries")
NOT_VALUES = {"timestamps", "timestamp_indices_1s"}


def behaviour_fields(path) -> dict[str, int]:
    """``{"hand.vel": 2, ...}``: each numeric field of each time series in a session file
    (spikes excluded) and its width (values per sample)."""
    out: dict[str, int] = {}
    with open_file(path) as f:

        def visit(name: str, obj) -> None:
            if not (isinstance(obj, h5py.Group) and obj.attrs.get("object") in SERIES) or name == "spikes":
                return
            for field, d in obj.items():
                if (
                    isinstance(d, h5py.Dataset)
                    and field not in NOT_VALUES
                    and d.dtype.kind in "iuf"
                    and d.ndim in (1, 2)
                ):
                    out[f"{name.replace('/', '.')}.{field}"] = 1 if d.ndim == 1 else int(d.shape[1])

        f.visititems(visit)
    return out


def choose_behaviour(root, wanted: str | None = None) -> tuple[str, int]:
    """The behaviour key to decode in every session below ``root`` and its width.

    ``wanted`` names it; otherwise the only series, else the only velocity (a field whose
    name starts with ``vel``). Anything else is ambiguous and raises, listing the choices.
    """
    files = find_session_files(root)
    per_file = [behaviour_fields(p) for p in files]
    shared = set(per_file[0]).intersection(*per_file[1:])
    widths = {k: {fields[k] for fields in per_file} for k in shared}
    differ = {k: sorted(w) for k, w in widths.items() if len(w) > 1}  # in every file, but not equally wide
    shared = sorted(k for k in shared if len(widths[k]) == 1)
    where = f"{root} ({len(files)} session file(s))"
    if wanted in differ or (wanted is None and not shared and differ):
        key = wanted if wanted in differ else sorted(differ)[0]
        by = {w: [p.name for p, fields in zip(files, per_file) if fields[key] == w][:2] for w in differ[key]}
        raise KeyError(
            f"every session of {where} has '{key}', but with different widths ("
            + ", ".join(f"{w} dims in e.g. {names}" for w, names in by.items())
            + "); one readout decodes one width: keep the sessions of one width (sessions=[...])"
        )
    if wanted is not None:
        if wanted not in shared:
            raise KeyError(
                f"behaviour '{wanted}' is not in every session of {where}; shared series: {shared or 'none'}"
            )
        return wanted, widths[wanted].pop()
    if not shared:
        raise KeyError(
            f"the sessions of {where} share no behaviour series to decode (first file has {sorted(per_file[0])})"
        )
    velocity = [k for k in shared if k.rpartition(".")[2].startswith("vel")]
    pick = shared if len(shared) == 1 else velocity if len(velocity) == 1 else None
    if pick is None:
        raise KeyError(
            f"the sessions of {where} have several behaviour series {shared}; pick one with dataset.behaviour=KEY"
        )
    return pick[0], widths[pick[0]].pop()


def readout_name(key: str, dim: int, known: Sequence, kind: str = "continuous") -> str:
    """A registered readout reading ``key`` with this width and kind, else ``<key with _>_<dim>d``
    (``<key with _>_angle`` for one angle)."""
    for spec in known:
        if spec.key == key and spec.dim == dim and spec.kind == kind:
            return spec.name
    if kind == "circular":
        return f"{key.replace('.', '_')}_angle" + (f"_{dim}" if dim > 1 else "")
    return f"{key.replace('.', '_')}_{dim}d"


ANGLE_WORDS = {
    "angle",
    "angles",
    "dir",
    "direction",
    "heading",
    "orientation",
    "theta",
    "phase",
    "azimuth",
    "bearing",
    "yaw",
    "hd",
}


def _field_values(path, key: str) -> np.ndarray:
    group, _, field = key.rpartition(".")
    with open_file(path) as f:
        return np.asarray(f[group.replace(".", "/")][field][()], np.float64)


def angle_period(root, key: str) -> float | None:
    """The period of ``key`` if it is an angle, else None.

    An angle is a field whose name says so (a word such as ``dir``, ``angle``, ``heading``,
    ``theta`` or ``phase`` in ``head.dir`` / ``reach_angle``) and whose values all lie within
    one turn: radians (``|value| <= 2 pi``, period 2 pi) or degrees (``|value| <= 360``,
    period 360). Anything else is decoded as an ordinary continuous series.
    """
    words = {w for part in key.lower().split(".") for w in part.split("_")}
    if not words & ANGLE_WORDS:
        return None
    finite = [v[np.isfinite(v)] for v in (_field_values(p, key) for p in find_session_files(root))]
    values = np.concatenate(finite) if finite else np.zeros(0)
    if not len(values):
        return None
    reach = max(values.max() - values.min(), np.abs(values).max())
    if reach <= 2 * np.pi + 1e-6:
        return 2 * np.pi
    if 4 * np.pi < reach <= 360 + 1e-6:  # between one and two turns of radians: unclear, not an angle
        return 360.0
    return None

"""What a brainset folder holds, so training needs no hand-written dataset config.

:func:`behaviour_fields` lists the behaviour series of a session file (every time-series
field but the spikes); :func:`choose_behaviour` picks the one to decode from the fields
all sessions share.
"""

from __future__ import annotations

from collections.abc import Sequence

import h5py

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
                if isinstance(d, h5py.Dataset) and field not in NOT_VALUES and d.dtype.kind in "iuf" and d.ndim in (1, 2):
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
    shared = sorted(k for k in shared if len(widths[k]) == 1)
    where = f"{root} ({len(files)} session file(s))"
    if wanted is not None:
        if wanted not in shared:
            raise KeyError(f"behaviour '{wanted}' is not in every session of {where}; shared series: {shared or 'none'}")
        return wanted, widths[wanted].pop()
    if not shared:
        raise KeyError(f"the sessions of {where} share no behaviour series to decode (first file has {sorted(per_file[0])})")
    velocity = [k for k in shared if k.rpartition(".")[2].startswith("vel")]
    pick = shared if len(shared) == 1 else velocity if len(velocity) == 1 else None
    if pick is None:
        raise KeyError(f"the sessions of {where} have several behaviour series {shared}; pick one with dataset.behaviour=KEY")
    return pick[0], widths[pick[0]].pop()


def readout_name(key: str, dim: int, known: Sequence) -> str:
    """A registered readout reading ``key`` with this width, else ``<key with _>_<dim>d``."""
    for spec in known:
        if spec.key == key and spec.dim == dim and spec.kind == "continuous":
            return spec.name
    return f"{key.replace('.', '_')}_{dim}d"


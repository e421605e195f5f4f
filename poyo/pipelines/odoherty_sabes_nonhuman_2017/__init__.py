"""O'Doherty, Cardoso, Makin & Sabes (2017): self-paced random-target reaching, two macaques
(Indy, Loco), M1 (+S1) Utah arrays (Zenodo record 3854034, MATLAB v7.3 files).
Session ids: the file stem, e.g. ``indy_20160407_02``.

Per session: ``spikes``/``units`` (threshold crossings as ``<channel>/unsorted`` and sorted
units as ``<channel>/sorted_NN``), ``cursor`` (pos, vel, acc; mm, mm/s), ``finger`` (pos_3d,
vel_3d) and ``target`` (pos), at the file's 250 Hz. No trials: the recording is cut into 10
equal blocks, shuffled with seed 42 and dealt 8/1/1 to train/valid/test.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from temporaldata import Data, IrregularTimeSeries

from poyo.pipelines.common import download as dl
from poyo.pipelines.common.behaviour import derivative, series_domain
from poyo.pipelines.common.blocks import block_splits
from poyo.pipelines.common.runner import Asset, local_assets
from poyo.pipelines.common.session import describe, spikes_from_trains

BRAINSET_ID = "odoherty_sabes_nonhuman_2017"
ZENODO_RECORD = "3854034"
SOURCE = "https://zenodo.org/records/3854034"


class MatContentError(ValueError):
    pass


def session_id(path: str) -> str:
    return Path(path).stem


def manifest(raw_dir, args) -> list[Asset]:
    if args.local:
        return local_assets(raw_dir, "*.mat", session_id)
    return [Asset(session_id(f.path), raw_dir / f.path, f) for f in dl.zenodo_files(ZENODO_RECORD, ".mat")]


def _text(f: h5py.File, ref) -> str:
    """A MATLAB char array (uint16 codes) behind an object reference."""
    return "".join(chr(c) for c in np.asarray(f[ref][()]).ravel())


def _is_empty(ds: h5py.Dataset) -> bool:
    return bool(ds.attrs.get("MATLAB_empty", 0)) or ds.size == 0


def read_units(f: h5py.File, path) -> tuple[list[np.ndarray], list[str]]:
    for key in ("spikes", "chan_names"):
        if key not in f:
            raise MatContentError(f"{path}: no '{key}' (the file has {sorted(f.keys())})")
    names = [_text(f, r) for r in np.asarray(f["chan_names"][()]).ravel()]
    refs = np.asarray(f["spikes"][()])  # (sort classes, channels): row 0 unsorted, then sorted units
    if refs.shape[1] != len(names):
        raise MatContentError(f"{path}: 'spikes' has {refs.shape[1]} channels but 'chan_names' has {len(names)}")
    trains, ids = [], []
    for j in range(refs.shape[0]):
        label = "unsorted" if j == 0 else f"sorted_{j:02d}"
        for i, name in enumerate(names):
            ds = f[refs[j, i]]
            if _is_empty(ds):
                continue
            trains.append(np.asarray(ds[()], np.float64).ravel())
            ids.append(f"{name}/{label}")
    return trains, ids


def convert(asset: Asset) -> Data:
    path = asset.raw_path
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise MatContentError(f"{path}: cannot be read as a MATLAB v7.3 (HDF5) file: {e}") from e
    with f:
        for key in ("t", "cursor_pos", "finger_pos", "target_pos"):
            if key not in f:
                raise MatContentError(f"{path}: no '{key}' (the file has {sorted(f.keys())})")
        t = np.asarray(f["t"][()], np.float64).ravel()
        cursor_pos = np.asarray(f["cursor_pos"][()], np.float64).T
        finger = np.asarray(f["finger_pos"][()], np.float64).T
        target = np.asarray(f["target_pos"][()], np.float64).T
        trains, ids = read_units(f, path)
    if not (len(cursor_pos) == len(finger) == len(target) == len(t)):
        raise MatContentError(f"{path}: t, cursor_pos, finger_pos and target_pos differ in length")
    domain = series_domain(t)
    vel = derivative(t, cursor_pos)
    cursor = IrregularTimeSeries(timestamps=t, pos=cursor_pos.astype(np.float32), vel=vel.astype(np.float32),
                                 acc=derivative(t, vel).astype(np.float32), domain=domain)  # fmt: skip
    finger_ts = IrregularTimeSeries(
        timestamps=t,
        pos_3d=finger[:, :3].astype(np.float32),
        vel_3d=derivative(t, finger[:, :3]).astype(np.float32),
        domain=domain,
    )
    target_ts = IrregularTimeSeries(timestamps=t, pos=target.astype(np.float32), domain=domain)
    spikes, units, _ = spikes_from_trains(trains, ids, domain=domain)
    subject = asset.session_id.split("_")[0]
    date = asset.session_id.split("_")[1] if "_" in asset.session_id else ""
    return Data(
        **describe(BRAINSET_ID, SOURCE, subject, asset.session_id, date=date, recording_tech="UTAH_ARRAY_SPIKES"),
        spikes=spikes, units=units, cursor=cursor, finger=finger_ts, target=target_ts, domain=domain,
        **block_splits(domain, 10, (8, 1, 1), seed=42),
    )  # fmt: skip

"""Neural Latents Benchmark (Pei, Ye, Pandarinath et al. 2021) motor datasets from DANDI:
MC_Maze (000128), MC_Maze_Large/Medium/Small (000138/000139/000140) and MC_RTT (000129).
Session ids: ``<dataset>_train`` (e.g. ``mc_maze_small_train``), from the files with behaviour.

Per session: ``spikes``/``units``; ``hand`` (pos, vel) and, where present, ``cursor`` (pos)
and ``eye`` (pos), regularised onto the 1 kHz grid with NaN where samples are missing
(decoders must mask them; poyo does); ``trials`` with NLB's ``split``; for the maze datasets
``nlb_eval_intervals`` = move onset -50 ms to +650 ms (NLB's velocity-decoding window).
Splits: NLB "train" trials 80/20 into train/valid (seed 42); NLB "val" trials are the test
set. The ``desc-test`` files carry no behaviour and are not converted.
"""

from __future__ import annotations

import numpy as np
from temporaldata import Data, RegularTimeSeries

from poyo.pipelines.common import download as dl
from poyo.pipelines.common.nwb import (
    NWBContentError,
    find_series,
    open_nwb,
    series_names,
    series_times,
    series_values,
    subject_of,
    trials_table,
    unit_trains,
)
from poyo.pipelines.common.runner import Asset, local_assets
from poyo.pipelines.common.session import describe, interval, merge, spikes_from_trains, subtract

BRAINSET_ID = "pei_pandarinath_nlb_2021"
DATASETS = {
    "mc_maze": "000128",
    "mc_maze_large": "000138",
    "mc_maze_medium": "000139",
    "mc_maze_small": "000140",
    "mc_rtt": "000129",
}
RATE = 1000.0
EVAL_WINDOW = (-0.05, 0.65)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(DATASETS),
        choices=list(DATASETS),
        help="which NLB datasets (default: all five)",
    )


def dataset_of(path: str, default: str | None = None) -> str:
    """The NLB dataset a file belongs to, from its folder (``mc_maze_small/...``) or the default."""
    first = path.split("/")[0]
    if first in DATASETS:
        return first
    if default is None:
        raise ValueError(f"{path}: put NLB files under a folder named after their dataset ({list(DATASETS)})")
    return default


def manifest(raw_dir, args) -> list[Asset]:
    out = []
    for name in args.datasets:
        if args.local:
            if (raw_dir / name).is_dir():
                found = local_assets(raw_dir / name, "*desc-train*.nwb", lambda p, name=name: f"{name}_train")
                out += [Asset(a.session_id, a.raw_path, None, {"dataset": name}) for a in found]
            continue
        files = [f for f in dl.dandi_assets(DATASETS[name], "draft") if "desc-train" in f.path]
        out += [
            Asset(
                f"{name}_train",
                raw_dir / name / f.path,
                f,
                {"dandiset": DATASETS[name], "version": "draft", "dataset": name},
            )
            for f in files
        ]
    if not out:
        raise FileNotFoundError(f"no NLB train files (*desc-train*.nwb) below {raw_dir}/<dataset>/ for {args.datasets}")
    return out


def regular(t: np.ndarray, values: dict[str, np.ndarray], path) -> RegularTimeSeries:
    """Samples on a (gappy) 1 kHz clock placed on the full grid, NaN where none was recorded."""
    k = np.round((t - t[0]) * RATE).astype(np.int64)
    if (np.diff(k) <= 0).any() or not np.allclose(k / RATE, t - t[0], atol=1e-4):
        raise NWBContentError(f"{path}: behaviour timestamps are not on a {RATE:g} Hz grid")
    n = int(k[-1]) + 1
    out = {}
    for name, v in values.items():
        full = np.full((n, v.shape[1]), np.nan, np.float32)
        full[k] = v
        out[name] = full
    return RegularTimeSeries(sampling_rate=RATE, domain_start=float(t[0]), **out)


def convert(asset: Asset) -> Data:
    path, name = asset.raw_path, asset.extra.get("dataset") or dataset_of(asset.session_id)
    with open_nwb(path) as nwb:
        trains, ids = unit_trains(nwb, path)
        have = series_names(nwb)
        if not any(p.endswith("hand_vel") for p in have):
            raise NWBContentError(f"{path}: no hand_vel series (is this a desc-test file?); the file has {have}")
        vel_s = find_series(nwb, "hand_vel", path)
        t = series_times(vel_s)
        values = {"vel": series_values(vel_s)[:, :2]}
        if any(p.endswith("hand_pos") for p in have):
            values["pos"] = series_values(find_series(nwb, "hand_pos", path))[:, :2]
        extra = {}
        for key, series in (("cursor", "cursor_pos"), ("eye", "eye_pos")):
            if any(p.endswith(series) for p in have):
                extra[key] = {"pos": series_values(find_series(nwb, series, path))[:, :2]}
        tr = trials_table(nwb, path, required=["split"])
        meta = subject_of(nwb)
        date = nwb.session_start_time.strftime("%Y%m%d")
    hand = regular(t, values, path)
    behaviour = {k: regular(t, v, path) for k, v in extra.items()}
    domain = hand.domain
    split = np.char.strip(np.asarray(tr["split"]).astype(str))
    trials = interval(tr["start_time"], tr["stop_time"], split=split)
    split = np.asarray(trials.split).astype(str)
    nlb_train, nlb_val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    if len(nlb_train) < 3 or len(nlb_val) < 1:
        raise NWBContentError(f"{path}: needs NLB 'train' and 'val' trials, found {len(nlb_train)} and {len(nlb_val)}")
    tr_i, va_i, _ = _two_way(len(nlb_train))
    pick = lambda idx: merge(interval(trials.start[idx], trials.end[idx]))  # noqa: E731
    valid, test = pick(nlb_train[va_i]), pick(nlb_val)
    train = subtract(subtract(pick(nlb_train[tr_i]), valid), test)
    inside = lambda iv: subtract(iv, subtract(iv, domain))  # noqa: E731
    out = dict(train_domain=inside(train), valid_domain=inside(valid), test_domain=inside(test))
    if "move_onset_time" in tr:
        onset = np.asarray(tr["move_onset_time"], np.float64)
        out["nlb_eval_intervals"] = merge(interval(onset + EVAL_WINDOW[0], onset + EVAL_WINDOW[1]))
    spikes, units, _ = spikes_from_trains(trains, ids, domain=domain)
    subject = meta.pop("subject")
    return Data(
        **describe(BRAINSET_ID, f"https://dandiarchive.org/dandiset/{DATASETS[name]}", subject, asset.session_id, date=date,
                   species=meta.get("species", "unknown"), recording_tech="UTAH_ARRAY_SPIKES"),  # fmt: skip
        spikes=spikes, units=units, hand=hand, trials=trials, domain=domain, **behaviour, **out,
    )  # fmt: skip


def _two_way(n: int, valid_fraction: float = 0.2, seed: int = 42):
    """Indices of NLB-train trials for our train and valid splits (80/20, fixed seed)."""
    order = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, int(round(valid_fraction * n)))
    return np.sort(order[n_valid:]), np.sort(order[:n_valid]), np.zeros(0, np.int64)

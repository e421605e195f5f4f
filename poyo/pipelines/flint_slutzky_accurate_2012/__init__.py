"""Flint, Lindberg, Jordan, Miller & Slutzky (2012): centre-out reaching, monkey C, M1
(CRCNS DREAM ``Flint_2012_e1..e5.mat``, MATLAB v5 files). Session ids: ``monkey_c_e<N>_reaching``.

Per session: ``spikes``/``units`` (``unit_<i>``), ``hand`` (vel, 2-D, one sample per 100 ms)
and ``trials`` (first to last behaviour sample of each trial; the domain). Trials are split
70/10/20 with seed 42. CRCNS publishes no checksums: downloads are checked for size only.
"""

from __future__ import annotations

import http.cookiejar
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
from temporaldata import Data, IrregularTimeSeries

from poyo.pipelines.common import download as dl
from poyo.pipelines.common.runner import Asset, local_assets
from poyo.pipelines.common.session import describe, interval, merge, spikes_from_trains, trial_splits

BRAINSET_ID = "flint_slutzky_accurate_2012"
SOURCE = "https://crcns.org/data-sets/movements/dream"
FILES = [f"Flint_2012_e{i}.mat" for i in range(1, 6)]
PORTAL = "https://portal.nersc.gov/project/crcns/download/index.php"
FOLDER = "dream/data_sets/Flint_2012"


class MatContentError(ValueError):
    pass


def session_id(path: str) -> str:
    """``Flint_2012_e3.mat`` -> ``monkey_c_e3_reaching``."""
    stem = Path(path).stem
    if not stem.lower().startswith("flint_2012_e"):
        raise ValueError(f"{path}: not a Flint_2012_e<N>.mat file")
    return f"monkey_c_{stem.split('_')[-1].lower()}_reaching"


def manifest(raw_dir, args) -> list[Asset]:
    if args.local:
        return local_assets(raw_dir, "Flint_2012_e*.mat", session_id)
    return [
        Asset(session_id(name), raw_dir / name, dl.RemoteFile(name, f"{PORTAL}?fn={FOLDER}/{name}")) for name in FILES
    ]


def download(asset: Asset, redownload: bool = False, progress: bool = True) -> Path:
    """CRCNS serves files after an anonymous login (a session cookie), then by ``fn=``."""
    if asset.raw_path.exists() and not redownload:
        return asset.raw_path
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = urllib.parse.urlencode({"username": "", "password": "", "guest": "1", "fn": f"{FOLDER}/{asset.raw_path.name}",
                                   "agree_terms": "on", "submit": "Login Anonymously"}).encode()  # fmt: skip
    try:
        opener.open(urllib.request.Request(PORTAL, data=form), timeout=60).close()
    except OSError as e:
        raise dl.DownloadError(f"CRCNS anonymous login failed ({PORTAL}): {e}") from e
    return dl.fetch(asset.remote, asset.raw_path, opener=opener, redownload=redownload, progress=progress)


def _list(x) -> list:
    return list(x) if isinstance(x, (list, tuple, np.ndarray)) and not isinstance(x, dict) else [x]


def read_trials(path) -> list[dict]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path, simplify_cells=True)
    except Exception as e:  # scipy raises several kinds on damaged files
        raise MatContentError(f"{path}: cannot be read as a MATLAB v5 file: {e}") from e
    if "Subject" not in mat:
        raise MatContentError(
            f"{path}: no 'Subject' struct (the file has {sorted(k for k in mat if not k.startswith('__'))})"
        )
    subject = _list(mat["Subject"])[0]
    if not isinstance(subject, dict) or "Trial" not in subject:
        raise MatContentError(f"{path}: Subject has no 'Trial' field")
    trials = _list(subject["Trial"])
    for i, tr in enumerate(trials):
        missing = [k for k in ("Time", "HandVel", "Neuron") if k not in tr]
        if missing:
            raise MatContentError(f"{path}: Subject.Trial({i + 1}) lacks {missing}")
    return trials


def convert(asset: Asset) -> Data:
    trials = read_trials(asset.raw_path)
    times, vels, starts, ends = [], [], [], []
    n_units = max(len(_list(tr["Neuron"])) for tr in trials)
    trains = [[] for _ in range(n_units)]
    for tr in trials:
        t = np.asarray(tr["Time"], np.float64).ravel()
        if len(t) == 0:
            continue
        times.append(t)
        vels.append(np.asarray(tr["HandVel"], np.float64).reshape(len(t), -1)[:, :2])
        starts.append(t[0])
        ends.append(t[-1] + (np.median(np.diff(t)) if len(t) > 1 else 0.1))
        for k, neuron in enumerate(_list(tr["Neuron"])):
            spikes = neuron.get("Spike", []) if isinstance(neuron, dict) else []
            trains[k].append(np.asarray(spikes, np.float64).ravel())
    t, vel = np.concatenate(times), np.concatenate(vels)
    order = np.argsort(t, kind="stable")
    t, vel = t[order], vel[order]
    keep = np.concatenate([[True], np.diff(t) > 0])  # trials share edge samples
    t, vel = t[keep], vel[keep]
    trial_iv = interval(starts, ends)
    domain = merge(trial_iv)
    hand = IrregularTimeSeries(timestamps=t, vel=vel.astype(np.float32), domain=domain)
    trains = [np.unique(np.concatenate(x)) if x else np.zeros(0) for x in trains]
    spikes, units, _ = spikes_from_trains(trains, [f"unit_{i}" for i in range(n_units)], domain=domain)
    return Data(
        **describe(BRAINSET_ID, SOURCE, "monkey_c", asset.session_id, date="", recording_tech="UTAH_ARRAY_SPIKES"),
        spikes=spikes, units=units, hand=hand, trials=trial_iv, domain=domain,
        **trial_splits(domain, trial_iv, (0.7, 0.1, 0.2), seed=42, gap=0.0),
    )  # fmt: skip

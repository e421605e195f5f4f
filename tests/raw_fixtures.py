"""Small raw files with the structure of each real source (NWB via pynwb, .mat via h5py/scipy).

Each builder writes a few seconds of fake reaching: a cursor moving with a known velocity,
units whose spikes follow it, and trial tables with the columns the real archives have.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np


def reaching(seconds: float, fs: float, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.arange(0, seconds, 1 / fs) + 1.0
    pos = np.stack([5 * np.sin(2 * np.pi * 0.4 * t), 4 * np.cos(2 * np.pi * 0.3 * t)], 1)
    vel = np.gradient(pos, t, axis=0)
    return t, pos, vel


def spike_trains(n_units: int, t0: float, t1: float, rng, rate: float = 20.0) -> list[np.ndarray]:
    return [np.sort(rng.uniform(t0, t1, rng.poisson(rate * (t1 - t0)))) for _ in range(n_units)]


def nwb_file(
    path: Path,
    *,
    trains,
    unit_names=None,
    electrodes=True,
    series=(),
    trials=None,
    subject="C",
    species="Macaca mulatta",
    start=dt.datetime(2013, 10, 3, tzinfo=dt.timezone.utc),
    locations=None,
):
    """An NWB file: Units (optionally linked to electrode groups), behaviour series under
    processing/behavior (``("Position", "cursor_pos", t, data)``; container None for a bare
    series; data with ``rate`` instead of timestamps when t is a float), and a trials table
    (``{column: values}``, with start_time/stop_time). ``locations``: each unit's electrode location."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import BehavioralTimeSeries
    from pynwb.file import Subject

    nwb = NWBFile("fake", "fake-" + path.stem, start, subject=Subject(subject_id=subject, species=species))
    if electrodes:
        dev = nwb.create_device("array")
        groups = [nwb.create_electrode_group(name, "fake", "M1", dev) for name in ("M1", "PMd")]
        for i in range(len(trains)):
            where = locations[i] if locations is not None else "M1"
            nwb.add_electrode(group=groups[i % 2], location=where, x=0.0, y=0.0, z=0.0, imp=0.0, filtering="none")
    if unit_names is not None:
        nwb.add_unit_column("unit_name", "name")
    for i, tr in enumerate(trains):
        kw = {"electrodes": [i]} if electrodes else {}
        if unit_names is not None:
            kw["unit_name"] = unit_names[i]
        nwb.add_unit(spike_times=tr, **kw)
    if series:
        module = nwb.create_processing_module("behavior", "behaviour")
        containers = {}
        for container, name, t, data in series:
            ts = TimeSeries(
                name=name,
                data=data,
                unit="cm",
                **({"rate": 1000.0, "starting_time": t} if np.isscalar(t) else {"timestamps": t}),
            )
            if container is None:
                module.add(ts)
            else:
                if container not in containers:
                    containers[container] = BehavioralTimeSeries(name=container)
                    module.add(containers[container])
                containers[container].add_timeseries(ts)
    if trials:
        for col in trials:
            if col not in ("start_time", "stop_time"):
                nwb.add_trial_column(col, col)
        n = len(trials["start_time"])
        for i in range(n):
            nwb.add_trial(**{k: v[i] for k, v in trials.items()})
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def perich_file(raw: Path, subject="C", task="CO", date="20131003", seed=0, seconds=40.0) -> Path:
    rng = np.random.default_rng(seed)
    t, pos, vel = reaching(seconds, 100.0, rng)
    acc = np.gradient(vel, t, axis=0)
    acc[1500:1503] = 5000.0  # an outlier burst
    trains = spike_trains(6, t[0], t[-1], rng)
    trains.append(np.zeros(0))  # a unit with no spikes
    starts = np.arange(t[0] + 0.5, t[-1] - 3, 3.0)
    n = len(starts)
    trials = {
        "start_time": starts,
        "stop_time": starts + 2.5,
        "result": np.array(["R"] * (n - 1) + ["F"]),
        "go_cue_time": starts + 0.8,
    }
    if task == "CO":
        trials |= {"target_on_time": starts + 0.2, "target_id": np.arange(n, dtype=float) % 8}
    else:
        trials |= {"num_attempted": np.full(n, 4)}
    series = [
        ("Position", "cursor_pos", t, pos),
        ("Velocity", "cursor_vel", t, vel),
        ("Acceleration", "cursor_acc", t, acc),
    ]
    path = raw / f"sub-{subject}" / f"sub-{subject}_ses-{task}-{date}_behavior+ecephys.nwb"
    path.parent.mkdir(parents=True, exist_ok=True)
    return nwb_file(path, trains=trains, series=series, trials=trials, subject=subject)


def churchland_file(raw: Path, seed=0) -> Path:
    """Two clock epochs: the second restarts at t=0.5 s, as in the sessions with resets.
    One unit's second run of spikes fits no epoch (it must be dropped, and counted)."""
    rng = np.random.default_rng(seed)
    t1, pos1, _ = reaching(20.0, 1000.0, rng)  # 1.0 .. 21.0
    t2 = t1[:15000] - 0.5  # restarts: 0.5 .. 15.5
    pos2 = pos1[:15000] * 0.5
    t, pos = np.concatenate([t1, t2]), np.concatenate([pos1, pos2])
    trials = {"start_time": [], "stop_time": []}
    for a, b in ((1.0, 21.0), (0.5, 15.5)):
        s = np.arange(a + 0.2, b - 2.0, 2.0)
        trials["start_time"] += list(s)
        trials["stop_time"] += list(s + 1.8)
    n = len(trials["start_time"])
    st = np.array(trials["start_time"])
    trials = {k: np.array(v) for k, v in trials.items()} | {
        "target_presentation_time": st + 0.2, "go_cue_time": st + 0.6, "move_begins_time": st + 0.8, "move_ends_time": st + 1.3,
        "discard_trial": np.arange(n) % 7 == 6,
    }  # fmt: skip
    trains = []
    for k in range(5):
        a = np.sort(rng.uniform(1.0, 21.0, 300))
        b = np.sort(rng.uniform(0.5, 15.5, 200)) if k != 4 else np.sort(rng.uniform(-20.0, -15.0, 50))
        trains.append(np.concatenate([a, b]))  # recording order: the clock resets between a and b
    series = [("Position", "Cursor", t, pos), ("Position", "Hand", t, pos * 1.1), ("Position", "Eye", t, pos * 0.2)]
    path = raw / "sub-Jenkins" / "sub-Jenkins_ses-20090916_behavior+ecephys.nwb"
    path.parent.mkdir(parents=True, exist_ok=True)
    return nwb_file(path, trains=trains, series=series, trials=trials, subject="Jenkins")


def odoherty_file(raw: Path, name="indy_20160407_02", seed=0, seconds=60.0) -> Path:
    """A MATLAB v7.3 file as on Zenodo: cell arrays of references, chars as uint16 codes."""
    import h5py

    rng = np.random.default_rng(seed)
    t, pos, _ = reaching(seconds, 250.0, rng)
    path = raw / f"{name}.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    chans = ["M1 001", "M1 002", "S1 003"]
    with h5py.File(path, "w") as f:
        f["t"] = t[None, :]
        f["cursor_pos"] = pos.T
        f["finger_pos"] = np.concatenate([pos, np.zeros((len(t), 1))], 1).T
        f["target_pos"] = np.zeros((2, len(t)))
        refs = f.create_group("#refs#")
        ref_dtype = h5py.special_dtype(ref=h5py.Reference)

        def put(name, data, empty=False):
            ds = refs.create_dataset(name, data=data)
            if empty:
                ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds.ref

        names = np.array(
            [[put(f"c{i}", np.array([ord(ch) for ch in c], np.uint16)[:, None])] for i, c in enumerate(chans)],
            dtype=ref_dtype,
        ).T
        f.create_dataset("chan_names", data=names, dtype=ref_dtype)
        spikes = np.empty((3, len(chans)), dtype=object)  # unsorted, sorted_01, sorted_02
        for j in range(3):
            for i in range(len(chans)):
                if j == 2 and i != 0:  # only channel 0 has a second sorted unit
                    spikes[j, i] = put(f"s{j}_{i}", np.zeros(2, np.uint64), empty=True)
                else:
                    spikes[j, i] = put(f"s{j}_{i}", np.sort(rng.uniform(t[0], t[-1], 400))[None, :])
        f.create_dataset("spikes", data=spikes.astype(ref_dtype), dtype=ref_dtype)
        f["wf"] = np.zeros(1)
    return path


def flint_file(raw: Path, n=2, seed=0) -> Path:
    """A MATLAB v5 file as on CRCNS: Subject.Trial(k).{Time, HandPos, HandVel, Neuron(i).Spike}."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    trials = np.empty((12, 1), dtype=object)
    for k in range(12):
        t = np.round(np.arange(1.0 + 3 * k, 3.0 + 3 * k, 0.1), 3)
        neurons = np.empty((4, 1), dtype=object)
        for i in range(4):
            spikes = np.sort(rng.uniform(t[0], t[-1], 20))[:, None] if i != 3 else np.zeros((0, 1))
            neurons[i, 0] = {"Spike": spikes}
        trials[k, 0] = {
            "Time": t[:, None],
            "HandPos": np.zeros((len(t), 3)),
            "HandVel": np.stack([np.sin(t), np.cos(t), 0 * t], 1),
            "Neuron": neurons,
        }
    rec = np.empty(
        (len(trials), 1), dtype=[("Time", object), ("HandPos", object), ("HandVel", object), ("Neuron", object)]
    )
    for k in range(len(trials)):
        d = trials[k, 0]
        neur = np.empty((4, 1), dtype=[("Spike", object)])
        for i in range(4):
            neur[i, 0]["Spike"] = d["Neuron"][i, 0]["Spike"]
        rec[k, 0] = (d["Time"], d["HandPos"], d["HandVel"], neur)
    subject = np.empty((1, 1), dtype=[("Trial", object)])
    subject[0, 0]["Trial"] = rec
    path = raw / f"Flint_2012_e{n}.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"Subject": subject})
    return path


def nlb_file(raw: Path, dataset="mc_maze_small", seed=0, maze=True) -> Path:
    """An NLB train file: hand_vel on a 1 kHz clock with missing samples and NaN values,
    a trials table with NLB's split column and move onsets."""
    rng = np.random.default_rng(seed)
    t, pos, vel = reaching(30.0, 1000.0, rng)
    t = np.round(t, 6)
    keep = np.ones(len(t), bool)
    keep[5000:5200] = False  # missing samples
    vel[8000:8100] = np.nan  # NaN values
    t, pos, vel = t[keep], pos[keep], vel[keep]
    starts = np.arange(1.5, 29.0, 1.2)
    n = len(starts)
    split = np.array(["train"] * (n - 6) + ["val"] * 3 + ["test"] * 3)
    trials = {"start_time": starts, "stop_time": starts + 1.0, "split": split}
    if maze:
        trials["move_onset_time"] = starts + 0.3
    series = [(None, "hand_pos", t, pos), (None, "hand_vel", t, vel), (None, "eye_pos", t, pos * 0.1)]
    trains = spike_trains(5, 1.0, 31.0, rng)
    path = raw / dataset / "sub-Jenkins" / "sub-Jenkins_ses-small_desc-train_behavior+ecephys.nwb"
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["unit_ä0", b"unit_1".decode(), "unit_2", "unit_3", "unit_4"]
    return nwb_file(
        path, trains=trains, series=series, trials=trials, subject="Jenkins", electrodes=False, unit_names=names
    )

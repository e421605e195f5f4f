"""Shared fixtures: a small synthetic brainset and a factory of hand-made session files."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from poyo.pipelines.synthetic_reaching import SyntheticConfig, generate

SMALL = SyntheticConfig(
    num_animals=2, sessions_per_animal=2, duration_s=60.0, min_units=20, max_units=40, random_target_every=2, seed=7
)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Folder with one brainset of 4 short synthetic sessions (read-only: copy to modify)."""
    root = tmp_path_factory.mktemp("synthetic")
    generate(root / "synthetic_reaching", SMALL, progress=False)
    return root


@pytest.fixture
def synthetic_copy(synthetic_root, tmp_path):
    """A private copy of the synthetic brainset that a test may damage."""
    dst = tmp_path / "data"
    shutil.copytree(synthetic_root, dst)
    return dst


def write_session(
    path, *, session_id="s0", n_units=5, duration=10.0, rate=20.0, seed=0, irregular_behaviour=False, splits=True
):
    """Write a small, valid session with temporaldata; returns the path."""
    from temporaldata import ArrayDict, Data, Interval, IrregularTimeSeries, RegularTimeSeries

    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * n_units * duration)
    t = np.sort(rng.uniform(0, duration, n))
    u = rng.integers(0, n_units, n)
    fs = 100.0
    vel = rng.normal(size=(int(duration * fs), 2)).astype(np.float32)
    if irregular_behaviour:
        bt = np.sort(rng.uniform(0, duration, int(duration * 50)))
        cursor = IrregularTimeSeries(timestamps=bt, vel=rng.normal(size=(len(bt), 2)), domain=Interval(0.0, duration))
    else:
        cursor = RegularTimeSeries(vel=vel, sampling_rate=fs, domain_start=0.0)
    extra = {}
    if splits:
        extra = dict(
            train_domain=Interval(np.array([0.0]), np.array([0.6 * duration])),
            valid_domain=Interval(np.array([0.6 * duration]), np.array([0.8 * duration])),
            test_domain=Interval(np.array([0.8 * duration]), np.array([duration])),
        )
    data = Data(
        brainset=Data(id="handmade"),
        session=Data(id=session_id),
        units=ArrayDict(id=np.array([f"u{i}" for i in range(n_units)])),
        spikes=IrregularTimeSeries(timestamps=t, unit_index=u, domain=Interval(0.0, duration)),
        cursor=cursor,
        phases=Data(reach=Interval(np.array([1.0, 4.0]), np.array([2.5, 5.0])), domain="auto"),
        domain=Interval(0.0, duration),
        **extra,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        data.to_hdf5(f)
    return path


@pytest.fixture
def make_session(tmp_path):
    def make(name="s0", **kwargs):
        return write_session(tmp_path / "data" / "handmade" / f"{name}.h5", session_id=name, **kwargs)

    return make

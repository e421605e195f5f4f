"""Session files written by torch_brain 0.2 (``torch_brain.data``, where temporaldata now lives)
are read and trained on as they are.

Uses the real writer: ``.ci/run`` installs ``torch_brain==0.2.1`` without its dependencies (its
``data`` module needs only numpy, h5py and pandas); elsewhere the test skips with that command.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from poyo.data import Dataset, WindowIndex

REPO = Path(__file__).resolve().parents[1]


def _torch_brain_session(path: Path, seed: int = 0) -> Path:
    tb = pytest.importorskip(
        "torch_brain.data", reason="needs torch_brain 0.2: pip install --no-deps torch_brain==0.2.1"
    )
    rng = np.random.default_rng(seed)
    duration, fs, n_units = 120.0, 100.0, 12
    t = np.arange(0, duration, 1 / fs)
    vel = np.stack([np.sin(t * 1.3), np.cos(t * 0.7)], 1) * 10
    # units tuned to velocity, so there is something to decode
    tuning = rng.normal(size=(n_units, 2))
    rate = np.clip(8 + (vel @ tuning.T) * 0.8, 0, None)
    counts = rng.poisson(rate / fs)
    unit = np.repeat(np.tile(np.arange(n_units), len(t)), counts.ravel())
    times = np.repeat(np.repeat(t, n_units), counts.ravel()) + rng.uniform(0, 1 / fs, counts.sum())
    order = np.argsort(times)
    data = tb.Data(
        brainset=tb.BrainsetDescription(
            id="tb_lab", origin_version="0", derived_version="1", source="test", description="torch_brain 0.2 writer"
        ),
        subject=tb.SubjectDescription(id="m1", species="Mus musculus"),
        session=tb.SessionDescription(id="rec1", recording_date=dt.datetime(2025, 1, 2)),
        units=tb.ArrayDict(id=np.array([f"u{i}" for i in range(n_units)])),
        spikes=tb.IrregularTimeSeries(
            timestamps=times[order], unit_index=unit[order], domain=tb.Interval(0.0, duration)
        ),
        hand=tb.RegularTimeSeries(vel=vel.astype(np.float32), sampling_rate=fs, domain_start=0.0),
        train_domain=tb.Interval(np.array([0.0]), np.array([84.0])),
        valid_domain=tb.Interval(np.array([84.0]), np.array([102.0])),
        test_domain=tb.Interval(np.array([102.0]), np.array([duration])),
        domain=tb.Interval(0.0, duration),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        data.to_hdf5(f)
    return path


def test_a_torch_brain_file_reads_like_our_own(tmp_path):
    path = _torch_brain_session(tmp_path / "tb_lab" / "rec1.h5")
    with h5py.File(path) as f:  # it really is the 0.2 writer's file
        assert f["brainset"].attrs.get("torch_brain_version") is not None or "torch_brain_version" in f["brainset"]
    ds = Dataset(tmp_path / "tb_lab", behaviour=["hand.vel"])
    assert ds.session_ids == ["tb_lab/rec1"]
    s = ds.sessions["tb_lab/rec1"]
    assert len(s.unit_ids) == 12 and s.subject_id.endswith("m1")
    w = ds.read(WindowIndex("tb_lab/rec1", 10.0, 11.0))
    assert w.behaviour["hand.vel"].values.shape == (100, 2) and len(w.spike_times) > 0
    with h5py.File(path) as f:
        ts = f["spikes"]["timestamps"][()]
    assert len(w.spike_times) == int(((ts >= 10.0) & (ts < 11.0)).sum())


@pytest.mark.slow
def test_train_py_trains_on_a_torch_brain_folder(tmp_path):
    _torch_brain_session(tmp_path / "data" / "tb_lab" / "rec1.h5")
    cmd = [sys.executable, str(REPO / "train.py"), "dataset=tb_lab", f"data_root={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
           "num_workers=0", "batch_size=16", "trainer.min_steps=0", "trainer.max_steps=30", "trainer.check_val_every_n_epoch=1"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "readout hand_velocity_2d: decoding 'hand.vel' (2 dims)" in out.stdout
    result = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert [r["session"] for r in result["sessions"]] == ["tb_lab/rec1"] and np.isfinite(result["poyo_mean_r2"])

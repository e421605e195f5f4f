"""The synthetic reaching brainset: deterministic, realistic, decodable, well split."""

import numpy as np
import pytest
from temporaldata import Data

from poyo.data import Dataset
from poyo.data import intervals as ivs
from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure, simulate_session
from poyo.pipelines.synthetic_reaching.__main__ import main as cli_main

from .conftest import SMALL


@pytest.fixture(scope="module")
def sessions(synthetic_root):
    ds = Dataset(synthetic_root, behaviour=["cursor.vel"])
    return {sid: Data.load(s.path, lazy=False) for sid, s in ds.sessions.items()}


def test_deterministic_by_seed():
    a = simulate_session(SMALL, 0, 1)
    b = simulate_session(SMALL, 0, 1)
    c = simulate_session(SyntheticConfig(**{**SMALL.__dict__, "seed": 8}), 0, 1)
    np.testing.assert_array_equal(a.spikes.timestamps, b.spikes.timestamps)
    np.testing.assert_array_equal(a.cursor.vel, b.cursor.vel)
    assert len(a.spikes) != len(c.spikes) or not np.array_equal(a.spikes.timestamps, c.spikes.timestamps)


def test_tasks_animals_and_populations(sessions):
    tasks = {d.session.task for d in sessions.values()}
    assert tasks == {"center_out_reaching", "random_target_reaching"}
    assert len({d.subject.id for d in sessions.values()}) == 2
    for d in sessions.values():
        assert SMALL.min_units <= len(d.units.id) <= SMALL.max_units


def test_refractory_and_rates(sessions):
    for d in sessions.values():
        t, u = d.spikes.timestamps, d.spikes.unit_index
        order = np.lexsort((t, u))
        same = u[order][1:] == u[order][:-1]
        isi = np.diff(t[order])[same]
        assert isi.min() >= SMALL.refractory_s - 1e-12
        rates = np.bincount(u, minlength=len(d.units.id)) / SMALL.duration_s
        assert 2.0 < np.median(rates) < 30.0 and rates.max() < 200


def test_kinematics(sessions):
    for d in sessions.values():
        pos, vel, fs = d.cursor.pos, d.cursor.vel, d.cursor.sampling_rate
        np.testing.assert_allclose(np.gradient(pos, 1 / fs, axis=0), vel, atol=1e-3)
        assert np.all(np.linalg.norm(pos, axis=1) < 12.0)
        if d.session.task != "center_out_reaching":
            continue
        tr = d.trials
        ok = tr.is_valid.astype(bool)
        reach = d.movement_phases.reach_period
        # cursor at the end of each valid reach phase points to the trial's target
        ends = np.clip(np.round(reach.end * fs).astype(int) - 1, 0, len(pos) - 1)
        ang = np.arctan2(pos[ends, 1], pos[ends, 0])
        tgt = np.arctan2(tr.target_y[ok], tr.target_x[ok])
        err = np.angle(np.exp(1j * (ang - tgt)))
        assert np.median(np.abs(err)) < np.deg2rad(15)
        # speed peaks inside reach periods, not during holds
        speed = np.linalg.norm(vel, axis=1)
        t = np.arange(len(speed)) / fs
        hold = ivs.contains(ivs.as_intervals(d.movement_phases.hold_period.start, d.movement_phases.hold_period.end), t)
        in_reach = ivs.contains(ivs.as_intervals(reach.start, reach.end), t)
        assert speed[in_reach].mean() > 5 * speed[hold].mean()


def test_splits_are_disjoint_with_a_guard_gap(sessions):
    for d in sessions.values():
        iv = {
            k: ivs.as_intervals(getattr(d, f"{k}_domain").start, getattr(d, f"{k}_domain").end)
            for k in ("train", "valid", "test")
        }
        for k, v in iv.items():
            assert ivs.problem(v) is None and len(v) > 0, k
        held = np.concatenate([iv["valid"], iv["test"]])
        assert ivs.overlap_length(iv["valid"], iv["test"]) == 0
        grown = held + np.array([-SMALL.split_gap_s + 1e-6, SMALL.split_gap_s - 1e-6])
        for s, e in grown:
            assert ivs.overlap_length(iv["train"], np.array([[s, e]])) == pytest.approx(0, abs=1e-9)
        assert ivs.total_length(iv["train"]) > 0.4 * SMALL.duration_s


@pytest.mark.parametrize("session_index", [0, 2])  # a centre-out and a random-target session
def test_velocity_is_linearly_decodable_from_spikes(session_index):
    """Binned counts predict held-out velocity (the neurons really are tuned), but far
    from perfectly: a default-size session leaves room for better decoders."""
    cfg = SyntheticConfig()
    d = simulate_session(cfg, 1, session_index)
    fs, n_units = 20, len(d.units.id)
    nb = int(cfg.duration_s * fs)
    X = np.zeros((nb, n_units))
    np.add.at(X, (np.minimum((d.spikes.timestamps * fs).astype(int), nb - 1), d.spikes.unit_index), 1)
    X = np.concatenate([np.roll(X, k, 0) for k in range(4)] + [np.ones((nb, 1))], 1)  # spikes lead movement
    centres = (np.arange(nb) + 0.5) / fs
    Y = np.stack([np.interp(centres, d.cursor.timestamps, d.cursor.vel[:, i]) for i in range(2)], 1)
    tr = ivs.contains(ivs.as_intervals(d.train_domain.start, d.train_domain.end), centres)
    te = ivs.contains(ivs.as_intervals(d.test_domain.start, d.test_domain.end), centres)
    W = np.linalg.solve(X[tr].T @ X[tr] + 30 * np.eye(X.shape[1]), X[tr].T @ Y[tr])
    r2 = 1 - ((X[te] @ W - Y[te]) ** 2).sum(0) / ((Y[te] - Y[te].mean(0)) ** 2).sum(0)
    assert 0.4 < r2.mean() < 0.95, (d.session.id, r2)


def test_ensure_generates_once_and_rebuilds_on_change(tmp_path):
    cfg = SyntheticConfig(num_animals=1, sessions_per_animal=1, duration_s=30.0, min_units=5, max_units=8)
    out = ensure(tmp_path / "s", cfg, progress=False)
    files = sorted(out.glob("*.h5"))
    stamp = files[0].stat().st_mtime_ns
    ensure(out, cfg, progress=False)
    assert files[0].stat().st_mtime_ns == stamp  # untouched when current
    files[0].unlink()  # damaged set: rebuilt
    ensure(out, cfg, progress=False)
    assert files[0].is_file()
    ensure(out, SyntheticConfig(**{**cfg.__dict__, "seed": 1}), progress=False)
    assert not (tmp_path / "s.building").exists() and not (tmp_path / "s.old").exists()
    assert (out / "manifest.json").read_text().count('"seed": 1') == 1


def test_cli_and_bad_settings(tmp_path, capsys):
    cli_main(
        [
            "--processed-dir",
            str(tmp_path),
            "--num-animals",
            "1",
            "--sessions-per-animal",
            "1",
            "--duration-s",
            "30",
            "--max-units",
            "10",
            "--min-units",
            "5",
        ]
    )
    assert "wrote 1 sessions" in capsys.readouterr().out
    assert len(list((tmp_path / "synthetic_reaching").glob("*.h5"))) == 1
    with pytest.raises(ValueError, match="min_units=50"):
        SyntheticConfig(min_units=50, max_units=10).validate()

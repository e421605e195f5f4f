"""Sessions from plain arrays: binned counts (placement recorded, counts preserved), spike
times with unit ids, the command on .npz and .mat files, and clear errors for bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from poyo.data import Dataset
from poyo.pipelines.arrays import (
    ArrayContentError,
    from_binned_counts,
    from_spike_times,
    main,
    place_spikes,
    write_session,
)

ROOT = Path(__file__).resolve().parents[1]


def binned(bins=2000, units=6, seed=0):
    rng = np.random.default_rng(seed)
    rate = np.exp(rng.normal(0, 0.5, size=(bins, 1)))
    counts = rng.poisson(rate * np.linspace(0.2, 1.5, units)[None]).astype(np.uint8)
    vel = np.cumsum(rng.normal(size=(bins, 2)), axis=0) * 0.1
    return counts, vel


@pytest.mark.parametrize("placement", ["uniform", "even", "centre"])
def test_placed_spikes_rebin_to_the_counts(placement):
    counts, _ = binned(300, 4)
    trains = place_spikes(counts.astype(np.int64), 0.05, start=10.0, placement=placement, seed=3)
    for u, t in enumerate(trains):
        assert np.all(np.diff(t) >= 0)
        rebinned = np.bincount(np.floor((t - 10.0) / 0.05 + 1e-9).astype(int), minlength=300)
        assert rebinned.tolist() == counts[:, u].tolist()
    if placement == "uniform":  # seeded: the same seed, the same times; another seed, others
        assert all(
            np.array_equal(a, b)
            for a, b in zip(trains, place_spikes(counts.astype(np.int64), 0.05, 10.0, "uniform", seed=3))
        )
        assert not np.array_equal(trains[0], place_spikes(counts.astype(np.int64), 0.05, 10.0, "uniform", seed=4)[0])


def test_binned_session_is_read_back_with_behaviour_at_bin_centres_and_the_rule_recorded(tmp_path):
    counts, vel = binned()
    data = from_binned_counts(counts, 0.05, {"hand.vel": vel}, brainset="lab", session_id="rec1", seed=5)
    assert data.session.spike_placement == "uniform random inside each bin (seed 5)" and data.session.bin_size_s == 0.05
    path = write_session(data, tmp_path)
    assert path == tmp_path / "lab" / "rec1.h5"
    ds = Dataset(tmp_path, behaviour=["hand.vel"])  # validates the file
    s = ds.sessions["lab/rec1"]
    assert s.num_spikes == counts.sum() and len(s.unit_ids) == counts.shape[1]
    series = ds.behaviour("lab/rec1", "hand.vel")
    np.testing.assert_allclose(series.timestamps[:3], [0.025, 0.075, 0.125])
    np.testing.assert_allclose(series.values, vel.astype(np.float32))
    splits = {k: sum(e - b for b, e in s.splits[k]) for k in ("train", "valid", "test")}
    assert splits["valid"] == pytest.approx(10.0) and splits["test"] == pytest.approx(10.0) and splits["train"] > 70
    with pytest.raises(FileExistsError, match="overwrite"):
        write_session(data, tmp_path)


def test_spike_times_with_unit_ids_or_per_unit_trains_give_the_same_session(tmp_path):
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 60, 3000))
    u = rng.choice(["a", "b", "c"], size=len(t))
    bt = np.arange(0, 60, 0.01)
    beh = {"head.dir": (bt, np.stack([np.cos(bt), np.sin(bt)], 1))}
    one = from_spike_times(t, u, beh, brainset="mouse", session_id="hd1")
    two = from_spike_times([t[u == k] for k in "abc"], ["a", "b", "c"], beh, brainset="mouse", session_id="hd1")
    assert list(one.units.id) == list(two.units.id) == ["a", "b", "c"]
    np.testing.assert_array_equal(one.spikes.timestamps, two.spikes.timestamps)
    np.testing.assert_array_equal(one.spikes.unit_index, two.spikes.unit_index)
    late = from_spike_times(
        np.append(t, [75.0, 80.0]), np.append(u, ["a", "a"]), beh, brainset="mouse", session_id="hd1"
    )
    assert late.session.spikes_outside_behaviour == 2  # cut, and counted


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(counts=np.ones((100, 3), np.int64), behaviour={"hand.vel": np.zeros((99, 2))}), "99 samples but 100"),
        (dict(counts=-np.ones((100, 3), np.int64), behaviour={"hand.vel": np.zeros((100, 2))}), "negative count"),
        (dict(counts=np.full((100, 3), 0.5), behaviour={"hand.vel": np.zeros((100, 2))}), "whole numbers"),
        (
            dict(counts=np.ones((100, 3), np.int64), behaviour={"hand.vel": np.full((100, 2), np.nan)}),
            "every sample is NaN",
        ),
        (
            dict(
                counts=np.ones((100, 3), np.int64),
                behaviour={"hand.vel": np.r_[np.zeros((50, 2)), np.full((50, 2), np.nan)]},
            ),
            "50 of 100 samples are NaN",
        ),
        (dict(counts=np.zeros((0, 3), np.int64), behaviour={"hand.vel": np.zeros((0, 2))}), "empty recording"),
        (dict(counts=np.zeros((100, 3), np.int64), behaviour={"hand.vel": np.zeros((100, 2))}), "no spikes"),
        (dict(counts=np.ones((100, 3), np.int64), behaviour={"vel": np.zeros((100, 2))}), "GROUP.FIELD"),
    ],
)
def test_bad_binned_input_names_what_is_wrong(bad, message):
    with pytest.raises(ArrayContentError, match=message):
        from_binned_counts(bad["counts"], 0.05, bad["behaviour"], brainset="b", session_id="s")


def test_nan_behaviour_is_kept_when_allowed(tmp_path):
    counts, vel = binned(1000)
    vel[100:120] = np.nan
    data = from_binned_counts(counts, 0.05, {"hand.vel": vel}, brainset="b", session_id="s", allow_nan=True)
    assert np.isnan(data.hand.vel).sum() == 40


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: from_spike_times([0.1, 0.2], [0], {"a.b": ([0, 1], [0, 1])}, brainset="b", session_id="s"),
            "one unit id per spike",
        ),
        (lambda: from_spike_times([], [], {"a.b": ([0, 1], [0, 1])}, brainset="b", session_id="s"), "no spikes"),
        (
            lambda: from_spike_times([0.1, np.nan], [0, 1], {"a.b": ([0, 1], [0, 1])}, brainset="b", session_id="s"),
            "NaN or infinite spike",
        ),
        (
            lambda: from_spike_times([0.1, 0.2], [0, 1], {"a.b": ([0, np.nan], [0, 1])}, brainset="b", session_id="s"),
            "NaN or infinite timestamps",
        ),
        (
            lambda: from_spike_times([0.1, 0.2], [0, 1], {"a.b": ([1, 0], [0, 1])}, brainset="b", session_id="s"),
            "increase strictly",
        ),
        (
            lambda: from_spike_times([0.1, 0.2], [0, 1], {"a.b": ([0, 1, 2], [0, 1])}, brainset="b", session_id="s"),
            "2 samples but 3",
        ),
        (
            lambda: from_spike_times(
                [50.0, 60.0], [0, 1], {"a.b": (np.arange(10.0), np.zeros(10))}, brainset="b", session_id="s"
            ),
            "no unit has any spike inside",
        ),
    ],
)
def test_bad_spike_time_input_names_what_is_wrong(call, message):
    with pytest.raises(ArrayContentError, match=message):
        call()


@pytest.mark.parametrize(
    "brainset, session", [("../escape", "s"), ("b", "../../x"), ("b", "/abs"), (".hidden", "s"), ("b", "..")]
)
def test_ids_cannot_write_outside_the_processed_folder(tmp_path, brainset, session):
    counts, vel = binned(400)
    with pytest.raises(ArrayContentError, match="cannot name a file"):
        from_binned_counts(counts, 0.05, {"hand.vel": vel}, brainset=brainset, session_id=session)
    data = from_binned_counts(counts, 0.05, {"hand.vel": vel}, brainset="b", session_id="s")
    data.session.id = session  # ids edited after creation are checked again on writing
    data.brainset.id = brainset
    with pytest.raises(ValueError, match="cannot name a file"):
        write_session(data, tmp_path / "out")
    assert not any(p.suffix == ".h5" for p in tmp_path.rglob("*"))


def test_command_converts_npz_and_mat_files(tmp_path, capsys):
    from scipy.io import savemat

    counts, vel = binned(1500)
    savemat(tmp_path / "s1.mat", {"spikes": counts, "vel": vel, "pos": np.cumsum(vel, 0)})
    out = tmp_path / "processed"
    assert (
        main(
            [
                str(tmp_path / "s1.mat"),
                "--counts",
                "spikes",
                "--bin-size",
                "0.05",
                "-b",
                "hand.vel=vel",
                "-b",
                "hand.pos=pos",
                "--brainset",
                "lab",
                "--processed-dir",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "6 units" in printed
        and "uniform random inside each bin (seed 0)" in printed
        and "poyo train dataset=lab" in printed
    )
    assert (out / "lab" / "s1.h5").is_file()

    t = np.sort(np.random.default_rng(2).uniform(0, 30, 500))
    np.savez(tmp_path / "rec.npz", t=t, unit=np.arange(500) % 4, bt=np.arange(0, 30, 0.02), hd=np.zeros((1500, 2)))
    args = [
        str(tmp_path / "rec.npz"),
        "--spike-times",
        "t",
        "--unit-ids",
        "unit",
        "--brainset",
        "mouse",
        "--processed-dir",
        str(out),
    ]
    assert main([*args, "-b", "head.dir=hd@bt"]) == 0
    assert (out / "mouse" / "rec.h5").is_file()
    assert main([*args, "-b", "head.dir=hd"]) == 1  # spike times need the behaviour's timestamps
    assert "name the behaviour's timestamps" in capsys.readouterr().err
    assert main([*args, "-b", "head.dir=missing@bt", "--overwrite"]) == 1
    assert "no array 'missing'" in capsys.readouterr().err


def test_command_errors_are_one_line_without_traceback(tmp_path):
    np.savez(tmp_path / "x.npz", c=-np.ones((10, 2)), v=np.zeros((10, 2)))
    out = subprocess.run(
        [sys.executable, "-m", "poyo.pipelines.arrays", str(tmp_path / "x.npz"), "--counts", "c", "--bin-size", "0.05", "-b", "a.v=v", "--processed-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error: counts:") and "negative" in out.stderr


def test_the_import_command_refuses_bad_files_and_values_in_one_line(tmp_path):
    """Each case: rc 1, one line starting with 'error:', no traceback, nothing written."""
    from poyo.pipelines.arrays import main

    counts = np.random.default_rng(0).poisson(1.0, size=(400, 5))
    vel = np.zeros((400, 2))
    np.savez(tmp_path / "ok.npz", c=counts, v=vel, obj=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "big.npz", c=counts * 10**6, v=vel)
    np.savez(tmp_path / "flip.npz", c=counts.T.copy(), v=vel)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    (tmp_path / "bad.mat").write_bytes(b"MATLAB? no")
    (tmp_path / "a_file").write_text("x")
    np.savez(
        tmp_path / "strs.npz", st=np.array(["0.1", "0.2", "x"]), u=np.array([0, 1, 0]), v=vel, vt=np.arange(400) * 0.05
    )
    from scipy.io import savemat

    savemat(tmp_path / "empty.mat", {})
    base = ["--counts", "c", "--bin-size", "0.05", "-b", "hand.vel=v", "--processed-dir", str(tmp_path / "out")]
    cases = [
        ([str(tmp_path / "ok.npz"), "--counts", "obj", "--bin-size", "0.05", "-b", "hand.vel=v", "--processed-dir", str(tmp_path / "out")], "holds Python objects"),
        ([str(tmp_path / "bad.npz"), *base], "not a readable .npz file"),
        ([str(tmp_path / "bad.mat"), *base], "not a readable .mat file"),
        ([str(tmp_path), *base], "a folder; give the .npz or .mat file"),
        ([str(tmp_path / "big.npz"), *base], "not spike counts of single units"),
        ([str(tmp_path / "flip.npz"), *base], "is counts transposed?"),
        ([str(tmp_path / "ok.npz"), *base[:2], "--bin-size", "1e9", *base[4:]], "bin_size must be a number of seconds in [0.0001, 10]"),
        ([str(tmp_path / "ok.npz"), *base[:2], "--bin-size", "1e-12", *base[4:]], "bin_size must be a number of seconds in [0.0001, 10]"),
        ([str(tmp_path / "ok.npz"), *base, "--start", "nan"], "--start must be a finite time"),
        ([str(tmp_path / "ok.npz"), *base, "--seed", "-1"], "--seed must be an integer >= 0"),
        ([str(tmp_path / "ok.npz"), *base[:-1], str(tmp_path / "a_file")], "a file, not a folder"),
        ([str(tmp_path / "ok.npz"), *base, "--session-id", "s" * 300], "300 characters long"),
        ([str(tmp_path / "strs.npz"), "--spike-times", "st", "--unit-ids", "u", "-b", "hand.vel=v@vt", *base[-2:]], "spike times must be numbers"),
        ([str(tmp_path / "empty.mat"), *base], "the .mat file holds no arrays"),
        ([str(tmp_path / "ok.npz"), *base[:5], "spikes.rate=v", *base[6:]], "'spikes' holds the session's own data"),
    ]  # fmt: skip
    for argv, message in cases:
        out = subprocess.run([sys.executable, "-m", "poyo.pipelines.arrays", *argv], capture_output=True, text=True,
                             cwd=ROOT, timeout=120)  # fmt: skip
        err = out.stderr.strip()
        assert out.returncode == 1 and err.startswith("error:") and message in err and "\n" not in err, (argv, err)
    assert not (tmp_path / "out").exists()
    assert main([str(tmp_path / "ok.npz"), *base]) == 0  # the unused object array does not stop the import

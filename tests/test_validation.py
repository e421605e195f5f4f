"""Every bad input gives an error that names the file, the session and the field."""

import h5py
import numpy as np
import pytest

from poyo.data import Dataset, RandomFixedWindowSampler, SequentialFixedWindowSampler, SessionFormatError


def _damage(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def _expect(root, *, field, match, session="s0", **kwargs):
    with pytest.raises(SessionFormatError) as e:
        Dataset(root, **kwargs)
    msg = str(e.value)
    assert "s0.h5" in msg, msg
    if session:
        assert f"session '{session}'" in msg, msg
    assert f"field '{field}'" in msg, msg
    assert match in msg, msg
    return msg


def test_unsorted_spike_times(make_session):
    p = make_session()

    def swap(f):
        ts = f["spikes/timestamps"]
        ts[10], ts[11] = ts[11] + 0.5, ts[10]

    _damage(p, swap)
    _expect(p.parents[1], field="spikes.timestamps", match="not sorted")


def test_nan_spike_times(make_session):
    p = make_session()
    _damage(p, lambda f: f["spikes/timestamps"].__setitem__(7, np.nan))
    _expect(p.parents[1], field="spikes.timestamps", match="NaN")


def test_spikes_outside_domain(make_session):
    p = make_session(duration=10.0)
    _damage(p, lambda f: f["spikes/timestamps"].__setitem__(-1, 10.5))
    _expect(p.parents[1], field="spikes.timestamps", match="outside spikes.domain")


def test_unit_index_out_of_range(make_session):
    p = make_session(n_units=5)
    _damage(p, lambda f: f["spikes/unit_index"].__setitem__(3, 5))
    msg = _expect(p.parents[1], field="spikes.unit_index", match="outside [0, 5)")
    assert "index 3 = 5" in msg


def test_missing_behaviour_lists_what_is_present(make_session):
    p = make_session()
    msg = _expect(p.parents[1], field="cursor.pos", match="missing", behaviour=["cursor.pos"])
    assert "vel" in msg
    msg = _expect(p.parents[1], field="hand", match="missing", behaviour=["hand.vel"])
    assert "cursor" in msg and "spikes" in msg


def test_mismatched_lengths(make_session):
    p = make_session()

    def cut(f):
        ui = f["spikes/unit_index"][:-3]
        del f["spikes/unit_index"]
        f["spikes/unit_index"] = ui

    _damage(p, cut)
    _expect(p.parents[1], field="spikes.unit_index", match="rows but spikes.timestamps has")


def test_missing_session_id(make_session):
    p = make_session()
    _damage(p, lambda f: f["session"].attrs.__delitem__("id"))
    _expect(p.parents[1], field="session.id", match="missing", session=None)


def test_duplicate_session_ids_name_both_files(make_session, tmp_path):
    p = make_session()
    other = make_session("other")
    _damage(other, lambda f: f["session"].attrs.__setitem__("id", "s0"))
    with pytest.raises(SessionFormatError, match="session id 'handmade/s0' is also used by") as e:
        Dataset(p.parents[1])
    assert "other.h5" in str(e.value) and "s0.h5" in str(e.value)


def test_overlapping_split_domains(make_session):
    p = make_session(duration=10.0)
    _damage(p, lambda f: f["valid_domain/start"].__setitem__(0, 5.0))  # train is [0, 6)
    _expect(p.parents[1], field="train_domain", match="overlaps valid_domain by 1.000 s")


def test_split_outside_domain(make_session):
    p = make_session(duration=10.0)
    _damage(p, lambda f: f["test_domain/end"].__setitem__(0, 12.0))
    _expect(p.parents[1], field="test_domain", match="beyond the session domain")


def test_empty_or_missing_split(make_session):
    p = make_session(splits=False)
    ds = Dataset(p.parents[1])
    with pytest.raises(SessionFormatError, match=r"s0.h5: session 's0': field 'train_domain': missing"):
        ds.sampling_intervals("train")

    q = make_session("s1")

    def empty(f):
        for k in ("start", "end"):
            del f[f"valid_domain/{k}"]
            f[f"valid_domain/{k}"] = np.zeros(0)

    _damage(q, empty)
    ds = Dataset(q.parent, sessions=["handmade/s1"])
    with pytest.raises(SessionFormatError, match=r"s1.h5: session 's1': field 'valid_domain': is empty"):
        ds.sampling_intervals("valid")


def test_unsorted_or_inverted_domain(make_session):
    p = make_session(duration=10.0)
    _damage(p, lambda f: f["train_domain/end"].__setitem__(0, -1.0))
    _expect(p.parents[1], field="train_domain", match="ends before it starts")


def test_window_longer_than_session(make_session):
    p = make_session(duration=10.0)
    ds = Dataset(p.parents[1])
    with pytest.raises(
        ValueError,
        match=r"session 'handmade/s0': window_length 20 s is longer than every sampling interval \(longest 10.000 s",
    ):
        RandomFixedWindowSampler(ds.sampling_intervals(), 20.0)
    with pytest.raises(ValueError, match="handmade/s0.*longer than every"):
        SequentialFixedWindowSampler(ds.sampling_intervals("valid"), 3.0)


def test_corrupt_file(make_session):
    p = make_session()
    p.write_bytes(b"this is not an HDF5 file" * 100)
    with pytest.raises(SessionFormatError, match=r"s0.h5: cannot be read as HDF5 \(corrupt or truncated"):
        Dataset(p.parents[1])


def test_truncated_file(make_session):
    p = make_session()
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(SessionFormatError, match=r"s0.h5: .*corrupt or truncated"):
        Dataset(p.parents[1])


def test_no_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no session files"):
        Dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Dataset(tmp_path / "missing")


def test_interval_key_that_no_session_has(make_session):
    p = make_session()
    with pytest.warns(UserWarning, match="none of the 1 sessions has the interval set 'phases.rech'"):
        ds = Dataset(p.parents[1], intervals=["phases.rech"])
    assert ds[("handmade/s0", 0.0, 1.0)].intervals["phases.rech"].shape == (0, 2)


def test_malformed_behaviour_key(make_session):
    p = make_session()
    with pytest.raises(ValueError, match="'group.field'"):
        Dataset(p.parents[1], behaviour=["cursor"])


def test_only_selected_sessions_are_fully_checked(make_session):
    good, bad = make_session("s0"), make_session("s1")
    _damage(bad, lambda f: f["spikes/timestamps"].__setitem__(3, np.nan))
    ds = Dataset(good.parent, sessions=["handmade/s0"])  # s1 is excluded, so its arrays are not read
    assert ds.session_ids == ["handmade/s0"]
    with pytest.raises(SessionFormatError, match=r"s1.h5: session 's1': field 'spikes.timestamps': 1 NaN"):
        Dataset(good.parent)

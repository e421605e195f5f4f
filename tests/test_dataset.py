"""Windows read by poyo.data match temporaldata's own slicing, with global ids."""

import numpy as np
import pytest
from temporaldata import Data

from poyo.data import Dataset, WindowIndex
from poyo.data import intervals as ivs


def _eager(path):
    return Data.load(path, lazy=False)


def test_windows_match_temporaldata_slicing(synthetic_root):
    ds = Dataset(synthetic_root, behaviour=["cursor.vel", "cursor.pos"], intervals=["movement_phases.reach_period"])
    rng = np.random.default_rng(0)
    for sid, s in ds.sessions.items():
        ref = _eager(s.path)
        for start in rng.uniform(s.start - 0.5, s.end - 0.5, size=6):
            w = ds[WindowIndex(sid, float(start), float(start) + 1.0)]
            r = ref.slice(float(start), float(start) + 1.0)
            np.testing.assert_allclose(w.spike_times, r.spikes.timestamps, atol=1e-12)
            np.testing.assert_array_equal(w.spike_units, r.spikes.unit_index)
            np.testing.assert_array_equal(w.behaviour["cursor.vel"].values, r.cursor.vel)
            np.testing.assert_array_equal(w.behaviour["cursor.pos"].values, r.cursor.pos)
            np.testing.assert_allclose(w.behaviour["cursor.vel"].timestamps, r.cursor.timestamps, atol=1e-9)
            # reach periods: clipped to the window, relative times
            if "reach_period" in r.movement_phases.keys():
                rp = r.movement_phases.reach_period
                expect = ivs.clip(ivs.as_intervals(rp.start + start, rp.end + start), start, start + 1.0)
            else:  # random-target sessions have none: an empty set, not an error
                expect = ivs.empty()
            np.testing.assert_allclose(w.intervals["movement_phases.reach_period"], expect, atol=1e-9)


def test_irregular_behaviour_and_sample_index(make_session):
    path = make_session("irr", irregular_behaviour=True, duration=12.0)
    ds = Dataset(path.parents[1], behaviour=["cursor.vel"])
    ref = _eager(path)
    for start in [0.0, 0.37, 3.999, 10.5, 11.2]:
        w = ds[WindowIndex("handmade/irr", start, start + 1.0)]
        r = ref.slice(start, start + 1.0)
        np.testing.assert_allclose(w.behaviour["cursor.vel"].timestamps, r.cursor.timestamps, atol=1e-12)
        np.testing.assert_array_equal(w.behaviour["cursor.vel"].values, r.cursor.vel)
        full = ref.cursor.vel
        np.testing.assert_array_equal(full[w.behaviour["cursor.vel"].sample_index], w.behaviour["cursor.vel"].values)
        assert np.all(np.diff(w.behaviour["cursor.vel"].sample_index) == 1)


def test_regular_sample_index_points_into_session_array(synthetic_root):
    ds = Dataset(synthetic_root, behaviour=["cursor.vel"])
    sid = ds.session_ids[0]
    full = _eager(ds.sessions[sid].path).cursor.vel
    a = ds[WindowIndex(sid, 10.0, 11.0)].behaviour["cursor.vel"]
    b = ds[WindowIndex(sid, 10.5, 11.5)].behaviour["cursor.vel"]
    np.testing.assert_array_equal(full[a.sample_index], a.values)
    # overlapping windows agree on the integer index of shared samples
    shared = np.intersect1d(a.sample_index, b.sample_index)
    assert len(shared) == 50
    ta = a.timestamps[np.isin(a.sample_index, shared)] + 10.0
    tb = b.timestamps[np.isin(b.sample_index, shared)] + 10.5
    np.testing.assert_allclose(ta, tb, atol=1e-9)


def test_ids_are_globally_unique(synthetic_root, make_session):
    ds = Dataset(synthetic_root)
    assert len(ds.session_ids) == 4
    assert all(sid.startswith("synthetic_reaching/") for sid in ds.session_ids)
    units = ds.unit_ids
    assert len(units) == len(set(units))
    for sid, s in ds.sessions.items():
        assert all(u.startswith(sid + "/") for u in s.unit_ids)
    # two sessions whose local unit names collide still get distinct global ids
    a = make_session("a")
    make_session("b")
    ds2 = Dataset(a.parent)
    assert ds2.sessions["handmade/a"].local_unit_ids.tolist() == ds2.sessions["handmade/b"].local_unit_ids.tolist()
    assert set(ds2.sessions["handmade/a"].unit_ids).isdisjoint(ds2.sessions["handmade/b"].unit_ids)


def test_session_selection_and_bad_indices(synthetic_root):
    ds = Dataset(synthetic_root)
    keep = ds.session_ids[:2]
    sub = Dataset(synthetic_root, sessions=keep)
    assert sub.session_ids == keep
    # glob patterns select by brainset, animal or task; each entry must match something
    co = Dataset(synthetic_root, sessions=["synthetic_reaching/*center_out*"])
    assert co.session_ids == [s for s in ds.session_ids if "center_out" in s] and len(co.session_ids) == 2
    assert Dataset(synthetic_root, sessions=["*/monkey_a_*", keep[0]]).session_ids == [
        s for s in ds.session_ids if "monkey_a_" in s
    ]
    with pytest.raises(KeyError, match=r"no session matches \['nope/nothing'\]"):
        Dataset(synthetic_root, sessions=["nope/nothing"])
    with pytest.raises(KeyError, match="no session matches"):
        Dataset(synthetic_root, sessions=["synthetic_reaching/*", "synthetic_reaching/monkey_z_*"])
    with pytest.raises(KeyError, match="unknown session"):
        ds[WindowIndex("nope", 0.0, 1.0)]
    with pytest.raises(ValueError, match="end must be after start"):
        ds[WindowIndex(keep[0], 2.0, 1.0)]
    with pytest.raises(TypeError, match="WindowIndex"):
        ds[3]


def test_open_files_are_capped(synthetic_root):
    ds = Dataset(synthetic_root, max_open_files=2)
    for sid in ds.session_ids:
        ds[WindowIndex(sid, 1.0, 2.0)]
    assert len(ds.open_files()) == 2
    ds.close()
    assert ds.open_files() == []


def test_window_outside_data_is_empty_not_an_error(synthetic_root):
    ds = Dataset(synthetic_root, behaviour=["cursor.vel"])
    sid = ds.session_ids[0]
    w = ds[WindowIndex(sid, 1000.0, 1001.0)]
    assert len(w.spike_times) == 0 and len(w.behaviour["cursor.vel"]) == 0


def test_first_seconds_takes_the_earliest_part_of_an_interval_set():
    iv = ivs.as_intervals([0.0, 10.0, 20.0], [4.0, 13.0, 30.0])
    np.testing.assert_allclose(ivs.first_seconds(iv, 5.5), [[0, 4], [10, 11.5]])
    np.testing.assert_allclose(ivs.first_seconds(iv, 7.0), [[0, 4], [10, 13]])
    np.testing.assert_allclose(ivs.first_seconds(iv, 100.0), iv)
    assert ivs.first_seconds(iv, 0.0).shape == (0, 2)
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        ivs.first_seconds(iv, -1)


def test_train_seconds_limits_only_the_train_split(synthetic_root):
    full = Dataset(synthetic_root, validate=False)
    short = Dataset(synthetic_root, validate=False, train_seconds=12.5)
    for sid, s in short.sessions.items():
        assert ivs.total_length(s.splits["train"]) == pytest.approx(12.5)
        assert s.splits["train"][0, 0] == full.sessions[sid].splits["train"][0, 0]  # the earliest part
        np.testing.assert_array_equal(s.splits["test"], full.sessions[sid].splits["test"])
    with pytest.raises(ValueError, match="train_seconds must be > 0"):
        Dataset(synthetic_root, validate=False, train_seconds=0)

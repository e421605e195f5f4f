"""Samplers: windows inside their intervals, full coverage, determinism, rank splits."""

from collections import Counter

import numpy as np
import pytest

from poyo.data import DistributedStitchingSampler, RandomFixedWindowSampler, SequentialFixedWindowSampler
from poyo.data import intervals as ivs

INTERVALS = {
    "a": np.array([[0.0, 10.3], [12.0, 12.5], [20.0, 23.7]]),
    "b": np.array([[5.0, 6.0], [7.0, 9.99]]),
    "c": np.array([[0.0, 100.0]]),
}


def _inside(w, iv):
    return any(s - 1e-9 <= w.start and w.end <= e + 1e-9 for s, e in iv)


def test_random_windows_inside_count_and_disjoint():
    s = RandomFixedWindowSampler(INTERVALS, 1.0, seed=3)
    ws = list(s)
    assert len(ws) == len(s) == 10 + 0 + 3 + 1 + 2 + 100
    assert s.skipped == 1
    for w in ws:
        assert w.end - w.start == pytest.approx(1.0)
        assert _inside(w, INTERVALS[w.session])
    for sid in INTERVALS:
        starts = np.sort([w.start for w in ws if w.session == sid])
        assert np.all(np.diff(starts) >= 1.0 - 1e-9)  # back to back, never overlapping
    assert len({w.seed for w in ws}) == len(ws)


def test_random_is_deterministic_and_changes_per_epoch():
    a = RandomFixedWindowSampler(INTERVALS, 1.0, seed=3)
    b = RandomFixedWindowSampler(INTERVALS, 1.0, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    assert list(RandomFixedWindowSampler(INTERVALS, 1.0, seed=4)) != list(b)


def test_random_offsets_cover_the_intervals_over_epochs():
    s = RandomFixedWindowSampler({"a": np.array([[0.0, 10.5]])}, 1.0, seed=0)
    grid = np.arange(0, 10.5, 0.01) + 0.005
    seen = np.zeros_like(grid, dtype=bool)
    for epoch in range(30):
        s.set_epoch(epoch)
        for w in s:
            seen |= (grid >= w.start) & (grid < w.end)
    assert seen.all()


def test_random_distributed_ranks_partition_one_permutation():
    full = list(RandomFixedWindowSampler(INTERVALS, 1.0, seed=5))
    parts = [list(RandomFixedWindowSampler(INTERVALS, 1.0, seed=5, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(p) for p in parts}) == 1
    merged = [w for p in parts for w in p]
    assert len(set(merged)) == len(merged)
    assert set(merged) <= set(full)
    assert len(full) - len(merged) < 3


def test_half_windows_cut_a_share_of_the_windows_in_two_covering_the_same_time():
    whole = RandomFixedWindowSampler(INTERVALS, 2.0, seed=3)
    s = RandomFixedWindowSampler(INTERVALS, 2.0, seed=3, half_windows=0.5)
    n = len(whole)  # 5 + 1 + 1 + 50 whole 2 s windows
    cut = round(n * 0.5 / 1.5)  # k cut windows give 2k halves among n + k windows: half of them
    assert len(s) == n + cut
    for epoch in range(3):
        s.set_epoch(epoch)
        whole.set_epoch(epoch)
        ws = list(s)
        lengths = np.array([w.end - w.start for w in ws])
        assert len(ws) == len(s)
        assert np.allclose(np.sort(np.unique(lengths.round(9))), [1.0, 2.0])
        assert (np.isclose(lengths, 1.0)).sum() == 2 * cut  # exactly the share, every epoch
        assert lengths.sum() == pytest.approx(2.0 * n)  # the same time as the whole windows cover
        assert len({w.seed for w in ws}) == len(ws)
        for sid in INTERVALS:
            mine = sorted((w.start, w.end) for w in ws if w.session == sid)
            assert all(_inside(w, INTERVALS[sid]) for w in ws if w.session == sid)
            assert all(b[0] >= a[1] - 1e-9 for a, b in zip(mine, mine[1:]))  # never overlapping
            # each half window is one half of a whole window of the same epoch's tiling
            starts = {round(w.start, 9) for w in whole if w.session == sid}
            for a, b in mine:
                if b - a < 1.5:
                    assert round(a, 9) in starts or round(a - 1.0, 9) in starts
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(1)
    assert {w.start for w in first if w.end - w.start < 1.5} != {w.start for w in s if w.end - w.start < 1.5}
    assert list(RandomFixedWindowSampler(INTERVALS, 2.0, seed=3, half_windows=0.0)) == list(
        RandomFixedWindowSampler(INTERVALS, 2.0, seed=3)
    )
    for bad in (-0.1, 1.0, "half"):
        with pytest.raises(ValueError, match=r"half_windows must be a share in \[0, 1\)"):
            RandomFixedWindowSampler(INTERVALS, 2.0, half_windows=bad)


def test_half_windows_split_between_ranks_like_whole_ones():
    full = list(RandomFixedWindowSampler(INTERVALS, 2.0, seed=5, half_windows=0.5))
    parts = [
        list(RandomFixedWindowSampler(INTERVALS, 2.0, seed=5, num_replicas=2, rank=r, half_windows=0.5))
        for r in range(2)
    ]
    assert len(parts[0]) == len(parts[1]) == len(full) // 2
    merged = [w for p in parts for w in p]
    assert len(set(merged)) == len(merged) and set(merged) <= set(full)


def test_sequential_covers_every_interval():
    s = SequentialFixedWindowSampler(INTERVALS, 1.0, step=0.5, drop_short=True)
    for sid, iv in INTERVALS.items():
        ws = [w for w in s if w.session == sid]
        for a, b in iv:
            if b - a < 1.0:
                continue
            grid = np.linspace(a, b, 997, endpoint=False)
            covered = np.zeros_like(grid, dtype=bool)
            for w in ws:
                assert _inside(w, iv)
                covered |= (grid >= w.start) & (grid < w.end)
            assert covered.all()
            assert any(abs(w.end - b) < 1e-9 for w in ws)  # last window flush with the end
    assert list(s) == list(SequentialFixedWindowSampler(INTERVALS, 1.0, step=0.5, drop_short=True))
    assert [w.start for w in s if w.session == "b"] == pytest.approx([5.0, 7.0, 7.5, 8.0, 8.5, 8.99])


def test_sequential_short_intervals():
    with pytest.raises(ValueError, match=r"session 'a': interval 1 \[12.000, 12.500\) is shorter"):
        SequentialFixedWindowSampler(INTERVALS, 1.0)
    with pytest.raises(ValueError, match="step must be in"):
        SequentialFixedWindowSampler(INTERVALS, 1.0, step=1.5, drop_short=True)


@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
def test_stitching_sampler_partitions_whole_intervals(replicas):
    full = SequentialFixedWindowSampler(INTERVALS, 1.0, step=0.5, drop_short=True)
    parts = [
        DistributedStitchingSampler(INTERVALS, 1.0, step=0.5, drop_short=True, num_replicas=replicas, rank=r)
        for r in range(replicas)
    ]
    merged = Counter(w for p in parts for w in p)
    assert merged == Counter(full)  # nothing lost, nothing twice
    owner = {}
    for r, p in enumerate(parts):
        for k in p.interval_ids:
            assert owner.setdefault(k, r) == r  # each interval on one rank only
    loads = [len(p) for p in parts]
    biggest = max(Counter(full.interval_ids).values())
    assert max(loads) - min(loads) <= biggest


def test_bad_arguments():
    with pytest.raises(ValueError, match="window_length"):
        RandomFixedWindowSampler(INTERVALS, 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        SequentialFixedWindowSampler({}, 1.0)
    with pytest.raises(ValueError, match="rank"):
        RandomFixedWindowSampler(INTERVALS, 1.0, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="session 'x': sampling intervals: intervals 0"):
        SequentialFixedWindowSampler({"x": np.array([[0.0, 5.0], [4.0, 6.0]])}, 1.0)


def test_interval_helpers():
    a = np.array([[0.0, 2.0], [3.0, 5.0]])
    b = np.array([[1.0, 4.0], [4.5, 9.0]])
    np.testing.assert_allclose(ivs.intersect(a, b), [[1.0, 2.0], [3.0, 4.0], [4.5, 5.0]])
    np.testing.assert_allclose(ivs.clip(a, 1.5, 4.0), [[0.0, 0.5], [1.5, 2.5]])
    np.testing.assert_array_equal(ivs.contains(a, [0.0, 2.0, 2.5, 4.99, 5.0]), [True, False, False, True, False])

"""Helpers of the benchmarks whose answers are reported as figures: benchmarks/model.py's
largest-batch search and the peak FLOP/s behind MFU, and the sessions benchmarks/real_few_shot.py
writes for its multi-recording variant and the recipe it writes to add the synthetic set;
benchmarks/rotary_cost.py's three ways; the recording benchmarks/many_units.py simulates."""

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

spec = importlib.util.spec_from_file_location(
    "bench_model", Path(__file__).resolve().parents[1] / "benchmarks" / "model.py"
)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("capacity, start", [(1000, 16), (5, 16), (16, 16), (1, 4), (777, 1)])
def test_largest_batch_finds_the_capacity_within_3_percent(capacity, start):
    tried = []

    def fits(b):
        tried.append(b)
        return b <= capacity

    b = bench.largest_batch(fits, start=start)
    assert b <= capacity and capacity - b <= max(1, b // 32)
    assert len(tried) < 30


def test_largest_batch_edges():
    assert bench.largest_batch(lambda b: False) == 0
    assert bench.largest_batch(lambda b: True, start=3, limit=100) == 100


def test_peak_tflops_by_device_name():
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert bench.peak_tflops("NVIDIA H100 PCIe", "fp32") == 51.2
    assert bench.peak_tflops("NVIDIA H200", "fp32") == 66.9
    assert bench.peak_tflops("some CPU", "fp32") is None
    assert bench.peak_tflops("some CPU", "fp32", override=2.0) == 2.0


def _benchmark(name: str):
    """A benchmark script imported as a module (its own imports of its neighbours resolve)."""
    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    return importlib.import_module(name)


def test_multi_recording_variant_writes_two_sessions_that_share_nothing(tmp_path):
    """--target later: pretraining gets the first 60% of the recording, the new session the rest
    under new unit ids; --target FILE: all of both; a target whose behaviour differs is refused."""
    import numpy as np

    from poyo.data.session import Session

    rfs = _benchmark("real_few_shot")
    sessions = lambda: {  # noqa: E731
        f.stem: Session(f, behaviour=["hand.vel"]) for f in sorted((tmp_path / "data" / "recordings").glob("*.h5"))
    }
    rng = np.random.default_rng(0)
    bins, units = 2000, 6  # 100 s at 50 ms
    counts = rng.poisson(0.5, (bins, units))
    vel = rng.normal(size=(bins, 2))
    mat = tmp_path / "rec.npz"
    np.savez(mat, spikes=counts, vel=vel)

    pre, held = rfs.write_recordings(mat, "later", tmp_path / "data")
    assert pre == ["recordings/source"] and held == ["recordings/target"]
    source, target = sessions()["source"], sessions()["target"]
    assert not set(source.local_unit_ids) & set(target.local_unit_ids)
    assert len(source.unit_ids) == len(target.unit_ids) == units
    cut = int(round(rfs.LATER * bins))
    assert source.num_spikes == counts[:cut].sum() and target.num_spikes == counts[cut:].sum()
    assert np.isclose(source.end - source.start, cut * 0.05) and np.isclose(
        target.end - target.start, (bins - cut) * 0.05
    )

    other = tmp_path / "other.npz"
    np.savez(other, spikes=counts[:500, :4], vel=vel[:500])
    pre, held = rfs.write_recordings(mat, str(other), tmp_path / "data")  # replaces the earlier pair
    both = sessions()
    assert sorted(both) == ["source", "target"]
    assert both["source"].num_spikes == counts.sum() and len(both["target"].unit_ids) == 4

    np.savez(other, spikes=counts[:500], vel=vel[:500, :1])
    with pytest.raises(SystemExit, match="other.npz.*1 dims"):
        rfs.write_recordings(mat, str(other), tmp_path / "data")


def test_synthetic_pretraining_recipe_reads_both_brainsets_through_one_head(tmp_path):
    """--synthetic: the recipe written for train.py composes, reads the real brainset and the
    generated synthetic one, feeds both into the head that dataset=<brainset> adapts, each with
    its own normalisation, and a new real session keeps the real one's."""
    from poyo.readouts import ReadoutConfig
    from poyo.readouts.auto import readouts_from_settings
    from poyo.readouts.normalise import pretrained_normalisation
    from poyo.training.config import compose

    rfs = _benchmark("real_few_shot")
    overrides, pattern = rfs.with_synthetic(tmp_path / "out", tmp_path / "data", "recordings")
    assert pattern == "synthetic_reaching/*"
    assert len(list((tmp_path / "data" / "synthetic_reaching").glob("**/*.h5"))) == 9
    cfg = compose(*overrides, f"data_root={tmp_path / 'data'}")
    assert cfg.dataset.brainsets == ["recordings", "synthetic_reaching"]
    assert cfg.dataset.unit_dropout == {"min_fraction": 0.5, "peak": 4.0} and cfg.dataset.spike_jitter == 0.025
    real, synthetic = readouts_from_settings(cfg.to_dict()["dataset"], tmp_path / "data")
    assert real.name == synthetic.name == "hand_velocity_2d"  # the head an auto readout of hand.vel adapts
    assert (real.key, synthetic.key) == ("hand.vel", "cursor.vel")
    assert real.applies_to("recordings/source") and not real.applies_to("synthetic_reaching/x")
    assert synthetic.applies_to("synthetic_reaching/x") and not synthetic.applies_to("recordings/target")
    assert synthetic.std == 10.0 and synthetic.weights["movement_phases.reach_period"] == 5.0
    trained = [ReadoutConfig(**{**real.to_dict(), "mean": [0.1, 0.2], "std": [3.0, 4.0]}), synthetic]
    new = ReadoutConfig("hand_velocity_2d", key="hand.vel", mean=None, std=None)
    assert pretrained_normalisation(trained, new, ["recordings/target"]) is trained[0]


def test_gpu_check_suite_names_failures_and_stops_a_shard_past_its_budget(tmp_path):
    """benchmarks/gpu_check.py's part 5 deals tests into parallel pytest processes: a failing test
    is reported by name, a shard still running at the budget is stopped and reported, not waited for."""
    import time

    spec = importlib.util.spec_from_file_location(
        "gpu_check", Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    )
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    (tmp_path / "test_a.py").write_text("def test_bad():\n    assert 1 == 2\n\ndef test_good():\n    pass\n")
    (tmp_path / "test_b.py").write_text(
        "import time\n\ndef test_fine():\n    pass\n\ndef test_slow():\n    time.sleep(120)\n"
    )
    # collection order: a::bad, a::good, b::fine, b::slow -> shard 0 gets bad and fine, shard 1 good and slow
    start = time.perf_counter()
    r = gpu_check.suite(["test_a.py", "test_b.py"], shards=2, budget_s=10, root=tmp_path)
    assert time.perf_counter() - start < 60
    assert r["collected"] == 4 and r["shards"] == 2 and not r["ok"]
    assert r["failed_tests"] == ["test_a::test_bad"] and r["passed"] == 1  # shard 0's test_fine
    assert r["timed_out_shards"] == [1]
    ok = gpu_check.suite(["test_a.py::test_good"], shards=3, budget_s=60, root=tmp_path)
    assert ok["ok"] and ok["passed"] == 1 and ok["shards"] == 1


def test_rotary_cost_times_three_ways_and_puts_the_rotation_back(monkeypatch, capsys):
    from poyo.model.rotary import RotaryTime

    rotary_cost = _benchmark("rotary_cost")
    shipped = RotaryTime.rotate
    monkeypatch.setattr(sys, "argv", ["rotary_cost.py", "--model", "poyo_mini", "--batch-size", "2", "--rounds", "2"])
    rotary_cost.main()
    out = capsys.readouterr().out
    ratios = dict(
        re.findall(r"(shipped|full head|no rotation)\s+median\s+[\d.]+ ms/step, ratio to full head ([\d.]+)", out)
    )
    assert set(ratios) == {"shipped", "full head", "no rotation"} and float(ratios["full head"]) == 1.0
    assert RotaryTime.rotate is shipped
    # the "full head" way is the float32 path applied to bf16 features: the same values as shipped
    rot = RotaryTime(64)
    x, r = torch.randn(5, 3, 64).bfloat16(), rot(torch.rand(5, dtype=torch.float64))
    assert torch.equal(rotary_cost.full_head(rot, x, r), rot.rotate(x, r))


def test_mfu_breakdown_tells_conversions_from_same_dtype_copies():
    """benchmarks/mfu.py times every aten call of a step by category: a bf16 <-> fp32 copy is a
    dtype conversion, a same-dtype copy or clone is not, and the shares sum to 1."""
    mfu = _benchmark("mfu")
    x, w, buf = torch.randn(256, 256), torch.randn(256, 256), torch.empty(256, 256)
    seen = []
    for make in (
        lambda: x.bfloat16(),  # _to_copy, fp32 -> bf16
        lambda: buf.copy_(x.bfloat16().clone()),  # + clone (same dtype), then copy_ bf16 -> fp32
        lambda: x.clone(),
        lambda: (x @ w).relu(),
    ):
        with mfu._OpClock() as clock:
            make()
        seen.append(set(clock.seconds))
    assert seen == [
        {mfu.CONVERSIONS},
        {mfu.CONVERSIONS, "same-dtype copies"},
        {"same-dtype copies"},
        {"matrix products", "other"},
    ]
    from poyo.model.rotary import RotaryTime

    rotary, q = RotaryTime(16), torch.randn(6, 2, 16).bfloat16()
    with mfu._OpClock(sites=True) as clock:  # --sites: the conversions by the line of poyo that asked
        rotary.rotate(q, rotary(torch.rand(6)))
        x.bfloat16()
    outside = "outside poyo (the backward pass, the optimiser)"
    assert {site.split(":")[0] for site, _ in clock.sites} == {"model/rotary.py", outside}
    assert (outside, "float32 -> bfloat16") in clock.sites  # this test's own cast
    shares, _ = mfu.breakdown(lambda: [m() for m in (lambda: x.bfloat16(), lambda: x.clone(), lambda: x @ w)])
    assert abs(sum(shares.values()) - 1) < 1e-9 and list(shares) == sorted(shares, key=shares.get, reverse=True)


def test_real_data_delay_pairs_behaviour_with_later_spikes(tmp_path):
    """--delay S: the behaviour at t is paired with the spikes recorded S later (they lead it);
    a negative S pairs it with earlier spikes. Same bins of each kept, nothing else moved."""
    import h5py
    import numpy as np

    from poyo.data.session import Session

    real_data = _benchmark("real_data")
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.5, (400, 3))
    vel = np.stack([np.arange(400.0), -np.arange(400.0)], 1)
    mat = tmp_path / "rec.npz"
    np.savez(mat, spikes=counts, vel=vel)
    for delay, spikes, first in ((0.1, counts[2:], 0.0), (-0.1, counts[:-2], 2.0), (0.0, counts, 0.0)):
        name = real_data.import_subset(mat, tmp_path / "data", "full", delay)
        assert name == {0.1: "s1_full_delay100ms", -0.1: "s1_full_delay-100ms", 0.0: "s1_full"}[delay]
        (path,) = (tmp_path / "data" / name).glob("*.h5")
        s = Session(path, behaviour=["hand.vel"])
        with h5py.File(path) as f:
            b = s.read_behaviour(f, "hand.vel", s.start, s.end)
        assert s.num_spikes == spikes.sum() and len(b.values) == len(spikes)
        assert b.values[0, 0] == first and b.values[-1, 0] == first + len(spikes) - 1


def test_real_data_gru_window_sets_both_grus_contexts(tmp_path, monkeypatch):
    """--gru-window W: the bidirectional GRU reads -0.75 W..+0.25 W and the causal one the past
    W s, as train.py's GRUs do for a W s window (1 s: the issue's -0.75..+0.25 and past 1 s)."""
    import numpy as np

    import poyo.training.gru as gru

    real_data = _benchmark("real_data")
    np.savez(tmp_path / "rec.npz", spikes=np.ones((400, 3)), vel=np.zeros((400, 2)))
    name = real_data.import_subset(tmp_path / "rec.npz", tmp_path / "data", "full", 0.0)
    seen = []

    class Fake:
        for_window = classmethod(gru.GRUBaseline.for_window.__func__)  # the real window -> contexts mapping

        def __init__(self, **kw):
            seen.append(kw)

        def evaluate(self, ds, readout):
            sid = ds.session_ids[0]
            return {"window": {sid: {"r2": 0.5}}, "causal": {sid: {"r2": 0.25}}}

    monkeypatch.setattr(gru, "GRUBaseline", Fake)
    for window in (1.0, 2.0):
        out = real_data.gru_scores(tmp_path / "data" / name, seed=3, window=window)
        assert (out["gru_r2"], out["gru_causal_r2"]) == (0.5, 0.25)
        assert {k: seen[-1][k] for k in ("before_s", "after_s", "causal_s", "seed")} == {
            "before_s": 0.75 * window, "after_s": 0.25 * window, "causal_s": window, "seed": 3,
        }  # fmt: skip


def test_many_units_writes_one_session_under_its_own_brainset(tmp_path):
    """benchmarks/many_units.py: the synthetic session is renamed, so train.py dataset=<folder>
    takes the recipe for a lab's own recording, not the synthetic preset; the size is as asked."""
    from poyo.data import Dataset

    many = _benchmark("many_units")
    name = many.simulate(tmp_path, units=7, minutes=1.0, seed=1)
    assert name == "reaching_7u_1min_s1"
    ds = Dataset(tmp_path / name, behaviour=["cursor.vel"])
    (sid,) = ds.session_ids
    assert sid.startswith(f"{name}/")
    s = ds.sessions[sid]
    assert len(s.unit_ids) == 7 and 59.0 <= s.end - s.start <= 61.0
    assert many.simulate(tmp_path, units=7, minutes=1.0, seed=1) == name  # written once, then reused


def test_run_time_breakdown_tells_steps_gaps_and_validations_apart():
    rt = _benchmark("run_time")
    # three steps of 0.2 s; 0.01 s before the second, a 3 s validation before the third
    starts, ends = [10.0, 10.21, 13.41], [10.2, 10.41, 13.61]
    b = rt.breakdown(starts, ends, wall_s=20.0)
    assert b["steps"] == 3 and b["steps_s"] == pytest.approx(0.6) and b["step_median_s"] == pytest.approx(0.2)
    assert b["between_steps_s"] == pytest.approx(0.01) and b["validations"] == 1
    assert b["validations_s"] == pytest.approx(3.0) and b["rest_s"] == pytest.approx(20.0 - 3.61)
    with pytest.raises(ValueError, match="as many step starts as ends"):
        rt.breakdown([1.0], [], 2.0)


def test_head_direction_errors_by_speed_split_still_from_turning():
    import numpy as np

    hd = _benchmark("head_direction")
    t = np.arange(0, 4, 0.02)
    # still for 2 s at 0 rad, then turning at 90 deg/s
    angle = np.where(t < 2, 0.0, np.radians(90) * (t - 2))
    target = np.stack([np.cos(angle), np.sin(angle)], 1)
    off = np.where(t < 2, np.radians(10), np.radians(2))  # 10 deg off while still, 2 while turning
    pred = np.stack([np.cos(angle + off), np.sin(angle + off)], 1) * 3.0  # the length does not count
    rows = hd.errors_by_speed(t, target, {"a": (t, pred), "b": (t[::-1].copy(), target[::-1].copy())})
    still, turning = rows[0], next(r for r in rows if r["from"] == 90.0)
    assert still["from"] == 0.0 and still["to"] == 10.0 and turning["to"] == 180.0
    assert abs(still["share"] - 0.5) < 0.02 and abs(still["a"] - 10.0) < 0.5 and abs(turning["a"] - 2.0) < 1e-6
    # "b" given in reverse order is matched sample by sample: no error
    assert abs(still["b"]) < 1e-6 and abs(turning["b"]) < 1e-6
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-9
    with pytest.raises(ValueError, match="not POYO's"):
        hd.errors_by_speed(t, target, {"c": (t + 0.01, pred)})

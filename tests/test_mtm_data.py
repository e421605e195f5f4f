"""What masked modelling reads and how it is scored: brain regions in session files (written
by the synthetic generator and the NWB and array importers, read into windows), sessions
without behaviour, bits per spike, and the GLM baseline."""

import json
import math

import h5py
import numpy as np
import pytest

from poyo.data import Dataset, SessionFormatError, WindowIndex
from poyo.model import load_pretrained
from poyo.model.masking import MaskSettings, Plan
from poyo.pipelines.arrays import ArrayContentError, from_spike_times, write_session
from poyo.pipelines.nwb import main as nwb_main
from poyo.pipelines.synthetic_reaching import SyntheticConfig, generate
from poyo.pipelines.synthetic_reaching.generate import simulate_session
from poyo.training.mtm_eval import bits_per_spike, fit_glm, glm_features, session_tasks, task_plan
from tests import raw_fixtures as fx

REGIONS = SyntheticConfig(num_animals=1, sessions_per_animal=2, duration_s=40.0, min_units=12, max_units=18,
                          regions=3, unlabelled_every=2, seed=3)  # fmt: skip


def test_synthetic_regions_and_unlabelled_sessions(tmp_path):
    generate(tmp_path / "syn", REGIONS, progress=False)
    ds = Dataset(tmp_path / "syn", behaviour=["cursor.vel"], optional_behaviour=True)
    labelled, unlabelled = (ds.sessions[s] for s in ds.session_ids)  # session 0 has behaviour, session 1 not
    assert labelled.behaviour_keys == ("cursor.vel",) and unlabelled.behaviour_keys == ()
    for s in (labelled, unlabelled):
        names, counts = np.unique(s.unit_regions, return_counts=True)
        assert names.tolist() == ["M1", "PMd", "S1"] and counts.min() >= counts.max() - 1
    w = ds.read(WindowIndex(unlabelled.id, 3.0, 4.0))
    assert w.behaviour == {} and w.unit_regions.tolist() == unlabelled.unit_regions.tolist()
    with pytest.raises(
        SessionFormatError, match=r"field 'cursor': missing \(the file has: .*\); only self-supervised runs"
    ):
        Dataset(tmp_path / "syn", behaviour=["cursor.vel"])  # without optional_behaviour a missing series is an error
    kept = Dataset(tmp_path / "syn", behaviour=["cursor.vel"], sessions=[labelled.id])  # unless it is left out
    assert kept.session_ids == [labelled.id]
    # one region (the default) simulates exactly the sessions of earlier versions
    one = SyntheticConfig(num_animals=1, sessions_per_animal=1, duration_s=40.0)
    a, b = simulate_session(one, 0, 0), simulate_session(SyntheticConfig(**{**one.__dict__, "regions": 3}), 0, 0)
    assert "brain_region" not in a.units.keys()
    assert len(a.spikes.timestamps) != len(b.spikes.timestamps)  # regions add their own dynamics


def test_shared_dynamics_make_regions_predict_each_other(tmp_path):
    """The simulated communication state: a region's summed counts correlate with the others'
    beyond what behaviour explains (so inter-region prediction has something to find)."""
    d = simulate_session(
        SyntheticConfig(num_animals=1, sessions_per_animal=1, duration_s=60.0, regions=2, seed=1), 0, 0
    )
    t, u = np.asarray(d.spikes.timestamps), np.asarray(d.spikes.unit_index)
    region = np.asarray(d.units.brain_region)[u]
    bins = np.arange(0, 60.0001, 0.1)
    a = np.histogram(t[region == "M1"], bins)[0].astype(float)
    b = np.histogram(t[region == "PMd"], bins)[0].astype(float)
    assert np.corrcoef(a, b)[0, 1] > 0.3


def test_region_column_is_checked(make_session):
    path = make_session("s0")
    with h5py.File(path, "a") as f:
        f["units"].create_dataset("brain_region", data=np.array([b"M1", b"S1"]))
    with pytest.raises(SessionFormatError, match=r"field 'units.brain_region'.*one region name per unit"):
        Dataset(path.parent)


def test_nwb_import_keeps_electrode_locations(tmp_path):
    rng = np.random.default_rng(0)
    t, pos, vel = fx.reaching(30.0, 100.0, rng)
    where = ["M1", "PMd", "PMd", "M1"]
    path = fx.nwb_file(tmp_path / "regions.nwb", trains=fx.spike_trains(4, 1.0, 31.0, rng), locations=where,
                       series=[("Velocity", "cursor_vel", t, vel)])  # fmt: skip
    assert (
        nwb_main(
            [str(path), "-b", "cursor.vel=cursor_vel", "--brainset", "lab", "--processed-dir", str(tmp_path / "p")]
        )
        == 0
    )
    s = next(iter(Dataset(tmp_path / "p" / "lab", behaviour=["cursor.vel"]).sessions.values()))
    assert s.unit_regions.tolist() == where


def test_arrays_import_takes_brain_regions(tmp_path):
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 20, 600))
    units = rng.choice(["a", "b", "c"], 600)
    beh = {"cursor.vel": (np.arange(0, 20, 0.01), rng.normal(size=(2000, 2)))}
    data = from_spike_times(
        times, units, beh, brainset="lab", session_id="s", brain_regions={"a": "M1", "b": "M1", "c": "S1"}
    )
    write_session(data, tmp_path)
    s = next(iter(Dataset(tmp_path / "lab", behaviour=["cursor.vel"]).sessions.values()))
    assert dict(zip(s.local_unit_ids.tolist(), s.unit_regions.tolist())) == {"a": "M1", "b": "M1", "c": "S1"}
    with pytest.raises(ArrayContentError, match=r"brain_regions: no region for units \['c'\]"):
        from_spike_times(times, units, beh, brainset="lab", session_id="s", brain_regions={"a": "M1", "b": "M1"})


def test_bits_per_spike_matches_its_definition():
    rng = np.random.default_rng(0)
    rate = np.repeat([[0.05, 0.5]], 5000, 0) * np.exp(rng.normal(0, 0.8, (5000, 1)))
    y = rng.poisson(rate)
    unit = np.repeat([[0, 1]], 5000, 0).reshape(-1)
    mean = y.mean(0)
    scores = bits_per_spike(
        unit, y.reshape(-1), {"true": np.log(rate).reshape(-1), "null": np.log(np.tile(mean, 5000))}
    )
    assert scores["null"] == pytest.approx(0.0, abs=1e-9)  # each unit's mean count on these bins is the reference
    ll = lambda lr: np.sum(y.reshape(-1) * lr - np.exp(lr))  # noqa: E731
    expected = (ll(np.log(rate).reshape(-1)) - ll(np.log(np.tile(mean, 5000)))) / (y.sum() * math.log(2))
    assert scores["true"] == pytest.approx(expected) and scores["true"] > 0.1
    assert scores["spikes"] == y.sum() and scores["bins"] == 10000


def test_glm_baseline_finds_a_planted_dependency():
    """Hidden unit 0 fires with visible unit 1 (same bins): the GLM predicts it; nothing to find
    for unit 2 (independent), which stays near the mean rate."""
    rng = np.random.default_rng(0)

    def counts(n):
        out = []
        for _ in range(n):
            drive = np.exp(rng.normal(0, 1.0, 50))
            c = np.stack(
                [rng.poisson(0.3 * drive), rng.poisson(0.6 * drive), rng.poisson(0.3, 50), rng.poisson(0.5 * drive)], 1
            )
            out.append(c.astype(np.float32))
        return out

    plan = Plan("neuron", np.array([False, True, False, True]), np.array([True, False, True, False]), 0)
    glm = fit_glm(counts(120), counts(20), plan)
    test = counts(40)
    x = np.concatenate([glm_features(c, plan) for c in test])
    y = np.concatenate([c[:, plan.target] for c in test])
    lr = glm.log_rate(x)
    unit = np.repeat([[0, 1]], len(y), 0).reshape(-1)
    s0 = bits_per_spike(unit[::2], y[:, 0], {"glm": lr[:, 0]})
    s2 = bits_per_spike(unit[1::2], y[:, 1], {"glm": lr[:, 1]})
    assert s0["glm"] > 0.2 and abs(s2["glm"]) < 0.05


def test_tasks_follow_the_regions_a_session_has():
    regions = np.array(["M1", "M1", "S1", "S1", "PMd"])
    names = [t.name for t in session_tasks(regions, 5)]
    assert names == ["co_smoothing", "forward", "intra:M1", "intra:S1", "inter:M1", "inter:PMd", "inter:S1"]
    assert [t.name for t in session_tasks(None, 5)] == ["co_smoothing", "forward"]
    st = MaskSettings(forward_s=0.2)
    codes = np.array([0, 0, 2, 2, 1])
    fwd = task_plan(session_tasks(regions, 5)[1], "b/s", codes, 1.0, st)
    assert fwd.first_bin == 40 and fwd.target.all()
    a = task_plan(session_tasks(regions, 5)[0], "b/s", codes, 1.0, st)
    b = task_plan(session_tasks(regions, 5)[0], "b/s", codes, 1.0, st)
    assert (a.target == b.target).all()  # fixed per session


def test_spikes_only_nwb_trains_with_objective_mtm(tmp_path, capsys):
    """A recording without behaviour: the NWB importer writes spikes only, train.py's masked
    modelling learns from it (the auto dataset finds no behaviour: a model without heads, said so)."""
    import subprocess
    import sys
    from pathlib import Path

    rng = np.random.default_rng(1)
    trains = fx.spike_trains(6, 0.0, 80.0, rng, rate=15.0)
    path = fx.nwb_file(tmp_path / "quiet.nwb", trains=trains, locations=["M1", "M1", "M1", "S1", "S1", "S1"])
    assert nwb_main([str(path), "--brainset", "quiet", "--processed-dir", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "no behaviour (spikes only" in out and "objective=mtm" in out
    s = next(iter(Dataset(tmp_path / "p" / "quiet", optional_behaviour=True).sessions.values()))
    assert s.unit_regions.tolist() == ["M1"] * 3 + ["S1"] * 3 and s.domain[0, 1] - s.domain[0, 0] > 79
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, str(root / "train.py"), f"data_root={tmp_path / 'p'}", "dataset=quiet", "objective=mtm",
         "num_workers=0", "batch_size=4", "trainer.max_steps=2", "trainer.check_val_every_n_epoch=100",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "masked modelling of the spikes alone (no behaviour heads)" in run.stdout and "co-bps" in run.stdout
    assert "no region labels" not in run.stdout  # it has regions: M1 and S1
    assert (tmp_path / "run" / "mtm_results.json").is_file()
    # no placeholder head and its constant-zero loss column; the run's log holds what it printed, no empty train.log
    assert load_pretrained(tmp_path / "run" / "checkpoints" / "model.pt").readout_names == []
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "val/metric" in header and "loss_" not in header
    assert not (tmp_path / "run" / "train.log").exists()
    log = (tmp_path / "run" / "run.log").read_text()
    assert "Masked modelling on the test split" in log and "co-bps" in log


def _forward_case(rng):
    """Counts where the forward task's GLM blew up on a real recording: unit 5 fires once in
    training, far enough before the predicted bins that its 20 ms feature there is ~1e-11
    (nearly constant), and fires steadily before the predicted bins of the test windows."""
    settings = MaskSettings(forward_s=0.2)
    plan = task_plan(session_tasks(None, 6)[1], "s", np.zeros(6, np.int64), 1.0, settings)

    def windows(n, quiet: bool):
        out = []
        for _ in range(n):
            drive = np.exp(rng.normal(0, 0.5, (50, 1)))
            c = rng.poisson(0.3 * drive * np.ones((1, 6))).astype(np.float32)
            c[:, 5] = 0
            if not quiet:  # it fires up to the predicted bins: a feature of ~1 there (std 1e-10 in training)
                c[: plan.first_bin, 5] = rng.poisson(1.0, plan.first_bin)
            out.append(c)
        if quiet:
            out[0][plan.first_bin - 7, 5] = (
                1.0  # its only training spike: e^(-0.5 * 7^2) ~ 2e-11 at the first predicted bin
            )
        return out

    return plan, windows(150, True), windows(20, True), windows(30, False)


def test_glm_on_a_nearly_constant_feature_stays_in_range(monkeypatch):
    """The blow-up, reproduced with the old scaling (std + 1e-6, log rates up to 20) and fixed:
    with the std floor and the per-target clip, the GLM scores near the mean rate, not -1e6."""
    from poyo.training import mtm_eval

    def glm_bits(monkeypatch_old: bool) -> float:
        rng = np.random.default_rng(3)
        plan, train, valid, test = _forward_case(rng)
        if monkeypatch_old:
            monkeypatch.setattr(mtm_eval, "SD_FLOOR", 1e-9)
            monkeypatch.setattr(mtm_eval, "RATE_HEADROOM", 20.0)
        glm = fit_glm(train, valid, plan)
        monkeypatch.undo()
        x = np.concatenate([glm_features(c, plan) for c in test])
        y = np.concatenate([c[plan.first_bin :, plan.target] for c in test])
        unit = np.tile(np.arange(6), len(y))
        return bits_per_spike(unit, y.reshape(-1), {"glm": glm.log_rate(x).reshape(-1)})["glm"]

    old, new = glm_bits(True), glm_bits(False)
    assert old < -100  # what the forward task reported on the real recording (-2e7 there)
    assert -1.0 < new < 0.5


def test_an_impossible_score_is_an_error_that_names_it(tmp_path):
    from poyo.training.mtm_eval import ScoreRangeError, write_report

    y = np.array([0, 1, 2, 0, 1, 3], np.float64)
    unit = np.array([0, 1, 0, 1, 0, 1])
    fine = bits_per_spike(unit, y, {m: np.log(np.full(6, 1.0)) for m in ("model", "model_fitted", "mean_rate")})
    blown = bits_per_spike(unit, y, {"glm": np.full(6, 20.0)})
    assert fine["saturated"] > fine["model"] and blown["glm"] < -1e6
    scores = {"lab/rec": {"co_smoothing": {**fine, "windows": 3}, "forward": {**fine, **blown, "windows": 3}}}
    with pytest.raises(ScoreRangeError, match=r"session 'lab/rec', task forward, GLM: -\d.*below -10"):
        write_report(scores, tmp_path)
    saved = json.loads((tmp_path / "mtm_results.json").read_text())
    assert len(saved["out_of_range"]) == 1 and "forward, GLM" in saved["out_of_range"][0]
    above = {**fine, "model": fine["saturated"] + 0.5}
    with pytest.raises(ScoreRangeError, match="above the saturated model"):
        write_report({"lab/rec": {"co_smoothing": above}}, tmp_path)


def test_a_short_region_less_report_says_what_it_left_out(tmp_path, capsys):
    from poyo.training.mtm_eval import region_note, write_report

    y = np.array([0, 1, 2, 0, 1, 3], np.float64)
    v = bits_per_spike(
        np.array([0, 1, 0, 1, 0, 1]), y, {m: np.zeros(6) for m in ("model", "model_fitted", "glm", "mean_rate")}
    )
    notes = {"lab/rec": region_note(None, 2)}
    write_report(
        {"lab/rec": {"co_smoothing": {**v, "windows": 12}}}, tmp_path, notes=notes, chosen="final weights, step 9"
    )
    out = capsys.readouterr().out
    assert "lab/rec" in out and "no region labels: intra/inter-region tasks skipped" in out
    assert "Tested: final weights, step 9" in out
    assert "warning: session 'lab/rec': co-bps rests on 12 test windows" in out
    assert region_note(np.array(["CA1", "DG"]), 2) == "no region with 2 units (CA1, DG): intra-region tasks skipped"
    assert region_note(np.array(["CA1", "CA1", "DG"]), 3) is None
    assert "one region (CA1): inter-region tasks skipped" == region_note(np.array(["CA1", "CA1"]), 2)


def test_spikes_only_arrays(tmp_path, capsys):
    """Spike times or counts without behaviour make a spikes-only session (function and command
    line), spanning the spikes, and the import says it trains with objective=mtm."""
    from poyo.pipelines.arrays import from_binned_counts
    from poyo.pipelines.arrays import main as arrays_main

    rng = np.random.default_rng(2)
    times = np.sort(rng.uniform(3.0, 60.0, 3000))
    units = rng.integers(0, 8, 3000)
    d = from_spike_times(times, units, None, brainset="lab", session_id="quiet")
    assert d.domain.start[0] == pytest.approx(times[0]) and d.domain.end[-1] == pytest.approx(times[-1] + 1e-3)
    assert len(d.spikes.timestamps) == 3000 and len(d.units.id) == 8
    assert len(d.test_domain) and len(d.train_domain)
    c = from_binned_counts(rng.poisson(0.5, (600, 4)), 0.05, {}, brainset="lab", session_id="binned", start=2.0)
    assert (c.domain.start[0], c.domain.end[-1]) == pytest.approx((2.0, 32.0))
    np.savez(tmp_path / "rec.npz", t=times, unit=units)
    assert arrays_main([str(tmp_path / "rec.npz"), "--spike-times", "t", "--unit-ids", "unit",
                        "--brainset", "lab", "--processed-dir", str(tmp_path / "p")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "no behaviour (spikes only: it trains with objective=mtm" in out
    assert "poyo train dataset=lab" in out and "objective=mtm" in out
    s = next(iter(Dataset(tmp_path / "p" / "lab", optional_behaviour=True).sessions.values()))
    assert len(s.unit_ids) == 8

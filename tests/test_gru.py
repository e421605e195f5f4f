"""The GRU peer: sees what POYO sees (the bidirectional one the future, the causal one only the
past), learns what a linear decoder cannot, chooses its size on validation, and reproduces."""

import numpy as np
import pytest

from poyo.data import Dataset
from poyo.pipelines.arrays import from_spike_times, write_session
from poyo.readouts import ReadoutConfig
from poyo.training.gru import GRUBaseline
from poyo.training.linear import LinearBaseline


def session_with(tmp_path, behaviour_of, duration=300.0, seed=3):
    """Three Poisson units; the behaviour is ``behaviour_of(counts_ahead_a, counts_ahead_b, t)``."""
    rng = np.random.default_rng(seed)
    spikes = [np.sort(rng.uniform(0, duration, int(duration * r))) for r in (20.0, 20.0, 10.0)]
    t = np.arange(0.0, duration, 0.05)
    ahead = [np.searchsorted(s, t + 0.3) - np.searchsorted(s, t + 0.1) for s in spikes[:2]]
    y = behaviour_of(*ahead).astype(float)
    write_session(
        from_spike_times(spikes, ["a", "b", "c"], {"x.val": (t, y)}, brainset="lab", session_id="s"), tmp_path
    )
    return Dataset(tmp_path, behaviour=["x.val"]), ReadoutConfig("x_val_1d", key="x.val", dim=1)


FAST = dict(hidden=(16,), dropout=(0.0,), max_epochs=12, patience=3, lr=1e-2)


def test_the_bidirectional_gru_sees_the_future_and_the_causal_one_does_not(tmp_path):
    ds, cfg = session_with(tmp_path, lambda a, b: a)
    res = GRUBaseline(**FAST).evaluate(ds, cfg)
    window, causal = res["window"]["lab/s"], res["causal"]["lab/s"]
    assert window["r2"] > 0.6, window["r2"]
    assert causal["r2"] < 0.1, causal["r2"]
    assert len(window["pred"]) == len(window["sample_index"]) == len(window["time"])


def test_the_gru_learns_what_a_linear_decoder_cannot(tmp_path):
    """|a - b| ahead: zero mean in every linear direction of the counts, easy for a GRU."""
    ds, cfg = session_with(tmp_path, lambda a, b: np.abs(a - b))
    gru = GRUBaseline(**FAST).evaluate(ds, cfg, variants=("window",))["window"]["lab/s"]["r2"]
    linear = LinearBaseline().evaluate(ds, cfg)["window"]["lab/s"]["r2"]
    assert gru > linear + 0.2, (gru, linear)


def test_size_is_chosen_on_validation_and_fits_reproduce(tmp_path, capsys):
    ds, cfg = session_with(tmp_path, lambda a, b: a - b, duration=200.0)
    kw = dict(FAST, hidden=(1, 16), max_epochs=4)
    one = GRUBaseline(**kw).evaluate(ds, cfg, variants=("window",))["window"]["lab/s"]
    assert "GRU fits" not in capsys.readouterr().err
    two = GRUBaseline(**kw).evaluate(ds, cfg, variants=("window",), progress=True)["window"]["lab/s"]
    assert one["hidden"] == 16  # one unit of state cannot hold a difference over time as well
    np.testing.assert_array_equal(one["pred"], two["pred"])  # the bar changes nothing
    err = capsys.readouterr().err
    assert "GRU fits (x_val_1d)" in err and "2/2" in err and "16 units, dropout 0: validation" in err, err


def test_fits_with_dropout_reproduce_whatever_the_global_generator(tmp_path):
    """Dropout masks come from the fit's own seed: two fits agree after the global generator has
    moved, and a fit leaves the global generator where it was."""
    import torch

    ds, cfg = session_with(tmp_path, lambda a, b: a - b, duration=120.0)
    kw = dict(FAST, dropout=(0.5,), max_epochs=3)
    torch.manual_seed(1)
    one = GRUBaseline(**kw).evaluate(ds, cfg, variants=("window",))["window"]["lab/s"]["pred"]
    state = torch.random.get_rng_state()
    torch.manual_seed(2)
    two = GRUBaseline(**kw).evaluate(ds, cfg, variants=("window",))["window"]["lab/s"]["pred"]
    np.testing.assert_array_equal(one, two)
    other = GRUBaseline(**dict(kw, seed=1)).evaluate(ds, cfg, variants=("window",))["window"]["lab/s"]["pred"]
    assert not np.array_equal(one, other)  # the seed does matter
    torch.manual_seed(1)
    GRUBaseline(**kw).evaluate(ds, cfg, variants=("window",))
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(hidden=()), "hidden sizes"),
        (dict(dropout=(1.0,)), "dropout"),
        (dict(bin_s=0.0), "bin_s"),
        (dict(lr=0.0), "lr"),
    ],
)
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        GRUBaseline(**kw)


def test_the_closing_table_prints_the_grus_only_when_asked():
    from poyo.training.config import compose
    from poyo.training.report import results_table
    from poyo.training.run import gru_baseline

    assert gru_baseline(compose()) is None  # off by default: minutes per session
    gru = gru_baseline(compose("baseline.gru=true", "window_length=2.0", "seed=4"))
    assert (gru.before_s, gru.after_s, gru.causal_s, gru.seed) == (1.5, 0.5, 2.0, 4)  # what POYO's window holds
    lin = {"window": {"b/s": {"r2": 0.7, "before_s": 0.5, "after_s": 0.5}}, "causal": {"b/s": {"r2": 0.6}}}
    plain, rows = results_table({"b/s": {"r": 0.8}}, lin, "r", ["b/s"])
    assert "GRU" not in plain and "gru_r2" not in rows[0]
    table, rows = results_table(
        {"b/s": {"r": 0.8}},
        {**lin, "gru_window": {"b/s": {"r2": 0.75}}, "gru_causal": {"b/s": {"r2": 0.65}}},
        "r",
        ["b/s"],
    )
    assert (rows[0]["gru_r2"], rows[0]["gru_causal_r2"]) == (0.75, 0.65)
    assert "GRU R2" in table and "mean over sessions    0.800      0.700      0.600      0.750      0.650" in table

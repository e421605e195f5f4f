"""The tokenizer: a window becomes spike, delimiter, latent and output-query tokens."""

import numpy as np
import pytest
import torch

from poyo.data import Compose, Dataset, Series, UnitDropout, Window, WindowIndex
from poyo.model import POYO, Tokenizer
from poyo.model.tokenizer import SPIKE, UNIT_END, UNIT_START, latent_grid
from poyo.readouts import ReadoutConfig

UNITS = ["b/s/u0", "b/s/u1", "b/s/u2"]


def window(duration=1.0, values=None, intervals=None, target=None):
    t = np.array([0.1, 0.2, 0.25, 0.9])
    vel_t = np.arange(0.005, duration, 0.01)
    vel = values if values is not None else np.stack([np.sin(vel_t), np.cos(vel_t)], 1) * 20
    behaviour = {"cursor.vel": Series(vel_t, vel.astype(np.float32), np.arange(len(vel_t)) + 500)}
    if target is not None:
        behaviour["trials.target_id"] = Series(np.array([0.3, 0.6]), np.array(target), np.array([7, 8]))
    return Window(
        session_id="b/s", start=100.0, end=100.0 + duration, unit_ids=np.array(UNITS), spike_times=t, spike_units=np.array([2, 0, 2, 1]),
        behaviour=behaviour, intervals=intervals or {"reach": np.array([[0.0, 0.5]]), "hold": np.array([[0.3, 0.7]])},
    )  # fmt: skip


def tokenizer(**kw):
    lookup = {u: 10 + i for i, u in enumerate(reversed(UNITS))}  # rows unrelated to local order
    cfg = ReadoutConfig("cursor_velocity_2d", **kw)
    return Tokenizer(lookup, {"b/s": 3, "b/other": 0}, [cfg], ["cursor_velocity_2d"], num_latents_per_step=4)


def test_input_tokens_delimiters_then_spikes():
    s = tokenizer()(window())
    inp = s["input"]
    rows = {u: 10 + i for i, u in enumerate(reversed(UNITS))}
    u_rows = [rows[u] for u in UNITS]
    # two delimiters per unit at the window bounds, then one token per spike
    assert inp["unit_index"].tolist() == [u_rows[0], u_rows[0], u_rows[1], u_rows[1], u_rows[2], u_rows[2]] + [
        u_rows[i] for i in (2, 0, 2, 1)
    ]
    assert inp["token_type"].tolist() == [UNIT_START, UNIT_END] * 3 + [SPIKE] * 4
    assert inp["timestamps"].tolist() == [0.0, 1.0] * 3 + [0.1, 0.2, 0.25, 0.9]
    assert inp["timestamps"].dtype == torch.float64
    assert s["session_id"] == "b/s" and s["absolute_start"] == 100.0


def test_latent_grid():
    index, times = latent_grid(1.0, 0.125, 4)
    assert len(index) == 32
    np.testing.assert_allclose(np.unique(times), 0.0625 + 0.125 * np.arange(8))
    assert index[:8].tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and times[:8].tolist() == [0.0625] * 4 + [0.1875] * 4
    s = tokenizer()(window(duration=2.0))
    assert len(s["latent"]["index"]) == 16 * 4 and s["input"]["timestamps"][1] == 2.0


def test_output_queries_targets_weights_and_eval_mask():
    tok = tokenizer(mean=[1.0, -1.0], std=20.0, weights={"reach": 5.0, "hold": 0.1}, eval_intervals=["hold"])
    w = window()
    s = tok(w)
    out, tgt = s["output"], s["target/cursor_velocity_2d"]
    bt = w.behaviour["cursor.vel"].timestamps
    np.testing.assert_array_equal(out["timestamps"].numpy(), bt)
    assert out["session_index"].unique().tolist() == [3] and out["readout_index"].unique().tolist() == [0]
    expected = (w.behaviour["cursor.vel"].values - np.array([1.0, -1.0])) / 20.0
    np.testing.assert_allclose(tgt["values"].numpy(), expected, rtol=1e-6)
    in_reach, in_hold = bt < 0.5, (bt >= 0.3) & (bt < 0.7)
    np.testing.assert_allclose(
        tgt["weight"].numpy(), np.where(in_reach, 5.0, 1.0) * np.where(in_hold, 0.1, 1.0), rtol=1e-6
    )
    np.testing.assert_array_equal(tgt["eval_mask"].numpy(), in_hold)
    np.testing.assert_array_equal(tgt["sample_index"].numpy(), 500 + np.arange(len(bt)))


def test_nan_targets_get_zero_weight_and_no_evaluation():
    vals = np.ones((100, 2), np.float32)
    vals[[3, 50], 1] = np.nan
    s = tokenizer()(window(values=vals))
    tgt = s["target/cursor_velocity_2d"]
    assert torch.isfinite(tgt["values"]).all()
    assert tgt["weight"][[3, 50]].tolist() == [0.0, 0.0] and tgt["weight"].sum() == 98
    assert not tgt["eval_mask"][[3, 50]].any() and tgt["eval_mask"].sum() == 98


def test_categorical_readout_alongside_a_continuous_one():
    tok = Tokenizer(
        {u: i for i, u in enumerate(UNITS)}, {"b/s": 0},
        [ReadoutConfig("cursor_velocity_2d"), ReadoutConfig("reach_target_8")], ["reach_target_8", "cursor_velocity_2d"],
    )  # fmt: skip
    s = tok(window(target=[3, 7]))
    assert (
        s["target/reach_target_8"]["values"].tolist() == [3, 7]
        and s["target/reach_target_8"]["values"].dtype == torch.int64
    )
    # queries of each readout form a block, with the model's head index
    assert s["output"]["readout_index"].tolist() == [1] * 100 + [0] * 2
    with pytest.raises(ValueError, match="classes outside 0..7"):
        tok(window(target=[3, 8]))


def test_errors_name_the_session_and_field():
    tok = tokenizer(weights={"reach": 2.0})
    w = window()
    with pytest.raises(
        KeyError,
        match="session 'b/s': 1 of its 3 units are not in the model's unit vocabulary.*finetune=unit_identification",
    ):
        tok(w.replace(unit_ids=np.array(["b/s/u0", "b/s/u1", "b/s/new"])))
    with pytest.raises(KeyError, match="session 'b/new' is not in the model's session vocabulary"):
        tok(w.replace(session_id="b/new"))
    with pytest.raises(KeyError, match="no behaviour 'cursor.vel'.*window has \\[\\]"):
        tok(w.replace(behaviour={}))
    with pytest.raises(KeyError, match="interval 'reach' was not loaded"):
        tok(w.replace(intervals={}))
    with pytest.raises(ValueError, match="at least one unit"):
        tok(
            w.replace(
                unit_ids=np.array([], dtype=str), spike_times=np.array([]), spike_units=np.array([], dtype=np.int64)
            )
        )
    with pytest.raises(ValueError, match="weights must be finite"):
        ReadoutConfig("cursor_velocity_2d", weights={"reach": -1})
    with pytest.raises(KeyError, match="unknown readout 'eye_position'"):
        ReadoutConfig("eye_position")
    with pytest.raises(ValueError, match="not heads of this model"):
        Tokenizer({}, {}, [ReadoutConfig("hand_velocity_2d")], ["cursor_velocity_2d"])


def test_tokenizer_as_last_transform_on_real_windows(synthetic_root):
    ds = Dataset(synthetic_root, behaviour=["cursor.vel"], intervals=["movement_phases.reach_period"])
    model = POYO(
        dim=32,
        depth=1,
        num_latents_per_step=2,
        cross_heads=1,
        self_heads=1,
        dim_head=16,
        unit_ids=ds.unit_ids,
        session_ids=ds.session_ids,
    )
    tok = model.tokenizer([{"name": "cursor_velocity_2d", "weights": {"movement_phases.reach_period": 5.0}}])
    ds.transform = Compose([UnitDropout(min_units=5, mode_units=10, max_units=15), tok])
    sid = ds.session_ids[0]
    s = ds[WindowIndex(sid, 10.0, 11.0, seed=3)]
    raw = ds.read(WindowIndex(sid, 10.0, 11.0))
    n_units = int((s["input"]["token_type"] == UNIT_START).sum())
    assert 5 <= n_units <= 15 and len(s["input"]["unit_index"]) == 2 * n_units + int(
        (s["input"]["token_type"] == SPIKE).sum()
    )
    spikes = s["input"]["token_type"] == SPIKE
    kept = set(s["input"]["unit_index"][~spikes].tolist())
    assert set(s["input"]["unit_index"][spikes].tolist()) <= kept  # spikes only from kept units
    assert len(s["output"]["timestamps"]) == len(raw.behaviour["cursor.vel"]) == 100
    # global rows point at this session's units
    assert all(model.unit_emb.ids[r].startswith(sid + "/") for r in kept)


def test_per_brainset_readout_configs_share_one_head():
    """Two datasets feed one head from different keys with their own normalisation (POYO-1)."""
    from dataclasses import replace

    from poyo.data import collate_packed

    cursor = ReadoutConfig("cursor_velocity_2d", key="cursor.vel", std=20.0, sessions="b/*")
    hand = ReadoutConfig("cursor_velocity_2d", key="hand.vel", std=100.0, weights={"reach": 3.0}, sessions=["nlb/*"])
    lookup = {u: i for i, u in enumerate(UNITS + ["nlb/s/u0", "nlb/s/u1", "nlb/s/u2"])}
    tok = Tokenizer(
        lookup, {"b/s": 0, "nlb/s": 1, "other/s": 2}, [cursor, hand], ["cursor_velocity_2d"], num_latents_per_step=2
    )
    a = window()
    vel = a.behaviour["cursor.vel"]
    b = replace(
        a, session_id="nlb/s", unit_ids=np.array(["nlb/s/u0", "nlb/s/u1", "nlb/s/u2"]), behaviour={"hand.vel": vel}
    )
    sa, sb = tok(a), tok(b)
    np.testing.assert_allclose(sa["target/cursor_velocity_2d"]["values"].numpy(), vel.values / 20.0, rtol=1e-6)
    np.testing.assert_allclose(sb["target/cursor_velocity_2d"]["values"].numpy(), vel.values / 100.0, rtol=1e-6)
    assert (
        sa["target/cursor_velocity_2d"]["weight"].max() == 1.0
        and sb["target/cursor_velocity_2d"]["weight"].max() == 3.0
    )
    assert tok.readouts_for("nlb/s") == [hand]
    collate_packed([sa, sb])  # both feed the same head, so they batch together
    with pytest.raises(ValueError, match="no readout config applies"):
        tok(replace(a, session_id="other/s"))
    overlapping = ReadoutConfig("cursor_velocity_2d", std=5.0, sessions="*")
    with pytest.raises(ValueError, match="more than one config"):
        Tokenizer(lookup, {"b/s": 0}, [cursor, overlapping], ["cursor_velocity_2d"])(a)
    # a session fed by one head of two gets an empty entry for the other, so batches still collate
    two = Tokenizer(lookup, {"b/s": 0, "nlb/s": 1}, [cursor, ReadoutConfig("cursor_position_2d", key="hand.vel", sessions="nlb/*")],
                    ["cursor_velocity_2d", "cursor_position_2d"])  # fmt: skip
    ta, tb = two(a), two(b)
    assert (
        len(ta["target/cursor_position_2d"]["values"]) == 0 and ta["target/cursor_position_2d"]["values"].shape[1] == 2
    )
    assert len(tb["target/cursor_velocity_2d"]["weight"]) == 0
    batch = collate_packed([ta, tb])
    assert len(batch["output"]["timestamps"]) == len(vel) * 2

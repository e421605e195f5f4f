"""Starting embeddings for new units (poyo.training.unit_init): the unit descriptions measure what
they say, the ridge map recovers a map that exists, the rows it writes are the predicted ones, and
the descriptions travel with model.pt and train.py's checkpoints."""

import numpy as np
import pytest
import torch

from poyo.data import Dataset
from poyo.model import POYO, load_pretrained, save_pretrained
from poyo.pipelines.arrays import from_spike_times, write_session
from poyo.readouts import ReadoutConfig
from poyo.training.unit_init import (
    LAGS_S,
    feature_names,
    fit_map,
    init_new_embeddings,
    merge_features,
    session_unit_features,
    unit_features,
)

READOUT = ReadoutConfig("behaviour_x_2d", key="behaviour.x", dim=2, kind="continuous", mean=None, std=None)


def tuned_session(root, *, seed=0, duration=300.0):
    """Three units: one follows x[0] 100 ms later (it leads), one fires against x[1], one is untuned."""
    rng = np.random.default_rng(seed)
    fs = 100.0
    t = np.arange(int(duration * fs)) / fs
    x = np.stack([np.convolve(rng.normal(size=len(t)), np.ones(30) / 5.5, "same") for _ in range(2)], axis=1)
    lead = int(0.1 * fs)
    drive = [np.roll(x[:, 0], -lead), -x[:, 1], np.zeros(len(t))]
    trains = []
    for base, d in zip((20.0, 10.0, 5.0), drive):
        rate = base * np.exp(0.8 * d)
        counts = rng.poisson(rate / fs)
        trains.append(np.sort(np.repeat(t, counts) + rng.uniform(0, 1 / fs, counts.sum())))
    data = from_spike_times(trains, ["lead", "anti", "flat"], {"behaviour.x": (t, x)}, brainset="b", session_id="s0")
    write_session(data, root)
    return Dataset(root, behaviour=["behaviour.x"])


def test_descriptions_measure_rate_lag_and_sign(tmp_path):
    ds = tuned_session(tmp_path)
    f = session_unit_features(ds, "b/s0", READOUT)
    names = feature_names(READOUT)
    assert f.shape == (3, len(names)) and names[0] == "log_rate"
    col = {n.replace("behaviour_x_2d", "x"): i for i, n in enumerate(names)}
    rates = np.exp(f[:, 0]) - 0.1
    assert rates[0] > rates[1] > rates[2] > 2.0  # bases 20, 10, 5 Hz (the drive raises the mean)
    lead = [f[0, col[f"corr(x[0], {lag:+g}s)"]] for lag in LAGS_S]
    assert LAGS_S[int(np.argmax(lead))] == pytest.approx(0.1)  # the behaviour follows its spikes by 100 ms
    assert max(lead) > 0.3
    assert f[1, col["corr(x[1], +0s)"]] < -0.3
    assert np.abs(f[2, 1:]).max() < 0.1  # untuned


def test_the_map_recovers_a_linear_map_and_says_how_well():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    w = rng.normal(size=(8, 16))
    groups = np.repeat(np.arange(10), 40)
    predict, r2 = fit_map(x, x @ w + 0.05 * rng.normal(size=(400, 16)), groups)
    assert r2 > 0.95
    xn = rng.normal(size=(5, 8))
    np.testing.assert_allclose(predict(xn), xn @ w, atol=0.1)
    _, r2_noise = fit_map(x, rng.normal(size=(400, 16)), groups)  # nothing to find: nothing found
    assert r2_noise < 0.05


def test_new_rows_are_the_predicted_ones_and_old_rows_stay(tmp_path):
    rng = np.random.default_rng(1)
    old = [f"b/s{i // 30}/u{i}" for i in range(150)]
    model = POYO(
        dim=16, depth=1, dim_head=8, num_latents_per_step=2, unit_ids=old, session_ids=[f"b/s{i}" for i in range(5)]
    )
    names = ["log_rate", "a", "b"]
    f_old = rng.normal(size=(150, 3)).astype(np.float32)
    w = rng.normal(size=(3, 16)).astype(np.float32)
    with torch.no_grad():
        model.unit_emb.weight[:] = torch.from_numpy(f_old @ w * 0.02)
    model.unit_features = {"key": "behaviour.x", "names": names, "ids": old, "values": torch.from_numpy(f_old)}
    before = model.unit_emb.weight.detach().clone()
    new = ["b/new/u0", "b/new/u1"]
    model.unit_emb.extend(new)
    model.session_emb.extend(["b/new"])
    f_new = rng.normal(size=(2, 3)).astype(np.float32)
    feats = {"key": "behaviour.x", "names": names, "ids": new, "values": torch.from_numpy(f_new)}
    msg = init_new_embeddings(model, feats, new, ["b/new"], [f"b/s{i}" for i in range(5)])
    assert "2 new unit embeddings start from their firing statistics" in msg and "explains 100%" in msg
    rows = model.unit_emb.weight.detach()[model.unit_emb.index(new)]
    np.testing.assert_allclose(rows.numpy(), f_new @ w * 0.02, atol=2e-3)
    assert torch.equal(model.unit_emb.weight.detach()[:150], before)
    s = model.session_emb.weight.detach()
    np.testing.assert_allclose(s[5].numpy(), s[:5].mean(0).numpy(), atol=1e-6)
    # Without stored descriptions, or described by another behaviour: random rows, said so.
    model.unit_features = None
    assert "start at random" in init_new_embeddings(model, feats, new, ["b/new"], [])
    # Units at random still put the new session at the mean of the pretrained ones (its embedding
    # is every output query's); with no pretrained session to average it stays as drawn.
    with torch.no_grad():
        model.session_emb.weight[5] = torch.randn(model.session_emb.weight.shape[1])
    drawn = model.session_emb.weight.detach()[5].clone()
    msg = init_new_embeddings(model, None, new, ["b/new"], [])
    assert "nothing to describe units by" in msg and "1 new session embedding(s) start at random" in msg
    assert torch.equal(model.session_emb.weight.detach()[5], drawn)
    msg = init_new_embeddings(model, feats, new, ["b/new"], [f"b/s{i}" for i in range(5)])
    assert "unit embeddings start at random" in msg and "start at the mean of 5 pretrained ones" in msg
    s = model.session_emb.weight.detach()
    np.testing.assert_allclose(s[5].numpy(), s[:5].mean(0).numpy(), atol=1e-6)
    model.unit_features = {**feats, "key": "other_2d"}
    assert "'other_2d'" in init_new_embeddings(model, feats, new, ["b/new"], [])


def test_descriptions_travel_with_model_pt(tmp_path):
    ds = tuned_session(tmp_path / "data")
    model = POYO(dim=16, depth=1, dim_head=8, num_latents_per_step=2, unit_ids=ds.unit_ids, session_ids=ds.session_ids)
    model.unit_features = unit_features(ds, [READOUT])
    save_pretrained(model, tmp_path / "m.pt")
    back = load_pretrained(tmp_path / "m.pt")
    assert back.unit_features["ids"] == ds.unit_ids and back.unit_features["names"] == feature_names(READOUT)
    assert torch.equal(back.unit_features["values"], model.unit_features["values"])
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["unit_features"]["values"] = payload["unit_features"]["values"][:1]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: damaged unit_features"):
        load_pretrained(tmp_path / "bad.pt")
    merged = merge_features(
        model.unit_features, {**model.unit_features, "ids": ["x/y/z"], "values": torch.ones(1, 22)}, keep=ds.unit_ids
    )
    assert merged["ids"] == ["x/y/z", *ds.unit_ids] and merged["values"].shape == (4, 22)

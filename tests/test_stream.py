"""Streaming decoder: the same prediction as the offline model on the same window, a
buffer that forgets old spikes, physical units out, and clear errors."""

import numpy as np
import pytest
import torch

from poyo.data import Dataset, WindowIndex, collate_packed
from poyo.data.window import Series
from poyo.model import POYO
from poyo.readouts import ReadoutConfig
from poyo.stream import StreamingDecoder

TINY = dict(dim=32, depth=1, dim_head=16, num_latents_per_step=4, cross_heads=1, self_heads=2)
READOUT = ReadoutConfig("cursor_velocity_2d", mean=[1.0, -2.0], std=10.0, weights={"movement_phases.reach_period": 5.0})


@pytest.fixture(scope="module")
def setup(synthetic_root):
    ds = Dataset(synthetic_root, behaviour=["cursor.vel"], intervals=["movement_phases.reach_period"], validate=False)
    model = POYO(**TINY, unit_ids=ds.unit_ids, session_ids=ds.session_ids, seed=2)
    model.readout_configs = [READOUT]
    return ds, model.eval()


def offline(ds, model, sid, end):
    """The model's estimate at ``end`` from a window the Dataset reads: the reference."""
    w = ds.read(WindowIndex(sid, end - 1.0, end))
    w = w.replace(behaviour={"cursor.vel": Series(np.array([1.0]), np.full((1, 2), np.nan), np.zeros(1, np.int64))})
    with torch.no_grad():
        raw = model(collate_packed([model.tokenizer()(w)]))["cursor_velocity_2d"][0].numpy()
    return raw * 10.0 + np.array([1.0, -2.0]), len(w.spike_times)


def test_stream_matches_the_offline_model_window_by_window(setup):
    ds, model = setup
    sid = ds.session_ids[0]
    s = ds.sessions[sid]
    dec = StreamingDecoder(model, session_id=sid, unit_ids=s.unit_ids)
    whole = ds.read(WindowIndex(sid, 10.0, 20.0))  # spikes to replay, times relative to 10 s
    times, units = whole.spike_times + 10.0, whole.spike_units
    t = 10.0
    for end in (11.2, 11.25, 13.0, 17.5):  # irregular update times
        sel = (times >= t) & (times < end)
        dec.push(times[sel], units[sel])
        t = end
        got = dec.predict(end)
        want, n = offline(ds, model, sid, end)
        assert dec.buffered == n  # only the last second is kept
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_stream_accepts_unit_ids_grows_its_buffer_and_refuses_bad_input(setup):
    ds, model = setup
    sid = ds.session_ids[1]
    ids = ds.sessions[sid].unit_ids
    dec = StreamingDecoder(model, session_id=sid, unit_ids=ids, capacity=4)
    dec.push([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], ids[[0, 1, 2, 0, 1, 2]])  # ids, past the initial capacity
    assert dec.buffered == 6 and dec.predict(0.7).shape == (2,)
    dec.push([1.55], [3])
    assert dec.buffered == 2  # 0.1 ... 0.5 fell out of the 1 s window ending at 1.55
    with pytest.raises(ValueError, match="must not go back in time"):
        dec.push([1.0], [0])
    with pytest.raises(ValueError, match="unit positions must be in"):
        dec.push([2.0], [len(ids)])
    with pytest.raises(KeyError, match="units not given to this decoder"):
        dec.push([2.0], ["nope"])
    with pytest.raises(ValueError, match="before the last spike"):
        dec.predict(1.0)
    with pytest.raises(KeyError, match="not in the model's unit vocabulary"):
        StreamingDecoder(model, session_id=sid, unit_ids=["stranger"])
    with pytest.raises(KeyError, match="session vocabulary"):
        StreamingDecoder(model, session_id="elsewhere", unit_ids=ids)

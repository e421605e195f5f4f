"""Padded and packed batches carry exactly the same tokens."""

import numpy as np
import pytest
import torch

from poyo.data import Dataset, SequentialFixedWindowSampler, collate_packed, collate_padded, unpack, unpad


def _sample(window, session_index):
    beh = window.behaviour["cursor.vel"]
    return {
        "input": {
            "timestamps": torch.from_numpy(window.spike_times.astype(np.float32)),
            "unit_index": torch.from_numpy(window.spike_units),
        },
        "output": {
            "timestamps": beh.timestamps.astype(np.float32),
            "values": beh.values,
            "sample_index": beh.sample_index,
        },
        "session_index": session_index,
        "absolute_start": window.start,
        "session_id": window.session_id,
    }


@pytest.fixture(scope="module")
def samples(synthetic_root):
    ds = Dataset(synthetic_root, behaviour=["cursor.vel"])
    idx = list(SequentialFixedWindowSampler(ds.sampling_intervals("valid"), 1.0, step=0.5))[:7]
    return [_sample(ds[i], ds.session_ids.index(i.session)) for i in idx]


def test_padded_and_packed_round_trip(samples):
    padded = collate_padded(samples, pad_to_multiple=8)
    packed = collate_packed(samples)
    n = [len(s["input"]["timestamps"]) for s in samples]
    assert len(set(n)) > 1  # the batch really has different lengths
    assert padded["input"]["timestamps"].shape[1] % 8 == 0
    assert padded["input"]["mask"].sum(1).tolist() == n
    assert packed["input"]["cu_seqlens"].tolist() == np.concatenate([[0], np.cumsum(n)]).tolist()
    assert packed["input"]["cu_seqlens"].dtype == torch.int32
    assert packed["input"]["max_seqlen"] == max(n)
    assert packed["input"]["batch_index"].tolist() == np.repeat(np.arange(len(n)), n).tolist()
    for group in ("input", "output"):
        for field in samples[0][group]:
            a, b = unpad(padded[group], field), unpack(packed[group], field)
            for i, s in enumerate(samples):
                ref = torch.as_tensor(s[group][field])
                assert torch.equal(a[i], ref) and torch.equal(b[i], ref)
    # padding is zeros and never marked valid
    pad = ~padded["input"]["mask"]
    assert torch.all(padded["input"]["timestamps"][pad] == 0)
    assert padded["session_index"].tolist() == packed["session_index"].tolist() == [s["session_index"] for s in samples]
    assert padded["session_id"] == [s["session_id"] for s in samples]
    assert padded["absolute_start"].dtype == torch.float64


def test_collate_errors(samples):
    with pytest.raises(ValueError, match="empty batch"):
        collate_packed([])
    bad = dict(samples[0])
    bad["input"] = {"timestamps": torch.zeros(3), "unit_index": torch.zeros(4)}
    with pytest.raises(ValueError, match="share their first dimension"):
        collate_padded([samples[0], bad])
    bad = {k: v for k, v in samples[0].items() if k != "session_index"}
    with pytest.raises(ValueError, match="has keys"):
        collate_packed([samples[0], bad])
    with pytest.raises(ValueError, match="reserved"):
        collate_packed([{"input": {"mask": torch.zeros(2)}}])

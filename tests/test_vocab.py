"""Vocabulary surgery: extend, subset, lookup, and state-dict round trips by id."""

import numpy as np
import pytest
import torch

from poyo.model import POYO
from poyo.model.vocab import VocabEmbedding

IDS = ["b/s0/u0", "b/s0/u1", "b/s1/u0"]


def test_extend_appends_only_new_ids_and_keeps_rows():
    v = VocabEmbedding(8, IDS, seed=1)
    before = v.weight.detach().clone()
    added = v.extend(["b/s1/u0", "b/s2/u0", "b/s2/u1"], seed=2)
    assert added == ["b/s2/u0", "b/s2/u1"]
    assert v.ids == IDS + ["b/s2/u0", "b/s2/u1"] and v.weight.shape == (5, 8)
    torch.testing.assert_close(v.weight[:3], before, rtol=0, atol=0)
    assert 0.005 < float(v.weight[3:].detach().std()) < 0.05  # N(0, 0.02) rows
    with pytest.raises(ValueError, match="already present: 'b/s0/u0'"):
        v.extend(["b/s0/u0"], exist_ok=False)
    with pytest.raises(ValueError, match="duplicate ids"):
        v.extend(["x", "x"])
    with pytest.raises(TypeError, match="single string"):
        v.extend("b/s3/u0")


def test_extend_keeps_the_parameter_object():
    v = VocabEmbedding(4, IDS)
    p = v.weight
    v.extend(["new"])
    assert v.weight is p and p.shape == (4, 4)


def test_subset_keeps_rows_in_the_given_order():
    v = VocabEmbedding(4, IDS)
    rows = {i: v.weight[r].detach().clone() for r, i in enumerate(IDS)}
    v.subset(["b/s1/u0", "b/s0/u0"])
    assert v.ids == ["b/s1/u0", "b/s0/u0"]
    torch.testing.assert_close(v.weight[0], rows["b/s1/u0"])
    torch.testing.assert_close(v.weight[1], rows["b/s0/u0"])
    with pytest.raises(KeyError, match="unknown ids 'nope'"):
        v.subset(["nope"])


def test_index_and_errors():
    v = VocabEmbedding(4, IDS)
    np.testing.assert_array_equal(v.index(np.array(["b/s1/u0", "b/s0/u0"])), [2, 0])
    with pytest.raises(KeyError, match="2 ids not in the vocabulary .3 ids.: .yy., .zz."):
        v.index(["zz", "b/s0/u0", "yy"])
    with pytest.raises(RuntimeError, match="empty"):
        VocabEmbedding(4)(torch.tensor([0]))


def test_state_dict_holds_plain_strings_and_loads_with_weights_only(tmp_path):
    v = VocabEmbedding(4, IDS)
    sd = v.state_dict()
    assert sd["vocab"] == IDS and all(type(i) is str for i in sd["vocab"])
    torch.save(sd, tmp_path / "v.pt")
    loaded = torch.load(tmp_path / "v.pt", weights_only=True)
    w = VocabEmbedding(4)  # empty: adopts the checkpoint's ids
    w.load_state_dict(loaded)
    assert w.ids == IDS
    torch.testing.assert_close(w.weight, v.weight, rtol=0, atol=0)


def test_load_maps_rows_by_id_whatever_the_order():
    v = VocabEmbedding(4, IDS, seed=3)
    other = VocabEmbedding(4, list(reversed(IDS)), seed=4)
    other.load_state_dict(v.state_dict())
    assert other.ids == list(reversed(IDS))  # keeps its own order ...
    for i in IDS:  # ... with each id's row from the checkpoint
        torch.testing.assert_close(other.weight[other.index([i])[0]], v.weight[v.index([i])[0]], rtol=0, atol=0)


def test_load_with_other_ids_fails_clearly():
    v = VocabEmbedding(4, IDS)
    w = VocabEmbedding(4, IDS[:2] + ["b/s9/u9"])
    with pytest.raises(RuntimeError, match=r"only in the checkpoint: 'b/s1/u0'.*only in the model: 'b/s9/u9'"):
        w.load_state_dict(v.state_dict())
    sd = v.state_dict()
    del sd["vocab"]
    with pytest.raises(RuntimeError, match="Missing key.*vocab"):
        VocabEmbedding(4, IDS).load_state_dict(sd)


def test_model_round_trip_extend_subset_save_load(tmp_path):
    model = POYO(
        dim=32,
        depth=1,
        num_latents_per_step=2,
        cross_heads=1,
        self_heads=1,
        dim_head=16,
        unit_ids=IDS,
        session_ids=["b/s0", "b/s1"],
    )
    model.init_vocabs(["b/s2/u0"], ["b/s2"])
    model.unit_emb.subset(["b/s2/u0", "b/s0/u1"])
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = POYO(dim=32, depth=1, num_latents_per_step=2, cross_heads=1, self_heads=1, dim_head=16)
    fresh.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert fresh.unit_emb.ids == ["b/s2/u0", "b/s0/u1"] and fresh.session_emb.ids == ["b/s0", "b/s1", "b/s2"]
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert a == b if isinstance(a, list) else torch.equal(a, b)

"""Dropout on CPU with masks from 15-bit random integers (a third of ``bernoulli_``'s cost):
the same expectation and drop rate as PyTorch's, reproducible from the seed, and the same
function as SDPA without dropout when nothing is dropped."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poyo.model.attention import attention_with_dropout, keep_mask, own_dropout
from poyo.model.layers import Dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.4])
def test_keep_mask_drops_at_rate_p_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    keep, factor = keep_mask((1000, 1000), p, "cpu")
    p_exact = round(p * 2**15) / 2**15
    assert abs(p_exact - p) <= 2**-16 and factor == pytest.approx(1 / (1 - p_exact), rel=1e-12)
    rate = 1 - keep.float().mean().item()
    assert abs(rate - p) < 5 * (p * (1 - p) / 1e6) ** 0.5  # within 5 standard errors
    assert (keep.float() * factor).mean().item() == pytest.approx(1.0, abs=5e-3)
    torch.manual_seed(0)
    assert torch.equal(keep_mask((1000, 1000), p, "cpu")[0], keep)  # reproducible from the seed


def test_without_drops_it_is_sdpa():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention_with_dropout(q, k, v, 0.0, mask), ref, rtol=1e-5, atol=1e-6)


def test_its_mean_over_masks_is_the_undropped_attention_like_sdpas():
    torch.manual_seed(2)
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    ref = F.scaled_dot_product_attention(q, k, v)
    n = 4000
    ours = torch.stack([attention_with_dropout(q, k, v, 0.2) for _ in range(n)])
    torchs = torch.stack([F.scaled_dot_product_attention(q, k, v, dropout_p=0.2) for _ in range(n)])
    assert (ours.mean(0) - ref).abs().max() < 0.05 and (torchs.mean(0) - ref).abs().max() < 0.05
    # and the same spread as PyTorch's dropout (the regularisation is the same)
    torch.testing.assert_close(ours.std(0), torchs.std(0), rtol=0.1, atol=0.01)


def test_dropout_module_and_the_switch(monkeypatch):
    torch.manual_seed(3)
    drop, x = Dropout(0.4), torch.ones(200_000)
    out = drop.train()(x)
    assert abs((out == 0).float().mean().item() - 0.4) < 0.01 and out.mean().item() == pytest.approx(1.0, abs=0.01)
    assert torch.equal(drop.eval()(x), x)
    assert own_dropout(x, 0.4)
    monkeypatch.setenv("POYO_CPU_ATTENTION_DROPOUT", "sdpa")  # PyTorch's own masks, for comparison
    assert not own_dropout(x, 0.4)

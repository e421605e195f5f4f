"""Dropout on CPU with masks from 8-bit random integers (eight per 64-bit draw; far cheaper than ``bernoulli_``):
the same expectation and drop rate as PyTorch's, reproducible from the seed, and the same
function as SDPA without dropout when nothing is dropped."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poyo.model.attention import keep_mask, math_attention, own_dropout, own_kernel
from poyo.model.layers import Dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.4])
def test_keep_mask_drops_at_rate_p_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    keep, factor = keep_mask((1000, 1000), p, "cpu")
    p_exact = round(p * 2**8) / 2**8
    assert abs(p_exact - p) <= 2**-9 and factor == pytest.approx(1 / (1 - p_exact), rel=1e-12)
    rate = 1 - keep.float().mean().item()
    assert abs(rate - p_exact) < 5 * (p * (1 - p) / 1e6) ** 0.5  # within 5 standard errors
    assert (keep.float() * factor).mean().item() == pytest.approx(1.0, abs=5e-3)
    torch.manual_seed(0)
    assert torch.equal(keep_mask((1000, 1000), p, "cpu")[0], keep)  # reproducible from the seed


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_keep_mask_in_the_features_dtype_is_the_bool_mask(dtype):
    """Dropout asks for its mask in the features' dtype (no conversion copy in the product or its
    backward): the same draws give the same entries, as 0 and 1."""
    torch.manual_seed(3)
    keep, factor = keep_mask((300, 70), 0.2, "cpu")
    torch.manual_seed(3)
    as_dtype, same = keep_mask((300, 70), 0.2, "cpu", dtype)
    assert as_dtype.dtype == dtype and same == factor
    assert torch.equal(as_dtype, keep.to(dtype)) and set(as_dtype.unique().tolist()) == {0.0, 1.0}


def test_without_drops_it_is_sdpa_outputs_and_gradients():
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, n, 8, requires_grad=True) for n in (5, 7, 7))
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False
    g = torch.randn(2, 3, 5, 8)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    ours = math_attention(q, k, v, 0.0, mask)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), g), ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_its_mean_over_masks_is_the_undropped_attention_like_sdpas():
    torch.manual_seed(2)
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    ref = F.scaled_dot_product_attention(q, k, v)
    n = 4000
    ours = torch.stack([math_attention(q, k, v, 0.2) for _ in range(n)])
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
    monkeypatch.setenv("POYO_CPU_ATTENTION", "sdpa")  # PyTorch's own masks, for comparison
    assert not own_dropout(x, 0.4)


def test_training_or_bf16_on_cpu_runs_the_math_kernel_and_fp32_inference_runs_sdpa(monkeypatch):
    q = torch.randn(2, 3, 4, 8)
    assert own_kernel(q.requires_grad_(), 0.0) and own_kernel(q.detach(), 0.2)  # gradients, or dropout
    assert not own_kernel(q.detach(), 0.0)  # fp32 inference: SDPA's fused forward
    with torch.no_grad():
        assert not own_kernel(q, 0.0)
        assert own_kernel(q.bfloat16(), 0.0) and own_kernel(q.half(), 0.0)  # bf16/fp16 inference
    monkeypatch.setenv("POYO_CPU_ATTENTION", "sdpa")
    assert not own_kernel(q, 0.2) and not own_kernel(q.bfloat16(), 0.0)


def test_keep_mask_at_the_edges_of_p():
    """p = 0 keeps all, p = 1 drops all (factor 0), p just below 1 keeps a finite factor, and p
    outside [0, 1] is refused."""
    keep, factor = keep_mask((64, 64), 0.0, "cpu", torch.float32)
    assert torch.equal(keep, torch.ones(64, 64)) and factor == 1.0
    keep, factor = keep_mask((64, 64), 1.0, "cpu", torch.float32)
    assert torch.equal(keep, torch.zeros(64, 64)) and factor == 0.0
    torch.manual_seed(0)
    keep, factor = keep_mask((1000, 1000), 0.9995, "cpu")
    assert factor == 256.0 and 0 < keep.float().mean().item() < 0.01
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="dropout probability must be in"):
            keep_mask((4,), bad, "cpu")

"""Rotary time embedding: the published frequencies, relative time, exact inverse."""

import math

import numpy as np
import pytest
import torch

from poyo.model.rotary import RotaryTime, periods

# Periods (s) of the published POYO checkpoints for 64-dim heads (reference notes, 3 s.f.).
PUBLISHED = [
    1e-4,
    1.94e-4,
    3.76e-4,
    7.29e-4,
    1.41e-3,
    2.74e-3,
    5.32e-3,
    1.03e-2,
    2.00e-2,
    3.88e-2,
    7.52e-2,
    0.146,
    0.283,
    0.549,
    1.064,
    2.063,
]


def test_periods_match_published_checkpoints():
    p = periods(16).numpy()
    np.testing.assert_allclose(p, PUBLISHED, rtol=6e-3)
    # The original parameterisation: t_max = 4 s with the exponent stopping at 30/32.
    original = 1e-4 * (4.0 / 1e-4) ** (np.arange(0, 32, 2) / 32)
    np.testing.assert_allclose(p, original, rtol=2e-5)
    assert RotaryTime(64).num_freqs == 16


def test_rotation_is_complex_multiplication_on_first_half_only():
    rot = RotaryTime(16, t_min=0.01, t_max=1.0)  # 4 frequencies on dims 0..7
    x = torch.randn(5, 3, 16)  # (N, H, D)
    t = torch.rand(5, dtype=torch.float64)
    y = rot.rotate(x, rot(t))
    torch.testing.assert_close(y[..., 8:], x[..., 8:], rtol=0, atol=0)
    omega = 2 * math.pi / periods(4, 0.01, 1.0)
    for i in range(4):
        z = torch.complex(x[..., 2 * i].double(), x[..., 2 * i + 1].double()) * torch.exp(1j * omega[i] * t)[:, None]
        torch.testing.assert_close(y[..., 2 * i].double(), z.real, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(y[..., 2 * i + 1].double(), z.imag, rtol=1e-5, atol=1e-6)


def test_inverse_undoes_rotation():
    rot = RotaryTime(64)
    x = torch.randn(2, 7, 4, 64)
    r = rot(torch.rand(2, 7, dtype=torch.float64) * 3)
    torch.testing.assert_close(rot.rotate(rot.rotate(x, r), r.inverse()), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_rotation_matches_float32_and_its_gradient_is_the_inverse(dtype):
    """bf16/fp16 features take their own path (only the rotated half is cast); it must give the
    float32 path's values rounded once, leave the unrotated half bit for bit, and backpropagate
    the inverse rotation, for strided features (keys of a kv projection) and gradients."""
    rot = RotaryTime(64)
    g = torch.Generator().manual_seed(1)
    kv = torch.randn(40, 6, 64, generator=g).to(dtype)
    x = kv[:, 1::2]  # every other head: a non-contiguous view, as chunks of a projection are
    r = rot(torch.rand(40, dtype=torch.float64, generator=g) * 2)
    y = rot.rotate(x, r)
    assert y.dtype == dtype
    torch.testing.assert_close(y, rot.rotate(x.float(), r).to(dtype), rtol=0, atol=0)
    assert torch.equal(y[..., 32:], x[..., 32:])

    leaf = x.detach().clone().requires_grad_()
    grad = torch.randn(64, 40, 3, generator=g).to(dtype).permute(1, 2, 0)  # last dim not contiguous either
    rot.rotate(leaf, r).backward(grad)
    torch.testing.assert_close(leaf.grad, rot.rotate(grad.float(), r.inverse()).to(dtype), rtol=0, atol=0)
    reference = x.float().requires_grad_()
    rot.rotate(reference, r).backward(grad.float())
    torch.testing.assert_close(leaf.grad.float(), reference.grad, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("shift", [0.37, -5.0, 1234.5])
def test_dot_product_depends_only_on_relative_time(shift):
    rot = RotaryTime(64)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 2, 64, generator=g), torch.randn(9, 2, 64, generator=g)
    tq, tk = torch.rand(6, dtype=torch.float64, generator=g), torch.rand(9, dtype=torch.float64, generator=g)

    def logits(tq, tk):
        return torch.einsum("qhd,khd->hqk", rot.rotate(q, rot(tq)), rot.rotate(k, rot(tk)))

    base = logits(tq, tk)
    torch.testing.assert_close(logits(tq + shift, tk + shift), base, rtol=1e-4, atol=1e-4)
    # ... and it does depend on the relative time: moving only the keys changes the logits.
    assert (logits(tq, tk + 0.01) - base).abs().max() > 1e-2


def test_float64_angles_keep_high_frequencies_exact():
    """A float32 product would be ~4e-3 rad off at 1 s for the 0.1 ms period."""
    rot = RotaryTime(64)
    t = torch.tensor([0.987654321], dtype=torch.float64)
    exact = np.cos(0.987654321 * 2 * np.pi / 1e-4)
    assert abs(float(rot(t).phase.real[0, 0, 0]) - exact) < 1e-6


def test_invalid_arguments():
    with pytest.raises(ValueError, match="multiple of 4"):
        RotaryTime(30)
    with pytest.raises(ValueError, match="t_min < t_max"):
        RotaryTime(64, t_min=1.0, t_max=0.5)
    with pytest.raises(TypeError, match="floating point"):
        RotaryTime(64)(torch.arange(3))
    with pytest.raises(ValueError, match="head dim 64"):
        RotaryTime(64).rotate(torch.randn(3, 2, 32), RotaryTime(64)(torch.zeros(3)))


def test_local_bump_is_a_relative_time_prior_that_fades():
    """The content-free part of a logit, (e . R(dt) e) / sqrt(d), is ``height`` at dt = 0 and
    falls off with |dt|, whatever the absolute time."""
    rot = RotaryTime(64)
    e = rot.local_bump(4.0)

    def logit(t_q, dt):
        t = torch.tensor([t_q, t_q + dt], dtype=torch.float64)
        q, k = rot.rotate(e.expand(2, 1, 64), rot(t))
        return float((q * k).sum()) / 8.0

    assert logit(0.0, 0.0) == pytest.approx(4.0, rel=1e-5)
    near, far = [logit(0.0, d) for d in (0.01, 0.025, 0.05)], [logit(0.0, d) for d in (0.1, 0.5, 1.0)]
    assert near[0] > near[1] > near[2] > max(far)
    assert near[2] < 2.0 and max(abs(f) for f in far) < 1.0
    assert logit(123.4, 0.05) == pytest.approx(logit(0.0, 0.05), abs=1e-4)
    with pytest.raises(ValueError, match="no rotary period"):
        RotaryTime(64, t_max=0.01).local_bump(1.0)

"""Rotary embedding of continuous time: the only way time enters the model.

A head's first ``head_dim // 2`` dims are grouped in adjacent pairs ``(0, 1), (2, 3), ...``;
pair ``i`` is rotated by the angle ``2 pi t / period_i`` with periods log-spaced from
``t_min`` to ``t_max`` (both included), unless the exact frequencies are given (an imported
torch_brain checkpoint keeps its own float32 values). The other half of the dims is not rotated. Because
a rotation by ``t_q`` on the query and by ``t_k`` on the key leaves ``q . k`` depending
only on ``t_k - t_q``, attention sees relative time. With the defaults (1e-4 s to
2.0627 s, 64-dim heads: 16 periods) this matches the frequencies of the published POYO
checkpoints.

Angles are computed in float64 and reduced modulo 2 pi before the cast to float32: at the
shortest period a 1 s timestamp is ~6e4 rad, where a float32 product would already be
~4e-3 rad off. A :class:`Rotation` spans the whole head: the unrotated half has phase 1
(angle 0, so it is multiplied by exactly 1 + 0j), which makes applying it to float32 features a
single complex multiplication -- no split, no concatenation -- and lets one call rotate the
queries, keys and values of a self-attention layer together (see :mod:`poyo.model.layers`).
bf16/fp16 features skip that half instead (:class:`_RotateFirstHalf`): for them the casts to
float32 and back, not the product, are the cost.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn


class Rotation(NamedTuple):
    """Unit phasors ``exp(i * angle)`` of each token, complex64 ``(..., N, 1, head_dim // 2)``
    (broadcast over heads); the last ``head_dim // 4`` entries (the unrotated dims) are 1.
    ``parts`` holds the same numbers as real ``(cos, sin)`` pairs ``(..., head_dim // 2, 2)``, in
    the same memory: what compiled code reads, since inductor generates no code for complex
    numbers. ``conjugate``: the inverse rotation (``phasors()`` conjugates, lazily)."""

    phase: torch.Tensor
    parts: torch.Tensor
    conjugate: bool = False

    def inverse(self) -> Rotation:
        return self._replace(conjugate=not self.conjugate)

    def phasors(self) -> torch.Tensor:
        return self.phase.conj() if self.conjugate else self.phase


def periods(num: int, t_min: float = 1e-4, t_max: float = 2.0627) -> torch.Tensor:
    """``num`` periods (s) log-spaced from ``t_min`` to ``t_max`` inclusive, float64."""
    if num < 1:
        raise ValueError(f"need at least one period, got {num}")
    if not 0 < t_min < t_max:
        raise ValueError(f"need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
    if num == 1:
        return torch.tensor([t_min], dtype=torch.float64)
    return t_min * (t_max / t_min) ** torch.linspace(0.0, 1.0, num, dtype=torch.float64)


class RotaryTime(nn.Module):
    """Turns timestamps into :class:`Rotation` s and applies them to per-head features."""

    def __init__(self, head_dim: int, t_min: float = 1e-4, t_max: float = 2.0627, omega=None):
        super().__init__()
        if head_dim < 4 or head_dim % 4:
            raise ValueError(
                f"head_dim must be a positive multiple of 4 (half of it rotated, in pairs), got {head_dim}"
            )
        self.head_dim, self.t_min, self.t_max = head_dim, float(t_min), float(t_max)
        self.num_freqs = head_dim // 4
        full = torch.zeros(head_dim // 2, dtype=torch.float64)  # angle 0 (phase 1) on the unrotated half
        if omega is None:
            full[: self.num_freqs] = 2 * math.pi / periods(self.num_freqs, t_min, t_max)
        else:  # given exactly (an imported checkpoint's float32 frequencies)
            given = torch.as_tensor(omega, dtype=torch.float64).flatten()
            if given.shape != (self.num_freqs,):
                raise ValueError(f"omega must hold {self.num_freqs} frequencies, got {tuple(given.shape)}")
            full[: self.num_freqs] = given
        self.register_buffer("omega", full, persistent=False)  # float64, (head_dim // 2,)

    def forward(self, timestamps: torch.Tensor) -> Rotation:
        """timestamps ``(..., N)`` in seconds (any float dtype) -> Rotation ``(..., N, 1, head_dim // 2)``."""
        if not torch.is_floating_point(timestamps):
            raise TypeError(f"timestamps must be floating point, got {timestamps.dtype}")
        with torch.autocast(timestamps.device.type, enabled=False):
            angles = timestamps.to(torch.float64)[..., None, None] * self.omega.to(timestamps.device)
            angles = torch.remainder(angles, 2 * math.pi).float()  # exact in float64, then small enough for float32
            parts = torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1)
            return Rotation(torch.view_as_complex(parts), parts)

    def local_bump(self, height: float, min_period: float = 0.04) -> torch.Tensor:
        """A head-sized vector ``e`` with ``(e . R(dt) e) / sqrt(head_dim) = height * mean_i cos(2 pi dt / P_i)``
        over the rotated pairs of period ``P_i >= min_period`` s: added to every query and key
        (see :mod:`poyo.model.layers`), it gives attention a bump of ``height`` nats around
        ``dt = 0`` that fades within ~``min_period`` s to ~0 beyond a few hundred ms. Shorter periods
        are left out: tokens are rarely that close in time, so their terms would only add noise."""
        period = 2 * math.pi / self.omega[: self.num_freqs]
        used = torch.nonzero(period >= min_period).flatten()
        if len(used) == 0:
            raise ValueError(f"no rotary period is >= {min_period} s (the longest is {float(period.max()):.3g} s)")
        e = torch.zeros(self.head_dim, dtype=torch.float64)
        e[2 * used] = math.sqrt(height * math.sqrt(self.head_dim) / len(used))
        return e.float()

    def rotate(self, x: torch.Tensor, rot: Rotation) -> torch.Tensor:
        """Rotate ``x`` ``(..., N, H, D)`` by ``rot`` (first half of each head in adjacent pairs).

        Any number of heads shares a token's rotation, so ``x`` may hold the queries, keys
        and values of a layer side by side on the head axis. Computed in float32; returns
        ``x``'s dtype. In float32 the whole head is one complex multiplication; in bf16/fp16
        only the rotated half is cast and multiplied (:class:`_RotateFirstHalf`).
        """
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"expected head dim {self.head_dim}, got {x.shape[-1]}")
        if torch.compiler.is_compiling():
            return _rotate_real(x, rot.parts[..., : self.num_freqs, :], rot.conjugate)
        if x.dtype in (torch.bfloat16, torch.float16):
            return _RotateFirstHalf.apply(x, rot.phasors()[..., : self.num_freqs])
        pairs = x.float().unflatten(-1, (self.head_dim // 2, 2))
        if pairs.storage_offset() % 2 or any(st % 2 for st in pairs.stride()[:-1]):
            pairs = pairs.contiguous()  # view_as_complex needs even strides and offset
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * rot.phasors()).flatten(-2)
        return rotated.to(x.dtype)


def _rotate_real(x: torch.Tensor, parts: torch.Tensor, conjugate: bool = False) -> torch.Tensor:
    """The rotation of :meth:`RotaryTime.rotate` in real arithmetic, for ``torch.compile``: inductor
    generates no code for complex numbers, so the complex product would stay an eager kernel
    between the fused ones. ``parts`` ``(..., D // 4, 2)``: the rotated pairs' ``(cos, sin)``
    (``conjugate``: rotate backwards). Pairs ``(a, b)`` of the first half become
    ``(a c - b s, a s + b c)`` in float32; the other half is passed through. The same values as the
    complex product (a test)."""
    half = x.shape[-1] // 2
    pairs = x[..., :half].float().unflatten(-1, (half // 2, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = parts[..., 0], parts[..., 1]
    if conjugate:
        s = -s
    rotated = torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)
    return torch.cat((rotated.to(x.dtype), x[..., half:]), dim=-1)


def _rotate_first_half(x: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` ``(..., D)`` with its first ``D // 2`` dims (pairs) multiplied by ``phase``
    ``(..., D // 4)`` in float32 and cast back on write; the other half copied unchanged."""
    half = x.shape[-1] // 2
    out = torch.empty_like(x)
    out[..., half:] = x[..., half:]
    rotated = x[..., :half].to(torch.float32, memory_format=torch.contiguous_format)  # any strides in
    pairs = torch.view_as_complex(rotated.unflatten(-1, (half // 2, 2)))
    out[..., :half] = torch.view_as_real(pairs * phase).flatten(-2)
    return out


class _RotateFirstHalf(torch.autograd.Function):
    """The rotation of :meth:`RotaryTime.rotate` for bf16/fp16 features, whose gradient is the
    inverse rotation of the output's gradient.

    Why not the float32 path: there, casting the whole head to float32 and back (forward and
    backward) costs more than the complex product itself, and half of the head has phase 1.
    Casting and multiplying only the rotated half made a poyo_1.3M bf16 training step
    0.83-0.90x as long (``benchmarks/rotary_cost.py``). Same values as the float32 path rounded to the
    feature dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(phase)
        return _rotate_first_half(x, phase)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (phase,) = ctx.saved_tensors
        return _rotate_first_half(grad, phase.conj()), None

"""Rotary embedding of continuous time: the only way time enters the model.

A head's first ``head_dim // 2`` dims are grouped in adjacent pairs ``(0, 1), (2, 3), ...``;
pair ``i`` is rotated by the angle ``2 pi t / period_i`` with periods log-spaced from
``t_min`` to ``t_max`` (both included). The other half of the dims is not rotated. Because
a rotation by ``t_q`` on the query and by ``t_k`` on the key leaves ``q . k`` depending
only on ``t_k - t_q``, attention sees relative time. With the defaults (1e-4 s to
2.0627 s, 64-dim heads: 16 periods) this matches the frequencies of the published POYO
checkpoints.

Angles are computed in float64 and only the unit phasors are cast to complex64: at the
shortest period a 1 s timestamp is ~6e4 rad, where float32 would already lose ~4e-3 rad.
Each pair is rotated as one complex multiplication (half the time of cos/sin arithmetic
on separate halves, forward and backward).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn


class Rotation(NamedTuple):
    """Unit phasors ``exp(i * angle)`` of each token, complex64 ``(..., N, 1, F)`` (broadcast over heads)."""

    phase: torch.Tensor

    def inverse(self) -> "Rotation":
        return Rotation(self.phase.conj())


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

    def __init__(self, head_dim: int, t_min: float = 1e-4, t_max: float = 2.0627):
        super().__init__()
        if head_dim < 4 or head_dim % 4:
            raise ValueError(f"head_dim must be a positive multiple of 4 (half of it rotated, in pairs), got {head_dim}")
        self.head_dim, self.t_min, self.t_max = head_dim, float(t_min), float(t_max)
        self.num_freqs = head_dim // 4
        omega = 2 * math.pi / periods(self.num_freqs, t_min, t_max)
        self.register_buffer("omega", omega, persistent=False)  # float64, (F,)

    def forward(self, timestamps: torch.Tensor) -> Rotation:
        """timestamps ``(..., N)`` in seconds (any float dtype) -> Rotation ``(..., N, 1, F)``."""
        if not torch.is_floating_point(timestamps):
            raise TypeError(f"timestamps must be floating point, got {timestamps.dtype}")
        with torch.autocast(timestamps.device.type, enabled=False):
            angles = timestamps.to(torch.float64)[..., None, None] * self.omega.to(timestamps.device)
            return Rotation(torch.polar(torch.ones_like(angles), angles).to(torch.complex64))

    def rotate(self, x: torch.Tensor, rot: Rotation) -> torch.Tensor:
        """Rotate the first half of the last dim of ``x`` ``(..., N, H, D)`` in adjacent pairs."""
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"expected head dim {self.head_dim}, got {x.shape[-1]}")
        half = self.head_dim // 2
        first = x[..., :half].float().unflatten(-1, (self.num_freqs, 2))
        if first.storage_offset() % 2 or any(st % 2 for st in first.stride()[:-1]):
            first = first.contiguous()  # view_as_complex needs even strides and offset
        pairs = torch.view_as_complex(first)
        rotated = torch.view_as_real(pairs * rot.phase).flatten(-2)
        return torch.cat((rotated.to(x.dtype), x[..., half:]), dim=-1)

"""PerceiverIO building blocks with rotary time: cross-attention, self-attention, GEGLU.

All blocks are pre-LayerNorm and return the residual *update* (the caller adds it), and
work on either batch layout: features are ``(B, N, dim)`` padded or ``(T, dim)`` packed.

``rotate_value=True`` (encoder and processor) also rotates the values by their key times
and rotates the attention output back by the query time, so what a latent gathers is
expressed in time *relative* to the latent. The decoder uses ``rotate_value=False``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from poyo.model.attention import Layout, attend, keep_mask, own_dropout
from poyo.model.rotary import RotaryTime, Rotation


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask, on CPU, comes from :func:`poyo.model.attention.keep_mask` (about
    3x cheaper to draw than ``bernoulli_``; ``p`` rounded to a multiple of 2^-15)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and own_dropout(x, self.p)):
            return super().forward(x)
        keep, factor = keep_mask(x.shape, self.p, x.device)
        return x * keep * factor


class FeedForward(nn.Module):
    """LayerNorm -> Linear(dim, 2 * mult * dim) -> GEGLU -> dropout -> Linear(mult * dim, dim).

    GEGLU: the first half of the projection is the value, the second half the gate
    (``value * gelu(gate)``), the convention of the published POYO weights.
    """

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.2):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, 2 * mult * dim)
        self.dropout = Dropout(dropout)
        self.proj_out = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        return self.proj_out(self.dropout(value * F.gelu(gate)))


class _RotaryAttention(nn.Module):
    def __init__(self, rotary: RotaryTime, heads: int, dim_head: int, dropout: float, rotate_value: bool):
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        if rotary.head_dim != dim_head:
            raise ValueError(f"rotary head dim {rotary.head_dim} != dim_head {dim_head}")
        self.heads, self.dim_head, self.dropout, self.rotate_value = heads, dim_head, dropout, rotate_value
        self.rotary = rotary
        self.backend = "auto"

    def _heads(self, x: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """``(..., groups * heads * dim_head)`` -> ``(..., groups * heads, dim_head)``."""
        return x.unflatten(-1, (groups * self.heads, self.dim_head))

    def _attend(self, q, k, v, q_rot: Rotation, q_layout: Layout, kv_layout: Layout) -> torch.Tensor:
        """Attention of rotated ``q`` over rotated ``k`` and ``v`` (rotated if ``rotate_value``),
        then the output rotated back by the query times; heads merged."""
        p = self.dropout if self.training else 0.0
        out = attend(q, k, v, q_layout, kv_layout, dropout_p=p, backend=self.backend)
        if self.rotate_value:
            out = self.rotary.rotate(out, q_rot.inverse())
        return out.flatten(-2)


class CrossAttention(_RotaryAttention):
    """Queries ``x`` attend to a context (keys/values) of another sequence group."""

    def __init__(
        self,
        dim: int,
        rotary: RotaryTime,
        *,
        context_dim: int | None = None,
        heads: int,
        dim_head: int = 64,
        dropout: float = 0.0,
        rotate_value: bool,
    ):
        super().__init__(rotary, heads, dim_head, dropout, rotate_value)
        context_dim = context_dim or dim
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x, context, x_rot: Rotation, context_rot: Rotation, x_layout: Layout, context_layout: Layout):
        q = self.rotary.rotate(self._heads(self.to_q(self.norm(x))), x_rot)
        kv = self._heads(self.to_kv(self.norm_context(context)), 2)
        if self.rotate_value:  # keys and values share their rotation: one call
            k, v = self.rotary.rotate(kv, context_rot).chunk(2, dim=-2)
        else:
            k, v = kv.chunk(2, dim=-2)
            k = self.rotary.rotate(k, context_rot)
        return self.to_out(self._attend(q, k, v, x_rot, x_layout, context_layout))


class SelfAttention(_RotaryAttention):
    """Tokens of one sequence group attend to each other."""

    def __init__(
        self,
        dim: int,
        rotary: RotaryTime,
        *,
        heads: int,
        dim_head: int = 64,
        dropout: float = 0.0,
        rotate_value: bool = True,
    ):
        super().__init__(rotary, heads, dim_head, dropout, rotate_value)
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x, rot: Rotation, layout: Layout):
        qkv = self._heads(self.to_qkv(self.norm(x)), 3)
        if self.rotate_value:  # queries, keys and values share their rotation: one call
            q, k, v = self.rotary.rotate(qkv, rot).chunk(3, dim=-2)
        else:
            qk, v = qkv.split((2 * self.heads, self.heads), dim=-2)
            q, k = self.rotary.rotate(qk, rot).chunk(2, dim=-2)
        return self.to_out(self._attend(q, k, v, rot, layout, layout))

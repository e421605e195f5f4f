"""PerceiverIO building blocks with rotary time: cross-attention, self-attention, GEGLU.

All blocks are pre-LayerNorm and return the residual *update* (the caller adds it), and
work on either batch layout: features are ``(B, N, dim)`` padded or ``(T, dim)`` packed.

``rotate_value=True`` (encoder and processor) also rotates the values by their key times
and rotates the attention output back by the query time, so what a latent gathers is
expressed in time *relative* to the latent. The decoder uses ``rotate_value=False``.

``time_prior > 0`` adds a learned vector to every query and another to every key of each
head, before rotation, both initialised to :meth:`RotaryTime.local_bump`. Their product is a
content-free term of the attention logit that depends only on relative time, a Fourier series
over the rotary frequencies that starts as a bump of ``time_prior`` nats around ``dt = 0``:
attention starts local in time instead of spread evenly over the window, which content
alone takes the model many steps to learn. Both vectors learn (they can widen, move or remove
the bump); with ``time_prior = 0`` there are none (the published POYO).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from poyo.model.attention import Layout, attend, bucket, keep_mask, own_dropout
from poyo.model.rotary import RotaryTime, Rotation


def take_rows(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``src[index]`` along the first dim, for an integer ``index`` of any shape: the result is
    ``index.shape + src.shape[1:]``. Gathers rows by ``index_select`` on the flattened index, never
    by fancy indexing: the backward is then an ``index_add``, where ``src[index]``'s is an
    accumulating ``index_put``, several times slower on CPU (``benchmarks/gathers.py``)."""
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise TypeError(f"take_rows needs an integer index, got {index.dtype}")
    rows = src.index_select(0, index.reshape(-1).to(src.device))
    return rows.view(*index.shape, *src.shape[1:])


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask, on CPU, comes from :func:`poyo.model.attention.keep_mask` (about
    cheaper to draw than ``bernoulli_``; ``p`` rounded to a multiple of 2^-8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and own_dropout(x, self.p)):
            return super().forward(x)
        keep, factor = keep_mask(x.shape, self.p, x.device, x.dtype)
        return x * keep * factor


class Linear(nn.Linear):
    """``nn.Linear`` whose row count, under CPU bf16/fp16 autocast, is rounded up (zero rows, dropped
    after) by :func:`poyo.model.attention.bucket`.

    There, the matrix product goes through oneDNN, which compiles a kernel for each new shape, and
    the number of tokens in a packed batch is new at nearly every step: measured, that compiling
    grew from a few to tens of milliseconds per product as the cache filled, and a bf16 quick start
    slowed down epoch after epoch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            x.device.type == "cpu"
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") in (torch.bfloat16, torch.float16)
        ):
            return super().forward(x)
        lead = x.shape[:-1]
        n = lead.numel()
        m = bucket(n) if n else 0
        if m == n:
            return super().forward(x)
        out = super().forward(F.pad(x.reshape(n, x.shape[-1]), (0, 0, 0, m - n)))
        return out[:n].unflatten(0, lead)


class FeedForward(nn.Module):
    """LayerNorm -> Linear(dim, 2 * mult * dim) -> GEGLU -> dropout -> Linear(mult * dim, dim).

    GEGLU: the first half of the projection is the value, the second half the gate
    (``value * gelu(gate)``), the convention of the published POYO weights.
    """

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.2):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj_in = Linear(dim, 2 * mult * dim)
        self.dropout = Dropout(dropout)
        self.proj_out = Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        return self.proj_out(self.dropout(value * F.gelu(gate)))


class _RotaryAttention(nn.Module):
    def __init__(
        self, rotary: RotaryTime, heads: int, dim_head: int, dropout: float, rotate_value: bool, time_prior: float
    ):
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        if rotary.head_dim != dim_head:
            raise ValueError(f"rotary head dim {rotary.head_dim} != dim_head {dim_head}")
        self.heads, self.dim_head, self.dropout, self.rotate_value = heads, dim_head, dropout, rotate_value
        self.rotary = rotary
        self.backend = "auto"
        self.time_q = self.time_k = None
        if time_prior < 0:
            raise ValueError(f"time_prior must be >= 0 nats, got {time_prior}")
        if time_prior > 0:
            bump = rotary.local_bump(time_prior).repeat(heads, 1)  # (heads, dim_head)
            self.time_q, self.time_k = nn.Parameter(bump.clone()), nn.Parameter(bump.clone())

    def _time_terms(self, x: torch.Tensor, parts: str) -> torch.Tensor:
        """``x`` ``(..., len(parts) * heads, dim_head)`` with the time vectors added to its query
        (``q``) and key (``k``) parts; ``v`` parts unchanged."""
        if self.time_q is None:
            return x
        zero = torch.zeros_like(self.time_q)
        add = torch.cat([{"q": self.time_q, "k": self.time_k, "v": zero}[p] for p in parts])
        return x + add.to(x.dtype)

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
        time_prior: float = 0.0,
    ):
        super().__init__(rotary, heads, dim_head, dropout, rotate_value, time_prior)
        context_dim = context_dim or dim
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim)
        self.to_q = Linear(dim, inner, bias=False)
        self.to_kv = Linear(context_dim, 2 * inner, bias=False)
        self.to_out = Linear(inner, dim)

    def forward(
        self,
        x,
        context,
        x_rot: Rotation,
        context_rot: Rotation,
        x_layout: Layout,
        context_layout: Layout,
        context_index: torch.Tensor | None = None,
    ):
        """``context_index``: ``context`` holds distinct rows and token ``i``'s context is row
        ``context_index[i]`` (laid out as the tokens, padded or packed). Keys and values before
        rotation then cost one projection per distinct row, gathered per token: the same numbers."""
        q = self.rotary.rotate(self._time_terms(self._heads(self.to_q(self.norm(x))), "q"), x_rot)
        kv = self.to_kv(self.norm_context(context))
        if context_index is not None:
            kv = take_rows(kv, context_index)
        kv = self._time_terms(self._heads(kv, 2), "kv")
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
        time_prior: float = 0.0,
    ):
        super().__init__(rotary, heads, dim_head, dropout, rotate_value, time_prior)
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = Linear(heads * dim_head, dim)

    def forward(self, x, rot: Rotation, layout: Layout):
        qkv = self._time_terms(self._heads(self.to_qkv(self.norm(x)), 3), "qkv")
        if self.rotate_value:  # queries, keys and values share their rotation: one call
            q, k, v = self.rotary.rotate(qkv, rot).chunk(3, dim=-2)
        else:
            qk, v = qkv.split((2 * self.heads, self.heads), dim=-2)
            q, k = self.rotary.rotate(qk, rot).chunk(2, dim=-2)
        return self.to_out(self._attend(q, k, v, rot, layout, layout))

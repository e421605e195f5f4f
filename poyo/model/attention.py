"""Attention kernels behind one call: :func:`attend`.

A batch arrives in one of two layouts (see :mod:`poyo.data.collate`), described by a
:class:`Layout`:

* padded: features ``(B, N, H, D)`` and a key mask ``(B, N)``;
* packed: features ``(T, H, D)`` (all samples' tokens concatenated) and ``cu_seqlens``.

Backends (``"auto"`` picks one per call from the layout, device, dtype and dropout):

========== ======== ============ =====================================================
name       layout   devices      kernel
========== ======== ============ =====================================================
sdpa       padded   any          ``F.scaled_dot_product_attention`` with a key mask
loop       packed   any          one dense SDPA call per sample (one call when all
                                 samples have the same lengths); the CPU packed path
nested     packed   any          SDPA on nested jagged tensors (flash/memory-efficient
                                 kernels on CUDA)
varlen     packed   CUDA         ``torch.nn.attention.varlen.varlen_attn`` (flash;
                                 fp16/bf16 only, no attention dropout)
xformers   packed   CUDA         ``xformers.ops.memory_efficient_attention`` with a
                                 block-diagonal mask (needs the ``xformers`` extra)
========== ======== ============ =====================================================

Every backend computes the same function; ``tests/test_attention.py`` checks outputs and
gradients against the padded reference.

Training on CPU: PyTorch draws SDPA's dropout mask with ``bernoulli_`` (about a third of a
poyo_1.3M training step), and the backward of its CPU kernel is slower than that of plain
matrix products for POYO's small heads; in bf16 even its forward is. The ``sdpa`` and ``loop``
kernels therefore compute attention on CPU themselves when training, and in bf16 also when
evaluating (:func:`math_attention`, see :func:`own_kernel`), with a dropout mask drawn from 8-bit
random integers (eight from each 64-bit draw), far cheaper than ``bernoulli_``: each weight is
dropped with probability ``p`` rounded to a multiple of 2^-8 (0.2 -> 0.1992) and the kept ones are
scaled to keep the expectation exact.
The feed-forward dropouts (:class:`poyo.model.layers.Dropout`) draw their masks the same
way. ``POYO_CPU_ATTENTION=sdpa`` restores PyTorch's SDPA and dropout everywhere (for comparison).
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from dataclasses import dataclass
from functools import cache, cached_property

import torch
import torch.nn.functional as F

PADDED_BACKENDS = ("sdpa",)
PACKED_BACKENDS = ("loop", "nested", "varlen", "xformers")
BACKENDS = ("auto", *PADDED_BACKENDS, *PACKED_BACKENDS)


@dataclass(frozen=True, eq=False)
class Layout:
    """How the tokens of one sequence group sit in a batch."""

    batch_size: int
    mask: torch.Tensor | None = None  # padded: (B, N) bool, True = real token
    cu_seqlens: torch.Tensor | None = None  # packed: (B + 1,) int32
    max_seqlen: int | None = None  # packed
    total: int | None = None  # packed: number of tokens

    @classmethod
    def padded(cls, mask: torch.Tensor) -> Layout:
        if mask.dim() != 2 or mask.dtype != torch.bool:
            raise ValueError(f"a padded layout needs a (B, N) bool mask, got {tuple(mask.shape)} {mask.dtype}")
        return cls(batch_size=mask.shape[0], mask=mask)

    @classmethod
    def packed(cls, cu_seqlens: torch.Tensor, max_seqlen: int, total: int) -> Layout:
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError(f"cu_seqlens must be 1-D with B + 1 >= 2 entries, got shape {tuple(cu_seqlens.shape)}")
        return cls(
            batch_size=cu_seqlens.numel() - 1, cu_seqlens=cu_seqlens, max_seqlen=int(max_seqlen), total=int(total)
        )

    @property
    def is_packed(self) -> bool:
        return self.cu_seqlens is not None

    @property
    def uniform(self) -> bool:
        """Packed with every sample the same length (known without a device sync)."""
        return self.is_packed and self.max_seqlen * self.batch_size == self.total

    @cached_property
    def full(self) -> bool:
        """Padded with no padding at all (the mask can be dropped)."""
        return bool(self.mask.all())

    @cached_property
    def bounds(self) -> list[int]:
        """cu_seqlens as a Python list (one host sync, cached)."""
        return self.cu_seqlens.tolist()

    @cached_property
    def seqlens(self) -> list[int]:
        b = self.bounds
        return [e - s for s, e in zip(b[:-1], b[1:])]


@cache
def xformers_available() -> bool:
    return importlib.util.find_spec("xformers") is not None


@cache
def varlen_available() -> bool:
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def available(backend: str, device: torch.device) -> str | None:
    """None if ``backend`` can run on ``device``, else the reason it cannot."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend in ("varlen", "xformers") and device.type != "cuda":
        return f"'{backend}' runs on CUDA only (device is {device.type})"
    if backend == "varlen" and not varlen_available():
        return f"torch {torch.__version__} has no torch.nn.attention.varlen"
    if backend == "xformers" and not xformers_available():
        return "xformers is not installed (pip install 'poyo[xformers]')"
    return None


def resolve(backend: str, layout: Layout, q: torch.Tensor, dropout_p: float) -> str:
    """The backend that runs this call: ``backend`` itself after checks, or the automatic choice."""
    if backend == "auto":
        if not layout.is_packed:
            return "sdpa"
        if q.device.type != "cuda":
            return "loop"
        if available("xformers", q.device) is None:
            return "xformers"
        if available("varlen", q.device) is None and q.dtype in (torch.float16, torch.bfloat16) and dropout_p == 0:
            return "varlen"
        return "nested"
    why = available(backend, q.device)
    if why:
        raise RuntimeError(f"attention backend {why}")
    if layout.is_packed != (backend in PACKED_BACKENDS):
        want = "packed" if layout.is_packed else "padded"
        fit = PACKED_BACKENDS if layout.is_packed else PADDED_BACKENDS
        raise ValueError(f"attention backend '{backend}' cannot run a {want} batch; use one of {fit} or 'auto'")
    if backend == "varlen":
        if q.dtype not in (torch.float16, torch.bfloat16):
            raise RuntimeError(
                f"attention backend 'varlen' (flash) needs fp16/bf16 inputs, got {q.dtype}: use bf16 autocast or another backend"
            )
        if dropout_p > 0:
            raise RuntimeError(
                "attention backend 'varlen' has no attention dropout: set atn_dropout=0, evaluate, or use 'xformers'/'nested'"
            )
    return backend


def attend(
    q, k, v, q_layout: Layout, kv_layout: Layout, *, dropout_p: float = 0.0, backend: str = "auto"
) -> torch.Tensor:
    """Softmax attention of each sample's queries over that sample's keys (scale 1/sqrt(D)).

    Padded: q ``(B, Nq, H, D)``, k/v ``(B, Nk, H, D)``; packed: q ``(Tq, H, D)``, k/v
    ``(Tk, H, D)``. Returns the layout and shape of ``q``.
    """
    if q_layout.is_packed != kv_layout.is_packed:
        raise ValueError("queries and keys must share a layout (both padded or both packed)")
    for name, x, layout in (("q", q, q_layout), ("k", k, kv_layout), ("v", v, kv_layout)):
        want = (layout.total,) if layout.is_packed else tuple(layout.mask.shape)
        if x.dim() != len(want) + 2 or tuple(x.shape[: len(want)]) != want:
            raise ValueError(f"{name} has shape {tuple(x.shape)}; its layout needs {(*want, 'heads', 'head_dim')}")
    name = resolve(backend, q_layout, q, dropout_p)
    return _KERNELS[name](q, k, v, q_layout, kv_layout, dropout_p)


_DROP_BITS = 8  # random bits per mask entry (benchmarks/dropout_cost.py --mode mask16 times 16)
_ENTRY_DTYPES = {8: torch.int8, 16: torch.int16}


def keep_mask(shape, p: float, device, dtype: torch.dtype = torch.bool) -> tuple[torch.Tensor, float]:
    """A mask (``dtype``: True/1 = keep) that keeps each entry with probability ``1 - p'`` and the
    factor ``1 / (1 - p')`` that makes its expectation exact, where ``p'`` is ``p`` rounded to a
    multiple of 2^-8 (at most 0.002 from ``p``; at most 255/256 below ``p = 1``, where all is dropped).

    Each entry compares 8 random bits with a threshold; one 64-bit draw of the generator
    gives the bits of eight entries (``random_`` costs the same per element whatever the
    dtype, so this is 8x fewer draws than one int8 per entry; a poyo_1.3M training step was a few
    percent faster than with 16-bit entries, four per draw: ``benchmarks/dropout_cost.py``).
    Ask for the features' dtype when the mask multiplies them: a bool mask would be converted
    by a copy of its own in the product and again in its backward (measured 3x slower)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if p == 1:  # everything dropped (the threshold would not fit the entries' dtype)
        return torch.zeros(shape, dtype=dtype, device=device), 0.0
    threshold = min(round(p * 2**_DROP_BITS), 2**_DROP_BITS - 1)  # p' < 1 keeps the factor finite
    n = math.prod(shape)
    if torch.compiler.is_compiling():  # torch.compile traces neither random_ nor out=; 2^63 - 1 is never drawn
        bits = torch.randint(-(2**63), 2**63 - 1, ((n * _DROP_BITS + 63) // 64,), dtype=torch.int64, device=device)
        keep = None
    else:
        bits = torch.empty((n * _DROP_BITS + 63) // 64, dtype=torch.int64, device=device).random_(-(2**63), None)
        keep = torch.empty(shape, dtype=dtype, device=device)
    entries = bits.view(_ENTRY_DTYPES[_DROP_BITS])[:n].view(shape)  # signed: centred on 0
    keep = torch.ge(entries, threshold - 2 ** (_DROP_BITS - 1), out=keep)
    return keep.to(dtype), 2**_DROP_BITS / (2**_DROP_BITS - threshold)


def math_attention(q, k, v, p: float = 0.0, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention with dropout ``p`` on the weights, for ``(..., N, D)`` queries, keys and
    values (heads before tokens, as SDPA takes them); ``key_mask`` (``(..., 1, M)`` bool, True =
    real key) hides padding. The same function as ``F.scaled_dot_product_attention(dropout_p=p)``.

    The softmax runs in the scores' dtype: PyTorch's CPU kernel accumulates bf16 rows in fp32 and
    gives the same values as an explicit fp32 softmax rounded to bf16, without two copies of the
    weights. The ``1 / (1 - p)`` factor scales the (smaller) output instead of the weights."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    weights = scores.float().softmax(-1) if scores.dtype == torch.float16 else scores.softmax(-1)
    if p == 0:
        return weights.to(v.dtype) @ v
    keep, factor = keep_mask(weights.shape, p, weights.device, weights.dtype)
    return ((weights * keep).to(v.dtype) @ v) * factor


def _cpu_switch() -> str:
    return os.environ.get("POYO_CPU_ATTENTION", "math")


def own_dropout(x: torch.Tensor, p: float) -> bool:
    """Whether dropout on ``x``'s device draws its mask with :func:`keep_mask` (CPU, unless ``POYO_CPU_ATTENTION=sdpa``)."""
    return p > 0 and x.device.type == "cpu" and _cpu_switch() != "sdpa"


def own_kernel(q: torch.Tensor, p: float) -> bool:
    """Whether attention on ``q`` runs :func:`math_attention` instead of PyTorch's SDPA: on CPU when
    training (gradients or dropout) or in bf16/fp16, unless ``POYO_CPU_ATTENTION=sdpa``. There,
    SDPA's CPU kernels draw dropout masks with ``bernoulli_`` and their backward is slow for POYO's
    small heads (a measured 1.2-1.5x the plain products' forward + backward in fp32, up to 3.8x in
    bf16: benchmarks/cpu_attention.py); and in bf16 even their forward took 1.6-2.7x as long as the
    plain products (same script, AVX512-BF16; a poyo_1.3M evaluation forward 1.37x). fp32 inference
    keeps SDPA's fused forward: a whole evaluation forward took as long either way there (SDPA
    faster over a batch's latents, slower over one window's spikes), and it never holds a whole
    score matrix."""
    if q.device.type != "cpu" or _cpu_switch() == "sdpa":
        return False
    return p > 0 or (torch.is_grad_enabled() and q.requires_grad) or q.dtype in (torch.bfloat16, torch.float16)


def _sdpa(q, k, v, q_layout, kv_layout, p):
    mask = None if kv_layout.full else kv_layout.mask[:, None, None, :]
    if own_kernel(q, p):
        return math_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), p, mask).transpose(1, 2)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, dropout_p=p
    )
    return out.transpose(1, 2)


def bucket(n: int) -> int:
    """``n`` rounded up to a multiple of ``max(64, 2^(floor(log2 n) - 4))``: at most 1/16 more,
    16 sizes per doubling (multiples of 64 below 2,048).

    In bf16, PyTorch's CPU matrix products go through oneDNN, which compiles a kernel for each new
    shape (about 4.5 ms more than a seen shape, measured: benchmarks/cpu_attention.py). A packed
    batch has a new token count, and each of its windows its own spike count, at nearly every
    step; matrix sizes rounded with this function keep the set of shapes small
    (:func:`_bucketed_math`, :class:`poyo.model.layers.Linear`)."""
    step = max(64, 1 << max(0, n.bit_length() - 5))
    return -(-n // step) * step


def _bucketed_math(q, k, v, p):
    """:func:`math_attention` of one sample (``(N, H, D)`` tokens first; or ``(G, N, H, D)``, a
    group of samples of one shape) with its query and key counts rounded up by :func:`bucket`:
    zero query rows (dropped after) and masked keys."""
    nq, nk = q.shape[-3], k.shape[-3]
    mq, mk = bucket(nq), bucket(nk)
    if mq != nq:
        q = F.pad(q, (0, 0, 0, 0, 0, mq - nq))
    mask = None
    if mk != nk:
        k, v = F.pad(k, (0, 0, 0, 0, 0, mk - nk)), F.pad(v, (0, 0, 0, 0, 0, mk - nk))
        mask = (torch.arange(mk, device=k.device) < nk)[None, None, :]
    out = math_attention(q.transpose(-3, -2), k.transpose(-3, -2), v.transpose(-3, -2), p, mask)
    return out.transpose(-3, -2)[..., :nq, :, :]


def _loop(q, k, v, q_layout, kv_layout, p):
    own = own_kernel(q, p)

    def kernel(a, b, c):  # (..., N, H, D) tokens before heads; leading dims batch samples of one shape
        a, b, c = (x.transpose(-3, -2) for x in (a, b, c))
        out = math_attention(a, b, c, p) if own else F.scaled_dot_product_attention(a, b, c, dropout_p=p)
        return out.transpose(-3, -2)

    # bf16 products compile a oneDNN kernel per new shape: ragged samples take bucketed sizes
    ragged = (
        (lambda a, b, c: _bucketed_math(a, b, c, p)) if own and q.dtype in (torch.bfloat16, torch.float16) else kernel
    )
    if q_layout.uniform and kv_layout.uniform:  # one batched call, no mask needed
        b = q_layout.batch_size
        return kernel(q.unflatten(0, (b, -1)), k.unflatten(0, (b, -1)), v.unflatten(0, (b, -1))).flatten(0, 1)
    # split (not slicing): its backward concatenates the per-sample gradients once, where
    # slices would each scatter into a zero-filled copy of the whole batch.
    qs, ks, vs = q.split(q_layout.seqlens), k.split(kv_layout.seqlens), v.split(kv_layout.seqlens)
    # Samples of one shape (the latents of windows of one length, the output queries of windows
    # holding as many behaviour samples) run as one batched call: with half_windows a batch's
    # latents come in two lengths, and a call per window made 250 S1 steps 1.16x as long (benchmarks/README.md).
    groups: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(zip(q_layout.seqlens, kv_layout.seqlens)):
        groups.setdefault(shape, []).append(i)
    outs = list(qs)  # samples without queries stay empty
    for (nq, _), idx in groups.items():
        if nq == 0:
            continue
        if len(idx) == 1:
            outs[idx[0]] = ragged(qs[idx[0]], ks[idx[0]], vs[idx[0]])
            continue
        out = ragged(*(torch.stack([xs[i] for i in idx]) for xs in (qs, ks, vs)))
        # unbind, not out[j]: its backward stacks the samples' gradients once, where each out[j]'s
        # fills a zero copy of the whole group (1.5-2% of an S1 step: benchmarks/gathers.py)
        for i, o in zip(idx, out.unbind(0)):
            outs[i] = o
    return torch.cat(outs)


def _nested(q, k, v, q_layout, kv_layout, p):
    def jagged(x, layout):
        offsets = layout.cu_seqlens.to(device=x.device, dtype=torch.int64)
        return torch.nested.nested_tensor_from_jagged(x.contiguous(), offsets, max_seqlen=layout.max_seqlen).transpose(
            1, 2
        )

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nested tensors is in prototype stage.*")
        out = F.scaled_dot_product_attention(
            jagged(q, q_layout), jagged(k, kv_layout), jagged(v, kv_layout), dropout_p=p
        )
    return out.transpose(1, 2).values()


def _varlen(q, k, v, q_layout, kv_layout, p):
    from torch.nn.attention.varlen import varlen_attn

    cu_q, cu_k = q_layout.cu_seqlens.to(q.device, torch.int32), kv_layout.cu_seqlens.to(q.device, torch.int32)
    return varlen_attn(q, k, v, cu_q, cu_k, q_layout.max_seqlen, kv_layout.max_seqlen)


def _xformers(q, k, v, q_layout, kv_layout, p):
    import xformers.ops as xops

    q_lens, kv_lens = q_layout.seqlens, kv_layout.seqlens
    if 0 in q_lens:  # samples without queries (no behaviour in the window): leave their keys out
        keep = [i for i, n in enumerate(q_lens) if n > 0]
        if not keep:
            return q.new_zeros(q.shape)
        kb = kv_layout.bounds
        k, v = (torch.cat([x[kb[i] : kb[i + 1]] for i in keep]) for x in (k, v))
        q_lens, kv_lens = [q_lens[i] for i in keep], [kv_lens[i] for i in keep]
    bias = xops.fmha.BlockDiagonalMask.from_seqlens(q_seqlen=q_lens, kv_seqlen=kv_lens)
    return xops.memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias, p=p)[0]


_KERNELS = {"sdpa": _sdpa, "loop": _loop, "nested": _nested, "varlen": _varlen, "xformers": _xformers}

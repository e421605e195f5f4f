"""Batch tokenized samples in one of two layouts.

A tokenized sample is a dict. A nested dict is a *sequence group* (e.g. ``"input"``:
spike tokens) whose tensors share their first dimension, which varies per sample;
tensors and numbers at the top level are stacked (Python floats as float64);
strings become lists.

* :func:`collate_padded`: each group's tensors padded to ``(B, N_max, ...)`` with a
  boolean ``mask`` (True = real token), for attention with key masks.
* :func:`collate_packed`: each group's tensors concatenated to ``(sum N, ...)`` with
  ``cu_seqlens`` (int32, ``(B + 1,)``), ``max_seqlen`` and ``batch_index``, for
  variable-length attention kernels.

Both are built from the same samples and carry the same tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

RESERVED = ("mask", "cu_seqlens", "max_seqlen", "batch_index", "seqlens")


def _tensor(x, where: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{where}: expected a tensor or numpy array, got {type(x).__name__}")


def _groups(samples: Sequence[Mapping]) -> tuple[dict, dict, dict, dict]:
    """Split samples into sequence groups (with per-sample lengths), stacked values and
    string lists, checking keys and shapes."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    keys = set(samples[0])
    for i, s in enumerate(samples):
        if not isinstance(s, Mapping):
            raise TypeError(f"sample {i}: expected a dict, got {type(s).__name__}")
        if set(s) != keys:
            raise ValueError(f"sample {i} has keys {sorted(s)}, sample 0 has {sorted(keys)}")
    seqs, seqlens, stack, strings = {}, {}, {}, {}
    for key in samples[0]:
        first = samples[0][key]
        if isinstance(first, Mapping):
            fields = list(first)
            if not fields:
                raise ValueError(f"sequence group '{key}' is empty")
            bad = [f for f in fields if f in RESERVED]
            if bad:
                raise ValueError(f"sequence group '{key}' uses reserved field names {bad}")
            group, lens = [], []
            for i, s in enumerate(samples):
                if set(s[key]) != set(fields):
                    raise ValueError(f"sample {i}: group '{key}' has fields {sorted(s[key])}, sample 0 has {sorted(fields)}")
                tensors = {f: _tensor(s[key][f], f"sample {i} '{key}.{f}'") for f in fields}
                lengths = {f: t.shape[0] if t.dim() else None for f, t in tensors.items()}
                if len(set(lengths.values())) != 1 or None in lengths.values():
                    raise ValueError(f"sample {i}: fields of group '{key}' must share their first dimension, got {lengths}")
                group.append(tensors)
                lens.append(next(iter(lengths.values())))
            seqs[key], seqlens[key] = group, lens
        elif isinstance(first, str):
            strings[key] = [s[key] for s in samples]
        elif isinstance(first, float):  # absolute times: keep float64 precision
            stack[key] = torch.tensor([s[key] for s in samples], dtype=torch.float64)
        else:
            stack[key] = torch.stack([torch.as_tensor(s[key]) for s in samples])
    return seqs, seqlens, stack, strings


def collate_padded(samples: Sequence[Mapping], pad_to_multiple: int = 1) -> dict:
    """Pad every sequence group to the longest sample (rounded up to ``pad_to_multiple``)."""
    if pad_to_multiple < 1:
        raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    seqs, seqlens, out, strings = _groups(samples)
    out.update(strings)
    for key, group in seqs.items():
        lengths = seqlens[key]
        n = max(lengths)
        n = -(-n // pad_to_multiple) * pad_to_multiple
        batch = {}
        for f in group[0]:
            first = group[0][f]
            padded = first.new_zeros((len(group), n, *first.shape[1:]))
            for i, t in enumerate(group):
                padded[i, : t[f].shape[0]] = t[f]
            batch[f] = padded
        batch["mask"] = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
        out[key] = batch
    return out


def collate_packed(samples: Sequence[Mapping]) -> dict:
    """Concatenate every sequence group along tokens, with cumulative lengths."""
    seqs, seqlens, out, strings = _groups(samples)
    out.update(strings)
    for key, group in seqs.items():
        lengths = torch.tensor(seqlens[key], dtype=torch.int64)
        batch = {f: torch.cat([t[f] for t in group]) for f in group[0]}
        batch["cu_seqlens"] = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
        batch["max_seqlen"] = int(lengths.max())
        batch["batch_index"] = torch.repeat_interleave(torch.arange(len(group)), lengths)
        out[key] = batch
    return out


def unpad(batch_group: Mapping, field: str) -> list[torch.Tensor]:
    """Per-sample tensors back from a padded group."""
    return [t[m] for t, m in zip(batch_group[field], batch_group["mask"])]


def unpack(batch_group: Mapping, field: str) -> list[torch.Tensor]:
    """Per-sample tensors back from a packed group."""
    cu = batch_group["cu_seqlens"].tolist()
    return [batch_group[field][a:b] for a, b in zip(cu[:-1], cu[1:])]

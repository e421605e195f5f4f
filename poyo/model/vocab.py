"""An embedding table whose rows are named by string ids (units, sessions).

The ids travel with the weights: the state dict holds ``<prefix>weight`` and
``<prefix>vocab``, a plain list of strings, so checkpoints load with
``torch.load(weights_only=True)``. Loading maps rows by id, so the order of ids in the
checkpoint does not matter; a table with no ids yet adopts the checkpoint's ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn


def _as_id_list(ids: Iterable[str], what: str) -> list[str]:
    if isinstance(ids, str):
        raise TypeError(f"{what}: expected a list of ids, got the single string {ids!r}")
    out = [i.decode() if isinstance(i, bytes) else i for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
    bad = [i for i in out if not isinstance(i, str) or not i]
    if bad:
        raise TypeError(f"{what}: ids must be non-empty strings, got {bad[:3]!r}")
    seen, dup = set(), []
    for i in out:
        if i in seen:
            dup.append(i)
        seen.add(i)
    if dup:
        raise ValueError(f"{what}: duplicate ids {sorted(set(dup))[:5]}")
    return out


def _examples(ids: Iterable[str], n: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(repr(i) for i in ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


class VocabEmbedding(nn.Module):
    """``nn.Embedding`` with named rows: ``extend``, ``subset`` and ``index`` work by id."""

    def __init__(
        self, dim: int, ids: Iterable[str] = (), *, init_scale: float = 0.02, seed: int = 0, name: str = "vocabulary"
    ):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim, self.init_scale, self.name = dim, init_scale, name
        self.ids: list[str] = []
        self._lookup: dict[str, int] = {}
        self.weight = nn.Parameter(torch.empty(0, dim))
        self.extend(ids, seed=seed)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, i: str) -> bool:
        return i in self._lookup

    def extra_repr(self) -> str:
        return f"{len(self.ids)} ids, dim={self.dim}"

    def _set(self, ids: list[str], weight: torch.Tensor) -> None:
        self.ids = ids
        self._lookup = {i: r for r, i in enumerate(ids)}
        self._fingerprint = None
        # Keep the Parameter object (hooks and references stay valid); only its data changes.
        self.weight.data = weight

    def extend(self, ids: Iterable[str], *, exist_ok: bool = True, seed: int = 0) -> list[str]:
        """Append rows for the ids not yet present (N(0, init_scale), drawn with ``seed``);
        existing rows are untouched. Returns the ids added."""
        ids = _as_id_list(ids, f"{self.name}.extend")
        old = [i for i in ids if i in self._lookup]
        if old and not exist_ok:
            raise ValueError(f"{self.name}.extend: ids already present: {_examples(old)}")
        new = [i for i in ids if i not in self._lookup]
        if new:
            gen = torch.Generator().manual_seed(seed)
            rows = torch.randn(len(new), self.dim, generator=gen) * self.init_scale
            w = self.weight.detach()
            self._set(self.ids + new, torch.cat([w, rows.to(device=w.device, dtype=w.dtype)]))
        return new

    def subset(self, ids: Iterable[str]) -> None:
        """Keep only ``ids``, in that order, with their current rows."""
        ids = _as_id_list(ids, f"{self.name}.subset")
        missing = [i for i in ids if i not in self._lookup]
        if missing:
            raise KeyError(f"{self.name}.subset: unknown ids {_examples(missing)}")
        rows = torch.tensor([self._lookup[i] for i in ids], dtype=torch.long, device=self.weight.device)
        self._set(ids, self.weight.detach()[rows].clone())

    def index(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row of each id, int64; unknown ids raise a KeyError naming them."""
        try:
            return np.fromiter((self._lookup[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError:
            missing = [i for i in ids if i not in self._lookup]
            raise KeyError(
                f"{len(missing)} ids not in the {self.name} ({len(self.ids)} ids): {_examples(missing)}"
            ) from None

    @property
    def fingerprint(self) -> str:
        """Short digest of the ordered ids: changes whenever a row moves, appears or goes."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = hashlib.sha1("\n".join(self.ids).encode()).hexdigest()[:12]
        return self._fingerprint

    def lookup(self) -> dict[str, int]:
        """A copy of the id -> row map (what the tokenizer ships to DataLoader workers)."""
        return dict(self._lookup)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        if not self.ids:
            raise RuntimeError(f"the {self.name} is empty: add ids with extend() (or load a checkpoint) first")
        return nn.functional.embedding(index, self.weight)

    # --- state dict: ids as a plain list of strings next to the weight -------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "vocab"] = list(self.ids)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + "vocab"
        if key not in state_dict:
            missing_keys.append(key)
            return
        ids = state_dict.pop(key)
        weight = state_dict.get(prefix + "weight")
        try:
            ids = _as_id_list(ids, f"checkpoint {key}")
        except (TypeError, ValueError) as e:
            error_msgs.append(str(e))
            return
        if weight is None or weight.shape != (len(ids), self.dim):
            shape = None if weight is None else tuple(weight.shape)
            error_msgs.append(
                f"{prefix}weight: expected shape ({len(ids)}, {self.dim}) for {len(ids)} ids, got {shape}"
            )
            return
        if not self.ids:  # adopt the checkpoint's vocabulary
            self._set(ids, torch.empty(len(ids), self.dim, dtype=self.weight.dtype, device=self.weight.device))
        elif set(ids) != set(self.ids):
            extra, lacking = set(ids) - set(self.ids), set(self.ids) - set(ids)
            msg = f"{key}: the checkpoint's {len(ids)} ids differ from this model's {len(self.ids)}"
            if extra:
                msg += f"; only in the checkpoint: {_examples(extra)}"
            if lacking:
                msg += f"; only in the model: {_examples(lacking)}"
            error_msgs.append(msg + " (load into an empty vocabulary, or extend/subset first)")
            return
        else:  # same ids, maybe another order: reorder the checkpoint's rows to ours
            pos = {i: r for r, i in enumerate(ids)}
            state_dict[prefix + "weight"] = weight[torch.tensor([pos[i] for i in self.ids], dtype=torch.long)]
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

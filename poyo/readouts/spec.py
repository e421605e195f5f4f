"""What the model can predict: a small registry of readouts, and their losses.

A readout names a behaviour (``"cursor_velocity_2d"``), its size and kind. The model
holds one linear head per readout; every output query says which head reads it.
Continuous readouts are trained with a weighted MSE on normalised targets, categorical
ones with a weighted cross-entropy over ``dim`` classes. A circular readout decodes
``dim`` angles (head direction, reach angle): each is predicted as its (cos, sin), so
the head has ``2 * dim`` outputs and an angle near +180 deg is close to one near -180 deg.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

KINDS = ("continuous", "categorical", "circular")


@dataclass(frozen=True)
class ReadoutSpec:
    name: str
    dim: int  # values per sample (number of classes for a categorical readout, angles for a circular one)
    kind: str  # "continuous" | "categorical" | "circular"
    key: str  # default behaviour key in the session files, e.g. "cursor.vel"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"readout '{self.name}': kind must be one of {KINDS}, got {self.kind!r}")
        if self.dim < 1 or (self.kind == "categorical" and self.dim < 2):
            raise ValueError(f"readout '{self.name}': dim {self.dim} is too small for a {self.kind} readout")

    @property
    def out_dim(self) -> int:
        """The head's output size: ``dim``, or (cos, sin) per angle for a circular readout."""
        return 2 * self.dim if self.kind == "circular" else self.dim


READOUTS: dict[str, ReadoutSpec] = {}


def register_readout(spec: ReadoutSpec, *, replace: bool = False) -> ReadoutSpec:
    """Add a readout to the registry (``replace=True`` to redefine an existing name)."""
    if spec.name in READOUTS and not replace and READOUTS[spec.name] != spec:
        raise ValueError(f"readout '{spec.name}' is already registered as {READOUTS[spec.name]}")
    READOUTS[spec.name] = spec
    return spec


def get_readout(name: str) -> ReadoutSpec:
    if name not in READOUTS:
        raise KeyError(
            f"unknown readout '{name}'; registered: {sorted(READOUTS)} (add one with poyo.readouts.register_readout)"
        )
    return READOUTS[name]


for _spec in (
    ReadoutSpec("cursor_velocity_2d", 2, "continuous", "cursor.vel"),
    ReadoutSpec("cursor_position_2d", 2, "continuous", "cursor.pos"),
    ReadoutSpec("hand_velocity_2d", 2, "continuous", "hand.vel"),
    ReadoutSpec("finger_velocity_2d", 2, "continuous", "finger.vel"),
    ReadoutSpec("reach_target_8", 8, "categorical", "trials.target_id"),
):
    register_readout(_spec)


def readout_loss(
    spec: ReadoutSpec,
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    denominator: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean of the per-query loss, ``sum(w * l) / sum(w)`` (0 when all weights are 0).
    ``denominator`` replaces ``sum(w)`` (data parallelism: the mean weight sum over ranks).

    Continuous and circular (on cos/sin): squared error averaged over dims. Categorical: cross-entropy with integer
    class targets. Queries with zero weight never contribute, even if their target is NaN.
    """
    if pred.shape[0] != target.shape[0] or weight.shape != (pred.shape[0],):
        raise ValueError(
            f"readout '{spec.name}': {pred.shape[0]} predictions, {target.shape[0]} targets, weights {tuple(weight.shape)}"
        )
    weight = weight.to(pred.dtype if pred.is_floating_point() else torch.float32)
    live = weight > 0
    if spec.kind != "categorical":
        target = torch.where(
            live[:, None], target.to(pred.dtype), torch.zeros((), dtype=pred.dtype, device=pred.device)
        )
        per_query = (pred - target).pow(2).mean(-1)
    else:
        per_query = F.cross_entropy(pred.float(), torch.where(live, target.long(), 0), reduction="none")
    per_query = torch.where(live, per_query, torch.zeros((), dtype=per_query.dtype, device=per_query.device))
    denominator = weight.sum() if denominator is None else denominator.to(weight.dtype)
    return (per_query * weight).sum() / denominator.clamp_min(torch.finfo(weight.dtype).tiny)

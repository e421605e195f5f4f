"""Optimiser and learning-rate schedule.

* :class:`Lamb`: Adam moments, then a per-tensor trust ratio ``||w|| / ||update||`` (the
  weight norm clamped to ``clamp``), without bias correction, as in the POYO recipe. For
  parameters in a ``sparse`` group (the unit and session vocabularies) only the rows with
  a non-zero gradient are updated, and the other rows keep their moments untouched: a
  unit absent from a batch is not decayed, pushed by stale momentum, or reset.
* :func:`schedule`: constant for the first ``constant_fraction`` of the steps, then a
  cosine down to ``final_factor`` of the peak. The betas never change (no momentum
  cycling).
* :class:`OptimConfig`: the settings of both, in one place; the peak learning rate is
  ``base_lr`` times the *global* batch size (:meth:`OptimConfig.peak_lr`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

LAMB_MODES = ("poyo", "torch_brain")


class Lamb(torch.optim.Optimizer):
    """LAMB without bias correction; rows of ``sparse`` groups without gradient are not updated.

    ``mode`` says what happens to those rows (in a batch that leaves some out):

    * ``"poyo"`` (default): they keep their moments, and the trust ratio is taken over the
      rows the batch touched, so a unit absent from a batch is neither decayed nor reset.
    * ``"torch_brain"``: as torch_brain's ``SparseLamb`` (0.1.x): their moments are reset to
      zero and the trust ratio is taken over the whole matrix (the absent rows' weight decay
      included), for reproducing published runs exactly.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        clamp: float = 10.0,
        mode: str = "poyo",
    ):
        if mode not in LAMB_MODES:
            raise ValueError(f"Lamb mode must be one of {LAMB_MODES}, got {mode!r}")
        self.mode = mode
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if eps <= 0 or weight_decay < 0 or clamp <= 0:
            raise ValueError(f"need eps > 0, weight_decay >= 0, clamp > 0; got {eps}, {weight_decay}, {clamp}")
        super().__init__(
            params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, clamp=clamp, sparse=False)
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError(
                        "Lamb does not take sparse gradient tensors; use dense embeddings with a 'sparse' group"
                    )
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                rows = g.abs().sum(-1) != 0 if group["sparse"] and p.dim() == 2 else None  # rows this batch touched
                if rows is not None and self.mode == "torch_brain" and not rows.all():
                    m[~rows], v[~rows] = 0.0, 0.0  # absent rows lose their moments
                    m[rows] = b1 * m[rows] + (1 - b1) * g[rows]
                    v[rows] = b2 * v[rows] + (1 - b2) * g[rows] * g[rows]
                    update = m / (v.sqrt() + group["eps"]) + group["weight_decay"] * p  # the whole matrix
                    p[rows] = p[rows] - group["lr"] * _trust(p, update, group["clamp"]) * update[rows]
                elif rows is not None and self.mode == "poyo":
                    w, gr, mr, vr = p[rows], g[rows], m[rows], v[rows]
                    mr.mul_(b1).add_(gr, alpha=1 - b1)
                    vr.mul_(b2).addcmul_(gr, gr, value=1 - b2)
                    update = mr / (vr.sqrt() + group["eps"]) + group["weight_decay"] * w
                    m[rows], v[rows] = mr, vr
                    p[rows] = w - group["lr"] * _trust(w, update, group["clamp"]) * update
                else:
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    update = m / (v.sqrt() + group["eps"]) + group["weight_decay"] * p
                    p.sub_(group["lr"] * _trust(p, update, group["clamp"]) * update)
        return loss


def _trust(w: torch.Tensor, update: torch.Tensor, clamp: float) -> torch.Tensor:
    w_norm, u_norm = w.norm().clamp(max=clamp), update.norm()
    return torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm.clamp_min(1e-30), torch.ones_like(w_norm))


def schedule(
    total_steps: int, constant_fraction: float = 0.5, final_factor: float = 1e-4, warmup_fraction: float = 0.0
):
    """Multiplier of the peak learning rate at each step (for ``LambdaLR``): times a linear
    ramp from ``1 / warmup`` to 1 over the first ``warmup_fraction`` of the steps, if any."""
    if (
        total_steps < 1
        or not 0 <= constant_fraction <= 1
        or not 0 <= final_factor <= 1
        or not 0 <= warmup_fraction <= 1
    ):
        raise ValueError(
            f"bad schedule: total_steps={total_steps}, constant_fraction={constant_fraction}, "
            f"final_factor={final_factor}, warmup_fraction={warmup_fraction}"
        )
    hold = int(round(constant_fraction * total_steps))
    warmup = int(round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        ramp = (step + 1) / warmup if step < warmup else 1.0
        if step < hold:
            return ramp
        x = min(1.0, (step - hold) / max(1, total_steps - hold))
        return ramp * (final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * x)))

    return factor


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Vocabularies in a sparse group (row-wise updates), everything else dense."""
    vocab = [model.unit_emb.weight, model.session_emb.weight]
    ids = {id(p) for p in vocab}
    rest = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    groups = [
        dict(params=[p for p in vocab if p.requires_grad], sparse=True, weight_decay=weight_decay),
        dict(params=rest, weight_decay=weight_decay),
    ]
    return [g for g in groups if g["params"]]


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser and its schedule (presets: ``poyo/configs/optim/*.yaml``).

    Args:
        name: ``"adamw"`` or ``"lamb"`` (the POYO recipe's; vocabulary rows without gradient keep their moments).
        base_lr: the peak learning rate per sample of the GLOBAL batch: peak lr = ``base_lr * batch_size``.
        weight_decay: decoupled weight decay, for every parameter.
        constant_fraction: the share of the steps run at the peak lr ...
        final_factor: ... before a cosine down to this fraction of it.
        warmup_fraction: the share of the steps over which the lr first rises linearly to its
            schedule (0: none, the POYO recipe).
        eps: added to the root of the second moment (Adam, LAMB). A weight whose gradient is
            far below it moves by less than lr: a larger eps damps steps driven by gradients
            that are rounding noise (tests/test_ddp.py compares two summation orders with 1e-4).
        mode: ``"poyo"`` (default), or ``"torch_brain"`` to follow torch_brain's recipe exactly
            (LAMB only): ``SparseLamb``'s handling of absent vocabulary rows (see :class:`Lamb`),
            and PyTorch's ``OneCycleLR``, whose learning rates follow the same schedule (its
            cosine starts one step earlier) and which also cycles beta1 from 0.95 to 0.85 and back.
    """

    name: str = "adamw"
    base_lr: float = 3.125e-5
    weight_decay: float = 1e-4
    constant_fraction: float = 0.5
    final_factor: float = 1e-4
    eps: float = 1e-6
    mode: str = "poyo"
    warmup_fraction: float = 0.0

    def __post_init__(self):
        if self.name not in ("adamw", "lamb"):
            raise ValueError(f"unknown optimizer {self.name!r}; choose 'lamb' or 'adamw'")
        if not self.base_lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"need base_lr > 0 and weight_decay >= 0, got {self.base_lr}, {self.weight_decay}")
        if not 0 < self.eps < 1:
            raise ValueError(f"optim.eps must be in (0, 1), got {self.eps}")
        if not (0 <= self.constant_fraction <= 1 and 0 <= self.final_factor <= 1):
            raise ValueError(
                f"constant_fraction and final_factor must be in [0, 1], got {self.constant_fraction}, {self.final_factor}"
            )
        if not 0 <= self.warmup_fraction <= 1:
            raise ValueError(f"optim.warmup_fraction must be in [0, 1], got {self.warmup_fraction}")
        if self.mode not in LAMB_MODES:
            raise ValueError(f"optim.mode must be one of {LAMB_MODES}, got {self.mode!r}")
        if self.mode == "torch_brain" and self.name != "lamb":
            raise ValueError("optim.mode=torch_brain reproduces torch_brain's SparseLamb: use it with optim=lamb")
        if self.mode == "torch_brain" and self.warmup_fraction:
            raise ValueError("optim.mode=torch_brain follows torch_brain's OneCycleLR, which has no warm-up here")

    @classmethod
    def from_name(cls, name: str) -> OptimConfig:
        """A preset shipped with poyo: ``adamw`` or ``lamb`` (``poyo/configs/optim``)."""
        from poyo.configs import preset

        return cls.from_dict(preset("optim", name))

    @classmethod
    def from_dict(cls, settings: Mapping) -> OptimConfig:
        """From plain settings (a resolved YAML group; Hydra's ``_target_`` key is ignored)."""
        return cls(**{k: v for k, v in settings.items() if k != "_target_"})

    def peak_lr(self, global_batch_size: int) -> float:
        if global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
        return self.base_lr * global_batch_size

    def build(self, model: nn.Module, *, global_batch_size: int, total_steps: int):
        """The optimiser and its per-step ``LambdaLR`` schedule for ``total_steps`` steps."""
        lr = self.peak_lr(global_batch_size)
        opt = build_optimizer(
            model, name=self.name, lr=lr, weight_decay=self.weight_decay, eps=self.eps, mode=self.mode
        )
        if self.mode == "torch_brain":  # torch_brain's scheduler itself: same lr, and beta1 cycled
            one_cycle = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=lr, total_steps=total_steps, pct_start=self.constant_fraction, anneal_strategy="cos",
                div_factor=1.0, final_div_factor=1.0 / self.final_factor,
            )  # fmt: skip
            return opt, one_cycle
        factor = schedule(total_steps, self.constant_fraction, self.final_factor, self.warmup_fraction)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def build_optimizer(
    model: nn.Module,
    *,
    name: str,
    lr: float,
    weight_decay: float = 1e-4,
    betas=(0.9, 0.999),
    eps: float = OptimConfig.eps,
    mode: str = "poyo",
):
    """LAMB (``name="lamb"``, in ``mode``: see :class:`Lamb`) or AdamW at peak learning rate ``lr``."""
    groups = param_groups(model, weight_decay)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, mode=mode)
    if name == "adamw":
        for g in groups:
            g.pop("sparse", None)
        # One kernel per weight tensor instead of about ten: poyo_mini's update 1.95 -> 0.38 ms on a
        # 2-core CPU (benchmarks/optimizer_step.py); on a GPU ten times fewer launches. Same numbers to rounding.
        fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused or None)
    raise ValueError(f"unknown optimizer {name!r}; choose 'lamb' or 'adamw'")

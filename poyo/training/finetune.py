"""Adapting a pretrained POYO to new sessions.

Three modes (``train.py finetune=<mode> finetune.checkpoint=PATH``):

* ``unit_identification``: only the unit and session embeddings learn; the backbone,
  latents, token types and readouts stay exactly as pretrained. The cheapest way to
  bring a new recording into a pretrained model.
* ``full``: everything learns from the first step.
* ``gradual``: embeddings only for ``unfreeze_epoch`` epochs, then everything.

New units and sessions start from the embeddings :mod:`poyo.training.unit_init` predicts
from their firing (``finetune.init=statistics``, the default) or at random (``random``).

Freezing discards the gradients of the frozen parameters before every optimiser step
(so they are neither updated nor decayed, and do not count in gradient clipping), which
works the same in one process and under DDP. While the backbone is frozen, the rows of
ids that were in the vocabulary before adaptation are restored after every step too, so
sessions the model already knew keep predicting exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch

from poyo.model import POYO, load_pretrained
from poyo.readouts import ReadoutConfig, keep_pretrained_normalisation
from poyo.training.unit_init import init_new_embeddings, merge_features, unit_features

if TYPE_CHECKING:
    from poyo.training.config import FinetuneConfig
    from poyo.training.module import DataModule

MODES = ("none", "unit_identification", "full", "gradual")


def adapt_vocabularies(
    model: POYO, unit_ids: Iterable[str], session_ids: Iterable[str], *, subset: bool = True, seed: int = 0
) -> dict[str, list[str]]:
    """Add the new ids (existing rows untouched); with ``subset``, keep only these ids.

    Returns the ids that were added, per vocabulary. Build a new tokenizer afterwards.
    """
    unit_ids, session_ids = list(unit_ids), list(session_ids)
    added = {
        "units": model.unit_emb.extend(unit_ids, seed=seed),
        "sessions": model.session_emb.extend(session_ids, seed=seed + 1),
    }
    if subset:
        model.unit_emb.subset(unit_ids)
        model.session_emb.subset(session_ids)
    return added


def backbone_parameters(model: POYO) -> list[torch.nn.Parameter]:
    """Every parameter except the unit and session vocabularies."""
    vocab = {id(model.unit_emb.weight), id(model.session_emb.weight)}
    return [p for p in model.parameters() if id(p) not in vocab]


def unfreeze_epoch(mode: str, epochs: int | None = None) -> int | None:
    """The epoch at which the backbone starts learning: 0 (full), ``epochs`` (gradual), None (never)."""
    if mode not in MODES or mode == "none":
        raise ValueError(f"fine-tuning mode must be one of {MODES[1:]}, got {mode!r}")
    if mode == "full":
        return 0
    if mode == "unit_identification":
        return None
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"finetune=gradual needs finetune.unfreeze_epoch >= 1 (embedding-only epochs), got {epochs!r}")
    return epochs


class BackboneFreezer(L.Callback):
    """Keeps the backbone fixed before epoch ``unfreeze_at`` (None: for the whole run).

    ``kept_units``/``kept_sessions``: vocabulary ids whose rows stay fixed while the
    backbone is frozen (the pretrained ids, when the vocabulary was not subset).
    """

    def __init__(
        self, model: POYO, unfreeze_at: int | None, *, kept_units: Iterable[str] = (), kept_sessions: Iterable[str] = ()
    ):
        self.model, self.unfreeze_at = model, unfreeze_at
        self.frozen_params = backbone_parameters(model)
        self.kept = [
            (model.unit_emb, model.unit_emb.index(list(kept_units))),
            (model.session_emb, model.session_emb.index(list(kept_sessions))),
        ]
        self.kept = [(emb, torch.as_tensor(rows)) for emb, rows in self.kept if len(rows)]
        self.saved: list[torch.Tensor] = []
        self.frozen = unfreeze_at != 0

    def _update(self, epoch: int) -> None:
        self.frozen = self.unfreeze_at is None or epoch < self.unfreeze_at

    def on_train_start(self, trainer, pl_module) -> None:
        self._update(trainer.current_epoch)
        self.kept = [(emb, rows.to(emb.weight.device)) for emb, rows in self.kept]  # the model may have moved to a GPU
        self.saved = [emb.weight.detach()[rows].clone() for emb, rows in self.kept]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        was = self.frozen
        self._update(trainer.current_epoch)
        if was and not self.frozen and trainer.is_global_zero:
            print(f"\nepoch {trainer.current_epoch}: backbone unfrozen, every parameter learns from now on")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.frozen:
            return
        for p in self.frozen_params:
            p.grad = None
        for emb, rows in self.kept:
            if emb.weight.grad is not None:
                emb.weight.grad[rows] = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.frozen:
            with torch.no_grad():
                for (emb, rows), saved in zip(self.kept, self.saved):
                    emb.weight[rows] = saved.to(emb.weight.device)


def add_heads(model: POYO, names: Sequence[str], *, seed: int = 0) -> POYO:
    """``model`` with new, untrained readout heads ``names`` beside its own (e.g. behaviour heads
    for a model pretrained by masked modelling on spikes alone); every other weight is kept."""
    grown = POYO(
        replace(model.config, readouts=[*model.readout_names, *names]),
        unit_ids=model.unit_emb.ids,
        session_ids=model.session_emb.ids,
        attention=model.attention,
        seed=seed,
    )
    result = grown.load_state_dict(model.state_dict(), strict=False)
    fresh = [k for k in result.missing_keys if not k.startswith(("readout.", "readout_emb."))]
    if result.unexpected_keys or fresh:
        raise RuntimeError(f"adding heads {list(names)} changed other weights: {result.unexpected_keys or fresh}")
    grown.readout_configs, grown.unit_features = model.readout_configs, model.unit_features
    grown.stitch_centres = dict(model.stitch_centres)
    return grown.train(model.training)


def pretrained_for_finetuning(
    ft: FinetuneConfig, dm: DataModule, readouts: list[ReadoutConfig], *, attention: str = "auto", seed: int = 0
) -> tuple[POYO, list[ReadoutConfig], BackboneFreezer]:
    """The pretrained model ``ft.checkpoint`` with the dataset's ids in its vocabularies, and the
    freezing callback ``ft.mode`` asks for (``ft``: the run's ``finetune`` section)."""
    if not ft.checkpoint:
        raise ValueError(f"finetune={ft.mode} needs finetune.checkpoint=PATH (a poyo checkpoint or pretrained .pt)")
    path = str(Path(ft.checkpoint).expanduser().absolute())
    model = load_pretrained(path).train()
    model.attention = attention
    missing = [r.name for r in readouts if r.name not in model.readout_names]
    if missing and ft.mode != "full":
        raise ValueError(
            f"{path}: the pretrained model has no head for readouts {missing} (it has {model.readout_names or 'none'}); "
            f"finetune={ft.mode} keeps the backbone frozen, so a new head would stay untrained: use finetune=full"
        )
    if missing:
        model = add_heads(model, missing, seed=seed)
        print(f"new heads {missing} start untrained and learn with the rest of the model (finetune=full)")
    # The pretrained heads were trained on targets normalised their way: keep it.
    readouts = keep_pretrained_normalisation(model.readout_configs or (), readouts, dm.session_ids)
    before_units, before_sessions = set(model.unit_emb.ids), set(model.session_emb.ids)
    init = ft.init
    added = adapt_vocabularies(model, dm.unit_ids, dm.session_ids, subset=False, seed=seed)
    how = "new unit and session embeddings start at random (finetune.init=random)"
    features = unit_features(dm.train_set, readouts, dm.session_ids)
    if init == "statistics":
        how = init_new_embeddings(
            model, features, added["units"], added["sessions"], sorted(before_sessions), seed=seed
        )
    if ft.subset:
        model.unit_emb.subset(dm.unit_ids)
        model.session_emb.subset(dm.session_ids)
    model.unit_features = merge_features(model.unit_features, features, keep=model.unit_emb.ids)
    print(
        f"\nfine-tuning ({ft.mode}) {path}: {len(added['units'])} new units and {len(added['sessions'])} new sessions "
        f"({len(dm.unit_ids) - len(added['units'])} units, {len(dm.session_ids) - len(added['sessions'])} sessions already known); "
        f"vocabularies {'subset to this data' if ft.subset else 'keep the pretrained ids'}: {len(model.unit_emb)} units, {len(model.session_emb)} sessions; "
        + how
    )
    kept_units = sorted(before_units - set(dm.unit_ids)) if not ft.subset else []
    kept_sessions = sorted(before_sessions - set(dm.session_ids)) if not ft.subset else []
    freezer = BackboneFreezer(
        model, unfreeze_epoch(ft.mode, ft.unfreeze_epoch), kept_units=kept_units, kept_sessions=kept_sessions
    )
    return model, readouts, freezer

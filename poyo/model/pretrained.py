"""Pretrained models: one safe file holds everything needed to use a trained POYO again.

A pretrained file is a plain dict that loads with ``torch.load(weights_only=True)``::

    format: "poyo", format_version: 1, poyo_version: "0.1.0",
    model: the POYO settings (``model.config``),
    readouts: how each head's targets were normalised and weighted (ReadoutConfig fields),
    unit_features: optional, how each unit fires ({"key", "names", "ids", "values"}, see
        poyo.training.unit_init): what new units' starting embeddings are predicted from,
    stitch_centres: optional, {readout: where in a window it decodes best (a fraction)}, chosen
        on validation in training; evaluation's stitching leans on it (poyo.training.stitch),
    state_dict: the weights, with the vocabularies as plain lists of strings,
    metadata: free-form provenance (where it came from, when)

:func:`load_pretrained` reads these files and also ``train.py``'s Lightning checkpoints
(``best.ckpt``, ``last.ckpt``) directly. Checkpoints of torch_brain need pickle and are
converted once, on request, by :mod:`poyo.model.torch_brain`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

import poyo
from poyo.io import TORCH_BRAIN_HINT, atomic_save, safe_load
from poyo.model.config import POYOConfig
from poyo.model.poyo import POYO, check_centres
from poyo.readouts import ReadoutConfig

FORMAT = "poyo"
FORMAT_VERSION = 1


def pretrained_payload(
    model: POYO, readouts: Sequence[ReadoutConfig | Mapping] | None = None, metadata: Mapping | None = None
) -> dict:
    """The dict :func:`save_pretrained` writes, without the weights and unit descriptions (also what
    ``train.py`` puts in its hyper-parameters)."""
    if not isinstance(model, POYO):
        raise TypeError(f"expected a POYO model, got {type(model).__name__}")
    readouts = readouts if readouts is not None else model.readout_configs or model.readout_names
    configs = [
        r if isinstance(r, ReadoutConfig) else ReadoutConfig(r) if isinstance(r, str) else ReadoutConfig(**r)
        for r in readouts
    ]
    unknown = [r.name for r in configs if r.name not in model.readout_names]
    if unknown:
        raise ValueError(f"readouts {unknown} are not heads of this model (it has {model.readout_names})")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "poyo_version": poyo.__version__,
        "model": model.config.to_dict(),
        "readouts": [r.to_dict() for r in configs],
        "metadata": dict(metadata or {}),
    }


def save_pretrained(model: POYO, path, *, readouts=None, metadata: Mapping | None = None) -> Path:
    """Write ``model`` (weights, vocabularies, settings, readout normalisation) to ``path``, atomically."""

    payload = pretrained_payload(model, readouts, metadata)
    if model.unit_features is not None:
        payload["unit_features"] = dict(model.unit_features)
    if model.stitch_centres:
        payload["stitch_centres"] = {str(k): float(v) for k, v in model.stitch_centres.items()}
    payload["state_dict"] = {
        k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()
    }
    return atomic_save(payload, path)


def _looks_like_torch_brain(state_dict: Mapping) -> bool:
    vocab = state_dict.get("model.unit_emb.vocab", state_dict.get("unit_emb.vocab"))
    return isinstance(vocab, Mapping) or any(".proc_layers." in k or k.startswith("proc_layers.") for k in state_dict)


def _check_version(path: Path, found) -> None:
    if not isinstance(found, int) or found < 1:
        raise ValueError(f"{path}: format_version {found!r} is not a poyo checkpoint version")
    if found > FORMAT_VERSION:
        raise ValueError(
            f"{path}: written by a newer poyo (checkpoint format {found}); this poyo {poyo.__version__} reads format "
            f"{FORMAT_VERSION} and older. Upgrade poyo to load it."
        )


def _unit_features(path: Path, found) -> dict | None:
    """The stored unit descriptions, checked (a damaged entry is an error, not a silent skip)."""
    if found is None:
        return None
    ok = isinstance(found, Mapping) and {"key", "names", "ids", "values"} <= set(found)
    if ok:
        v = found["values"]
        ok = isinstance(v, torch.Tensor) and v.ndim == 2 and v.shape == (len(found["ids"]), len(found["names"]))
    if not ok:
        raise ValueError(f"{path}: damaged unit_features entry (expected key, names, ids and a (ids, names) tensor)")
    if not torch.isfinite(v).all():
        bad = [found["ids"][i] for i in torch.nonzero(~torch.isfinite(v).all(1)).flatten().tolist()[:3]]
        raise ValueError(f"{path}: damaged unit_features entry: NaN or infinite values for units {bad}")
    return {"key": str(found["key"]), "names": list(found["names"]), "ids": list(found["ids"]), "values": v.float()}


def _stitch_centres(path: Path, found) -> dict[str, float]:
    """The stored stitching centres, checked: ``{readout name: fraction of the window in (0, 1)}``."""
    if found is None:
        return {}
    try:
        if isinstance(found, Mapping) and not all(isinstance(k, str) for k in found):
            raise ValueError(f"readout names must be strings, got {sorted(map(repr, found))}")
        return check_centres(found, "stitch_centres")
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: damaged stitch_centres entry {found!r}: {err}") from None


def _unpack(path: Path, ckpt: dict) -> tuple[dict, list[dict], dict]:
    """(model settings, readout configs, model state dict) of a pretrained file or train.py checkpoint."""
    if ckpt.get("format") == FORMAT:
        _check_version(path, ckpt.get("format_version"))
        missing = [k for k in ("model", "readouts", "state_dict") if k not in ckpt]
        if missing:
            raise ValueError(f"{path}: poyo pretrained file without {missing}; the file is damaged")
        return ckpt["model"], ckpt["readouts"], ckpt["state_dict"]
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):
        sd, hp = ckpt["state_dict"], ckpt.get("hyper_parameters") or {}
        if _looks_like_torch_brain(sd):
            raise ValueError(f"{path}: this is a torch_brain POYO checkpoint, not a poyo one; {TORCH_BRAIN_HINT}")
        if "model" in hp and "readouts" in hp and isinstance(sd.get("model.unit_emb.vocab"), list):
            _check_version(path, hp.get("format_version", 1))
            return (
                hp["model"],
                hp["readouts"],
                {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")},
            )
    keys = sorted(ckpt)[:8]
    raise ValueError(
        f"{path}: not a POYO checkpoint: no poyo model settings and weights in it (top-level keys: {keys})"
    )


def pretrained_settings(path) -> dict:
    """The model settings (:class:`POYOConfig` as plain values) a pretrained file or ``train.py``
    checkpoint holds, without building the model (e.g. the window it was trained on)."""
    path = Path(path)
    return dict(_unpack(path, safe_load(path))[0])


def load_pretrained(path, *, map_location="cpu") -> POYO:
    """A ready POYO (in eval mode) from a pretrained file or a ``train.py`` checkpoint.

    The model keeps its unit and session vocabularies and its ``readout_configs``, so
    ``model.tokenizer()`` normalises targets exactly as in training. Sessions it has never
    seen need their own unit embeddings first (``train.py finetune=unit_identification``).
    """
    path = Path(path)
    ckpt = safe_load(path, map_location)
    settings, readouts, state_dict = _unpack(path, ckpt)
    features = _unit_features(path, ckpt.get("unit_features"))  # model.pt and train.py checkpoints alike
    settings = {"count_kernels": [], **settings}  # saved before count kernels existed: none
    config = POYOConfig.from_dict(settings, source=str(path))
    try:  # first: a readout declared in the checkpoint (dim, kind) is registered before the model needs it
        configs = [ReadoutConfig(**r) for r in readouts]
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: bad readout configs {readouts!r}: {e}") from e
    try:
        model = POYO(config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: cannot build the model from its settings: {e}") from e
    try:
        model.load_state_dict(dict(state_dict))
    except RuntimeError as e:
        raise RuntimeError(f"{path}: its weights do not fit a POYO with its own settings: {e}") from e
    model.readout_configs = configs
    model.unit_features = features
    model.stitch_centres = _stitch_centres(path, ckpt.get("stitch_centres"))  # model.pt and train.py checkpoints alike
    return model.eval()

"""The presets shipped with poyo: ``<group>/<name>.yaml`` files (model sizes, optimisers,
dataset recipes, fine-tuning modes, loggers) and ``train.yaml``, the command line's defaults
list. They are package data, so a plain ``pip install`` has them; :func:`preset` reads one
without Hydra (``POYOConfig.from_name``, ``RunConfig.preset``), and ``poyo train`` composes
them with Hydra (:mod:`poyo.training.config`)."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def names(group: str) -> list[str]:
    """The presets of ``group`` (``model``, ``optim``, ``dataset``, ``finetune``, ``logger``)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def preset(group: str, name: str) -> dict:
    """The settings of ``<group>/<name>.yaml`` as plain values; a ``defaults: [parent, _self_]``
    list (a preset that extends another of its group) is followed."""
    import yaml

    path = CONFIG_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"{group}: no preset '{name}' in {CONFIG_DIR / group}; choose one of {names(group)}")
    settings = yaml.safe_load(path.read_text()) or {}
    out: dict = {}
    for parent in settings.pop("defaults", None) or []:
        if parent != "_self_":
            out = _merge(out, preset(group, parent))
    return _merge(out, settings)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out

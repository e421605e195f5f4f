"""poyo: decode behaviour from spiking populations with POYO-style spike-token models.

``poyo.load_pretrained(path)`` gives a ready model; ``poyo.save_pretrained(model, path)``
writes one. They import torch on first use, so ``import poyo`` stays cheap.
"""

__version__ = "0.1.0"

_LAZY = {"POYO": "poyo.model", "load_pretrained": "poyo.model.pretrained", "save_pretrained": "poyo.model.pretrained"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'poyo' has no attribute {name!r}")

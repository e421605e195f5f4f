"""poyo: decode behaviour from spiking populations with POYO-style spike-token models.

``poyo.load_pretrained(path)`` gives a ready model; ``poyo.save_pretrained(model, path)``
writes one. They import torch on first use, so ``import poyo`` stays cheap.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("poyo-decoder")  # written once, in pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["POYO", "load_pretrained", "save_pretrained", "__version__"]

_LAZY = {"POYO": "poyo.model", "load_pretrained": "poyo.model.pretrained", "save_pretrained": "poyo.model.pretrained"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'poyo' has no attribute {name!r}")

"""poyo: decode behaviour from spiking populations with POYO-style spike-token models.

``poyo.Decoder`` fits, adapts and predicts from arrays (an estimator over ``train.py``'s
machinery); ``poyo.load_pretrained(path)`` gives a ready model; ``poyo.save_pretrained(model,
path)`` writes one. They import torch on first use, so ``import poyo`` stays cheap.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what editors and type checkers see; at run time these import on first use
    from poyo.decoder import Decoder, Session
    from poyo.model import POYO, POYOConfig, load_pretrained, save_pretrained

try:
    __version__ = version("poyo-decoder")  # written once, in pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["POYO", "POYOConfig", "Decoder", "Session", "__version__", "load_pretrained", "save_pretrained"]

_LAZY = {name: "poyo.model" for name in ("POYO", "POYOConfig", "load_pretrained", "save_pretrained")}
_LAZY.update(Decoder="poyo.decoder", Session="poyo.decoder")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'poyo' has no attribute {name!r}")

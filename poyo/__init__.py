"""poyo: decode behaviour from spiking populations with POYO-style spike-token models.

``poyo.Decoder`` fits, adapts and predicts from arrays; ``poyo.load_pretrained(path)`` gives a
ready model and ``poyo.save_pretrained(model, path)`` writes one; ``poyo.RunConfig`` is every
setting of a training run (``poyo train`` on the command line). Names import torch on first
use, so ``import poyo`` stays cheap.
"""

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version
from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:  # what editors and type checkers see; at run time these import on first use
    from poyo.decoder import Decoder, Session
    from poyo.model import POYO, POYOConfig, load_pretrained, save_pretrained
    from poyo.training.config import RunConfig

try:
    __version__ = _version("poyo-decoder")  # written once, in pyproject.toml
except _NotInstalled:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Decoder",
    "POYO",
    "POYOConfig",
    "RunConfig",
    "Session",
    "__version__",
    "load_pretrained",
    "save_pretrained",
]

_LAZY = {name: "poyo.model" for name in ("POYO", "POYOConfig", "load_pretrained", "save_pretrained")}
_LAZY.update(Decoder="poyo.decoder", Session="poyo.decoder", RunConfig="poyo.training.config")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'poyo' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

"""Readouts, in one place: what a model can predict (the registry of specs and their losses),
how each readout is fed from the sessions (:class:`ReadoutConfig`), and the normalisation
policy (from the data, or kept from a pretrained head).

A readout names a behaviour (``"cursor_velocity_2d"``), its size and kind; the model holds one
linear head per name and knows nothing else about it. The data module holds the configs.
"""

from poyo.readouts.auto import auto_readout, readouts_from_settings
from poyo.readouts.config import ReadoutConfig, behaviour_keys, interval_keys, readouts_for
from poyo.readouts.normalise import fit_normalisation, keep_pretrained_normalisation, pretrained_normalisation
from poyo.readouts.spec import KINDS, READOUTS, ReadoutSpec, get_readout, readout_loss, register_readout

__all__ = [
    "KINDS",
    "READOUTS",
    "ReadoutConfig",
    "ReadoutSpec",
    "auto_readout",
    "behaviour_keys",
    "fit_normalisation",
    "get_readout",
    "interval_keys",
    "keep_pretrained_normalisation",
    "pretrained_normalisation",
    "readout_loss",
    "readouts_for",
    "readouts_from_settings",
    "register_readout",
]

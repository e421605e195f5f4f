"""Readouts from a dataset's settings: a hand-written list, or ``readouts: auto``, which
decodes the behaviour series the sessions share, as an angle when it is one."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from poyo.data.discover import angle_period, choose_behaviour, readout_name
from poyo.readouts.config import ReadoutConfig
from poyo.readouts.spec import READOUTS


def auto_readout(root, behaviour: str | None = None, circular: str | bool = "auto") -> ReadoutConfig:
    """The readout for the behaviour series every session below ``root`` shares (``behaviour``
    names it when there are several); an angle (:func:`poyo.data.discover.angle_period`) becomes
    a circular readout, unless ``circular`` is False. Says what it chose."""
    if circular not in ("auto", True, False):
        raise ValueError(f"dataset.circular must be auto, true or false, got {circular!r}")
    key, dim = choose_behaviour(root, behaviour)
    # guessed for one-dim series only: a 2-D "dir" is more often a (cos, sin) pair already
    period = angle_period(root, key) if circular is True or (circular == "auto" and dim == 1) else None
    if circular is True and period is None:
        period = 2 * np.pi
    if period is not None:
        name = readout_name(key, dim, list(READOUTS.values()), "circular")
        unit = "radians" if np.isclose(period, 2 * np.pi) else "degrees" if period == 360 else f"period {period:g}"
        print(
            f"readout {name}: decoding '{key}' as {dim} angle(s) in {unit}, through their cos and sin "
            "(dataset.circular=false: as a plain series)"
        )
        return ReadoutConfig(name, key=key, dim=dim, kind="circular", period=period)
    name = readout_name(key, dim, list(READOUTS.values()))
    print(f"readout {name}: decoding '{key}' ({dim} dims), normalised by the training split's mean and std")
    return ReadoutConfig(name, key=key, mean=None, std=None, dim=dim, kind="continuous")


def readouts_from_settings(dataset: Mapping, root) -> list[ReadoutConfig]:
    """The readouts a dataset config asks for (``poyo/configs/dataset/*.yaml``, as plain containers):
    ``readouts: auto`` (:func:`auto_readout`), or a list of :class:`ReadoutConfig` fields, where
    a mean or std left out is taken from the training split later."""
    readouts = dataset.get("readouts")
    if readouts == "auto":
        return [auto_readout(root, dataset.get("behaviour"), dataset.get("circular", "auto"))]
    if not isinstance(readouts, list):
        raise ValueError(f"dataset.readouts must be a list of readout configs or 'auto', got {readouts!r}")
    return [ReadoutConfig(**{"mean": None, "std": None, **r}) for r in readouts]

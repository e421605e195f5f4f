"""Reading sessions into windows: files -> :class:`Dataset` -> samplers -> transforms -> collate."""

from poyo.data.collate import collate_packed, collate_padded, unpack, unpad
from poyo.data.dataset import Dataset, find_session_files, init_worker, seed_worker
from poyo.data.samplers import DistributedStitchingSampler, RandomFixedWindowSampler, SequentialFixedWindowSampler
from poyo.data.session import Session, SessionFormatError
from poyo.data.transforms import Compose, FractionUnitDropout, OutputSampler, SpikeJitter, UnitDropout, unit_dropout
from poyo.data.window import Series, Window, WindowIndex

__all__ = [
    "Compose",
    "Dataset",
    "FractionUnitDropout",
    "DistributedStitchingSampler",
    "OutputSampler",
    "RandomFixedWindowSampler",
    "SequentialFixedWindowSampler",
    "Series",
    "Session",
    "SessionFormatError",
    "SpikeJitter",
    "UnitDropout",
    "Window",
    "WindowIndex",
    "collate_packed",
    "collate_padded",
    "find_session_files",
    "init_worker",
    "seed_worker",
    "unit_dropout",
    "unpack",
    "unpad",
]

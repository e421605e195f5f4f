"""Checkpoints that survive crashes and load without pickle.

Lightning writes its checkpoints through :class:`AtomicCheckpointIO`, which uses
:func:`poyo.io.atomic_save`: a crash mid-save leaves the previous checkpoint intact.
Everything in them (weights, vocabularies as lists of strings, the resolved config as plain
containers, optimiser and loop state) loads with ``torch.load(weights_only=True)``, which is
also how they are read back.
"""

from __future__ import annotations

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from poyo.io import atomic_save, safe_load


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, written atomically and read with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options}")
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return safe_load(path, map_location=map_location or "cpu")

"""Checkpoints that survive crashes and load without pickle.

Lightning writes its checkpoints through :class:`AtomicCheckpointIO`: the file is written
beside its destination, flushed to disk, then renamed over it, so a crash mid-save leaves
the previous checkpoint intact. Everything in them (weights, vocabularies as lists of
strings, the resolved config as plain containers, optimiser and loop state) loads with
``torch.load(weights_only=True)``, which is also how they are read back.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from poyo.model.pretrained import safe_load
from poyo.training.guards import pid_alive


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete ``.<name>.<pid>.tmp`` files a killed writer of ``path`` left behind."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_save(obj, path) -> Path:
    """Write ``obj`` to a temporary file beside ``path``, fsync it, rename it over ``path``.

    A failure (a full disk, a crash) leaves the previous file intact and raises an error that
    says so; temporaries of writers killed earlier are removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        written = tmp.stat().st_size if tmp.exists() else 0
        free = shutil.disk_usage(path.parent).free
        full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e) or free < max(written, 1 << 20)
        if full:
            raise OSError(
                errno.ENOSPC,
                f"{path}: no space left on the disk of {path.parent} ({free / 1e6:.1f} MB free after writing {written / 1e6:.1f} MB); "
                f"the previous {path.name} is intact. Free some space and resume (train.py resume=true)",
            ) from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options}")
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return safe_load(path, map_location=map_location or "cpu")

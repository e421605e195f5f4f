"""Reading and writing checkpoint files, safely: the lowest layer, used by the model (pretrained
files) and by training (Lightning checkpoints) alike.

:func:`atomic_save` writes beside the destination, flushes to disk, then renames over it, so a
crash mid-save leaves the previous file intact. :func:`safe_load` reads with
``torch.load(weights_only=True)`` only: a file holding pickled Python objects is refused, never
unpickled.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import torch

TORCH_BRAIN_HINT = "convert it once with `python -m poyo.model.torch_brain IN.ckpt OUT.pt` (see poyo.model.torch_brain)"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def safe_load(path, map_location="cpu") -> dict:
    """``torch.load(weights_only=True)`` with errors that name the file and the likely cause."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        msg = str(e)
        pickled = re.search(r"GLOBAL ([\w.]+)", msg)
        if pickled:  # a well-formed file with Python objects in it: never unpickled silently
            raise RuntimeError(
                f"{path}: not a readable poyo checkpoint: it holds a pickled Python object ({pickled.group(1)}), which poyo never "
                f"loads silently. A torch_brain checkpoint? {TORCH_BRAIN_HINT}"
            ) from e
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", msg)
        detail = detail.group(1) if detail else (msg.strip().splitlines() or [""])[0][:160]
        raise RuntimeError(
            f"{path}: not a readable checkpoint: the file is damaged, truncated or of another kind ({type(e).__name__}: {detail})"
        ) from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, found a {type(obj).__name__}")
    return obj


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, f"{path}: cannot create its folder {path.parent} ({e.strerror})") from None
    remove_stale_temporaries(path)
    had = path.is_file()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        written = tmp.stat().st_size if tmp.exists() else 0
        code = getattr(e, "errno", None)
        free = shutil.disk_usage(path.parent).free
        # a full disk by its error code; a writer without one (torch's) by the space left after it failed
        full = (
            code in (errno.ENOSPC, errno.EDQUOT)
            or "No space left" in str(e)
            or (code is None and free < max(written, 1 << 20))
        )
        before = f"the previous {path.name} is intact" if had else f"nothing was written to {path.name}"
        if full:
            raise OSError(
                errno.ENOSPC,
                f"{path}: no space left on the disk of {path.parent} ({free / 1e6:.1f} MB free after writing {written / 1e6:.1f} MB); "
                f"{before}. Free some space and try again (a training run continues with poyo train resume=true)",
            ) from e
        if code is not None:  # permissions, a read-only or special file system: say so, not the temporary's name
            raise OSError(code, f"{path}: cannot be written ({e.strerror or e}); {before}") from e
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

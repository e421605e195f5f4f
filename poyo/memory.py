"""Keep freed memory in the process: glibc's malloc settings for loops that allocate the same
large buffers again and again (training steps, streaming updates).

By default glibc serves every allocation of 32 MiB or more (and, until its threshold adapts,
smaller ones) with fresh pages from ``mmap`` and hands them back to the kernel on ``free``, and it
gives the top of its heap back once more than a threshold is free there. A training step frees
its activations at the end and allocates them again at the start of the next one, so each step
paid for faulting its largest tensors in, 4 KiB page by page: measured, a training step of
poyo_1.3M in bf16 took 1.27x as long as with the memory kept, one of poyo_mini 1.4-1.6x
(``benchmarks/allocator.py``).
:func:`keep_freed_memory` serves everything from the heap and never trims it, so freed blocks
are reused. The cost: the process keeps its peak memory until it exits.

``poyo train`` keeps freed memory while it trains and tests (:func:`freed_memory_kept`,
``trainer.keep_freed_memory``, on by default), then hands what is free back to the kernel; a
Python session that trains or streams can call :func:`keep_freed_memory` once itself. Both are
process-wide; where the C library is not glibc (macOS, Windows, musl) they change nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit
_INT_MAX = 2**31 - 1  # mallopt takes an int
_MMAP_MAX_DEFAULT = 65536  # glibc's default M_MMAP_MAX


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def glibc() -> bool:
    """Whether this process runs on glibc (where :func:`keep_freed_memory` works)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory(mmap_threshold: int | None = None, trim_threshold: int | None = None) -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    Args:
        mmap_threshold: None (default) serves every allocation from the heap, however large
            (``M_MMAP_MAX = 0``); a number of bytes (1 to 32 MiB, glibc's limit) serves only
            smaller blocks from it, as ``MALLOC_MMAP_THRESHOLD_`` does.
        trim_threshold: None (default) never gives the top of the heap back; a number of
            bytes gives it back when more than that is free there (``MALLOC_TRIM_THRESHOLD_``).

    Returns True when both settings took, False (and changes nothing) where the C library is not glibc.
    """
    if mmap_threshold is not None and not (
        isinstance(mmap_threshold, int) and not isinstance(mmap_threshold, bool)
        and 0 < mmap_threshold <= _MMAP_THRESHOLD_MAX
    ):  # fmt: skip
        raise ValueError(f"mmap_threshold must be None or 1 byte to 32 MiB (glibc's limit), got {mmap_threshold!r}")
    if trim_threshold is not None and not (
        isinstance(trim_threshold, int) and not isinstance(trim_threshold, bool) and 0 < trim_threshold <= _INT_MAX
    ):
        raise ValueError(
            f"trim_threshold must be None or a number of bytes from 1 to 2**31 - 1, got {trim_threshold!r}"
        )
    if not glibc():
        return False
    libc = _libc()
    if mmap_threshold is None:
        mmap_ok = libc.mallopt(_M_MMAP_MAX, 0)
    else:
        mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    trim_ok = libc.mallopt(_M_TRIM_THRESHOLD, -1 if trim_threshold is None else trim_threshold)  # -1: never
    return bool(mmap_ok) and bool(trim_ok)


@contextmanager
def freed_memory_kept(enabled: bool = True) -> Iterator[bool]:
    """:func:`keep_freed_memory` for the duration of a ``with`` block (yields whether it took). On
    leaving, blocks of 32 MiB and more are mmapped again and the heap is trimmed beyond 64 MiB free
    (where glibc's own adaptive thresholds settle once such a block has been freed), and what is
    free now goes back to the kernel: the rest of the process does not keep the block's peak memory.
    This also ends a :func:`keep_freed_memory` called before the block. ``enabled=False`` does
    nothing (a setting can switch it off)."""
    kept = enabled and keep_freed_memory()
    try:
        yield kept
    finally:
        if kept:
            libc = _libc()
            libc.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)
            libc.malloc_trim(0)

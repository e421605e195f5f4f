"""poyo.memory: large blocks come from the heap and stay there after free (each case in a fresh
process: the setting is process-wide), until a freed_memory_kept() block ends; clear errors and
the training setting that switches it (the run's use of it: tests/test_entry_point.py)."""

import json
import subprocess
import sys

import pytest

from poyo.memory import glibc, keep_freed_memory
from poyo.training.config import SettingError, TrainerConfig

# Both child scripts read glibc's heap statistics (mallinfo2) through ctypes.
MALLINFO = """
import ctypes, json, sys
import numpy as np
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
"""

# Allocates a block and frees it; prints how much was mmapped for it and how much of the heap
# (arena) stayed after the free.
ALLOCATE = (
    MALLINFO
    + """
from poyo.memory import keep_freed_memory
mode, mib = sys.argv[1], int(sys.argv[2])
if mode == "keep":
    assert keep_freed_memory()
elif mode == "threshold":
    assert keep_freed_memory(mmap_threshold=32 << 20)
before = libc.mallinfo2()
block = np.ones(mib << 17)
mapped = libc.mallinfo2().hblkhd - before.hblkhd
del block
kept = libc.mallinfo2().arena - before.arena
print(json.dumps({"mapped": mapped, "kept": kept}))
"""
)


def allocate(mode: str, mib: int) -> dict:
    return json.loads(subprocess.check_output([sys.executable, "-c", ALLOCATE, mode, str(mib)], text=True))


@pytest.mark.skipif(not glibc(), reason="glibc only")
def test_keep_freed_memory_serves_large_blocks_from_the_heap_and_keeps_them():
    default, keep = allocate("default", 64), allocate("keep", 64)
    assert default["mapped"] >= 64 << 20  # glibc's default: a fresh mmap, handed back on free
    assert default["kept"] < 1 << 20
    assert keep["mapped"] == 0  # from the heap ...
    assert keep["kept"] >= 60 << 20  # ... which is not trimmed when the block is freed (it held some free space before)
    # the older form: only blocks below the threshold from the heap
    assert allocate("threshold", 20)["mapped"] == 0
    assert allocate("threshold", 64)["mapped"] >= 64 << 20


def test_keep_freed_memory_rejects_bad_settings():
    with pytest.raises(ValueError, match="32 MiB"):
        keep_freed_memory(mmap_threshold=64 << 20)
    with pytest.raises(ValueError, match="mmap_threshold"):
        keep_freed_memory(mmap_threshold=True)
    with pytest.raises(ValueError, match="trim_threshold"):
        keep_freed_memory(trim_threshold=0)
    with pytest.raises(ValueError, match="trim_threshold"):
        keep_freed_memory(trim_threshold=2**31)


def test_trainer_setting_is_validated():
    assert TrainerConfig().keep_freed_memory is True
    with pytest.raises(SettingError, match="trainer.keep_freed_memory"):
        TrainerConfig(keep_freed_memory="yes")


# A 64 MiB block allocated and freed inside freed_memory_kept() stays in the heap until the
# block ends, then goes back to the kernel; prints the heap's growth at both points.
SCOPED = (
    MALLINFO
    + """
from poyo.memory import freed_memory_kept
before = libc.mallinfo2().arena
with freed_memory_kept() as kept:
    block = np.ones(64 << 17)
    del block
    inside = libc.mallinfo2().arena - before
after = libc.mallinfo2().arena - before
with freed_memory_kept(False) as off:
    pass
print(json.dumps({"kept": kept, "inside": inside, "after": after, "off": off}))
"""
)


@pytest.mark.skipif(not glibc(), reason="glibc only")
def test_freed_memory_kept_hands_the_memory_back_when_the_block_ends():
    r = json.loads(subprocess.check_output([sys.executable, "-c", SCOPED], text=True))
    assert r["kept"] is True and r["off"] is False
    assert r["inside"] >= 60 << 20
    assert r["after"] < 8 << 20

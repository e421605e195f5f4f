"""What the memory allocator's settings do to a CPU training step.

    python benchmarks/allocator.py [--models poyo_mini poyo_1.3M] [--precisions 32-true bf16-mixed] [--rounds 3]

Three settings, each in child processes of its own (they are process-wide, and what a process
did before shapes its heap):

* ``default``: glibc's malloc as it comes: blocks of 32 MiB and more are fresh ``mmap`` pages,
  handed back to the kernel on free, so every step faults its largest tensors in again;
* ``keep``: :func:`poyo.memory.keep_freed_memory`, what ``poyo train`` sets
  (``trainer.keep_freed_memory``): everything from the heap, never trimmed, so freed blocks are reused;
* ``huge``: ``THP_MEM_ALLOC_ENABLE=1``, PyTorch's own switch asking the kernel for 2 MiB pages for
  tensors of 2 MiB and more (measured, not adopted: see benchmarks/README.md, "Huge pages").

Each child times ``--steps`` training steps of ``benchmarks/vs_torch_brain.py``'s workload (batch
32 windows of 100 units x 20 Hz, packed, dropout on, AdamW) after two warm-up steps, and reports its
median step and peak resident memory. The settings alternate, ``--rounds`` times; the table gives
the median per setting and the median of the per-round ratios to ``default``. Linux with glibc only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("default", "keep", "huge")


def child(model: str, precision: str, steps: int, setting: str) -> None:
    import resource
    import time

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vs_torch_brain import poyo_step, workload

    from poyo.memory import keep_freed_memory
    from poyo.model import POYOConfig

    if setting == "keep" and not keep_freed_memory():
        raise SystemExit("keep_freed_memory() needs glibc")
    config = POYOConfig.from_name(model)
    step = poyo_step(config, workload(config, 32), "loop", precision, 100)
    step()
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"ms": statistics.median(times) * 1e3, "peak_mib": peak_mib}))


def measure(model: str, precision: str, steps: int, setting: str) -> dict:
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if setting == "huge" else "0"}
    cmd = [sys.executable, __file__, "--child", json.dumps([model, precision, steps, setting])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child {model} {precision} {setting} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["poyo_mini", "poyo_1.3M"])
    p.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"], choices=["32-true", "bf16-mixed"])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--steps", type=int, default=5, help="timed steps per child process")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(*json.loads(a.child))
        return
    if a.steps < 1 or a.rounds < 1:
        p.error("--steps and --rounds must be >= 1")
    if "default" not in a.settings:
        p.error("--settings needs default (the ratios are to it)")
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    mode = thp.read_text().strip() if thp.is_file() else "not available"
    print(f"{platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"libc {' '.join(platform.libc_ver())}; kernel transparent huge pages: {mode}; "
          f"{a.rounds} rounds of {'/'.join(a.settings)}, {a.steps} steps each\n")  # fmt: skip
    print(
        f"{'model':11s} {'precision':>10s} {'setting':>8s} {'ms/step':>8s} {'/ default (range)':>22s} {'peak MiB':>9s}"
    )
    for model in a.models:
        for precision in a.precisions:
            runs = {s: [] for s in a.settings}
            for _ in range(a.rounds):
                for setting in a.settings:
                    runs[setting].append(measure(model, precision, a.steps, setting))
            base = [r["ms"] for r in runs["default"]]
            for setting, rs in runs.items():
                ms = [r["ms"] for r in rs]
                ratios = [x / b for x, b in zip(ms, base)]
                print(
                    f"{model:11s} {precision:>10s} {setting:>8s} {statistics.median(ms):8.0f} "
                    f"{statistics.median(ratios):8.3f} ({min(ratios):.3f}-{max(ratios):.3f}) "
                    f"{max(r['peak_mib'] for r in rs):9.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

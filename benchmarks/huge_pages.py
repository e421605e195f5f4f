"""What huge pages for large CPU tensors save a training step (``THP_MEM_ALLOC_ENABLE``).

    python benchmarks/huge_pages.py [--models poyo_mini poyo_1.3M] [--precisions 32-true bf16-mixed] [--rounds 3]

With ``THP_MEM_ALLOC_ENABLE=1`` in the environment PyTorch's CPU allocator asks the kernel for
2 MiB pages for tensors of 2 MiB and more (poyo does not set it: see benchmarks/README.md, "Huge
pages"). The setting is read once per process, so each measurement is a child process (with
``THP_MEM_ALLOC_ENABLE=0`` or ``1``) that times ``--steps`` training steps of
``benchmarks/vs_torch_brain.py``'s workload (batch 32 windows of 100 units x 20 Hz, packed,
dropout on, AdamW) after two warm-up steps, and reports its median step and its peak resident
memory. Off and on alternate, ``--rounds`` times; the table gives the
median per setting and the median of the per-round ratios (on / off). Linux only: elsewhere the
setting does nothing.
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


def child(model: str, precision: str, steps: int) -> None:
    import resource
    import time

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vs_torch_brain import poyo_step, workload

    from poyo.model import POYOConfig

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


def measure(model: str, precision: str, steps: int, enabled: bool) -> dict:
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if enabled else "0"}
    cmd = [sys.executable, __file__, "--child", json.dumps([model, precision, steps])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child {model} {precision} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["poyo_mini", "poyo_1.3M"])
    p.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"], choices=["32-true", "bf16-mixed"])
    p.add_argument("--steps", type=int, default=5, help="timed steps per child process")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(*json.loads(a.child))
        return
    if a.steps < 1 or a.rounds < 1:
        p.error("--steps and --rounds must be >= 1")
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    mode = thp.read_text().strip() if thp.is_file() else "not available"
    print(f"{platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"kernel transparent huge pages: {mode}; {a.rounds} rounds of off/on, {a.steps} steps each\n")  # fmt: skip
    print(
        f"{'model':11s} {'precision':>10s} {'off ms/step':>12s} {'on ms/step':>11s} {'on/off (range)':>22s} {'peak MiB off/on':>16s}"
    )
    for model in a.models:
        for precision in a.precisions:
            runs = {False: [], True: []}
            for _ in range(a.rounds):
                for enabled in (False, True):
                    runs[enabled].append(measure(model, precision, a.steps, enabled))
            ms = {k: [r["ms"] for r in v] for k, v in runs.items()}
            ratios = [on / off for off, on in zip(ms[False], ms[True])]
            peak = {k: max(r["peak_mib"] for r in v) for k, v in runs.items()}
            print(
                f"{model:11s} {precision:>10s} {statistics.median(ms[False]):12.0f} {statistics.median(ms[True]):11.0f} "
                f"{statistics.median(ratios):8.3f} ({min(ratios):.3f}-{max(ratios):.3f}) {peak[False]:7.0f}/{peak[True]:.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""How long the linear baselines take: the ridge decoders every supervised run fits at its end.

    python benchmarks/linear_baseline.py                 # the quick start's 9 sessions, 3 repeats
    python benchmarks/linear_baseline.py --repeats 1     # one timing (for farm-bench A/B runs)

Times :meth:`poyo.training.linear.LinearBaseline.evaluate` (window-matched and causal decoders,
context and ridge penalty chosen on validation, per session) on the quick start's synthetic set,
and prints the mean test R² of each decoder, so that a faster fit can be seen to choose the same
decoders.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.train_speed import READOUT, dataset  # noqa: E402
from poyo.training.linear import LinearBaseline  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT / "data" / "processed" / "synthetic_reaching")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    if a.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    ds = dataset(a.data_root)
    print(f"{len(ds.session_ids)} sessions, {platform.machine()}, {torch.get_num_threads()} torch threads")
    times, result = [], None
    for _ in range(a.repeats):
        start = time.perf_counter()
        result = LinearBaseline().evaluate(ds, READOUT)
        times.append(time.perf_counter() - start)
    print(
        f"LinearBaseline.evaluate: median {statistics.median(times):.1f} s (min {min(times):.1f}, max {max(times):.1f})"
    )
    for variant, per in result.items():
        print(f"  {variant}: mean test R² {np.mean([v['r2'] for v in per.values()]):.4f} over {len(per)} sessions")


if __name__ == "__main__":
    main()

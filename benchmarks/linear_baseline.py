"""How long the linear baselines take: the ridge decoders every supervised run fits at its end.

    python benchmarks/linear_baseline.py                 # the quick start's 9 sessions, 3 repeats
    python benchmarks/linear_baseline.py --repeats 1     # one timing (for farm-bench A/B runs)

Times :meth:`poyo.training.linear.LinearBaseline.evaluate` (window-matched and causal decoders,
context and ridge penalty chosen on validation, per session) on the quick start's synthetic set
and readout (``poyo/configs/dataset/synthetic_reaching.yaml``),
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

from omegaconf import OmegaConf  # noqa: E402

from poyo.data import Dataset  # noqa: E402
from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure  # noqa: E402
from poyo.readouts import readouts_from_settings  # noqa: E402
from poyo.training.linear import LinearBaseline  # noqa: E402

QUICK_START = ROOT / "poyo" / "configs" / "dataset" / "synthetic_reaching.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT / "data" / "processed" / "synthetic_reaching")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    if a.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    settings = OmegaConf.to_container(OmegaConf.load(QUICK_START), resolve=True)
    ensure(a.data_root, SyntheticConfig(**settings["generate"]), progress=False)
    (readout,) = readouts_from_settings(settings, a.data_root)
    ds = Dataset(a.data_root, behaviour=[readout.key], intervals=list(readout.eval_intervals), validate=False)
    print(f"{len(ds.session_ids)} sessions, {platform.machine()}, {torch.get_num_threads()} torch threads")
    times, result = [], None
    for _ in range(a.repeats):
        start = time.perf_counter()
        result = LinearBaseline().evaluate(ds, readout)
        times.append(time.perf_counter() - start)
    print(
        f"LinearBaseline.evaluate: median {statistics.median(times):.1f} s (min {min(times):.1f}, max {max(times):.1f})"
    )
    for variant, per in result.items():
        print(f"  {variant}: mean test R² {np.mean([v['r2'] for v in per.values()]):.4f} over {len(per)} sessions")


if __name__ == "__main__":
    main()

"""Time of one AdamW update per preset model: the per-tensor loop, foreach, and fused.

    python benchmarks/optimizer_step.py [--models poyo_mini poyo_1.3M] [--rounds 5] [--steps 20]

Each model's weights (with a 52-unit vocabulary, S1's size) get random gradients, and the three
ways of updating them run in turn, round after round, in one process. poyo's training uses the
fused form where the weights are on CPU or CUDA (``poyo.training.optim.build_optimizer``).
Figures in benchmarks/README.md, "Speed on CPU".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from poyo.model import POYO, POYOConfig  # noqa: E402

CONFIGS = ROOT / "poyo" / "configs" / "model"
WAYS = {"per tensor (torch's CPU default)": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def update_ms(name: str, rounds: int, steps: int) -> tuple[int, int, dict[str, float]]:
    """(weight tensors, weights, {way: median ms per update})."""
    model = POYO(
        POYOConfig.from_yaml(CONFIGS / f"{name}.yaml"), unit_ids=[f"u{i}" for i in range(52)], session_ids=["s"]
    )
    params = list(model.parameters())
    g = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    opts = {way: torch.optim.AdamW(params, lr=1e-5, **kw) for way, kw in WAYS.items()}
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    for r in range(rounds + 1):  # the first round warms up
        for way, opt in opts.items() if r % 2 else reversed(opts.items()):
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            if r:
                times[way].append((time.perf_counter() - t0) / steps * 1e3)
    return len(params), sum(p.numel() for p in params), {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["poyo_mini", "poyo_1.3M"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1:
        raise SystemExit("--rounds and --steps must be at least 1")
    print(
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; median ms per update over {args.rounds} rounds"
    )
    print(f"{'model':12s} {'tensors':>8s} {'weights':>10s} " + " ".join(f"{w:>34s}" for w in WAYS))
    for name in args.models:
        n, size, ms = update_ms(name, args.rounds, args.steps)
        print(f"{name:12s} {n:8d} {size:10,d} " + " ".join(f"{ms[w]:34.2f}" for w in WAYS))


if __name__ == "__main__":
    main()

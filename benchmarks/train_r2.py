"""Validation R² against training steps for a longer run: poyo_1.3M on a larger synthetic set.

    python benchmarks/train_r2.py [--epochs 60] [--animals 6] [--extra key=value ...]

Runs ``train.py`` (LAMB, the recipe's optimiser, unless overridden) with validation every
``--val-every`` epochs, then prints the validation R² at each evaluation and the final
per-session test table (POYO beside the Wiener baseline), and writes
``r2_vs_steps.png`` in the run folder. Meant for a GPU or a long CPU run.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--animals", type=int, default=6)
    p.add_argument("--val-every", type=int, default=5)
    p.add_argument("--run-dir", type=Path, default=ROOT / "outputs" / "benchmark_train_r2")
    p.add_argument("--extra", nargs="*", default=[], help="more train.py overrides")
    a = p.parse_args()
    cmd = [
        sys.executable, str(ROOT / "train.py"), "model=poyo_1.3M", "optim=lamb", "batch_size=64",
        f"dataset.generate.num_animals={a.animals}", "dataset.name=synthetic_reaching_large",
        f"trainer.max_epochs={a.epochs}", f"trainer.check_val_every_n_epoch={a.val_every}", f"hydra.run.dir={a.run_dir}", *a.extra,
    ]  # fmt: skip
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    points = [(int(r["step"]), float(r["val/metric"])) for r in csv.DictReader(open(a.run_dir / "metrics.csv")) if r.get("val/metric")]
    print(f"\n{'step':>6s} {'val R2':>7s}")
    for step, r2 in points:
        print(f"{step:6d} {r2:7.3f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(*zip(*points), marker="o")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation R² (mean over sessions)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.run_dir / "r2_vs_steps.png", dpi=110)
    print(f"plot: {a.run_dir / 'r2_vs_steps.png'}")


if __name__ == "__main__":
    main()

"""Validation R² against training steps: does a model learn within a step budget?

    python benchmarks/train_r2.py                               # poyo_1.3M, AdamW, batch 32, 1500 steps (~25 min on 2 CPU cores)
    python benchmarks/train_r2.py --optim lamb --batch-size 64 --animals 6 --steps 5000   # the paper's optimiser, a larger set (GPU)

Runs ``train.py`` on the synthetic reaching set (the quick start's, unless ``--animals``
asks for a larger one) with validation every ``--val-every`` epochs, then prints the
validation R² at each evaluation, the test R² of the checkpoint chosen on validation beside
the window-matched and causal linear decoders, and writes ``r2_vs_steps.png`` into the run
folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="poyo_1.3M")
    p.add_argument("--optim", default="adamw", choices=["adamw", "lamb"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--animals", type=int, default=3, help="synthetic animals (3: the quick start's set)")
    p.add_argument("--val-every", type=int, default=2)
    p.add_argument("--run-dir", type=Path, default=ROOT / "outputs" / "benchmark_train_r2")
    p.add_argument("--extra", nargs="*", default=[], help="more train.py overrides")
    a = p.parse_args()
    data = (
        []
        if a.animals == 3
        else [f"dataset.generate.num_animals={a.animals}", f"dataset.name=synthetic_reaching_{a.animals}"]
    )
    cmd = [
        sys.executable, str(ROOT / "train.py"), f"model={a.model}", f"optim={a.optim}", f"batch_size={a.batch_size}", *data,
        f"trainer.max_steps={a.steps}", f"trainer.check_val_every_n_epoch={a.val_every}", f"hydra.run.dir={a.run_dir}", *a.extra,
    ]  # fmt: skip
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    rows = list(csv.DictReader(open(a.run_dir / "metrics.csv")))
    points = [
        (int(r["step"]), float(r["val/metric"]), float(r["val/elapsed_s"] or "nan"))
        for r in rows
        if r.get("val/metric") and r.get("val/elapsed_s")
    ]
    print(f"\n{a.model}, {a.optim}, batch {a.batch_size}\n{'step':>6s} {'val R2':>7s} {'seconds':>8s}")
    for step, r2, secs in points:
        print(f"{step:6d} {r2:7.3f} {secs:8.0f}")
    test = json.loads((a.run_dir / "test_results.json").read_text())
    print(
        f"test R2 {test['poyo_mean_r2']:.3f} ({test['checkpoint']}); linear {test['linear_mean_r2']:.3f}, causal (Wiener) {test['causal_mean_r2']:.3f}"
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(
        [s for s, _, _ in points],
        [r for _, r, _ in points],
        marker="o",
        label=f"{a.model} ({a.optim}, batch {a.batch_size})",
    )
    ax.axhline(test["linear_mean_r2"], color="k", ls="--", lw=1, label="linear, window (test)")
    ax.axhline(test["causal_mean_r2"], color="grey", ls=":", lw=1, label="linear, causal (test)")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation R² (mean over sessions)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.run_dir / "r2_vs_steps.png", dpi=110)
    print(f"plot: {a.run_dir / 'r2_vs_steps.png'}")


if __name__ == "__main__":
    main()

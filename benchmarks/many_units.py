"""A large population: POYO beside the GRU and linear decoders on a 171-unit, 13-minute recording.

    python benchmarks/many_units.py                     # about 35 min on 2 CPU cores (the GRU fits: 27)
    python benchmarks/many_units.py --units 100 --minutes 5 --no-gru

Issue 35's held-out macaque M1 recording (171 units, 13 min) is not here, so its shape is
simulated with poyo's synthetic reaching generator (``poyo.pipelines.synthetic_reaching``: one
centre-out session, cosine-tuned units whose spikes lead the movement by 0-150 ms, Poisson
spiking, cursor velocity at 100 Hz) under a brainset name of its own, so that ``python train.py
dataset=<folder>`` trains it with the recipe for a lab's own recording (``auto.yaml``), not the
quick start's preset. ``baseline.gru=true`` fits the GRUs on the same splits and test samples,
with the contexts of POYO's window (2 s: bidirectional over -1.5..+0.5 s, causal over the past
2 s). What it checks: the default run's time and R² with three times S1's units and spikes.
Synthetic spikes are easier than real ones: the margins say more than the levels.

Prints the test table and writes ``results.json`` (R² of every decoder, the seconds from the
start of training to its last validation, and the whole run's) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def simulate(data_root: Path, units: int, minutes: float, seed: int) -> str:
    """Write one synthetic centre-out session of ``units`` units as its own brainset; returns its name."""
    from poyo.pipelines.synthetic_reaching.generate import SyntheticConfig, simulate_session, write_session

    brainset = f"reaching_{units}u_{minutes:g}min_s{seed}"
    folder = data_root / brainset
    if not folder.is_dir():
        cfg = SyntheticConfig(
            num_animals=1, sessions_per_animal=1, duration_s=minutes * 60, min_units=units, max_units=units,
            random_target_every=0, seed=seed,
        )  # fmt: skip
        data = simulate_session(cfg, 0, 0)
        data.brainset.id = brainset
        folder.mkdir(parents=True)
        write_session(data, folder / f"{data.session.id}.h5")
    return brainset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "many_units")
    p.add_argument("--units", type=int, default=171)
    p.add_argument("--minutes", type=float, default=13.0)
    p.add_argument("--seed", type=int, default=5, help="the simulated recording")
    p.add_argument("--model", default="poyo_mini")
    p.add_argument("--extra", nargs="*", default=[], help="more train.py overrides")
    p.add_argument("--no-gru", action="store_true")
    a = p.parse_args()
    if a.units < 1 or a.minutes < 0.5:
        sys.exit(f"error: need --units >= 1 and --minutes >= 0.5, got {a.units} and {a.minutes}")
    data_root = a.out / "data"
    brainset = simulate(data_root, a.units, a.minutes, a.seed)
    run_dir = a.out / "runs" / f"{brainset}_{a.model}"
    cmd = [sys.executable, str(ROOT / "train.py"), f"dataset={brainset}", f"model={a.model}", f"data_root={data_root}",
           f"hydra.run.dir={run_dir}", f"baseline.gru={str(not a.no_gru).lower()}", *a.extra]  # fmt: skip
    print(" ".join(cmd), flush=True)
    t0 = time.time()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr (the progress bars) passes through
    wall = time.time() - t0
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "stdout.txt").write_text(out.stdout)
    if out.returncode != 0:
        sys.exit(f"train.py failed (its output: {run_dir / 'stdout.txt'}):\n{out.stdout[-3000:]}")
    test = json.loads((run_dir / "test_results.json").read_text())
    elapsed = [
        float(r["val/elapsed_s"]) for r in csv.DictReader(open(run_dir / "metrics.csv")) if r.get("val/elapsed_s")
    ]
    result = {
        "brainset": brainset,
        "units": a.units,
        "minutes": a.minutes,
        "train_s": round(elapsed[-1], 1) if elapsed else None,
        "wall_s": round(wall, 1),
        **{k: v for k, v in test.items() if k != "sessions"},
    }
    print(f"\n{brainset}: test R² (POYO's last validation {result['train_s']} s into training; whole run {wall:.0f} s)")
    for name, key in (("POYO", "poyo"), ("linear (window)", "linear"), ("causal (Wiener)", "causal"),
                      ("GRU (bidirectional)", "gru"), ("GRU (causal)", "gru_causal")):  # fmt: skip
        if f"{key}_mean_r2" in result:
            print(f"  {name:20s} {result[f'{key}_mean_r2']:.3f}")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"\nresults: {a.out / 'results.json'} (train.py output: {run_dir / 'stdout.txt'})")


if __name__ == "__main__":
    main()

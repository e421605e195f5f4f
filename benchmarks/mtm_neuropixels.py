"""Masked modelling on a real Neuropixels recording, as a new user runs it: spikes only, no YAML.

    python benchmarks/mtm_neuropixels.py                 # about 10 minutes per seed on 2 CPU cores
    python benchmarks/mtm_neuropixels.py --seeds 0 1 2   # the spread between seeds

The recording is the test fixture shipped inside ibllib 4.1.0 (``brainbox/tests/fixtures/
ephys_test.p``: 120 s, 289 units, 124,905 spikes, no brain regions). This script

1. fetches that wheel with ``pip download --no-deps ibllib==4.1.0`` (into ``--out``; it is
   kept, so a second run needs no network), checks the fixture's SHA-256, and reads its spike
   times and cluster ids (a pickle: only this known file is ever unpickled, never a user path);
2. writes them to a ``.npz`` and imports it the documented way, spikes only:
   ``poyo import arrays rec.npz --spike-times t --unit-ids unit --brainset ibl_fixture``;
3. trains the default recipe, ``poyo train dataset=ibl_fixture objective=mtm`` (one run per
   seed; nothing else set), and prints the table of its ``mtm_results.json``: co-smoothing
   and forward bits per spike of the model's own readout, its state read by a fitted readout,
   the GLM and each unit's mean rate, with the wall time of each run.

The acceptance it checks (issue 37): own-readout co-bps >= GLM + 0.05 and forward bps > 0,
within 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "ibllib-4.1.0-py3-none-any.whl"
FIXTURE = "brainbox/tests/fixtures/ephys_test.p"
FIXTURE_SHA256 = "76efa446f69b9c01511e22d201a36b9b20051f00b750b1fb5011febcde409eb8"
BRAINSET = "ibl_fixture"


def fixture_arrays(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The fixture's spike times (s) and cluster ids, from the pinned ibllib wheel."""
    wheel = out / WHEEL
    if not wheel.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "ibllib==4.1.0", "-d", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(FIXTURE)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != FIXTURE_SHA256:
        raise RuntimeError(f"{wheel}:{FIXTURE} has SHA-256 {digest}, not the known {FIXTURE_SHA256}: not unpickling it")
    d = pickle.loads(raw)  # the known file only (checked above)
    return np.asarray(d["spike_times"], np.float64), np.asarray(d["spike_clusters"], np.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/mtm_neuropixels"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--extra", nargs="*", default=[], help="more `poyo train` overrides (default: none)")
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    times, units = fixture_arrays(out)
    np.savez(out / "rec.npz", t=times, unit=units)
    processed = out / "processed"
    cli = [sys.executable, "-m", "poyo.cli"]
    subprocess.run([*cli, "import", "arrays", str(out / "rec.npz"), "--spike-times", "t", "--unit-ids", "unit",
                    "--brainset", BRAINSET, "--processed-dir", str(processed), "--overwrite"], check=True)  # fmt: skip
    rows = []
    for seed in args.seeds:
        run = out / f"seed{seed}"
        cmd = [*cli, "train", f"dataset={BRAINSET}", f"data_root={processed}", "objective=mtm", f"seed={seed}",
               f"hydra.run.dir={run}", *args.extra]  # fmt: skip
        shutil.rmtree(run, ignore_errors=True)  # a fresh run: an earlier call's metrics.csv would be appended to
        t0 = time.time()
        with open(out / f"seed{seed}.log", "w") as log:
            rc = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            raise RuntimeError(f"poyo train failed (exit {rc}); see {out / f'seed{seed}.log'}")
        summary = json.loads((run / "mtm_results.json").read_text())["summary"]
        (row,) = summary.values()
        rows.append({"seed": seed, "seconds": time.time() - t0, **row})
    methods = ("model", "model_fitted", "glm", "mean_rate")
    print(
        f"\n{'seed':>4} {'metric':<12} {'POYO-MtM':>9} {'fitted':>9} {'GLM':>9} {'mean':>9} {'own-GLM':>8} {'wall':>7}"
    )
    for r in rows:
        for metric in ("co-bps", "forward bps"):
            v = r[metric]
            cells = " ".join(f"{v[m]:>9.3f}" for m in methods)
            print(f"{r['seed']:>4} {metric:<12} {cells} {v['model'] - v['glm']:>+8.3f} {r['seconds']:>6.0f}s")
    if len(rows) > 1:
        for metric in ("co-bps", "forward bps"):
            gaps = [r[metric]["model"] - r[metric]["glm"] for r in rows]
            print(
                f"mean {metric:<12} own - GLM {statistics.mean(gaps):+.3f} ± {statistics.stdev(gaps):.3f} ({len(rows)} seeds)"
            )
    (out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

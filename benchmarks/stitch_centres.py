"""Which stitching centre validation chooses, and what it gives on test, under three rules.

    python benchmarks/stitch_centres.py <run folder> [<run folder> ...]

Each run folder is one ``train.py`` run (``checkpoints/model.pt`` and ``hparams.yaml``, e.g.
those ``benchmarks/real_data.py`` and ``benchmarks/head_direction.py`` leave under their
``runs/``). Its tested weights predict its validation and test splits once, with the windows
and data of its own config; the centre is then chosen on validation by:

* ``middle``: always the window's middle (0.5);
* ``margin``: the best-scoring centre if it beats the middle by more than
  ``stitch.CENTRE_MARGIN`` (the rule before 2026-12-06: ``best_centres(z=0)``);
* ``now``: :meth:`poyo.training.stitch.Stitcher.best_centres` as it is.

Prints, per run, the validation gain of every centre over the middle with its jackknife
standard error, then a table of each rule's centre and test score and the sum of the test
changes against the middle. Figures in benchmarks/README.md, "The stitching centre".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poyo.model import load_pretrained  # noqa: E402
from poyo.training.config import RunConfig  # noqa: E402
from poyo.training.run import make_datamodule, prepare_data  # noqa: E402
from poyo.training.stitch import DEFAULT_CENTRE, stitch_predictions  # noqa: E402


def evaluate(run_dir: Path) -> dict:
    """Validation gains per centre and each rule's centre and test score, for one run."""
    model = load_pretrained(run_dir / "checkpoints" / "model.pt")
    saved = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    cfg = RunConfig.from_dict(saved["config"]).with_changes(num_workers=0)
    cfg = cfg.resolved({"window_length": model.config.window_length})
    dm = make_datamodule(cfg, prepare_data(cfg), model.readout_configs, progress=False)
    dm.attach(model)
    with torch.no_grad():
        valid, test = (stitch_predictions(model, dm.eval_dataloader(s)) for s in ("valid", "test"))
    keys = list(valid.stitched())
    if len(keys) != 1:
        raise ValueError(f"{run_dir}: one session and readout expected, got {keys}")
    ((session, readout),) = keys
    rules = {"middle": {readout: DEFAULT_CENTRE}, "margin": valid.best_centres(z=0.0), "now": valid.best_centres()}
    return {
        "run": str(run_dir),
        "gains": valid.centre_gains(readout),
        "rules": {r: (c[readout], test.scores(c)[session][readout]) for r, c in rules.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with checkpoints/model.pt and hparams.yaml)")
    a = p.parse_args()
    results = []
    for run_dir in a.runs:
        if not (run_dir / "checkpoints" / "model.pt").is_file() or not (run_dir / "hparams.yaml").is_file():
            raise SystemExit(f"{run_dir}: not a run folder (needs checkpoints/model.pt and hparams.yaml)")
        r = evaluate(run_dir)
        results.append(r)
        print(f"{run_dir}\n  validation gain over the middle (± jackknife se):")
        print("   " + "  ".join(f"{c}: {g:+.4f} ± {se:.4f}" for c, (g, se) in r["gains"].items()))
    print(f"\n{'run':<60} {'middle':>8} {'margin':>16} {'now':>16}")
    total = {"margin": 0.0, "now": 0.0}
    for r in results:
        base = r["rules"]["middle"][1]
        cells = []
        for rule in ("margin", "now"):
            c, s = r["rules"][rule]
            total[rule] += s - base
            cells.append(f"{c:.1f}: {s:.4f}")
        print(
            f"{Path(r['run']).parent.parent.name + '/' + Path(r['run']).name:<60.60} {base:>8.4f} {cells[0]:>16} {cells[1]:>16}"
        )
    print(f"{'sum of test changes against the middle':<60} {'':>8} {total['margin']:>+16.4f} {total['now']:>+16.4f}")


if __name__ == "__main__":
    main()

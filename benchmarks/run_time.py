"""Where a training run's wall time goes: steps, the gaps between them, validations, the rest.

    python benchmarks/run_time.py dataset=s1_full data_root=<folder> [key=value ...]

Runs ``poyo train`` with the overrides given (Hydra's, as ``train.py`` takes them) and a callback
that stamps the start and end of every training step, then prints:

* the training steps (forward, backward, optimiser, the logging inside a step): their sum,
  median, and mean per 300 steps (how much the machine's speed drifts during the run);
* the gaps between steps under 0.5 s (fetching the next batch, callbacks);
* the gaps of 0.5 s or more: the validations inside training;
* the rest of the run: reading and checking the data, the final validation, the test, the
  linear decoders and the plots (the wall time starts after Python has imported poyo and
  Lightning, which takes a few seconds more).

The stamps go to ``<run folder>/step_times.json``. Figures in benchmarks/README.md, "Where an fp32
S1 run's time goes".
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402

from poyo.cli import run_hydra  # noqa: E402
from poyo.training import run  # noqa: E402

VALIDATION_GAP_S = 0.5  # a gap between two steps at least this long holds a validation


class StepStamps(L.Callback):
    """Monotonic times of each training step's start and end, written when training ends."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "step_times.json"
        self.starts: list[float] = []
        self.ends: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.path.write_text(json.dumps({"starts": self.starts, "ends": self.ends}))


def breakdown(starts: list[float], ends: list[float], wall_s: float) -> dict:
    """Seconds per part of a run from its steps' start and end stamps and its whole wall time."""
    if not starts or len(starts) != len(ends):
        raise ValueError(f"need as many step starts as ends, at least one: got {len(starts)} and {len(ends)}")
    steps = [e - s for s, e in zip(starts, ends)]
    gaps = [s - e for e, s in zip(ends[:-1], starts[1:])]
    span = ends[-1] - starts[0]
    return {
        "steps": len(steps),
        "steps_s": sum(steps),
        "step_median_s": statistics.median(steps),
        "step_mean_per_300": [statistics.fmean(steps[i : i + 300]) for i in range(0, len(steps), 300)],
        "between_steps_s": sum(g for g in gaps if g < VALIDATION_GAP_S),
        "validations": sum(g >= VALIDATION_GAP_S for g in gaps),
        "validations_s": sum(g for g in gaps if g >= VALIDATION_GAP_S),
        "rest_s": wall_s - span,
        "wall_s": wall_s,
    }


def main() -> None:
    overrides = sys.argv[1:]
    stamps: list[StepStamps] = []
    make_trainer = run.make_trainer

    def with_stamps(cfg, run_dir, *, callbacks=(), **kw):
        stamps.append(StepStamps(run_dir))
        return make_trainer(cfg, run_dir, callbacks=[*callbacks, stamps[-1]], **kw)

    run.make_trainer = with_stamps
    start = time.perf_counter()
    try:
        run_hydra(overrides, program="benchmarks/run_time.py")
    finally:
        run.make_trainer = make_trainer
    wall = time.perf_counter() - start
    if not stamps or not stamps[-1].starts:
        raise SystemExit("no training step ran (mode=evaluate, or the run stopped before training)")
    b = breakdown(stamps[-1].starts, stamps[-1].ends, wall)
    print(
        f"\nwall {b['wall_s']:.0f} s: {b['steps']} training steps {b['steps_s']:.0f} s "
        f"(median {b['step_median_s']:.3f} s; mean per 300: {', '.join(f'{m:.3f}' for m in b['step_mean_per_300'])}), "
        f"between steps {b['between_steps_s']:.0f} s, {b['validations']} validations {b['validations_s']:.0f} s, "
        f"the rest {b['rest_s']:.0f} s"
    )


if __name__ == "__main__":
    main()

"""Few-shot adaptation: how much data does a new session need once a model is pretrained?

    python benchmarks/few_shot.py                    # about 50 min on 2 CPU cores
    python benchmarks/few_shot.py --pretrain-animals 8 --held-out 2
    python benchmarks/few_shot.py --sizes 30 120 --seeds 1 --steps 100 --pretrain-steps 300   # quicker look

A synthetic set of N + 2 animals is generated (2 sessions each, one centre-out, one
random-target). POYO is pretrained once on the first N (``--pretrain-animals``, default 3).
The centre-out session of the next animal is held out (``--held-out 2``: of the next two):
a new animal with new units. On them, with the earliest 30 s, 2 min and 10 min of each
session's training split, this script runs ``train.py`` for

* unit identification (only the new unit/session embeddings learn), with the new embeddings
  starting at random and from their firing statistics (``finetune.init``, see
  ``poyo.training.unit_init``),
* full fine-tuning (everything learns; the default init),
* training from scratch (same architecture, same data),

each with ``--seeds`` seeds (window order, dropout, random rows: the pretraining is shared),
and every run also fits the linear baselines on the same data (ridge on binned counts: the
window-matched decoder with past and future bins, and the causal one, a Wiener filter; they
do not depend on the seed). The GRU decoders (:mod:`poyo.training.gru`, bidirectional and
causal; size and dropout chosen on validation) are fitted on the same data with each seed. All runs are scored on the same held-out test trials (R² on reach
periods, stitched windows, mean over the held-out sessions). Prints mean ± sd over seeds and
writes ``results.json`` and ``few_shot.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATE = dict(sessions_per_animal=2, duration_s=900.0, random_target_every=2, seed=1)


def animals(pretrain_animals: int) -> tuple[list[str], list[str]]:
    """(pretraining animals, the 2 held-out animals): the last two letters are held out."""
    names = [f"monkey_{chr(ord('a') + i)}" for i in range(pretrain_animals + 2)]
    return names[:pretrain_animals], names[pretrain_animals:]


def session_ids(folder: Path, pretrain: list[str], held_out: list[str]) -> tuple[list[str], list[str]]:
    """(pretraining sessions, held-out centre-out sessions) of the generated set."""
    names = sorted(p.stem for p in folder.glob("*.h5"))
    pre = [
        f"synthetic_reaching/{n}" for n in names if n.startswith(tuple(a + "_" for a in pretrain))
    ]  # ids carry the brainset, not the folder
    held = [
        f"synthetic_reaching/{n}" for n in names if n.startswith(tuple(a + "_" for a in held_out)) and "center_out" in n
    ]
    return pre, held


def launch(run_dir: Path, overrides: list[str], log: Path) -> float:
    """One train.py run, its output in ``log``; returns its wall time (s)."""
    cmd = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *overrides]
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        raise RuntimeError(f"train.py failed (exit {rc}); see {log}\n  {' '.join(cmd)}")
    return time.time() - t0


def run_train(run_dir: Path, overrides: list[str], log: Path) -> dict:
    """One train.py run; returns its test_results.json (and how long it took)."""
    seconds = launch(run_dir, overrides, log)
    out = json.loads((run_dir / "test_results.json").read_text())
    out["seconds"] = seconds
    return out


def adapt_run(out: Path, common: list[str], method: str, overrides: list[str], seconds: float, seed: int, steps: int,
              ckpt: Path) -> tuple[str, dict]:  # fmt: skip
    """One run of ``method`` (its ``overrides``; "from scratch" needs no checkpoint) on the
    earliest ``seconds`` of the held-out data; returns (the run's name, its test results)."""
    extra = [*overrides, f"trainer.max_steps={steps}", f"seed={seed}"]
    if method != "from scratch":
        extra.append(f"finetune.checkpoint={ckpt}")
    run = f"{method.replace(' ', '_').replace('(', '').replace(')', '')}_{int(seconds)}s_seed{seed}"
    return run, run_train(out / run, [*common, f"train_seconds={seconds}", *extra], out / f"{run}.log")


def dataset_overrides(data_root: Path, name: str, generate: dict) -> list[str]:
    return [
        f"data_root={data_root}",
        f"dataset.name={name}",
        *(f"dataset.generate.{k}={v}" for k, v in generate.items()),
        "num_workers=2",
    ]


METHODS = {  # row name: train.py overrides (besides the data and the steps)
    "unit_identification (random init)": ["finetune=unit_identification", "finetune.init=random"],
    "unit_identification (statistics init)": ["finetune=unit_identification", "finetune.init=statistics"],
    "full fine-tuning": ["finetune=full"],
    "from scratch": [],
}
BASELINES = {"linear (window)": "linear", "causal (Wiener)": "causal"}
GRU_ROWS = {"GRU (bidirectional)": "window", "GRU (causal)": "causal"}  # row: poyo.training.gru variant


def gru_scores(run_dir: Path, folder: Path, sessions: list[str], seconds: float, seed: int, **settings) -> dict:
    """Mean test R² over ``sessions`` of both GRU decoders (:mod:`poyo.training.gru`), fitted on
    the same data as the ``train.py`` run in ``run_dir`` (its readout, evaluation intervals, and
    the earliest ``seconds`` of each training split); ``settings`` go to ``GRUBaseline``."""
    sys.path.insert(0, str(ROOT))
    from poyo.data import Dataset
    from poyo.model import load_pretrained
    from poyo.training.gru import GRUBaseline

    readout = load_pretrained(run_dir / "checkpoints" / "model.pt").readout_configs[0]
    intervals = sorted({*(readout.eval_intervals or ()), *readout.weights})
    ds = Dataset(
        folder, behaviour=[readout.key], intervals=intervals, sessions=sessions, train_seconds=seconds, validate=False
    )
    res = GRUBaseline(seed=seed, verbose=True, **settings).evaluate(ds, readout)
    return {row: statistics.fmean(r["r2"] for r in res[variant].values()) for row, variant in GRU_ROWS.items()}


STYLES = ["o-", "D-", "s-", "^-", "v-.", "<-.", "x--", "+:"]


def summarise(results: list[dict]) -> dict[tuple[str, float], tuple[float, float, int]]:
    """(method, seconds) -> (mean, sd, runs) of test R² over seeds."""
    cells: dict[tuple[str, float], list[float]] = {}
    for r in results:
        cells.setdefault((r["method"], r["seconds_per_session"]), []).append(r["r2"])
    return {k: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for k, v in cells.items()}


def plot(results: list[dict], png: Path, rows=None, title: str = "Adapting to new animals") -> None:
    """Test R² against training data per new session, one line per row (default: this script's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(results)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, style in zip(rows or [*METHODS, *GRU_ROWS, *BASELINES], STYLES):
        cells = sorted((s, m) for (name, s), m in summary.items() if name == method)
        if cells:
            x = [s / 60 for s, _ in cells]
            ax.errorbar(x, [m[0] for _, m in cells], yerr=[m[1] for _, m in cells], fmt=style, capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("training data per new session (min)")
    ax.set_ylabel("test R² (held-out sessions), mean ± sd over seeds")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def table(results: list[dict], rows=None) -> str:
    """A markdown table of mean ± sd per row (default: this script's) and data size."""
    summary = summarise(results)
    sizes = sorted({s for _, s in summary})
    lines = ["| method | " + " | ".join(f"{s / 60:g} min" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for method in rows or [*METHODS, *GRU_ROWS, *BASELINES]:
        cells = ["{:.3f} ± {:.3f}".format(*summary[(method, s)][:2]) if (method, s) in summary else "" for s in sizes]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "few_shot")
    p.add_argument("--data-root", type=Path, default=ROOT / "data" / "processed")
    p.add_argument(
        "--sizes", type=float, nargs="+", default=[30, 120, 600], help="seconds of training data per held-out session"
    )
    p.add_argument("--seeds", type=int, default=3, help="adaptation runs per cell (seeds 0, 1, ...)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD")
    p.add_argument("--pretrain-steps", type=int, default=2400)
    p.add_argument("--steps", type=int, default=300, help="steps for unit identification and fine-tuning")
    p.add_argument("--scratch-steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=16, help="16 lets 30 s of one session make 2 batches")
    p.add_argument("--model", default="poyo_mini")
    p.add_argument(
        "--pretrain-animals", type=int, default=3, help="animals to pretrain on (2 more are generated and held out)"
    )
    p.add_argument("--held-out", type=int, default=1, choices=[1, 2], help="new sessions (animals) to adapt to")
    p.add_argument(
        "--pretrained", type=Path, default=None, help="reuse this pretrained model.pt instead of pretraining"
    )
    p.add_argument("--gru-hidden", type=int, nargs="+", default=[64, 128], help="GRU sizes to choose from")
    p.add_argument("--gru-dropout", type=float, nargs="+", default=[0.3, 0.5], help="GRU dropout rates to choose from")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    pretrain_animals, held_animals = animals(a.pretrain_animals)
    generate = {**GENERATE, "num_animals": a.pretrain_animals + 2}
    name = "few_shot_synthetic" if a.pretrain_animals == 3 else f"few_shot_synthetic_{a.pretrain_animals}"
    common = dataset_overrides(a.data_root, name, generate) + [
        f"model={a.model}",
        f"batch_size={a.batch_size}",
        "trainer.check_val_every_n_epoch=100000",
        "plot_sessions=2",
    ]

    pre_dir = a.out / "pretrain"
    ckpt = a.pretrained or pre_dir / "checkpoints" / "model.pt"
    results = []
    sys.path.insert(0, str(ROOT))
    from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure

    ensure(a.data_root / name, SyntheticConfig(**generate))
    pre, held = session_ids(a.data_root / name, pretrain_animals, held_animals)
    if len(held) != 2 or len(pre) != 2 * a.pretrain_animals:
        raise RuntimeError(f"unexpected sessions in {a.data_root / name}: pretrain {pre}, held out {held}")
    held = held[: a.held_out]
    sess = lambda ids: "sessions=[" + ",".join(ids) + "]"  # noqa: E731
    if not ckpt.is_file():
        print(
            f"pretraining {a.model} on {len(pre)} sessions of animals {pretrain_animals} for {a.pretrain_steps} steps ...",
            flush=True,
        )
        r = run_train(pre_dir, common + [sess(pre), f"trainer.max_steps={a.pretrain_steps}"], a.out / "pretrain.log")
        print(
            f"  pretraining test R² {r['poyo_mean_r2']:.3f} (linear {r['linear_mean_r2']:.3f}, causal {r['causal_mean_r2']:.3f}), {r['seconds']:.0f} s",
            flush=True,
        )

    for seconds in a.sizes:
        for seed in range(a.seeds):
            for method in a.methods:
                steps = a.scratch_steps if method == "from scratch" else a.steps
                run, r = adapt_run(a.out, [*common, sess(held)], method, METHODS[method], seconds, seed, steps, ckpt)
                results.append(
                    dict(
                        method=method,
                        seconds_per_session=seconds,
                        seed=seed,
                        r2=r["poyo_mean_r2"],
                        steps=steps,
                        wall_s=round(r["seconds"], 1),
                        sessions=r["sessions"],
                    )
                )
                print(
                    f"{method:40s} {seconds:6.0f} s/session seed {seed}  R² {r['poyo_mean_r2']:.3f}  "
                    f"(linear {r['linear_mean_r2']:.3f}, causal {r['causal_mean_r2']:.3f})  {r['seconds']:.0f} s",
                    flush=True,
                )
            gru = gru_scores(
                a.out / run, a.data_root / name, held, seconds, seed, hidden=a.gru_hidden, dropout=a.gru_dropout
            )
            for row, r2 in gru.items():  # the GRUs' seed sets their initialisation and minibatch order
                results.append(dict(method=row, seconds_per_session=seconds, seed=seed, r2=r2, steps=0, wall_s=0.0))
            print(
                f"{'GRU':40s} {seconds:6.0f} s/session seed {seed}  "
                + ", ".join(f"{k} {v:.3f}" for k, v in gru.items()),
                flush=True,
            )
        for row, key in BASELINES.items():  # fitted on the same data in every run; identical across seeds
            results.append(dict(method=row, seconds_per_session=seconds, r2=r[f"{key}_mean_r2"], steps=0, wall_s=0.0))
        (a.out / "results.json").write_text(json.dumps(results, indent=1))

    print(f"\nmean ± sd of test R² over {a.seeds} seed(s), {len(held)} held-out session(s) (new animals, new units):\n")
    print(table(results))
    plot(results, a.out / "few_shot.png")
    print(f"\nresults: {a.out / 'results.json'}, plot: {a.out / 'few_shot.png'}")


if __name__ == "__main__":
    main()

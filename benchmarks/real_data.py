"""POYO against the linear decoders on a real recording: R² against steps and wall time.

    python benchmarks/real_data.py [--models poyo_mini poyo_1.3M] [--subsets full small short] [--seed N]
        [--delay S] [--profile] [--gru-window W] [--extra key=value ...]

The recording is ``../shared/data/s1_miller/s1_data.mat`` (macaque area 2, 52 units, 50 ms
spike counts and hand velocity, 29 min; see its README). It is imported exactly as a user
would (``poyo.pipelines.arrays.from_binned_counts``: spike times placed uniformly inside
their bins, seed 0) and trained with ``python train.py dataset=<folder>``, the default
single-session recipe, with no config written by hand. Subsets test that the recipe is not
tuned to one file's size: ``small`` keeps 15 random units and the first 9 minutes (a small
population, like a head-direction recording), ``short`` all units for the first 13 minutes.

For every run: validation R² against steps and seconds, the test R² of the checkpoint chosen
on validation beside the window-matched and causal linear decoders, and the wall time. Once
per recording, the GRU decoders (:mod:`poyo.training.gru`: bidirectional over -0.75..+0.25 s
and causal over the past 1 s, on the same splits and test samples; ``--no-gru`` skips them).
``--gru-window W`` gives them the contexts of a W s window instead (-0.75 W..+0.25 W and the
past W s), as ``train.py`` does for the GRUs it prints: POYO reads 2 s windows by default
(``window_length=auto``: the recipe's 2 s; ``--extra window_length=1`` for 1 s), so the GRUs
may read 2 s too.
``--seed`` seeds both POYO's run and the GRU fits: on the small subset one seed is not enough
to rank decoders (its test split holds 54 s), so repeat with a few.
``--delay S`` delays the behaviour by S seconds against the spikes (whole 50 ms bins; the
subset's first S s of behaviour and last S s of spikes are dropped), so the spikes lead it by S
more than in S1: what a motor area, whose spikes precede the movement, looks like. Which part
of a window decodes best then moves towards its end. ``--profile`` prints, for each POYO run,
the single-window R² of its tested weights by the sample's position in the window (tenths) and
the stitched R² for every stitching centre, on the validation and test splits (the run itself
tests with the centre chosen on validation).
Writes ``results.json`` and ``r2_vs_steps.png`` (R² against steps and against time) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poyo.pipelines.arrays import from_binned_counts, load_arrays, write_session  # noqa: E402

SUBSETS = {
    "full": dict(units=None, minutes=None),
    "small": dict(units=15, minutes=9.0),
    "short": dict(units=None, minutes=13.0),
}


def import_subset(mat: Path, data_root: Path, name: str, delay: float = 0.0) -> str:
    """Write the S1 recording (or a subset of it) as brainset ``s1_<name>`` (``_delay<ms>ms`` with
    the behaviour delayed by ``delay`` s against the spikes); returns the brainset."""
    shift = int(round(delay / 0.05))
    brainset = f"s1_{name}" + (f"_delay{shift * 50}ms" if shift else "")
    if (data_root / brainset).is_dir():
        return brainset
    arrays = load_arrays(mat)
    counts, vel = arrays["spikes"], arrays["vel"]
    if shift > 0:  # behaviour at t paired with the spikes recorded shift bins later: the spikes lead it
        counts, vel = counts[shift:], vel[:-shift]
    elif shift < 0:
        counts, vel = counts[:shift], vel[-shift:]
    spec = SUBSETS[name]
    if spec["minutes"]:
        n = int(spec["minutes"] * 60 / 0.05)
        counts, vel = counts[:n], vel[:n]
    if spec["units"]:
        keep = np.sort(np.random.default_rng(0).choice(counts.shape[1], spec["units"], replace=False))
        counts = counts[:, keep]
    data = from_binned_counts(counts, 0.05, {"hand.vel": vel}, brainset=brainset, session_id="s1_data", seed=0)
    write_session(data, data_root)
    return brainset


def run(brainset: str, model: str, data_root: Path, run_dir: Path, extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        f"dataset={brainset}",
        f"model={model}",
        f"data_root={data_root}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    print(" ".join(cmd), flush=True)
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: an earlier call's metrics.csv would be appended to
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    (run_dir / "stdout.txt").parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "stdout.txt").write_text(out.stdout + "\n" + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"{brainset} / {model} failed:\n{out.stderr[-3000:]}")
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    curve = [
        (int(r["step"]), float(r["val/metric"]), float(r["val/elapsed_s"]))
        for r in rows
        if r.get("val/metric") and r.get("val/elapsed_s")
    ]
    test = json.loads((run_dir / "test_results.json").read_text())
    return {
        "brainset": brainset, "model": model, "wall_s": round(wall, 1), "val_curve": curve, "checkpoint": test["checkpoint"],
        "poyo_r2": test["poyo_mean_r2"], "linear_r2": test["linear_mean_r2"], "causal_r2": test["causal_mean_r2"],
        "stitch_centre": test.get("stitch_centre"),
    }  # fmt: skip


def position_profile(run_dir: Path, data_root: Path, brainset: str, extra: list[str] = ()) -> dict:
    """Single-window R² of the run's tested weights by the sample's position in its window
    (tenths), and the stitched R² at every stitching centre, on the validation and test splits
    (windows as the run had them: ``extra`` are its train.py overrides)."""
    import torch

    from poyo.model import load_pretrained
    from poyo.training.config import compose
    from poyo.training.run import make_datamodule, prepare_data
    from poyo.training.stitch import CENTRES, r2_score, stitch_predictions

    model = load_pretrained(run_dir / "checkpoints" / "model.pt")
    cfg = compose(f"dataset={brainset}", f"data_root={data_root}", *extra, "num_workers=0")
    cfg = cfg.resolved({"window_length": model.config.window_length})  # the windows the model was trained on
    dm = make_datamodule(cfg, prepare_data(cfg), model.readout_configs, progress=False)
    dm.attach(model)
    name = model.readout_configs[0].name
    out = {}
    for split in ("valid", "test"):
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as the run evaluated (bf16-mixed where the CPU has it)
            st = stitch_predictions(model, dm.eval_dataloader(split))
        (session,) = {s for s, _ in st.stitched()}
        rows = st.predictions(session, name)
        tenth = np.minimum((rows["position"] * 10).astype(int), 9)
        ok = rows["eval"].astype(bool)
        out[split] = {
            "by_tenth": [
                r2_score(rows["pred"][ok & (tenth == k)], rows["target"][ok & (tenth == k)]) for k in range(10)
            ],
            "by_centre": {c: st.scores({name: c})[session][name] for c in CENTRES},
        }
    return out


def gru_scores(folder: Path, seed: int = 0, window: float = 1.0) -> dict:
    """Test R² of both GRU decoders on the recording's one session (same splits as train.py),
    with the contexts of a ``window`` s window."""
    from poyo.data import Dataset
    from poyo.readouts import ReadoutConfig
    from poyo.training.gru import GRUBaseline

    t0 = time.time()
    ds = Dataset(folder, behaviour=["hand.vel"], validate=False)
    gru = GRUBaseline.for_window(window, seed=seed, verbose=True)
    res = gru.evaluate(ds, ReadoutConfig("hand_velocity_2d", key="hand.vel"))
    sid = ds.session_ids[0]
    return {"gru_r2": res["window"][sid]["r2"], "gru_causal_r2": res["causal"][sid]["r2"], "seconds": time.time() - t0}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(r["brainset"] for r in results))
    fig, axes = plt.subplots(len(sets), 2, figsize=(10, 3.2 * len(sets)), squeeze=False)
    for row, bs in zip(axes, sets):
        mine = [r for r in results if r["brainset"] == bs]
        for r in mine:
            steps, r2, secs = zip(*r["val_curve"]) if r["val_curve"] else ((), (), ())
            row[0].plot(steps, r2, marker="o", ms=3, label=f"{r['model']} (test {r['poyo_r2']:.3f})")
            row[1].plot(secs, r2, marker="o", ms=3, label=r["model"])
        lines = [("linear_r2", "k", "--", "linear, window"), ("causal_r2", "grey", ":", "linear, causal"),
                 ("gru_r2", "C3", "-.", "GRU, bidirectional")]  # fmt: skip
        for ax in row:
            for key, color, ls, name in [x for x in lines if x[0] in mine[0]]:
                ax.axhline(mine[0][key], color=color, ls=ls, lw=1, label=f"{name} (test {mine[0][key]:.3f})")
            ax.set_ylabel(f"{bs}: validation R²")
            ax.set_ylim(max(0.0, min(ax.get_ylim()[0], 0.4)), 1.0)
            ax.grid(alpha=0.3)
        row[0].set_xlabel("training step")
        row[1].set_xlabel("seconds of training")
        row[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mat", type=Path, default=ROOT.parent / "shared" / "data" / "s1_miller" / "s1_data.mat")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmark_real_data")
    p.add_argument("--models", nargs="+", default=["poyo_mini", "poyo_1.3M"])
    p.add_argument("--subsets", nargs="+", default=["full"], choices=sorted(SUBSETS))
    p.add_argument("--val-every", type=int, default=4, help="validate every N epochs (the R² curve's resolution)")
    p.add_argument("--extra", nargs="*", default=[], help="more train.py overrides, for every run")
    p.add_argument("--no-gru", action="store_true", help="skip the GRU decoders (minutes per recording)")
    p.add_argument(
        "--gru-window",
        type=float,
        default=1.0,
        metavar="W",
        help="the GRUs' contexts are a W s window's: -0.75 W..+0.25 W and the past W s",
    )
    p.add_argument("--delay", type=float, default=0.0, metavar="S",
                   help="delay the behaviour by S s against the spikes (spikes lead it, as in a motor area); 0: as recorded")  # fmt: skip
    p.add_argument("--profile", action="store_true",
                   help="print each run's R2 by position in the window and by stitching centre (valid and test)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0,
                   help="seed of POYO's run (train.py seed=) and of the GRU fits: repeat with 1, 2 for the spread")  # fmt: skip
    p.add_argument("--linear-contexts", nargs="*", type=float, default=[], metavar="S",
                   help="also fit the window-matched linear decoder with these longest contexts (s), e.g. 1.5 2.0: "
                        "POYO's stitched predictions average windows that together span up to 2 x window - eval_step")  # fmt: skip
    a = p.parse_args()
    if not a.mat.is_file():
        sys.exit(
            f"no recording at {a.mat}; pass --mat PATH (a .mat with 'spikes' (bins, units) and 'vel' (bins, 2) at 50 ms)"
        )
    import torch

    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        flush=True,
    )
    data_root = a.out / "data"
    results, grus, brainsets = [], {}, {}
    for subset in a.subsets:
        brainset = brainsets[subset] = import_subset(a.mat, data_root, subset, a.delay)
        if not a.no_gru:
            grus[brainset] = gru_scores(data_root / brainset, a.seed, a.gru_window)
            print(f"{brainset:10s} GRU bidirectional {grus[brainset]['gru_r2']:.3f}  causal {grus[brainset]['gru_causal_r2']:.3f}"
                  f"  {grus[brainset]['seconds']:.0f} s", flush=True)  # fmt: skip
        for model in a.models:
            r = run(
                brainset,
                model,
                data_root,
                a.out / "runs" / f"{brainset}_{model}",
                [f"trainer.check_val_every_n_epoch={a.val_every}", f"seed={a.seed}", *a.extra],
            )
            r.update({k: v for k, v in grus.get(brainset, {}).items() if k != "seconds"})
            results.append(r)
            print(
                f"{brainset:10s} {model:11s} POYO {r['poyo_r2']:.3f}  linear {r['linear_r2']:.3f}  causal {r['causal_r2']:.3f}  {r['wall_s']:.0f} s  "
                f"({r['checkpoint']}; stitched towards {r['stitch_centre']} of the window)",
                flush=True,
            )
            if a.profile:
                r["profile"] = position_profile(a.out / "runs" / f"{brainset}_{model}", data_root, brainset, a.extra)
                for split, prof in r["profile"].items():
                    print(f"   {split:5s} R2 by tenth of the window: " + " ".join(f"{v:.3f}" for v in prof["by_tenth"]))
                    print(
                        f"   {split:5s} stitched R2 by centre:     "
                        + " ".join(f"{c:g}:{v:.4f}" for c, v in prof["by_centre"].items())
                    )
    print(
        f"\n{'recording':10s} {'model':11s} {'POYO R2':>8s} {'linear R2':>10s} {'causal R2':>10s} {'GRU R2':>7s} "
        f"{'GRU-c R2':>8s} {'vs best':>7s} {'wall s':>7s}"
    )
    for r in results:
        if "model" not in r:
            continue
        peers = [r[k] for k in ("linear_r2", "causal_r2", "gru_r2", "gru_causal_r2") if k in r]
        gru = f"{r['gru_r2']:7.3f} {r['gru_causal_r2']:8.3f}" if "gru_r2" in r else f"{'-':>7s} {'-':>8s}"
        print(
            f"{r['brainset']:10s} {r['model']:11s} {r['poyo_r2']:8.3f} {r['linear_r2']:10.3f} {r['causal_r2']:10.3f} {gru} "
            f"{r['poyo_r2'] - max(peers):+7.3f} {r['wall_s']:7.0f}"
        )
        print("   validation R2 by step: " + ", ".join(f"{s}:{v:.3f}" for s, v, _ in r["val_curve"]))
    if a.linear_contexts:
        from poyo.data import Dataset
        from poyo.readouts import ReadoutConfig
        from poyo.training.linear import LinearBaseline

        print("\nwindow-matched linear decoder against its longest context (test R2, context chosen on validation):")
        for subset in a.subsets:
            ds = Dataset(data_root / brainsets[subset], behaviour=["hand.vel"], validate=False)
            r = ReadoutConfig("hand_velocity_2d", key="hand.vel")
            for context in [1.0, *a.linear_contexts]:
                res = LinearBaseline(context_s=context).evaluate(ds, r)["window"][ds.session_ids[0]]
                print(
                    f"  {brainsets[subset]:10s} up to {context:.2f} s: R2 {res['r2']:.3f} (chose -{res['before_s']:g} s .. +{res['after_s']:g} s)",
                    flush=True,
                )
                results.append(
                    {
                        "brainset": brainsets[subset],
                        "linear_context_s": context,
                        "linear_r2": res["r2"],
                        "before_s": res["before_s"],
                        "after_s": res["after_s"],
                    }
                )
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(results, indent=1))
    plot([r for r in results if "model" in r], a.out / "r2_vs_steps.png")
    print(f"\nresults: {a.out / 'results.json'}, plot: {a.out / 'r2_vs_steps.png'}")


if __name__ == "__main__":
    main()

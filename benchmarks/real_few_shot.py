"""Few-shot adaptation on real spikes: does pretraining help a session whose units are new?

    python benchmarks/real_few_shot.py                  # S1, about 2 h on 2 CPU cores
    python benchmarks/real_few_shot.py --sizes 120 --seeds 1 --pretrain-steps 600 --steps 100   # quicker look
    python benchmarks/real_few_shot.py --target other.mat   # a second recording: pretrain on S1, adapt to it
    python benchmarks/real_few_shot.py --target later       # stand-in: S1's last 40%, its units renamed
    python benchmarks/real_few_shot.py --target later --synthetic   # pretrain on S1 and the synthetic set

One real recording (default: the macaque S1 recording in ``../shared/data/s1_miller/``: 52
units, 50 ms counts and hand velocity, 29 min) is cut into pseudo-sessions: its units are dealt
at random (seed 0) into ``--groups`` disjoint groups, and each group becomes a session of its
own through the arrays importer (spikes placed uniformly inside their bins, the importer's 10
time blocks dealt 8/1/1, identical in every group). A held-out group is then a session whose
units the model has never seen, recorded from the same animal at the same time as the others
(so pretraining has seen the behaviour of the held-out group's training split, never of its
validation or test split). POYO (``--model``) is pretrained once on every other group, then on
the held-out group with the earliest 30 s, 2 min and 10 min of its training split this script
runs ``train.py`` for

* unit identification (only the new unit and session embeddings learn; new units start from
  their firing statistics, ``finetune.init=statistics``),
* full fine-tuning (everything learns),
* training from scratch (same architecture, same data),

with ``--seeds`` seeds each, and fits on the same data the GRU decoders
(:mod:`poyo.training.gru`: bidirectional over -0.75..+0.25 s, and causal over the past 1 s;
hidden size and dropout chosen on validation, the same seeds) and the linear decoders every
``train.py`` run prints (window-matched ridge, causal Wiener filter). Everything is scored on
the held-out group's test split. Prints mean ± sd over seeds and writes ``results.json`` and
``real_few_shot.png`` to ``--out``.

``--target`` runs the multi-recording variant instead: POYO is pretrained on every unit of
``--mat`` (one session) and adapted, in the same way, to another recording (a ``.mat`` or
``.npz`` in ``--mat``'s format) whose units and behaviour it never saw. Without a second
recording, ``--target later`` stands in for a later recording of the same array: pretraining
gets the first 60% of ``--mat``'s time, the new session is the last 40% with its units renamed
(as a new spike sorting would name them), so neither its units nor any of its behaviour were seen.

``--synthetic`` adds the embedded synthetic reaching set (``dataset=synthetic_reaching``, 9
sessions, 36 min) to the pretraining, in either variant, as POYO pretrains on every recording at
hand: one velocity head, with each brainset's own normalisation and the synthetic preset's loss
weights. The new session and everything fitted on it are unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from few_shot import GRU_ROWS, adapt_run, gru_scores, plot, run_train, table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BRAINSET = "s1_groups"
RECORDINGS = "recordings"  # the brainset of the multi-recording variant (--target)
LATER = 0.6  # --target later: the share of --mat's time pretraining gets
METHODS = {  # row name: train.py overrides (besides the data and the steps)
    "unit identification": ["finetune=unit_identification", "finetune.init=statistics"],
    "full fine-tuning": ["finetune=full"],
    "from scratch": [],
}
LINEAR_ROWS = {"linear (window)": "linear", "causal (Wiener)": "causal"}
SYNTHETIC = "synthetic_reaching"  # --synthetic: the embedded set's preset and brainset folder


def write_groups(mat: Path, data_root: Path, groups: int) -> list[str]:
    """Deal the recording's units into ``groups`` sessions of brainset ``s1_groups``; returns their ids."""
    from poyo.pipelines.arrays import from_binned_counts, load_arrays, write_session

    folder = data_root / f"{BRAINSET}_{groups}"
    ids = [f"{BRAINSET}_{groups}/group_{g}" for g in range(groups)]
    if folder.is_dir() and len(list(folder.glob("*.h5"))) == groups:
        return ids
    arrays = load_arrays(mat)
    counts, vel = arrays["spikes"], arrays["vel"]
    if groups < 2 or counts.shape[1] < 2 * groups:
        raise SystemExit(f"--groups {groups}: need at least 2 groups of at least 2 units ({counts.shape[1]} units)")
    dealt = np.array_split(np.random.default_rng(0).permutation(counts.shape[1]), groups)
    for g, units in enumerate(dealt):
        units = np.sort(units)
        data = from_binned_counts(
            counts[:, units], 0.05, {"hand.vel": vel}, brainset=f"{BRAINSET}_{groups}", session_id=f"group_{g}",
            seed=g, unit_ids=[f"unit_{u}" for u in units],
        )  # fmt: skip
        write_session(data, data_root)
    return ids


def write_recordings(mat: Path, target: str, data_root: Path) -> tuple[list[str], list[str]]:
    """The multi-recording variant's sessions (brainset ``recordings``): ``source`` (all of
    ``mat``, or its first 60% when ``target`` is ``later``) and ``target`` (the other recording,
    or ``mat``'s last 40% with renamed units). Returns (pretraining ids, new-session ids)."""
    from poyo.pipelines.arrays import from_binned_counts, load_arrays, write_session

    def arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
        a = load_arrays(path)
        missing = [k for k in ("spikes", "vel") if k not in a]
        if missing:
            raise SystemExit(
                f"{path}: no {missing} array(s); need 'spikes' (bins, units) and 'vel' (bins, dims) at 50 ms"
            )
        return a["spikes"], a["vel"]

    counts, vel = arrays(mat)
    if target == "later":
        cut = int(round(LATER * len(counts)))
        parts = {"source": (counts[:cut], vel[:cut], "unit"), "target": (counts[cut:], vel[cut:], "later_unit")}
    else:
        other = Path(target)
        if not other.is_file():
            raise SystemExit(f"--target {target}: no such file (a .mat or .npz like --mat, or 'later')")
        t_counts, t_vel = arrays(other)
        if t_vel.shape[1] != vel.shape[1]:
            raise SystemExit(f"--target {other}: 'vel' has {t_vel.shape[1]} dims, {mat} has {vel.shape[1]}")
        parts = {"source": (counts, vel, "unit"), "target": (t_counts, t_vel, "target_unit")}
    folder = data_root / RECORDINGS
    if folder.is_dir():  # written for another --target: start again
        for f in folder.glob("*.h5"):
            f.unlink()
    for g, (name, (c, v, prefix)) in enumerate(parts.items()):
        data = from_binned_counts(
            c, 0.05, {"hand.vel": v}, brainset=RECORDINGS, session_id=name, seed=g,
            unit_ids=[f"{prefix}_{u}" for u in range(c.shape[1])],
        )  # fmt: skip
        write_session(data, data_root)
    return [f"{RECORDINGS}/source"], [f"{RECORDINGS}/target"]


def with_synthetic(out: Path, data_root: Path, brainset: str) -> tuple[list[str], str]:
    """Generate the synthetic set below ``data_root`` and write a dataset recipe that reads it
    beside ``brainset`` (``auto.yaml``'s augmentation; one ``hand.vel`` head, each brainset with
    its own normalisation: the real sessions' from their training split, the synthetic preset's
    own weights and std). Returns (the ``train.py`` overrides that select it, the synthetic
    sessions' pattern)."""
    import yaml

    from poyo.configs import preset
    from poyo.data.discover import readout_name
    from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure
    from poyo.readouts.spec import READOUTS

    synthetic = preset("dataset", SYNTHETIC)
    ensure(data_root / SYNTHETIC, SyntheticConfig(**synthetic["generate"]))
    head = readout_name("hand.vel", 2, list(READOUTS.values()))  # the head dataset=<brainset> adapts
    (readout,) = synthetic["readouts"]
    name = f"{brainset}_and_{SYNTHETIC}"
    recipe = {
        **preset("dataset", "auto"), "name": name, "brainsets": [brainset, SYNTHETIC],
        "readouts": [
            {"name": head, "key": "hand.vel", "sessions": f"{brainset}/*"},
            {**readout, "name": head, "sessions": f"{SYNTHETIC}/*"},
        ],
    }  # fmt: skip
    folder = out / "configs"
    (folder / "dataset").mkdir(parents=True, exist_ok=True)
    (folder / "dataset" / f"{name}.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return [f"hydra.searchpath=[file://{folder.absolute()}]", f"dataset={name}"], f"{SYNTHETIC}/*"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mat", type=Path, default=ROOT.parent / "shared" / "data" / "s1_miller" / "s1_data.mat")
    p.add_argument("--out", type=Path, default=None, help="default: outputs/real_few_shot[_<target>]")
    p.add_argument("--groups", type=int, default=4, help="pseudo-sessions the units are dealt into")
    p.add_argument("--held-out", type=int, default=0, help="which group is the new session")
    p.add_argument(
        "--sizes", type=float, nargs="+", default=[30, 120, 600], help="seconds of the new session's training split"
    )
    p.add_argument("--seeds", type=int, default=3, help="runs per cell (seeds 0, 1, ...)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD")
    p.add_argument("--model", default="poyo_mini")
    p.add_argument("--pretrain-steps", type=int, default=3000)
    p.add_argument("--steps", type=int, default=300, help="steps for unit identification and fine-tuning")
    p.add_argument("--scratch-steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16, help="16 lets 30 s of one session make 2 batches")
    p.add_argument("--window-length", type=float, default=1.0,
                   help="seconds per window (the figures in benchmarks/README.md: 1 s; train.py's default from scratch is 2 s)")  # fmt: skip
    p.add_argument("--gru-hidden", type=int, nargs="+", default=[64, 128], help="GRU sizes to choose from")
    p.add_argument("--gru-dropout", type=float, nargs="+", default=[0.3, 0.5], help="GRU dropout rates to choose from")
    p.add_argument("--pretrained", type=Path, default=None, help="reuse this pretrained model.pt")
    p.add_argument(
        "--target", default=None,
        help="multi-recording variant: pretrain on all of --mat, adapt to this recording ('later': --mat's last 40%%)",
    )  # fmt: skip
    p.add_argument(
        "--synthetic", action="store_true",
        help="pretrain on the synthetic reaching set too (generated below --out; a new --out, or --pretrained, to compare)",
    )  # fmt: skip
    a = p.parse_args()
    if not a.mat.is_file():
        sys.exit(
            f"no recording at {a.mat}; pass --mat PATH (a .mat or .npz with 'spikes' (bins, units) and 'vel' at 50 ms)"
        )
    if not 0 <= a.held_out < a.groups:
        sys.exit(f"--held-out must name a group in 0..{a.groups - 1}, got {a.held_out}")
    if a.synthetic and a.pretrained is not None:
        sys.exit("--synthetic pretrains on the synthetic set too; with --pretrained nothing is pretrained: drop one")
    if a.out is None:
        a.out = ROOT / "outputs" / ("real_few_shot" if a.target is None else f"real_few_shot_{Path(a.target).stem}")
        a.out = a.out.with_name(a.out.name + ("_synthetic" if a.synthetic else ""))
    a.out.mkdir(parents=True, exist_ok=True)
    data_root = a.out / "data"
    if a.target is None:
        brainset = f"{BRAINSET}_{a.groups}"
        ids = write_groups(a.mat, data_root, a.groups)
        held, pre = ids[a.held_out], [s for i, s in enumerate(ids) if i != a.held_out]
        what = "pseudo-sessions"
        title = "Adapting to new units of a real recording"
    else:
        brainset = RECORDINGS
        pre, (held,) = write_recordings(a.mat, a.target, data_root)
        what = "recording(s)"
        title = "Adapting to a recording never seen" + (
            " (stand-in: a later part, units renamed)" if a.target == "later" else ""
        )
    if a.synthetic:
        title += ",\npretrained with the synthetic set"
    sess = lambda names: "sessions=[" + ",".join(names) + "]"  # noqa: E731
    dataset = [f"dataset={brainset}"]  # the new session's runs; pretraining may read more (--synthetic)
    common = [
        f"data_root={data_root}", f"model={a.model}", f"batch_size={a.batch_size}", f"window_length={a.window_length}",
        "trainer.check_val_every_n_epoch=100000", "plot_sessions=1",
    ]  # fmt: skip
    ckpt = a.pretrained or a.out / "pretrain" / "checkpoints" / "model.pt"
    if not ckpt.is_file():
        what = f"{len(pre)} {what}"
        pretrain_data = dataset
        if a.synthetic:  # a recipe that reads both brainsets
            pretrain_data, pattern = with_synthetic(a.out, data_root, brainset)
            pre = [*pre, pattern]
            what += " and the synthetic set"
        print(f"pretraining {a.model} on {what} for {a.pretrain_steps} steps ...", flush=True)
        r = run_train(
            a.out / "pretrain", [*common, *pretrain_data, sess(pre), f"trainer.max_steps={a.pretrain_steps}"],
            a.out / "pretrain.log",
        )  # fmt: skip
        print(f"  pretraining test R² {r['poyo_mean_r2']:.3f} (linear {r['linear_mean_r2']:.3f}), {r['seconds']:.0f} s")
        if a.synthetic:  # the mean above counts the synthetic sessions too
            real = [x for x in r["sessions"] if not x["session"].startswith(f"{SYNTHETIC}/")]
            print(f"  on the real sessions only: {np.mean([x['poyo_r2'] for x in real]):.3f} "
                  f"(linear {np.mean([x['linear_r2'] for x in real]):.3f})")  # fmt: skip
    results = []
    for seconds in a.sizes:
        for seed in range(a.seeds):
            for method in a.methods:
                steps = a.scratch_steps if method == "from scratch" else a.steps
                run, r = adapt_run(
                    a.out, [*common, *dataset, sess([held])], method, METHODS[method], seconds, seed, steps, ckpt
                )
                results.append(dict(method=method, seconds_per_session=seconds, seed=seed, r2=r["poyo_mean_r2"], steps=steps,
                                    wall_s=round(r["seconds"], 1)))  # fmt: skip
                print(f"{method:22s} {seconds:5.0f} s seed {seed}  R² {r['poyo_mean_r2']:.3f}  (linear "
                      f"{r['linear_mean_r2']:.3f}, causal {r['causal_mean_r2']:.3f})  {r['seconds']:.0f} s", flush=True)  # fmt: skip
            gru = gru_scores(
                a.out / run, data_root / brainset, [held], seconds, seed, hidden=a.gru_hidden,
                dropout=a.gru_dropout,
            )  # fmt: skip
            for row, r2 in gru.items():
                results.append(dict(method=row, seconds_per_session=seconds, seed=seed, r2=r2, steps=0, wall_s=0.0))
            print(
                f"{'GRU':22s} {seconds:5.0f} s seed {seed}  " + ", ".join(f"{k} {v:.3f}" for k, v in gru.items()),
                flush=True,
            )
        for row, key in LINEAR_ROWS.items():  # fitted on the same data in every run; identical across seeds
            results.append(dict(method=row, seconds_per_session=seconds, r2=r[f"{key}_mean_r2"], steps=0, wall_s=0.0))
        (a.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nmean ± sd of test R² over {a.seeds} seed(s); new session {held} (units never seen):\n")
    print(table(results, [*METHODS, *GRU_ROWS, *LINEAR_ROWS]))
    plot(
        results,
        a.out / "real_few_shot.png",
        [*METHODS, *GRU_ROWS, *LINEAR_ROWS],
        title,
    )
    print(f"\nresults: {a.out / 'results.json'}, plot: {a.out / 'real_few_shot.png'}")


if __name__ == "__main__":
    main()

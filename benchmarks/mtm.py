"""Masked modelling (MtM) pretraining: what does it learn, and does it help decode behaviour?

    python benchmarks/mtm.py                      # about an hour on 2 CPU cores
    python benchmarks/mtm.py --mtm-steps 600 --pretrain-steps 300 --adapt-steps 100 --steps 100 --sizes 30   # quicker look

A multi-region synthetic set is generated (``dataset=synthetic_regions`` with 4 animals of 4
sessions, 3 regions each; every other session has no behaviour). Animals a-c are for
pretraining, animal d is held out. This script runs ``train.py`` to:

1. pretrain with ``objective=mtm`` on the sessions of a-c *without behaviour* (6,000 steps);
2. pretrain with ``objective=supervised`` on the sessions of a-c *with behaviour* (2,000
   steps, where its validation R² has levelled off; the comparison: a model pretrained on labels);
3. adapt the MtM model to the 4 held-out sessions (``finetune=unit_identification
   objective=mtm``, 2,400 steps at 3x the base learning rate: only the new units' embeddings
   learn, from spikes alone) and score, on their test trials, co-smoothing, forward prediction
   and intra-/inter-region prediction in bits per spike beside the GLM and mean-rate baselines
   (fitted on the same training split), with the model's own readout and with a readout of its
   state fitted per task as the GLM's is ("fitted");
4. decode behaviour on the 2 held-out sessions with behaviour from their first 30 s / 2 min
   of labels: fine-tuning the MtM model and the supervised model alike (``finetune=full``),
   training from scratch, and the linear decoders every run prints (window-matched ridge and
   causal Wiener filter).

Prints the tables and writes ``results.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from few_shot import launch  # one train.py run, its output in a log
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
NAME = "mtm_synthetic"
GENERATE = dict(num_animals=4, sessions_per_animal=4, duration_s=300.0, regions=3, unlabelled_every=2, seed=2)
FEW_LABEL = {
    "MtM pretrained, full fine-tuning": ("mtm", ["finetune=full"]),
    "supervised pretrained, full fine-tuning": ("supervised", ["finetune=full"]),
    "from scratch": (None, []),
}


def sessions(folder: Path) -> dict[str, list[str]]:
    """The generated sessions by role: pretraining with/without behaviour, held out (with behaviour)."""
    import h5py

    out = {"pre_unlabelled": [], "pre_labelled": [], "held_out": [], "held_out_labelled": []}
    for path in sorted(folder.glob("*.h5")):
        sid = f"synthetic_reaching/{path.stem}"
        with h5py.File(path, "r") as f:
            labelled = "cursor" in f
        if path.stem.startswith("monkey_d_"):
            out["held_out"].append(sid)
            if labelled:
                out["held_out_labelled"].append(sid)
        else:
            out["pre_labelled" if labelled else "pre_unlabelled"].append(sid)
    return out


def listing(ids: list[str]) -> str:
    return "sessions=[" + ",".join(ids) + "]"


def masked_table(summary: dict) -> str:
    from poyo.training.mtm_eval import LABELS, METHODS

    head = f"{'metric':<18} " + " ".join(f"{LABELS[m]:>9}" for m in METHODS)
    lines = [head + "   (bits per spike, mean over held-out sessions)"]
    for label in ("co-bps", "forward bps", "intra-region bps", "inter-region bps"):
        rows = [per[label] for per in summary.values() if label in per]
        if rows:
            cells = " ".join(f"{statistics.mean(r.get(m, float('nan')) for r in rows):>9.3f}" for m in METHODS)
            lines.append(f"{label:<18} {cells}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "mtm")
    p.add_argument("--data-root", type=Path, default=ROOT / "data" / "processed")
    p.add_argument(
        "--mtm-steps", type=int, default=6000, help="MtM pretraining steps (it learns slowly: see the README)"
    )
    p.add_argument("--pretrain-steps", type=int, default=2000, help="supervised pretraining steps")
    p.add_argument(
        "--adapt-steps",
        type=int,
        default=2400,
        help="unit identification on the held-out sessions (MtM; 1,200 scored 0.013 co-bps lower)",
    )
    p.add_argument(
        "--adapt-lr-scale",
        type=float,
        default=3.0,
        help="that unit identification's learning rate, as a multiple of configs/optim/adamw.yaml's base_lr "
        "(only embeddings learn; 3x scored above 1x and 10x: see benchmarks/README.md)",
    )
    p.add_argument("--steps", type=int, default=600, help="fine-tuning steps for few-label decoding (as from scratch)")
    p.add_argument("--scratch-steps", type=int, default=600)
    p.add_argument("--sizes", type=float, nargs="+", default=[30, 120], help="seconds of labels per held-out session")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--model", default="poyo_mini")
    p.add_argument("--time-prior", type=float, default=4.0, help="model.time_prior (nats; 0: the published POYO)")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure

    ensure(a.data_root / NAME, SyntheticConfig(**GENERATE))
    ids = sessions(a.data_root / NAME)
    common = [
        f"data_root={a.data_root}",
        "dataset=synthetic_regions",
        f"dataset.name={NAME}",
        *(f"dataset.generate.{k}={v}" for k, v in GENERATE.items()),
        f"model={a.model}",
        f"model.time_prior={a.time_prior}",
        "batch_size=16",
        "plot_sessions=2",
    ]
    results: dict = {"settings": vars(a) | {"out": str(a.out), "data_root": str(a.data_root)}, "sessions": ids}
    ckpt = {}
    for kind, subset in (("mtm", "pre_unlabelled"), ("supervised", "pre_labelled")):
        run = a.out / f"pretrain_{kind}"
        ckpt[kind] = run / "checkpoints" / "model.pt"
        if not ckpt[kind].is_file():
            steps = a.mtm_steps if kind == "mtm" else a.pretrain_steps
            print(f"pretraining ({kind}) on {len(ids[subset])} sessions for {steps} steps ...", flush=True)
            s = launch(run, common + [f"objective={kind}", listing(ids[subset]), f"trainer.max_steps={steps}"],
                          a.out / f"pretrain_{kind}.log")  # fmt: skip
            print(f"  {s:.0f} s", flush=True)

    adapt_lr = a.adapt_lr_scale * OmegaConf.load(ROOT / "poyo" / "configs" / "optim" / "adamw.yaml").base_lr
    print(f"adapting the MtM model to the {len(ids['held_out'])} held-out sessions (spikes only) ...", flush=True)
    run = a.out / "adapt_mtm"
    adapt = ["objective=mtm", "finetune=unit_identification", f"finetune.checkpoint={ckpt['mtm']}",
             listing(ids["held_out"]), f"trainer.max_steps={a.adapt_steps}", f"optim.base_lr={adapt_lr:.6g}"]  # fmt: skip
    launch(run, common + adapt, a.out / "adapt_mtm.log")
    masked = json.loads((run / "mtm_results.json").read_text())
    results["masked"] = masked
    print("\nHeld-out animal, test trials:\n" + masked_table(masked["summary"]), flush=True)

    few = []
    for seconds in a.sizes:
        for seed in range(a.seeds):
            for method, (source, extra) in FEW_LABEL.items():
                steps = a.scratch_steps if source is None else a.steps
                over = [*extra, f"trainer.max_steps={steps}", f"seed={seed}", f"train_seconds={seconds}",
                        listing(ids["held_out_labelled"]), "trainer.check_val_every_n_epoch=100000"]  # fmt: skip
                if source is not None:
                    over.append(f"finetune.checkpoint={ckpt[source]}")
                tag = f"{method.split(',')[0].replace(' ', '_')}_{extra[0].split('=')[1] if extra else 'scratch'}_{int(seconds)}s_seed{seed}"
                s = launch(a.out / tag, common + over, a.out / f"{tag}.log")
                r = json.loads((a.out / tag / "test_results.json").read_text())
                few.append({"method": method, "seconds": seconds, "seed": seed, "r2": r["poyo_mean_r2"],
                            "linear": r["linear_mean_r2"], "causal": r["causal_mean_r2"], "wall_s": s})  # fmt: skip
                print(f"  {method:<44} {seconds:>5.0f} s labels, seed {seed}: R² {r['poyo_mean_r2']:.3f} "
                      f"(linear {r['linear_mean_r2']:.3f}, causal {r['causal_mean_r2']:.3f}), {s:.0f} s", flush=True)  # fmt: skip
                results["few_label"] = few
                (a.out / "results.json").write_text(json.dumps(results, indent=2))
    print("\nFew-label behaviour decoding on the held-out animal (R², mean over its sessions with behaviour):")
    print(f"{'method':<46}" + "".join(f"{int(s):>8d} s" for s in a.sizes))
    for method in [*FEW_LABEL, "linear (window-matched)", "causal (Wiener filter)"]:
        cells = []
        for seconds in a.sizes:
            if method.startswith("linear"):
                vals = [r["linear"] for r in few if r["seconds"] == seconds]
            elif method.startswith("causal"):
                vals = [r["causal"] for r in few if r["seconds"] == seconds]
            else:
                vals = [r["r2"] for r in few if r["seconds"] == seconds and r["method"] == method]
            cells.append(f"{statistics.mean(vals):>10.3f}" if vals else f"{'-':>10}")
        print(f"{method:<46}" + "".join(cells))
    (a.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {a.out / 'results.json'}")


if __name__ == "__main__":
    main()

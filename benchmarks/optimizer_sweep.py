"""Validation R² after a fixed wall-clock budget, per optimiser / learning rate / batch size.

    python benchmarks/optimizer_sweep.py --opt adamw --lr 1e-3 --bs 32 [--secs 150]

Trains poyo_mini (``--dim/--depth/--K/--heads`` to change it) on the default synthetic set
in a plain loop (no Lightning, 1 loader worker) and prints validation R² (stitched, mean
over sessions) every 50 s of training time (evaluation time excluded). ``--lr`` is the
peak learning rate itself (not per sample). Used to choose the quick-start optimiser.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poyo.model import POYO  # noqa: E402
from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure  # noqa: E402
from poyo.readouts import ReadoutConfig  # noqa: E402
from poyo.training.module import DataModule  # noqa: E402
from poyo.training.optim import build_optimizer  # noqa: E402
from poyo.training.stitch import stitch_predictions  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT / "data" / "processed" / "synthetic_reaching")
    p.add_argument("--opt", default="lamb")
    p.add_argument("--lr", type=float, default=6.4e-3)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--secs", type=float, default=150)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--K", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--drop", type=float, default=0.1)
    p.add_argument("--no-unit-dropout", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    cfg = OmegaConf.load(ROOT / "poyo" / "configs" / "dataset" / "synthetic_reaching.yaml")
    ensure(a.root, SyntheticConfig(**OmegaConf.to_container(cfg.generate)))
    readouts = [ReadoutConfig(**r) for r in OmegaConf.to_container(cfg.readouts)]
    dm = DataModule(
        a.root, readouts, batch_size=a.bs, eval_batch_size=64, num_workers=1, seed=a.seed,
        unit_dropout=None if a.no_unit_dropout else OmegaConf.to_container(cfg.unit_dropout), validate=False,
    )  # fmt: skip
    model = POYO(
        dim=a.dim, depth=a.depth, num_latents_per_step=a.K, cross_heads=2, self_heads=a.heads, ffn_dropout=a.drop, lin_dropout=a.drop,
        atn_dropout=0.0, unit_ids=dm.unit_ids, session_ids=dm.session_ids, seed=a.seed,
    )  # fmt: skip
    dm.attach(model)
    opt = build_optimizer(model, name=a.opt, lr=a.lr)
    val = list(dm.eval_dataloader("valid"))

    def evaluate() -> float:
        return float(np.mean([v[readouts[0].name] for v in stitch_predictions(model, val).scores().values()]))

    print(f"{a.opt} lr {a.lr:g} batch {a.bs}: {model.num_parameters(embeddings=False):,} parameters")
    spent, step, epoch, report = 0.0, 0, 0, 50.0
    while spent < a.secs:
        loader = dm.train_dataloader()
        loader.window_sampler.set_epoch(epoch)
        epoch += 1
        t0 = time.perf_counter()
        for b in loader:
            loss, _ = model.loss(model(b), b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            now = spent + time.perf_counter() - t0
            if now >= report or now >= a.secs:
                print(f"t={now:5.0f}s step={step:5d} train loss={loss.item():.3f} val R2={evaluate():.3f}", flush=True)
                spent, report = now, report + 50.0
                t0 = time.perf_counter()
                if spent >= a.secs:
                    break
        else:
            spent += time.perf_counter() - t0


if __name__ == "__main__":
    main()

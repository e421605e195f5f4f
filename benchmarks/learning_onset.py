"""When does a model start to decode? Validation R² against steps for one model variant.

    python benchmarks/learning_onset.py --model poyo_1.3M --steps 1000 --every 100
    python benchmarks/learning_onset.py --model poyo_1.3M --qk-scale 1.0          # larger q/k/v init
    python benchmarks/learning_onset.py --model poyo_mini --set lin_dropout=0 ffn_dropout=0 atn_dropout=0
    python benchmarks/learning_onset.py --model poyo_mini --lr 3e-3 --warmup 100
    python benchmarks/learning_onset.py --model poyo_1.3M --set "latent_counts=[0.05,0.15]"   # latents count spikes

Every POYO size first predicts the mean for a few hundred steps (validation R² ≤ 0) and then
starts to decode. This script isolates that onset from the training recipe: a plain loop with
AdamW at a *constant* learning rate (optional linear warm-up) on the quick start's synthetic
set, with the quick start's unit dropout and every epoch's windows drawn anew, validating every
``--every`` steps on the stitched validation split. The candidates it can test: dropout
(``--set``), the initial scale of the attention projections (``--qk-scale``, std = scale / √fan-in)
or of every linear layer (``--linear-scale``), the learning rate and warm-up, and the seed.
Prints one line per validation and writes them as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poyo.model import POYO, POYOConfig  # noqa: E402
from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure  # noqa: E402
from poyo.readouts import ReadoutConfig  # noqa: E402
from poyo.training.module import DataModule  # noqa: E402
from poyo.training.optim import build_optimizer  # noqa: E402
from poyo.training.stitch import stitch_predictions  # noqa: E402


def rescale(model: torch.nn.Module, scale: float, names: tuple[str, ...] | None) -> None:
    """Re-initialise linear layers (those called ``names``, or all) with std = scale / √fan-in."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        layers = (
            [getattr(module, n, None) for n in names]
            if names
            else ([module] if isinstance(module, torch.nn.Linear) else [])
        )
        for lin in layers:
            if isinstance(lin, torch.nn.Linear):
                with torch.no_grad():
                    lin.weight.normal_(0.0, scale / math.sqrt(lin.in_features), generator=gen)


def validate(model: POYO, dm: DataModule) -> float:
    scores = stitch_predictions(model, dm.eval_dataloader("valid")).scores()
    return float(np.mean([r2 for per in scores.values() for r2 in per.values()]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="poyo_1.3M")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--every", type=int, default=100, help="validate every N steps")
    p.add_argument("--lr", type=float, default=1e-3, help="constant learning rate (AdamW, batch 32)")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    p.add_argument(
        "--qk-scale",
        type=float,
        default=None,
        help="re-initialise the q/k/v projections with std = scale / sqrt(fan-in)",
    )
    p.add_argument("--linear-scale", type=float, default=None, help="re-initialise every linear layer likewise")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="model config overrides, e.g. lin_dropout=0"
    )
    p.add_argument("--seed", type=int, default=0, help="model initialisation seed (the data order is fixed)")
    p.add_argument("--data-root", type=Path, default=ROOT / "data" / "processed")
    p.add_argument("--out", type=Path, default=None, help="write the curve here as JSON")
    a = p.parse_args()
    torch.manual_seed(a.seed)

    ds_cfg = OmegaConf.load(ROOT / "poyo" / "configs" / "dataset" / "synthetic_reaching.yaml")
    root = a.data_root / "synthetic_reaching"
    ensure(root, SyntheticConfig(**OmegaConf.to_container(ds_cfg.generate)))
    model_cfg = POYOConfig.from_name(a.model)
    for kv in a.set:
        key, _, value = kv.partition("=")
        if key not in model_cfg.to_dict():
            raise SystemExit(
                f"error: --set {kv}: {key!r} is not a setting of {a.model} ({', '.join(model_cfg.to_dict())})"
            )
        model_cfg = replace(model_cfg, **{key: yaml.safe_load(value)})  # numbers, lists: [0.05,0.15]

    readouts = [ReadoutConfig(**r) for r in OmegaConf.to_container(ds_cfg.readouts)]
    dm = DataModule(
        root,
        readouts,
        batch_size=32,
        num_workers=1,
        unit_dropout=OmegaConf.to_container(ds_cfg.unit_dropout),
        seed=0,
        validate=False,
    )
    model = POYO(
        replace(model_cfg, readouts=[r.name for r in readouts]),
        unit_ids=dm.unit_ids,
        session_ids=dm.session_ids,
        seed=a.seed,
    )
    if a.linear_scale is not None:
        rescale(model, a.linear_scale, None)
    if a.qk_scale is not None:
        rescale(model, a.qk_scale, ("to_q", "to_kv", "to_qkv"))
    dm.attach(model)
    loader = dm.train_dataloader()
    opt = build_optimizer(model, name="adamw", lr=a.lr, weight_decay=1e-4)

    label = f"{a.model} lr {a.lr:g} warm-up {a.warmup} qk {a.qk_scale} linear {a.linear_scale} {' '.join(a.set)} seed {a.seed}"
    print(f"{label}\n{'step':>6s} {'val R2':>7s} {'train loss':>10s} {'seconds':>8s}", flush=True)
    curve, losses, step, epoch, t0 = [], [], 0, 0, time.monotonic()
    while step < a.steps:
        loader.window_sampler.set_epoch(epoch)  # new windows every epoch, as in train.py
        epoch += 1
        for batch in loader:
            for group in opt.param_groups:
                group["lr"] = a.lr * min(1.0, (step + 1) / a.warmup) if a.warmup else a.lr
            loss, _ = model.loss(model(batch), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            if step % a.every == 0:
                point = dict(
                    step=step,
                    val_r2=validate(model, dm),
                    train_loss=float(np.mean(losses[-a.every :])),
                    seconds=time.monotonic() - t0,
                )
                curve.append(point)
                print(
                    f"{step:6d} {point['val_r2']:7.3f} {point['train_loss']:10.3f} {point['seconds']:8.0f}", flush=True
                )
            if step >= a.steps:
                break
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(
            json.dumps(
                dict(settings=vars(a) | {"data_root": str(a.data_root), "out": str(a.out)}, curve=curve), indent=1
            )
        )


if __name__ == "__main__":
    main()

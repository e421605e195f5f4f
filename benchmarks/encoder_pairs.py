"""The encoder's keys and values per token, or once per (unit, token type) pair and gathered.

    python benchmarks/encoder_pairs.py dataset=s1_full data_root=<folder> [key=value ...]
    python benchmarks/encoder_pairs.py                      # the quick start's synthetic set

A spike token's embedding depends only on its unit and token type, so the layer norm and the
key/value projection of the encoder's cross-attention can run once per distinct pair in the
batch and be gathered per token (what ``POYO.forward`` does, ``CrossAttention(context_index=)``),
instead of once per token. This takes the run's own training batches (the overrides are
``train.py``'s; no training happens), then alternates the two ways in one process, forward and
backward of the input embeddings plus the encoder's attention, and times a whole training step
(forward, backward, AdamW) of the model as it is, for scale (the gather alone, both ways it can
be written: ``benchmarks/gathers.py``). Figures in benchmarks/README.md, "Speed on CPU".
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from poyo.cli import run_hydra  # noqa: E402
from poyo.model.poyo import layout_of  # noqa: E402
from poyo.training import run  # noqa: E402

BATCHES, ROUNDS = 8, 8


class _Grab(L.Callback):
    """Keeps the run's datamodule and model at the start of training, then stops the run."""

    def __init__(self, into: dict):
        self.into = into

    def on_train_start(self, trainer, pl_module) -> None:
        self.into.update(datamodule=trainer.datamodule, module=pl_module, precision=str(trainer.precision))
        raise SystemExit(0)


def encoder_input(model, batch, per_pair: bool) -> torch.Tensor:
    """The encoder's update of the latents, with keys and values per pair or per token."""
    inp, lat = batch["input"], batch["latent"]
    latents = model.latent_emb(lat["index"])
    if per_pair:  # as POYO.forward does
        context, index = model._input_pairs(inp)
    else:
        context, index = model.unit_emb(inp["unit_index"]) + model.token_type_emb(inp["token_type"]), None
    rot_in, rot_lat = model.rotary(inp["timestamps"]), model.rotary(lat["timestamps"])
    return model.enc_atn(latents, context, rot_lat, rot_in, layout_of(lat), layout_of(inp), index)


def training_batches(overrides: list[str], program: str, n: int) -> tuple:
    """``(model, precision, batches)``: the model a ``train.py`` run with ``overrides`` would
    train (in training mode), its ``trainer.precision`` and its first ``n`` training batches; the
    run stops before its first step."""
    got: dict = {}
    make_trainer = run.make_trainer
    run.make_trainer = lambda cfg, d, *, callbacks=(), **kw: make_trainer(
        cfg, d, callbacks=[*callbacks, _Grab(got)], **kw
    )
    try:
        run_hydra([*overrides, "num_workers=0"], program=program)
    except SystemExit:
        pass
    finally:
        run.make_trainer = make_trainer
    if "module" not in got:
        raise SystemExit("the run stopped before training started: nothing to time")
    model = got["module"].model.train()
    loader = iter(got["datamodule"].train_dataloader())
    return model, got["precision"], [next(loader) for _ in range(n)]


def train_steps(model, batches: list, opt, bf16: bool) -> None:
    """One training step per batch: forward (under bf16 autocast if ``bf16``), loss, backward, ``opt``."""
    for b in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model.loss(model(b), b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def main() -> None:
    model, precision, batches = training_batches(sys.argv[1:], "benchmarks/encoder_pairs.py", BATCHES)
    tokens = statistics.mean(b["input"]["unit_index"].numel() for b in batches)
    pairs = statistics.mean(len(model._input_pairs(b["input"])[0]) for b in batches)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    bf16 = precision.startswith("bf16")  # as the run would train (trainer.precision)

    def part(per_pair: bool) -> None:
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = encoder_input(model, b, per_pair)
            out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    def step() -> None:
        train_steps(model, batches, opt, bf16)

    times: dict[str, list[float]] = {"per token": [], "per pair": [], "whole step": []}
    part(True), part(False)  # warm-up
    for r in range(ROUNDS):
        order = [("per pair", lambda: part(True)), ("per token", lambda: part(False)), ("whole step", step)]
        for name, fn in order if r % 2 == 0 else order[1::-1] + order[2:]:
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / BATCHES * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}

    ratios = [a / b for a, b in zip(times["per pair"], times["per token"])]
    print(
        f"\n{precision}, {torch.get_num_threads()} threads, torch {torch.__version__}; {BATCHES} training batches of "
        f"{tokens:,.0f} input tokens and {pairs:.0f} (unit, token type) pairs on average; {ROUNDS} rounds alternated"
    )
    print(f"{'ms per batch (median of rounds)':40s} {'forward + backward':>18s}")
    print(f"{'input embeddings + encoder, per token':40s} {med['per token']:18.1f}")
    print(f"{'input embeddings + encoder, per pair':40s} {med['per pair']:18.1f}")
    print(f"{'whole training step (as the model runs)':40s} {med['whole step']:18.1f}")
    print(
        f"per pair / per token: {statistics.median(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f}); "
        f"saved {(med['per token'] - med['per pair']) / med['whole step']:.1%} of a step"
    )


if __name__ == "__main__":
    main()

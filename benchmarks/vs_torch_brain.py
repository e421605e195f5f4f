"""Training-step time of poyo against torch_brain's POYO, side by side in one process.

    pip install --no-deps torch_brain==0.2.1     # only for this benchmark (its model needs torch alone)
    python benchmarks/vs_torch_brain.py [--model poyo_1.3M] [--batch-size 32] [--rate-hz 20] [--rounds 3]

The workload: the same architecture in both libraries (``poyo/configs/model/<model>.yaml``, dropout
on), a batch of ``--batch-size`` 1 s windows of ``--units`` units firing at ``--rate-hz``
(Poisson; 100 x 20 Hz is about 2,000 spikes a window, ragged as real batches are) with 100
behaviour samples each, an MSE loss on 2-D outputs and a ``torch.optim.AdamW`` step. The rows
are run in turn within each round (``--steps`` timed steps after ``--warmup``), so load on the
machine falls on all of them alike; the table gives each row's median over rounds and its speed
relative to torch_brain in fp32 (its default on CPU). Both libraries run under the allocator as
the process starts (glibc's default); ``--keep-freed-memory`` first calls
:func:`poyo.memory.keep_freed_memory`, as ``poyo train`` does, for all rows alike.

Rows: torch_brain fp32 (its padded layout and ``F.scaled_dot_product_attention``), torch_brain
under bf16 autocast (same precision as poyo's default where the CPU has bf16 units), poyo with
the packed ``loop`` kernel and with the padded ``sdpa`` kernel in fp32, and poyo in its default
precision (:func:`poyo.training.precision.default_precision`). ``--compile`` adds poyo's packed
rows again with the latent stack compiled as ``trainer.compile=true`` compiles it
(:mod:`poyo.training.compile`; compiled in the warm-up). Without torch_brain the script says how
to install it and times poyo alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import model as bench  # noqa: E402  (benchmarks/model.py: the timed training step)

from poyo.data import Series, Window, collate_packed, collate_padded  # noqa: E402
from poyo.memory import keep_freed_memory  # noqa: E402
from poyo.model import POYOConfig  # noqa: E402
from poyo.model.poyo import targets  # noqa: E402
from poyo.readouts import ReadoutConfig  # noqa: E402
from poyo.training.compile import compile_latent_stack  # noqa: E402
from poyo.training.precision import autocast, cpu_bf16_support, default_precision  # noqa: E402

READOUT = ReadoutConfig("cursor_velocity_2d", std=1.0)


def windows(n: int, units: int, rate_hz: float, seed: int = 0) -> list[Window]:
    rng = np.random.default_rng(seed)
    ids = np.array(bench.unit_ids(units))
    bt = np.arange(0.005, 1.0, 0.01)
    out = []
    for _ in range(n):
        counts = rng.poisson(rate_hz, units)
        t = rng.uniform(0, 1, counts.sum())
        u = np.repeat(np.arange(units), counts)
        order = np.argsort(t)
        beh = Series(bt, rng.normal(size=(len(bt), 2)), np.arange(len(bt)))
        out.append(
            Window(session_id=bench.SESSION, start=0.0, end=1.0, unit_ids=ids, spike_times=t[order],
                   spike_units=u[order], behaviour={"cursor.vel": beh})
        )  # fmt: skip
    return out


def workload(config: POYOConfig, batch_size: int, units: int = 100, rate_hz: float = 20.0) -> list:
    """The timed batch: ``batch_size`` windows of ``units`` x ``rate_hz`` (:func:`windows`), tokenized
    for a model of ``config``."""
    tok = bench.build(config, units=units).tokenizer([READOUT])
    return [tok(w) for w in windows(batch_size, units, rate_hz)]


def poyo_step(config: POYOConfig, samples: list, backend: str, precision: str, units: int, compile: bool = False):
    model = bench.build(config, units=units).train()
    model.attention = backend
    if compile and not compile_latent_stack(model, "cpu"):
        raise SystemExit("--compile: torch.compile cannot build on this machine (see the warning above)")
    batch = collate_padded(samples) if backend == "sdpa" else collate_packed(samples)
    return bench.adamw_step(model, batch, "cpu", precision)


def torch_brain_step(config: POYOConfig, samples: list, precision: str, units: int):
    from torch_brain.models import POYO as TorchBrainPOYO

    torch.manual_seed(0)
    tb = TorchBrainPOYO(
        sequence_length=1.0, latent_step=config.latent_step, num_latents_per_step=config.num_latents_per_step,
        dim_out=2, dim=config.dim, depth=config.depth, dim_head=config.dim_head, cross_heads=config.cross_heads,
        self_heads=config.self_heads, ffn_dropout=config.ffn_dropout, lin_dropout=config.lin_dropout,
        atn_dropout=config.atn_dropout, emb_init_scale=config.emb_init_scale, t_min=config.t_min, t_max=config.t_max,
    ).train()  # fmt: skip
    tb.unit_emb.initialize_vocab(bench.unit_ids(units))
    tb.session_emb.initialize_vocab([bench.SESSION])
    batch = collate_padded(samples)
    inp, lat, out = batch["input"], batch["latent"], batch["output"]
    unit_map = torch.tensor([tb.unit_emb.vocab[u] for u in bench.unit_ids(units)])
    kwargs = dict(
        input_unit_index=unit_map[inp["unit_index"]] * inp["mask"], input_timestamps=inp["timestamps"],
        input_token_type=inp["token_type"], input_mask=inp["mask"], latent_index=lat["index"],
        latent_timestamps=lat["timestamps"],
        session_index=torch.full_like(out["session_index"][:, 0], tb.session_emb.vocab[bench.SESSION]),
        output_timestamps=out["timestamps"], output_mask=out["mask"],
    )  # fmt: skip
    target = targets(batch, READOUT.name)["values"]
    opt = torch.optim.AdamW(tb.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast("cpu", precision):
            pred = tb(**kwargs)[out["mask"]]
            loss = F.mse_loss(pred.float(), target)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="poyo_1.3M")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--units", type=int, default=100)
    p.add_argument("--rate-hz", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per row and round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--keep-freed-memory", action="store_true", help="glibc keeps freed memory (as poyo train sets)")
    p.add_argument(
        "--compile", action="store_true", help="also poyo's packed rows with trainer.compile's compiled stack"
    )
    a = p.parse_args()
    for name in ("batch_size", "units", "rounds", "steps"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")

    kept = a.keep_freed_memory and keep_freed_memory()
    if a.keep_freed_memory and not kept:
        p.error("--keep-freed-memory needs glibc")
    config = POYOConfig.from_name(a.model)
    samples = workload(config, a.batch_size, a.units, a.rate_hz)
    spikes = sum(int((s["input"]["token_type"] == 0).sum()) for s in samples) / a.batch_size
    bf16 = cpu_bf16_support()
    default = default_precision("cpu")
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"CPU bf16 matrix units: {bf16 or 'none'}; allocator: {'keep_freed_memory()' if kept else 'as started'}"
    )
    print(
        f"{a.model}, batch {a.batch_size} windows of {spikes:.0f} spikes on average ({a.units} units x {a.rate_hz:g} Hz), "
        f"training mode + AdamW; {a.rounds} rounds x {a.steps} steps\n"
    )

    rows: dict[str, object] = {}
    try:
        import torch_brain

        version = getattr(torch_brain, "__version__", "?")
        rows[f"torch_brain {version} fp32"] = torch_brain_step(config, samples, "32-true", a.units)
        if bf16:
            rows[f"torch_brain {version} bf16 autocast"] = torch_brain_step(config, samples, "bf16-mixed", a.units)
    except ImportError:
        print("torch_brain is not installed: poyo is timed alone (pip install --no-deps torch_brain==0.2.1)\n")
    rows["poyo packed loop fp32"] = poyo_step(config, samples, "loop", "32-true", a.units)
    rows["poyo padded sdpa fp32"] = poyo_step(config, samples, "sdpa", "32-true", a.units)
    if default != "32-true":
        rows[f"poyo packed loop {default} (default)"] = poyo_step(config, samples, "loop", default, a.units)
    if a.compile:  # the warm-up step compiles
        rows["poyo packed loop fp32, compiled"] = poyo_step(config, samples, "loop", "32-true", a.units, True)
        if default != "32-true":
            rows[f"poyo packed loop {default}, compiled"] = poyo_step(config, samples, "loop", default, a.units, True)

    times: dict[str, list[float]] = {name: [] for name in rows}
    for step in rows.values():
        for _ in range(a.warmup):
            step()
    for r in range(a.rounds):
        for name, step in rows.items():
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step()
            times[name].append((time.perf_counter() - t0) / a.steps * 1e3)
        print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.0f} ms" for n in rows), flush=True)

    median = {n: statistics.median(t) for n, t in times.items()}
    ref = next((n for n in median if n.startswith("torch_brain") and n.endswith("fp32")), None)
    print(f"\n{'implementation':40s} {'median ms/step':>15s} {'range':>15s} {'speed vs ' + (ref or '-'):>30s}")
    for n, m in median.items():
        ratio = f"{median[ref] / m:.2f}x" if ref else "-"
        print(f"{n:40s} {m:15.0f} {min(times[n]):7.0f}-{max(times[n]):<7.0f} {ratio:>30s}")


if __name__ == "__main__":
    main()

"""Forward+backward time and peak memory of one training batch, per attention backend,
as a function of spikes per window.

    python benchmarks/model.py [--model poyo_1.3M] [--batch-size 16] [--spikes 250 1000 4000]
                               [--device cpu|cuda] [--precision fp32 bf16] [--json out.json]
    python benchmarks/model.py --device cuda --atn-dropout 0 --max-batch   # + largest batch that fits

Windows are synthetic (100 units, 1 s, 100 behaviour samples) with spike counts drawn
uniformly in [0.5, 1.5] x the target, so samples are ragged as in real batches. The
model is in training mode (dropout on), as during training.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during one forward+backward;
on CPU the growth of the process's peak resident set during its first forward+backward,
each configuration in a fresh process (so one run cannot hide another's peak).

Model FLOPs are counted once per configuration with ``torch.utils.flop_counter`` on the
packed batch through the math attention kernel (so padding is not counted as work, and
every backend is measured against the same useful FLOPs). MFU divides the achieved FLOP/s
by the device's dense peak for the precision (data-sheet table below, fp32 without TF32,
or ``--peak-tflops``). ``--max-batch`` (CUDA) finds the largest batch whose training step
fits in memory, per backend and precision, by doubling and then bisecting.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poyo.data import Series, Window, collate_packed, collate_padded  # noqa: E402
from poyo.model import POYO, POYOConfig  # noqa: E402
from poyo.model.attention import available  # noqa: E402
from poyo.readouts import ReadoutConfig  # noqa: E402
from poyo.training.precision import autocast  # noqa: E402

UNITS = 100
SESSION = "bench/s0"  # the one session of every benchmark workload


def unit_ids(units: int = UNITS) -> list[str]:
    """The benchmark session's unit ids, ``units`` of them."""
    return [f"{SESSION}/u{i}" for i in range(units)]


# Dense peak TFLOP/s from the vendors' data sheets (fp32 = CUDA cores, TF32 off as in torch's
# default). The first name that occurs in the device's name wins.
PEAK_TFLOPS = {
    "H100 PCIe": {"bf16": 756.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "fp32": 66.9},
    "H200": {"bf16": 989.4, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp32": 19.5},
}


def peak_tflops(device_name: str, precision: str, override: float | None = None) -> float | None:
    if override:
        return override
    return next((v[precision] for k, v in PEAK_TFLOPS.items() if k in device_name), None)


def largest_batch(fits, start: int = 16, limit: int = 1 << 16) -> int:
    """The largest batch size ``b <= limit`` with ``fits(b)`` (assumed monotone), found by
    doubling from ``start`` and then bisecting to within 3%; 0 if not even 1 fits."""
    lo, hi = 0, None
    b = max(1, start)
    while hi is None:
        if fits(b):
            lo = b
            if b >= limit:
                return b
            b = min(2 * b, limit)
        else:
            hi = b
    while hi - lo > max(1, lo // 32):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def windows(spikes: int, batch_size: int, seed: int) -> list[Window]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch_size):
        n = int(rng.integers(spikes // 2, spikes * 3 // 2 + 1))
        t = np.sort(rng.uniform(0, 1, n))
        bt = np.arange(0.005, 1.0, 0.01)
        out.append(
            Window(
                session_id=SESSION,
                start=0.0,
                end=1.0,
                unit_ids=np.array(unit_ids()),
                spike_times=t,
                spike_units=rng.integers(0, UNITS, n),
                behaviour={"cursor.vel": Series(bt, rng.normal(size=(len(bt), 2)), np.arange(len(bt)))},
            )  # fmt: skip
        )
    return out


def build(model: str | POYOConfig, seed: int = 0, atn_dropout: float | None = None, units: int = UNITS) -> POYO:
    """A model (a preset's name or a config) whose vocabularies hold the benchmark session's units."""
    cfg = POYOConfig.from_name(model) if isinstance(model, str) else model
    if atn_dropout is not None:
        cfg = replace(cfg, atn_dropout=atn_dropout)
    return POYO(cfg, unit_ids=unit_ids(units), session_ids=[SESSION], seed=seed)


def to_device(batch: dict, device: str) -> dict:
    def mv(x):
        return x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x

    return {k: ({f: mv(t) for f, t in v.items()} if isinstance(v, dict) else mv(v)) for k, v in batch.items()}


def training_step(model: POYO, batch: dict, device: str, precision: str) -> None:
    model.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss, _ = model.loss(model(batch), batch)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()


def adamw_step(model: POYO, batch: dict, device: str, precision: str):
    """A closure that runs one training step of ``model`` on ``batch`` (forward and loss under
    ``precision``'s autocast, backward, ``torch.optim.AdamW``); for the step-time benchmarks."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss, _ = model.loss(model(batch), batch)
        loss.backward()
        opt.step()

    return step


def model_flops(model: POYO, samples: list, device: str) -> int:
    """FLOPs of one forward+backward on the packed batch of ``samples`` (no padding), counted
    through the math attention kernel, which the counter sees as matrix products."""
    backend = model.attention
    model.attention = "loop"
    try:
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            training_step(model, to_device(collate_packed(samples), device), device, "fp32")
    finally:
        model.attention = backend
    return counter.get_total_flops()


def measure(
    model_name: str,
    backend: str,
    spikes: int,
    batch_size: int,
    device: str,
    precision: str,
    repeats: int,
    atn_dropout: float | None,
) -> dict:
    """Time and peak memory of forward+backward for one configuration (run in its own process on CPU)."""
    torch.manual_seed(0)
    model = build(model_name, atn_dropout=atn_dropout).to(device).train()
    model.attention = backend
    samples = [
        model.tokenizer([ReadoutConfig("cursor_velocity_2d")])(w) for w in windows(spikes, batch_size, seed=spikes)
    ]
    batch = collate_padded(samples) if backend == "sdpa" else collate_packed(samples)
    batch = to_device(batch, device)
    tokens = sum(len(s["input"]["unit_index"]) for s in samples)
    padded_tokens = batch["input"]["unit_index"].numel()

    def step():
        training_step(model, batch, device, precision)

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    flops = model_flops(model, samples, device)
    return dict(
        backend=backend, spikes=spikes, precision=precision, ms=ms, peak_mb=peak / 2**20, tokens=tokens, padded_tokens=padded_tokens,
        tokens_per_s=tokens / ms * 1e3, flops=flops, tflops_per_s=flops / ms / 1e9,
    )  # fmt: skip


def fits_on_gpu(
    model_name: str, backend: str, spikes: int, batch_size: int, precision: str, atn_dropout: float | None
) -> bool:
    """Whether one training step of this batch size runs without a CUDA out-of-memory error."""

    def one_step():
        model = build(model_name, atn_dropout=atn_dropout).to("cuda").train()
        model.attention = backend
        tok = model.tokenizer([ReadoutConfig("cursor_velocity_2d")])
        samples = [tok(w) for w in windows(spikes, batch_size, seed=spikes)]
        training_step(
            model,
            to_device(collate_padded(samples) if backend == "sdpa" else collate_packed(samples), "cuda"),
            "cuda",
            precision,
        )

    try:
        one_step()
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        torch.cuda.empty_cache()  # the step's tensors died with its frame: give their blocks back


def _child(queue, kwargs):
    try:
        queue.put(measure(**kwargs))
    except Exception as e:  # report, do not hang the parent
        queue.put({"error": f"{type(e).__name__}: {e}", **{k: kwargs[k] for k in ("backend", "spikes", "precision")}})


def run_isolated(kwargs: dict) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, kwargs))
    p.start()
    result = q.get()
    p.join()
    return result


def linearity(results: list[dict]) -> None:
    """Peak memory against spikes per window, per backend: a least-squares line and how far
    the measurements stray from it (packed layouts should grow linearly)."""
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for r in results:
        if "error" not in r:
            groups.setdefault((r["precision"], r["backend"]), []).append((r["spikes"], r["peak_mb"]))
    lines = []
    for (precision, backend), pts in groups.items():
        if len(pts) < 3:
            continue
        x, y = np.array(pts, dtype=float).T
        slope, intercept = np.polyfit(x, y, 1)
        worst = np.max(np.abs(y - (slope * x + intercept))) / np.max(y)
        lines.append(
            f"  {precision:>5s} {backend:>9s}: {intercept:7.0f} MB + {slope * 1000:6.1f} MB per 1,000 spikes/window; largest residual {worst:.1%} of the peak"
        )
    if lines:
        print("\npeak memory vs spikes per window (linear fit):\n" + "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="poyo_1.3M")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 on CPU, 128 on CUDA")
    parser.add_argument("--spikes", type=int, nargs="+", default=[250, 1000, 4000], help="mean spikes per 1 s window")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backends", nargs="+", default=["sdpa", "loop", "nested", "varlen", "xformers"])
    parser.add_argument(
        "--precision", nargs="+", default=None, help="fp32 and/or bf16 (default: fp32 on CPU, both on CUDA)"
    )
    parser.add_argument(
        "--atn-dropout", type=float, default=None, help="override the config's attention dropout (varlen needs 0)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak TFLOP/s for MFU (default: data-sheet table for known GPUs)",
    )
    parser.add_argument(
        "--max-batch",
        action="store_true",
        help="CUDA: also find the largest batch that fits, per backend and precision",
    )
    parser.add_argument("--max-batch-spikes", type=int, default=1000, help="mean spikes per window for --max-batch")
    args = parser.parse_args()
    batch_size = args.batch_size or (128 if args.device == "cuda" else 16)
    precisions = args.precision or (["fp32", "bf16"] if args.device == "cuda" else ["fp32"])

    dev = torch.device(args.device)
    name = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"machine: {name}; Python {platform.python_version()}, torch {torch.__version__}")
    model = build(args.model, atn_dropout=args.atn_dropout)
    print(
        f"model {args.model} ({model.num_parameters(embeddings=False):,} parameters, attention dropout {model.config.atn_dropout}), "
        f"batch {batch_size}, training mode, {UNITS} units/window\n"
    )
    results = []
    head = f"{'spikes/win':>10s} {'prec':>5s} {'backend':>9s} {'layout':>7s} {'ms/batch':>9s} {'peak MB':>8s} {'tokens/s':>10s} {'pad waste':>9s} {'TFLOP/s':>8s} {'MFU':>6s}"
    print(head + "\n" + "-" * len(head))
    for spikes in args.spikes:
        for precision in precisions:
            for backend in args.backends:
                why = available(backend, dev)
                if why is None and backend == "varlen" and precision != "bf16":
                    why = "fp16/bf16 only"
                if why is None and backend == "varlen" and args.atn_dropout != 0:
                    why = "no attention dropout: run with --atn-dropout 0"
                if why:
                    print(f"{spikes:10d} {precision:>5s} {backend:>9s}   skipped: {why}")
                    continue
                kwargs = dict(
                    model_name=args.model,
                    backend=backend,
                    spikes=spikes,
                    batch_size=batch_size,
                    device=args.device,
                    precision=precision,
                    repeats=args.repeats,
                    atn_dropout=args.atn_dropout,
                )
                r = run_isolated(kwargs) if args.device == "cpu" else measure(**kwargs)
                results.append(r)
                if "error" in r:
                    print(f"{spikes:10d} {precision:>5s} {backend:>9s}   failed: {r['error']}")
                    continue
                layout = "padded" if backend == "sdpa" else "packed"
                waste = 1 - r["tokens"] / r["padded_tokens"]
                peak = peak_tflops(name, precision, args.peak_tflops)
                r["mfu"] = r["tflops_per_s"] / peak if peak else None
                mfu = f"{r['mfu']:6.1%}" if peak else f"{'n/a':>6s}"
                print(
                    f"{spikes:10d} {precision:>5s} {backend:>9s} {layout:>7s} {r['ms']:9.1f} {r['peak_mb']:8.0f} {r['tokens_per_s']:10.0f} {waste:9.0%} {r['tflops_per_s']:8.3f} {mfu}"
                )
    linearity(results)
    if args.max_batch:
        if args.device != "cuda":
            print("\n--max-batch runs on CUDA only (on CPU it would only measure swap)")
        else:
            print(
                f"\nlargest batch that fits in {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, {args.max_batch_spikes} spikes/window:"
            )
            for precision in precisions:
                for backend in args.backends:
                    if available(backend, dev) or (
                        backend == "varlen" and (precision != "bf16" or args.atn_dropout != 0)
                    ):
                        continue
                    fits = lambda b, backend=backend, precision=precision: fits_on_gpu(
                        args.model, backend, args.max_batch_spikes, b, precision, args.atn_dropout
                    )
                    b = largest_batch(fits, start=batch_size)
                    results.append(
                        dict(max_batch=b, backend=backend, precision=precision, spikes=args.max_batch_spikes)
                    )
                    print(f"  {precision:>5s} {backend:>9s}: {b}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": name,
                    "torch": torch.__version__,
                    "model": args.model,
                    "batch_size": batch_size,
                    "results": results,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()

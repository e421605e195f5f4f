"""Everything a GPU should confirm about poyo, in one command (under 8 minutes on one H100).

    python benchmarks/gpu_check.py [--out gpu_check.json]     # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run                  # the same code, tiny, on CPU (CI runs this)

It needs only torch, lightning (for PyYAML), h5py and numpy: no Hydra, no temporaldata, no
pytest. The synthetic set is read from ``--data`` (default ``data/processed/synthetic_reaching``,
what ``python train.py`` writes); on a machine without temporaldata, copy that folder over.

Parts (each prints its table and goes into the JSON; a failed check makes the exit status 1):

1. **parity**: every attention backend this machine has (``loop``, ``nested``, ``varlen``,
   ``xformers``) against the padded ``sdpa`` reference on the same ragged batch, outputs and
   gradients, in fp32 and under bf16 autocast; and bf16 against fp32 on the reference.
2. **speed**: training steps/s (forward, backward, AdamW) of poyo_1.3M and poyo_11.8M with each
   backend, in fp32 and bf16-mixed, with model TFLOP/s and MFU against the chip's dense peak
   (``benchmarks/model.py``'s data-sheet table). ``varlen`` has no attention dropout, so its rows
   (and only those) run with ``atn_dropout=0``.
3. **largest batch**: of poyo_1.3M in bf16 with the fastest packed backend, by doubling and bisecting.
4. **training**: 200 steps of poyo_1.3M on the synthetic set (packed, automatic backend,
   the default precision); the loss of the last 20 steps must be below 60% of the first 20's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)  # a deprecation note printed by the FLOP counter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import model as bench  # noqa: E402  (benchmarks/model.py: windows, FLOP counting, peak table, batch search)

from poyo.data import Dataset, RandomFixedWindowSampler, collate_packed, collate_padded, seed_worker  # noqa: E402
from poyo.model import POYO, POYOConfig  # noqa: E402
from poyo.model.attention import PACKED_BACKENDS, available  # noqa: E402
from poyo.readouts import ReadoutConfig  # noqa: E402
from poyo.training.optim import build_optimizer  # noqa: E402
from poyo.training.precision import autocast, default_precision  # noqa: E402

READOUT = ReadoutConfig("cursor_velocity_2d", std=1.0)
PRECISIONS = ("32-true", "bf16-mixed")
# relative tolerances: max |a - b| / max |b| over outputs, and ||ga - gb|| / ||gb|| per parameter
TOL = {"32-true": 2e-4, "bf16-mixed": 3e-2}


def log(msg: str = "") -> None:
    print(msg, flush=True)


def config(name: str, **changes) -> POYOConfig:
    return replace(POYOConfig.from_name(name), **changes)


def build(cfg: POYOConfig, device: str, backend: str) -> POYO:
    units = [f"bench/s0/u{i}" for i in range(bench.UNITS)]
    model = POYO(cfg, unit_ids=units, session_ids=["bench/s0"], seed=0).to(device)
    model.attention = backend
    return model


def samples_for(cfg: POYOConfig, spikes: int, n: int, seed: int = 0) -> list:
    tok = build(cfg, "cpu", "auto").tokenizer([READOUT])
    return [tok(w) for w in bench.windows(spikes, n, seed=seed)]


def batch_for(samples: list, backend: str, device: str) -> dict:
    return bench.to_device(collate_padded(samples) if backend == "sdpa" else collate_packed(samples), device)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def backends_here(device: str) -> dict[str, str | None]:
    """Each backend -> None if it runs here, else why not."""
    return {b: available(b, torch.device(device)) for b in ("sdpa", *PACKED_BACKENDS)}


# --- 1. parity ------------------------------------------------------------------------------
def forward_backward(model: POYO, batch: dict, device: str, precision: str, weight: torch.Tensor):
    model.zero_grad(set_to_none=True)
    with autocast(device, precision):
        out = model(batch)[READOUT.name]
    (out.float() * weight).sum().backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach().float(), grads


def compare(a, b) -> tuple[float, float]:
    (out_a, g_a), (out_b, g_b) = a, b
    out_err = float((out_a - out_b).abs().max() / out_b.abs().max().clamp_min(1e-12))
    grad_err = max(float((g_a[n] - g_b[n]).norm() / g_b[n].norm().clamp_min(1e-12)) for n in g_b)
    return out_err, grad_err


def parity(device: str, spikes: int, batch_size: int) -> list[dict]:
    cfg = config("poyo_mini", atn_dropout=0.0, ffn_dropout=0.0, lin_dropout=0.0)
    samples = samples_for(cfg, spikes, batch_size, seed=1)
    here = backends_here(device)
    rows, refs = [], {}
    weight = None
    for precision in PRECISIONS:
        if precision == "bf16-mixed" and device == "cpu" and default_precision("cpu") == "32-true":
            rows.append(dict(check="bf16", precision=precision, skipped="this CPU has no bf16 matrix units"))
            continue
        ref_model = build(cfg, device, "sdpa")
        ref_batch = batch_for(samples, "sdpa", device)
        n_out = int(ref_batch["output"]["mask"].sum())
        if weight is None:
            weight = torch.randn(n_out, 2, generator=torch.Generator().manual_seed(0)).to(device)
        refs[precision] = forward_backward(ref_model, ref_batch, device, precision, weight)
        for backend in PACKED_BACKENDS:
            why = here[backend] or ("fp16/bf16 only" if backend == "varlen" and precision == "32-true" else None)
            if why:
                rows.append(dict(check=f"{backend} vs sdpa", precision=precision, skipped=why))
                continue
            got = forward_backward(
                build(cfg, device, backend), batch_for(samples, backend, device), device, precision, weight
            )
            out_err, grad_err = compare(got, refs[precision])
            ok = out_err <= TOL[precision] and grad_err <= TOL[precision]
            rows.append(
                dict(check=f"{backend} vs sdpa", precision=precision, out_err=out_err, grad_err=grad_err, ok=ok)
            )
    if len(refs) == 2:
        out_err, grad_err = compare(refs["bf16-mixed"], refs["32-true"])
        ok = out_err <= 5e-2 and grad_err <= 1e-1
        rows.append(
            dict(check="bf16 vs fp32 (sdpa)", precision="bf16-mixed", out_err=out_err, grad_err=grad_err, ok=ok)
        )
    return rows


# --- 2. speed -------------------------------------------------------------------------------
def speed(device: str, models: list[str], spikes: int, batch_size: int, steps: int, warmup: int) -> list[dict]:
    here = backends_here(device)
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    rows = []
    for model_name in models:
        samples = samples_for(config(model_name), spikes, batch_size)
        tokens = sum(len(s["input"]["unit_index"]) for s in samples)
        flops = None
        for precision in PRECISIONS:
            for backend in ("sdpa", *PACKED_BACKENDS):
                why = here[backend] or ("fp16/bf16 only" if backend == "varlen" and precision == "32-true" else None)
                if why:
                    rows.append(dict(model=model_name, backend=backend, precision=precision, skipped=why))
                    continue
                cfg = config(model_name, atn_dropout=0.0) if backend == "varlen" else config(model_name)
                model = build(cfg, device, backend).train()
                batch = batch_for(samples, backend, device)
                if flops is None:  # the same useful work for every row: packed, no padding
                    flops = bench.model_flops(build(config(model_name), device, "loop").train(), samples, device)
                step = bench.adamw_step(model, batch, device, precision)
                try:
                    for _ in range(warmup):
                        step()
                    sync(device)
                    times = []
                    for _ in range(steps):
                        t0 = time.perf_counter()
                        step()
                        sync(device)
                        times.append(time.perf_counter() - t0)
                except torch.cuda.OutOfMemoryError:
                    rows.append(dict(model=model_name, backend=backend, precision=precision, skipped="out of memory"))
                    continue
                finally:
                    del model, batch, step
                    if device == "cuda":
                        torch.cuda.empty_cache()
                s = statistics.median(times)
                peak = bench.peak_tflops(name, "bf16" if precision == "bf16-mixed" else "fp32")
                bf16_peak = bench.peak_tflops(name, "bf16")
                tflops = flops / s / 1e12
                rows.append(
                    dict(model=model_name, backend=backend, precision=precision, ms_per_step=s * 1e3,
                         steps_per_s=1 / s, tokens_per_s=tokens / s, tflops=tflops,
                         mfu=tflops / peak if peak else None, mfu_bf16_peak=tflops / bf16_peak if bf16_peak else None,
                         dropout="attention off" if backend == "varlen" else "on")
                )  # fmt: skip
    return rows


# --- 3. largest batch -----------------------------------------------------------------------
def largest_batch(device: str, spikes: int, limit: int, budget_s: float = 120.0) -> dict:
    here = backends_here(device)
    backend = next((b for b in ("xformers", "nested", "loop") if here[b] is None), "loop")
    precision = "bf16-mixed" if device == "cuda" else default_precision("cpu")
    cfg = config("poyo_1.3M")
    pool = samples_for(cfg, spikes, 64, seed=2)  # cycled: tokenizing thousands of windows would dominate
    deadline, largest_ok = time.perf_counter() + budget_s, [0]

    def fits(b: int) -> bool:
        if time.perf_counter() > deadline:
            raise TimeoutError
        try:
            model = build(cfg, device, backend).train()
            bench.adamw_step(
                model, batch_for([pool[i % len(pool)] for i in range(b)], backend, device), device, precision
            )()
            sync(device)
            largest_ok[0] = max(largest_ok[0], b)
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()

    try:
        b, stopped = bench.largest_batch(fits, start=64 if device == "cuda" else 2, limit=limit), False
    except TimeoutError:
        b, stopped = largest_ok[0], True
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30 if device == "cuda" else None
    return dict(model="poyo_1.3M", backend=backend, precision=precision, spikes=spikes, largest_batch=b,
                limit=limit, memory_gib=memory, stopped_after_s=budget_s if stopped else None)  # fmt: skip


# --- 4. training on the synthetic set -------------------------------------------------------
def training(device: str, data: Path, steps: int, batch_size: int, model_name: str) -> dict:
    if not data.is_dir():
        try:
            from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure

            ensure(data, SyntheticConfig(), progress=False)
        except ImportError as e:
            raise SystemExit(
                f"{data} is missing and cannot be generated here ({e}): run `python train.py` once on a machine with "
                "poyo installed and copy data/processed/synthetic_reaching over (or pass --data)"
            ) from e
    ds = Dataset(data, behaviour=["cursor.vel"], intervals=["movement_phases.reach_period"], validate=False)
    readout = ReadoutConfig("cursor_velocity_2d", std=10.0, weights={"movement_phases.reach_period": 5.0})
    units, sessions = ds.unit_ids, ds.session_ids
    model = POYO(config(model_name), unit_ids=units, session_ids=sessions, seed=0).to(device).train()
    ds.transform = model.tokenizer([readout])
    windows = list(RandomFixedWindowSampler(ds.sampling_intervals("train"), 1.0, seed=0))
    loader = torch.utils.data.DataLoader(
        ds, sampler=windows, batch_size=batch_size, collate_fn=collate_packed, drop_last=True, worker_init_fn=seed_worker,
        num_workers=min(4, os.cpu_count() or 1) if device == "cuda" else 0,
    )  # fmt: skip
    precision = default_precision(device)
    opt = build_optimizer(model, name="adamw", lr=3.125e-5 * batch_size)
    losses, t0 = [], time.perf_counter()
    while len(losses) < steps:
        for batch in loader:
            batch = bench.to_device(batch, device)
            opt.zero_grad(set_to_none=True)
            with autocast(device, precision):
                loss, _ = model.loss(model(batch), batch)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) == steps:
                break
    k = max(1, min(20, steps // 4))
    first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
    return dict(model=model_name, steps=steps, batch_size=batch_size, precision=precision, attention="auto",
                first_loss=first, last_loss=last, ratio=last / first, seconds=time.perf_counter() - t0,
                ok=last < 0.6 * first)  # fmt: skip


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: checks that the script runs")
    p.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: $OUT/gpu_check.json or ./gpu_check.json)"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the synthetic set (default: data/processed/synthetic_reaching; "
        "a tiny one in a temporary folder with --dry-run)",
    )
    a = p.parse_args()
    out = a.out or Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    if a.dry_run:
        device, s = (
            "cpu",
            dict(
                models=["poyo_mini"], spikes=200, batch=4, steps=2, warmup=1, max_limit=8, train_steps=8, train_batch=8
            ),
        )
    elif torch.cuda.is_available():
        device, s = (
            "cuda",
            dict(
                models=["poyo_1.3M", "poyo_11.8M"],
                spikes=1000,
                batch=128,
                steps=10,
                warmup=3,
                max_limit=1 << 14,
                train_steps=200,
                train_batch=128,
            ),
        )
    else:
        raise SystemExit("no CUDA device: run on a GPU, or pass --dry-run to check the script on CPU")  # fmt: skip
    start = time.perf_counter()
    data = a.data or ROOT / "data" / "processed" / "synthetic_reaching"
    if a.dry_run and a.data is None:
        import tempfile

        from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure

        data = Path(tempfile.mkdtemp(prefix="poyo_gpu_check_")) / "synthetic_reaching"
        ensure(
            data,
            SyntheticConfig(num_animals=1, sessions_per_animal=1, duration_s=60, min_units=10, max_units=20),
            progress=False,
        )
    name = torch.cuda.get_device_name() if device == "cuda" else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    here = backends_here(device)
    log(f"{name}; torch {torch.__version__}, CUDA {torch.version.cuda}; python {platform.python_version()}")
    log("attention backends: " + ", ".join(f"{b} {'yes' if w is None else '(' + w + ')'}" for b, w in here.items()))
    report: dict = dict(device=name, torch=torch.__version__, cuda=torch.version.cuda, dry_run=a.dry_run, settings=s)

    log("\n1. parity against the padded sdpa reference (max rel. error of outputs; worst rel. gradient error)")
    report["parity"] = parity(device, s["spikes"], min(s["batch"], 16))
    for r in report["parity"]:
        if "skipped" in r:
            log(f"  {r['check']:22s} {r['precision']:>10s}  skipped: {r['skipped']}")
        else:
            log(
                f"  {r['check']:22s} {r['precision']:>10s}  out {r['out_err']:.1e}  grad {r['grad_err']:.1e}  {'ok' if r['ok'] else 'FAIL'}"
            )

    log(f"\n2. training step, batch {s['batch']} x ~{s['spikes']} spikes/window, AdamW")
    report["speed"] = speed(device, s["models"], s["spikes"], s["batch"], s["steps"], s["warmup"])
    log(
        f"  {'model':12s} {'backend':9s} {'precision':>10s} {'ms/step':>8s} {'steps/s':>8s} {'Mtok/s':>7s} {'TFLOP/s':>8s} {'MFU':>6s}"
    )
    for r in report["speed"]:
        if "skipped" in r:
            log(f"  {r['model']:12s} {r['backend']:9s} {r['precision']:>10s}  skipped: {r['skipped']}")
        else:
            log(f"  {r['model']:12s} {r['backend']:9s} {r['precision']:>10s} {r['ms_per_step']:8.1f} {r['steps_per_s']:8.2f} "
                f"{r['tokens_per_s'] / 1e6:7.2f} {r['tflops']:8.2f} {fmt(r['mfu'], '6.1%')} {fmt(r['mfu_bf16_peak'], '7.1%')}")  # fmt: skip

    log("\n3. largest batch that fits")
    report["largest_batch"] = lb = largest_batch(device, s["spikes"], s["max_limit"])
    log(f"  {lb['model']} {lb['backend']} {lb['precision']}, {lb['spikes']} spikes/window: {lb['largest_batch']} windows"
        + (" (the search limit)" if lb["largest_batch"] >= lb["limit"] else "")
        + (f" at least (search stopped after {lb['stopped_after_s']:.0f} s)" if lb["stopped_after_s"] else ""))  # fmt: skip

    log(f"\n4. {s['train_steps']} training steps on the synthetic set")
    report["training"] = tr = training(
        device, data, s["train_steps"], s["train_batch"], "poyo_mini" if a.dry_run else "poyo_1.3M"
    )
    log(f"  {tr['model']} {tr['precision']}: loss {tr['first_loss']:.3f} -> {tr['last_loss']:.3f} ({tr['ratio']:.2f}x) in "
        f"{tr['seconds']:.0f} s  {'ok' if tr['ok'] else 'FAIL' if not a.dry_run else '(not judged in a dry run)'}")  # fmt: skip

    failed = [r["check"] for r in report["parity"] if r.get("ok") is False]
    if not tr["ok"] and not a.dry_run:
        failed.append("training loss did not fall")
    report["failed"] = failed
    report["seconds"] = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    log(
        f"\n{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}; {report['seconds']:.0f} s; wrote {out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

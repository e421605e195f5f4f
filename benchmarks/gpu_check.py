"""Everything a GPU should confirm about poyo, in one command (under 8 minutes on one H100).

    python benchmarks/gpu_check.py [--out gpu_check.json]     # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run                  # the same code, tiny, on CPU (CI runs this)

Parts 1-4 need only torch, lightning (for PyYAML), h5py and numpy: no Hydra, no temporaldata, no
pytest; part 5 needs pytest (it says so and is left out without it), part 6 the full install
(``--train-budget 0`` leaves it out, ``--suite-budget 0`` part 5). The synthetic set is read from
``--data`` (default ``data/processed/synthetic_reaching``, what ``python train.py`` writes); on a
machine without temporaldata, copy that folder over.

Parts (each prints its table and goes into the JSON; a failed check makes the exit status 1):

1. **parity**: every attention backend this machine has (``loop``, ``nested``, ``varlen``,
   ``xformers``) against the padded ``sdpa`` reference on the same ragged batch, outputs and
   gradients, in fp32 and under bf16 autocast; and bf16 against fp32 on the reference.
2. **speed**: training steps/s (forward, backward, AdamW) of poyo_1.3M and poyo_11.8M with each
   backend, in fp32 and bf16-mixed, with model TFLOP/s and MFU against the chip's dense peak
   (``benchmarks/model.py``'s data-sheet table). ``varlen`` has no attention dropout, so its rows
   (and only those) run with ``atn_dropout=0``. One more row per model: padded ``sdpa`` in bf16
   with the latent stack compiled as ``trainer.compile=true`` compiles it (its first steps compile,
   untimed).
3. **largest batch**: of poyo_1.3M in bf16 with the fastest packed backend, by doubling and bisecting.
4. **training**: 200 steps of poyo_1.3M on the synthetic set (packed, automatic backend, the
   default precision, AdamW with a 10% warm-up, each latent reading the spike counts near it);
   the loss of the last 20 steps must be below 30% of the loss of predicting zero on the same
   batches (``TRAIN_*`` below says why these settings).
5. **suite**: the whole test suite, its tests dealt into parallel pytest processes (pytest-xdist
   is not a dependency), stopped after ``--suite-budget`` seconds; failures named.
6. **train.py**: the README's quick start, end to end (beside part 5), must beat the linear decoder.

Parts 1-4 took 88 s on an H200; 5 and 6 are capped so that the whole stays under 8 minutes.
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
from poyo.model.poyo import targets  # noqa: E402
from poyo.readouts import ReadoutConfig, get_readout, readout_loss  # noqa: E402
from poyo.training.compile import compile_latent_stack  # noqa: E402
from poyo.training.optim import OptimConfig  # noqa: E402
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
    model = bench.build(cfg).to(device)
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
        # trainer.compile's compiled latent stack: the padded sdpa rows in bf16 (GPU time is short)
        runs = [(p, b, False) for p in PRECISIONS for b in ("sdpa", *PACKED_BACKENDS)] + [("bf16-mixed", "sdpa", True)]
        for precision, backend, compiled in runs:
            label = backend + (" compiled" if compiled else "")
            why = here[backend] or ("fp16/bf16 only" if backend == "varlen" and precision == "32-true" else None)
            if why:
                rows.append(dict(model=model_name, backend=label, precision=precision, skipped=why))
                continue
            cfg = config(model_name, atn_dropout=0.0) if backend == "varlen" else config(model_name)
            model = build(cfg, device, backend).train()
            if compiled and not compile_latent_stack(model, device):
                rows.append(dict(model=model_name, backend=label, precision=precision, skipped="torch.compile fails"))
                continue
            batch = batch_for(samples, backend, device)
            if flops is None:  # the same useful work for every row: packed, no padding
                flops = bench.model_flops(build(config(model_name), device, "loop").train(), samples, device)
            step = bench.adamw_step(model, batch, device, precision)
            try:
                for _ in range(warmup + (2 if compiled else 0)):  # compiled: the first steps compile
                    step()
                sync(device)
                times = []
                for _ in range(steps):
                    t0 = time.perf_counter()
                    step()
                    sync(device)
                    times.append(time.perf_counter() - t0)
            except torch.cuda.OutOfMemoryError:
                rows.append(dict(model=model_name, backend=label, precision=precision, skipped="out of memory"))
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
                dict(model=model_name, backend=label, precision=precision, ms_per_step=s * 1e3,
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
# The training check's recipe and threshold, measured on CPU with this function (2-core VM,
# bf16-mixed; benchmarks/README.md, "The GPU check, step two"). AdamW at the preset's peak lr
# (3.125e-5 x batch), a linear warm-up over the first 10% of the steps, constant to half-way, then
# a cosine to 10% of the peak; each latent reads the spike counts near it (model.latent_counts, as
# in poyo_mini). Last 20 steps' loss over predicting zero: batch 128 (the GPU's), 0.06 with the
# count read and 0.91 without it (poyo_1.3M predicts the mean for a few hundred steps before it
# decodes; the first GPU run, with neither warm-up nor read, ended at 0.81x its first loss);
# batch 32, 0.16 / 0.18 (seeds 0 / 1) and 0.89 without. Reproduce: --cpu-reference.
# 0.3 passes a device that trains as the CPU does with room to spare, and fails one that does not
# decode.
TRAIN_OPTIM = dict(warmup_fraction=0.1, final_factor=0.1)
TRAIN_MODEL = dict(latent_counts=(0.05, 0.15))
TRAIN_PASS = 0.3  # the last steps' loss must be below this fraction of predicting zero (train R^2 > 0.7)


def training(
    device: str, data: Path, steps: int, batch_size: int, model_name: str, seed: int = 0, precision: str | None = None,
    model_changes: dict | None = None,
) -> dict:  # fmt: skip
    """``steps`` training steps on the synthetic set; the loss of the last steps against the loss
    of predicting zero (the targets' mean, near enough: velocities) on the same batches."""
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
    model_changes = TRAIN_MODEL if model_changes is None else model_changes
    model = (
        POYO(config(model_name, **model_changes), unit_ids=units, session_ids=sessions, seed=seed).to(device).train()
    )
    ds.transform = model.tokenizer([readout])
    windows = list(RandomFixedWindowSampler(ds.sampling_intervals("train"), 1.0, seed=seed))
    loader = torch.utils.data.DataLoader(
        ds, sampler=windows, batch_size=batch_size, collate_fn=collate_packed, drop_last=True, worker_init_fn=seed_worker,
        num_workers=min(4, os.cpu_count() or 1) if device == "cuda" else 0,
    )  # fmt: skip
    if len(loader) == 0:
        raise SystemExit(f"{data}: fewer training windows ({len(windows)}) than one batch of {batch_size}")
    precision = precision or default_precision(device)
    optim = replace(OptimConfig.from_name("adamw"), **TRAIN_OPTIM)
    torch.manual_seed(seed)  # dropout masks
    opt, sched = optim.build(model, global_batch_size=batch_size, total_steps=steps)
    losses, zeros, t0 = [], [], time.perf_counter()
    while len(losses) < steps:
        for batch in loader:
            batch = bench.to_device(batch, device)
            opt.zero_grad(set_to_none=True)
            with autocast(device, precision):
                loss, _ = model.loss(model(batch), batch)
            loss.backward()
            opt.step()
            sched.step()
            t = targets(batch, readout.name)
            zero = readout_loss(get_readout(readout.name), torch.zeros_like(t["values"]), t["values"], t["weight"])
            losses.append(float(loss.detach()))
            zeros.append(float(zero))
            if len(losses) == steps:
                break
    k = max(1, min(20, steps // 4))
    first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
    zero = statistics.mean(zeros[-k:])
    return dict(model=model_name, steps=steps, batch_size=batch_size, precision=precision, attention="auto",
                optim=TRAIN_OPTIM, model_changes={k: list(v) for k, v in model_changes.items()}, peak_lr=optim.peak_lr(batch_size),
                first_loss=first, last_loss=last, zero_loss=zero, ratio=last / zero, seconds=time.perf_counter() - t0,
                losses=losses, ok=last < TRAIN_PASS * zero)  # fmt: skip


# --- 5. the test suite, 6. train.py end to end ------------------------------------------------
def suite(files: list[str], shards: int, budget_s: float, root: Path = ROOT) -> dict:
    """The tests in ``files`` (paths below ``root``), dealt one by one into ``shards``
    pytest processes run side by side (each with its share of the cores: pytest-xdist is not a
    dependency); a shard still running after ``budget_s`` is stopped and reported."""
    import importlib.util
    import subprocess
    import tempfile
    import xml.etree.ElementTree as ET

    if importlib.util.find_spec("pytest") is None:
        return dict(not_run="pytest is not installed (pip install -e '.[dev]')")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    listed = subprocess.run([*cmd, "--collect-only", *files], cwd=root, capture_output=True, text=True, timeout=300)
    ids = [line for line in listed.stdout.splitlines() if "::" in line and not line.startswith(" ")]
    if listed.returncode or not ids:
        return dict(ok=False, error="collection failed:\n" + (listed.stdout + listed.stderr)[-2000:])
    shards = max(1, min(shards, len(ids)))
    threads = max(1, (os.cpu_count() or 1) // shards)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    tmp = Path(tempfile.mkdtemp(prefix="poyo_gpu_check_suite_"))
    procs = []
    for i in range(shards):
        log_file = open(tmp / f"shard{i}.log", "w")
        procs.append(
            (subprocess.Popen([*cmd, f"--junitxml={tmp / f'shard{i}.xml'}", *ids[i::shards]], cwd=root, env=env,
                              stdout=log_file, stderr=subprocess.STDOUT), log_file)
        )  # fmt: skip
    start, timed_out = time.perf_counter(), []
    for i, (proc, log_file) in enumerate(procs):
        try:
            proc.wait(timeout=max(1.0, budget_s - (time.perf_counter() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            timed_out.append(i)
        log_file.close()
    counts, failed = dict(tests=0, failures=0, errors=0, skipped=0), []
    for i in range(shards):
        xml = tmp / f"shard{i}.xml"
        if i in timed_out or not xml.is_file():
            continue
        for case in ET.parse(xml).getroot().iter("testcase"):
            counts["tests"] += 1
            for kind, key in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
                if case.find(kind) is not None:
                    counts[key] += 1
                    if kind != "skipped":
                        failed.append(f"{case.get('classname')}::{case.get('name')}")
    tails = {i: (tmp / f"shard{i}.log").read_text()[-1500:] for i in timed_out}
    return dict(collected=len(ids), shards=shards, threads_per_shard=threads, seconds=time.perf_counter() - start,
                passed=counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"], **counts,
                failed_tests=failed, timed_out_shards=timed_out, timed_out_tails=tails, logs=str(tmp),
                ok=not failed and not timed_out)  # fmt: skip


def train_py(args: list[str], budget_s: float) -> dict:
    """``python train.py`` with ``args`` in a fresh run folder; its closing table's mean R² beside
    the linear decoder's (POYO must be above it)."""
    import csv
    import subprocess
    import tempfile

    run_dir = Path(tempfile.mkdtemp(prefix="poyo_gpu_check_train_"))
    cmd = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *args]
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        return dict(args=args, ok=False, error=f"still running after {budget_s:.0f} s", run_dir=str(run_dir))
    seconds = time.perf_counter() - start
    results = run_dir / "test_results.csv"
    if out.returncode or not results.is_file():
        return dict(args=args, ok=False, seconds=seconds, returncode=out.returncode, run_dir=str(run_dir),
                    error=(out.stdout + out.stderr)[-3000:])  # fmt: skip
    rows = list(csv.DictReader(open(results)))
    poyo, linear = (statistics.mean(float(r[k]) for r in rows) for k in ("poyo_r2", "linear_r2"))
    return dict(args=args, seconds=seconds, sessions=len(rows), poyo_r2=poyo, linear_r2=linear, run_dir=str(run_dir),
                ok=poyo > linear)  # fmt: skip


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def cpu_reference(a) -> int:
    """Part 4 alone on this CPU, as a GPU would run it: the figures behind ``TRAIN_PASS``."""
    data = a.data or ROOT / "data" / "processed" / "synthetic_reaching"
    tr = training(
        "cpu", data, 200, a.batch, "poyo_1.3M", seed=a.seed, model_changes={} if a.without_count_read else None
    )
    log(f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads; batch {a.batch}, seed {a.seed}, "
        f"count read {'off' if a.without_count_read else 'on'}: loss {tr['first_loss']:.3f} -> {tr['last_loss']:.3f}, "
        f"{tr['ratio']:.3f}x predicting zero ({tr['zero_loss']:.3f}) in {tr['seconds']:.0f} s")  # fmt: skip
    return 0


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
    p.add_argument("--suite-budget", type=float, default=270, help="seconds for the test suite (0: skip it)")
    p.add_argument("--train-budget", type=float, default=300, help="seconds for train.py end to end (0: skip it)")
    p.add_argument(
        "--cpu-reference", action="store_true",
        help="only part 4, on CPU, with the GPU's settings (the figures behind its threshold)",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=128, help="--cpu-reference: windows per batch")
    p.add_argument("--seed", type=int, default=0, help="--cpu-reference: model and data seed")
    p.add_argument("--without-count-read", action="store_true", help="--cpu-reference: model.latent_counts=[]")
    a = p.parse_args()
    if a.cpu_reference:
        return cpu_reference(a)
    out = a.out or Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    if a.dry_run:
        device, s = (
            "cpu",
            dict(
                models=["poyo_mini"],
                spikes=200,
                batch=4,
                steps=2,
                warmup=1,
                max_limit=8,
                train_steps=8,
                train_batch=8,
                suite_files=["tests/test_rotary.py", "tests/test_vocab.py"],
                shards=2,
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
                suite_files=["tests"],
                shards=max(1, min(8, (os.cpu_count() or 2) // 2)),
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
        f"  {'model':12s} {'backend':13s} {'precision':>10s} {'ms/step':>8s} {'steps/s':>8s} {'Mtok/s':>7s} {'TFLOP/s':>8s} {'MFU':>6s}"
    )
    for r in report["speed"]:
        if "skipped" in r:
            log(f"  {r['model']:12s} {r['backend']:13s} {r['precision']:>10s}  skipped: {r['skipped']}")
        else:
            log(f"  {r['model']:12s} {r['backend']:13s} {r['precision']:>10s} {r['ms_per_step']:8.1f} {r['steps_per_s']:8.2f} "
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
    log(f"  {tr['model']} {tr['precision']}, peak lr {tr['peak_lr']:.2g}: loss {tr['first_loss']:.3f} -> {tr['last_loss']:.3f}, "
        f"{tr['ratio']:.2f}x predicting zero ({tr['zero_loss']:.3f}; must be < {TRAIN_PASS}x) in {tr['seconds']:.0f} s  "
        f"{'ok' if tr['ok'] else 'FAIL' if not a.dry_run else '(not judged in a dry run)'}")  # fmt: skip

    # 5 and 6 side by side: train.py mostly waits on the GPU, the suite mostly on the CPU cores.
    from concurrent.futures import ThreadPoolExecutor

    if a.dry_run:  # the smallest run that goes through every stage
        train_args = [f"data_root={data.parent / 'train_py'}", "dataset.generate.num_animals=1",
                      "dataset.generate.sessions_per_animal=1", "dataset.generate.duration_s=60",
                      "dataset.generate.min_units=10", "dataset.generate.max_units=20", "num_workers=0",
                      "batch_size=16", "trainer.max_steps=6", "trainer.check_val_every_n_epoch=1"]  # fmt: skip
    else:  # the README's quick start as it is
        train_args = []
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(train_py, train_args, a.train_budget) if a.train_budget > 0 else None
        if a.suite_budget > 0:
            log(
                f"\n5. the test suite ({' '.join(s['suite_files'])}) in {s['shards']} processes, at most {a.suite_budget:.0f} s"
            )
            report["suite"] = su = suite(s["suite_files"], s["shards"], a.suite_budget)
            if "not_run" in su:
                log(f"  not run: {su['not_run']}")
            elif "error" in su:
                log(f"  {su['error']}")
            else:
                log(f"  {su['passed']} passed, {su['failures']} failed, {su['errors']} errors, {su['skipped']} skipped of "
                    f"{su['collected']} collected, in {su['seconds']:.0f} s ({su['shards']} x {su['threads_per_shard']} threads)"
                    + "".join(f"\n  FAILED {t}" for t in su["failed_tests"])
                    + "".join(f"\n  shard {i} stopped after {a.suite_budget:.0f} s; its last output:\n{su['timed_out_tails'][i]}"
                              for i in su["timed_out_shards"]))  # fmt: skip
        if job is not None:
            log(f"\n6. python train.py {' '.join(train_args) or '(the quick start)'}, at most {a.train_budget:.0f} s")
            report["train_py"] = tp = job.result()
            if "error" in tp:
                log(f"  FAIL: {tp['error']}")
            else:
                log(f"  {tp['sessions']} sessions: POYO R2 {tp['poyo_r2']:.3f}, linear {tp['linear_r2']:.3f} in {tp['seconds']:.0f} s  "
                    f"{'ok' if tp['ok'] else 'FAIL' if not a.dry_run else '(R2 not judged in a dry run)'}")  # fmt: skip

    failed = [r["check"] for r in report["parity"] if r.get("ok") is False]
    if not tr["ok"] and not a.dry_run:
        failed.append("training loss did not fall")
    if report.get("suite", {}).get("ok") is False:
        failed.append("test suite")
    tp = report.get("train_py")
    if tp is not None and not tp["ok"] and (not a.dry_run or "error" in tp):
        failed.append("train.py")
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

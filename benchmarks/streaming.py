"""Latency of closed-loop decoding with :class:`poyo.stream.StreamingDecoder`.

    python benchmarks/streaming.py                       # poyo_mini and poyo_1.3M, 100 and 1000 units
    python benchmarks/streaming.py --models poyo_mini --units 100 --updates 5000

Every update pushes the spikes of the last ``--step`` seconds (Poisson, ``--rate`` Hz per
unit) and asks for the estimate now: one 1 s window through tokenizer, collate and model.
Prints the 50th/99th percentile and maximum latency per update (push + predict), measured
after a warm-up, with the machine's thread count.

Each configuration runs in a fresh process (what ran before would otherwise shape the heap
and the latency), once with glibc's default allocator settings and once after
:func:`poyo.stream.keep_freed_memory`; ``--repeats`` interleaves further rounds.
``--compile`` adds the same rows with the model under ``torch.compile(dynamic=True)``
(compilation happens in the warm-up and is not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from poyo.model import POYO, POYOConfig
from poyo.readouts import ReadoutConfig
from poyo.stream import StreamingDecoder, keep_freed_memory

CONFIGS = Path(__file__).resolve().parents[1] / "poyo" / "configs" / "model"


def build(name: str, units: list[str], session: str) -> POYO:
    model = POYO(POYOConfig.from_yaml(CONFIGS / f"{name}.yaml"), unit_ids=units, session_ids=[session], seed=0)
    model.readout_configs = [ReadoutConfig("cursor_velocity_2d", std=10.0)]
    return model.eval()


def run(
    name: str, n_units: int, rate: float, step: float, updates: int, warmup: int, seed: int, compile: bool = False
) -> dict:
    session = "bench/session"
    units = [f"{session}/u{i}" for i in range(n_units)]
    dec = StreamingDecoder(build(name, units, session), session_id=session, unit_ids=units)
    if compile:
        dec.model = torch.compile(dec.model, dynamic=True)
    rng = np.random.default_rng(seed)
    lat, spikes = [], []
    t = 0.0
    for k in range(warmup + updates):
        n = rng.poisson(rate * n_units * step)
        times = np.sort(rng.uniform(t, t + step, n))
        who = rng.integers(0, n_units, n)
        t += step
        t0 = time.perf_counter()
        dec.push(times, who)
        dec.predict(t)
        dt = time.perf_counter() - t0
        if k >= warmup:
            lat.append(dt)
            spikes.append(dec.buffered)
    lat = np.array(lat) * 1e3
    return dict(
        model=name,
        units=n_units,
        spikes_in_window=float(np.mean(spikes)),
        p50_ms=float(np.percentile(lat, 50)),
        p99_ms=float(np.percentile(lat, 99)),
        max_ms=float(lat.max()),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["poyo_mini", "poyo_1.3M"])
    p.add_argument("--units", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--rate", type=float, default=10.0, help="mean firing rate per unit (Hz)")
    p.add_argument("--step", type=float, default=0.01, help="seconds between updates")
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--repeats", type=int, default=1, help="rounds over all configurations")
    p.add_argument("--allocator", nargs="+", choices=["default", "keep"], default=["default", "keep"])
    p.add_argument("--compile", action="store_true", help="also run each row with the model under torch.compile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", help=argparse.SUPPRESS)  # one configuration as JSON, run in this process
    a = p.parse_args()
    if a.child:
        c = json.loads(a.child)
        if c["allocator"] == "keep" and not keep_freed_memory():
            raise SystemExit("keep_freed_memory() needs glibc")
        r = run(c["model"], c["units"], a.rate, a.step, a.updates, a.warmup, a.seed, c["compile"])
        print(json.dumps(r))
        return
    print(
        f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"updates every {a.step * 1e3:g} ms, {a.rate:g} Hz per unit, {a.updates} timed updates after {a.warmup} warm-up, one process per row\n"
    )
    print(
        f"{'model':12s} {'units':>6s} {'allocator':>9s} {'mode':>8s} {'spikes/window':>14s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}"
    )
    passthrough = [
        "--rate",
        str(a.rate),
        "--step",
        str(a.step),
        "--updates",
        str(a.updates),
        "--warmup",
        str(a.warmup),
        "--seed",
        str(a.seed),
    ]
    for _ in range(a.repeats):
        for name in a.models:
            for n in a.units:
                for alloc, compiled in [
                    (al, c) for al in a.allocator for c in ([False, True] if a.compile else [False])
                ]:
                    mode = "compiled" if compiled else "eager"
                    child = json.dumps({"model": name, "units": n, "allocator": alloc, "compile": compiled})
                    out = subprocess.run(
                        [sys.executable, __file__, *passthrough, "--child", child], capture_output=True, text=True
                    )
                    if out.returncode:
                        raise SystemExit(f"{name}, {n} units, {alloc} allocator, {mode} failed:\n{out.stderr}")
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    print(
                        f"{r['model']:12s} {r['units']:6d} {alloc:>9s} {mode:>8s} {r['spikes_in_window']:14.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.2f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()

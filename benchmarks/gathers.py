"""Rows and samples taken with gradients in a training step, two ways each.

    python benchmarks/gathers.py dataset=s1_full data_root=<folder> [objective=mtm] [key=value ...]
    python benchmarks/gathers.py                      # the quick start's synthetic set

*Gathers.* The model gathers rows of a small tensor onto many tokens: the encoder's keys and
values from their (unit, token type) pairs to the spike tokens, each latent's count read from its
window's grid, and (masked modelling) each window's masking-scheme prompt onto its latents,
queries and bins, each count target's state from its bin and each bin's count read without the
padding. Written as ``src[index]`` the backward is an accumulating ``index_put``; as
``src.index_select(0, index)`` it is an ``index_add``: the same sums, far cheaper on CPU.

*Samples.* The packed CPU attention (``poyo.model.attention._loop``) runs windows of one shape
as one batched call, then takes each window's output back and concatenates them. Taken as
``out[j]``, each one's backward fills a zero copy of the whole group; ``out.unbind(0)``'s
stacks the gradients once.

This takes the run's own training batches (the overrides are ``train.py``'s; no training
happens), records every ``index_select`` and ``unbind`` along the first dimension that one
training step makes on a tensor with gradients (shape and dtype, the index), then times each
both ways on sources of that shape, forward and backward (the samples concatenated again, as
the kernel does), alternated over rounds, beside a whole training step for scale. Figures in
benchmarks/README.md, "Speed on CPU".
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from encoder_pairs import train_steps, training_batches  # noqa: E402

BATCHES, ROUNDS = 8, 8


def main() -> None:
    model, precision, batches = training_batches(sys.argv[1:], "benchmarks/gathers.py", BATCHES)
    bf16 = precision.startswith("bf16")  # as the run would train (trainer.precision)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)  # as training on CPU (poyo/training/optim.py)

    calls: list[tuple[str, torch.Size, torch.dtype, torch.Tensor | None]] = []  # (kind, shape, dtype, index)
    select, unbind = torch.Tensor.index_select, torch.Tensor.unbind

    def recording_select(src, dim, index):
        if src.requires_grad and dim == 0:
            calls.append(("rows", src.shape, src.dtype, index.detach().clone()))
        return select(src, dim, index)

    def recording_unbind(src, dim=0):
        if src.requires_grad and dim == 0:
            calls.append(("samples", src.shape, src.dtype, None))
        return unbind(src, dim)

    torch.Tensor.index_select, torch.Tensor.unbind = recording_select, recording_unbind
    try:
        train_steps(model, batches[:1], opt, bf16)  # one batch: the calls of one step
    finally:
        torch.Tensor.index_select, torch.Tensor.unbind = select, unbind
    if not calls:
        raise SystemExit("this model's step takes no rows or samples with gradients: nothing to compare")

    sources = [torch.randn(shape, dtype=dtype) for _, shape, dtype, _ in calls]

    def taken(now: bool) -> list[float]:
        """ms of each recorded call, forward and backward, written the way of now (``now``) or before."""
        ms = []
        for src, (kind, _, _, index) in zip(sources, calls):
            t0 = time.perf_counter()
            src.requires_grad_()
            if kind == "rows":
                out = src.index_select(0, index) if now else src[index]
            else:
                out = torch.cat(src.unbind(0) if now else [src[j] for j in range(len(src))])
            out.backward(torch.ones_like(out))
            src.grad = None
            ms.append((time.perf_counter() - t0) * 1e3)
        return ms

    ways = {True: "index_select, unbind", False: "src[index], out[j]"}
    times: dict[bool, list[list[float]]] = {True: [], False: []}
    steps: list[float] = []
    taken(True), taken(False), train_steps(model, batches, opt, bf16)  # warm-up
    for r in range(ROUNDS):
        for now in (False, True) if r % 2 == 0 else (True, False):
            times[now].append(taken(now))
        t0 = time.perf_counter()
        train_steps(model, batches, opt, bf16)
        steps.append((time.perf_counter() - t0) / BATCHES * 1e3)
    # medians over rounds: of each call, and of each kind's sum
    each = {k: [statistics.median(r[i] for r in v) for i in range(len(calls))] for k, v in times.items()}
    step = statistics.median(steps)
    print(f"\n{precision}, {torch.get_num_threads()} threads, torch {torch.__version__}; {ROUNDS} rounds alternated")
    print(
        f"{'taken with gradients in one training step':48s} {'before ms':>10s} {'now ms':>8s}   (before: {ways[False]}; now: {ways[True]})"
    )
    for i, (kind, shape, dtype, index) in enumerate(calls):
        what = f"{len(index):,} rows" if kind == "rows" else f"{shape[0]} samples"
        what = f"  {tuple(shape)} {str(dtype).replace('torch.', '')} -> {what}"
        print(f"{what:48s} {each[False][i]:10.2f} {each[True][i]:8.2f}")
    for kind in ("rows", "samples"):
        mine = [i for i, c in enumerate(calls) if c[0] == kind]
        if mine:
            before, now = (statistics.median(sum(r[i] for i in mine) for r in times[k]) for k in (False, True))
            print(
                f"{'all ' + kind + ' (forward + backward)':48s} {before:10.2f} {now:8.2f}   saves {(before - now) / step:.1%} of a step"
            )
    print(f"whole training step (now): {step:.1f} ms")


if __name__ == "__main__":
    main()

"""Row gathers with gradients in a training step: fancy indexing against ``index_select``.

    python benchmarks/gathers.py dataset=s1_full data_root=<folder> [objective=mtm] [key=value ...]
    python benchmarks/gathers.py                      # the quick start's synthetic set

The model gathers rows of a small tensor onto many tokens in three places: the encoder's keys
and values from their (unit, token type) pairs to the spike tokens, each latent's count read
from its window's grid, and (masked modelling) each count target's state from its bin. Written
as ``src[index]`` the backward is an accumulating ``index_put``; as ``src.index_select(0,
index)`` it is an ``index_add``: the same sums, far cheaper on CPU. This takes the run's own
training batches (the overrides are ``train.py``'s; no training happens), records every
``index_select`` one training step of the model makes (source shape and dtype, the index
itself), then times each gather both ways, forward and backward, alternated over rounds, beside
a whole training step for scale. Figures in benchmarks/README.md, "Speed on CPU".
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

    calls: list[tuple[torch.Size, torch.dtype, torch.Tensor]] = []
    plain = torch.Tensor.index_select

    def recording(src, dim, index):
        if src.requires_grad and dim == 0:
            calls.append((src.shape, src.dtype, index.detach().clone()))
        return plain(src, dim, index)

    torch.Tensor.index_select = recording
    try:
        train_steps(model, batches[:1], opt, bf16)  # one batch: the gathers of one step
    finally:
        torch.Tensor.index_select = plain
    if not calls:
        raise SystemExit("this model's step makes no index_select with gradients: nothing to compare")

    sources = [torch.randn(shape, dtype=dtype) for shape, dtype, _ in calls]

    def gathers(select: bool) -> list[float]:
        """ms of each recorded gather, forward and backward, written one way."""
        ms = []
        for src, (_, _, index) in zip(sources, calls):
            t0 = time.perf_counter()
            src.requires_grad_()
            out = src.index_select(0, index) if select else src[index]
            out.backward(torch.ones_like(out))
            src.grad = None
            ms.append((time.perf_counter() - t0) * 1e3)
        return ms

    times: dict[str, list[list[float]]] = {"src[index]": [], "index_select": []}
    steps: list[float] = []
    gathers(True), gathers(False), train_steps(model, batches, opt, bf16)  # warm-up
    for r in range(ROUNDS):
        order = ["src[index]", "index_select"] if r % 2 == 0 else ["index_select", "src[index]"]
        for name in order:
            times[name].append(gathers(name == "index_select"))
        t0 = time.perf_counter()
        train_steps(model, batches, opt, bf16)
        steps.append((time.perf_counter() - t0) / BATCHES * 1e3)
    # medians over rounds: of each gather, and of their sum
    each = {k: [statistics.median(r[i] for r in v) for i in range(len(calls))] for k, v in times.items()}
    total = {k: statistics.median(sum(r) for r in v) for k, v in times.items()}
    step = statistics.median(steps)
    print(f"\n{precision}, {torch.get_num_threads()} threads, torch {torch.__version__}; {ROUNDS} rounds alternated")
    print(f"{'gathers with gradients in one training step':48s} {'src[index] ms':>14s} {'index_select ms':>16s}")
    for i, (shape, dtype, index) in enumerate(calls):
        what = f"  {tuple(shape)} {str(dtype).replace('torch.', '')} -> {len(index):,} rows"
        print(f"{what:48s} {each['src[index]'][i]:14.2f} {each['index_select'][i]:16.2f}")
    print(f"{'all of them (forward + backward)':48s} {total['src[index]']:14.2f} {total['index_select']:16.2f}")
    print(f"whole training step (index_select): {step:.1f} ms")
    print(f"index_select saves {(total['src[index]'] - total['index_select']) / step:.1%} of a step")


if __name__ == "__main__":
    main()

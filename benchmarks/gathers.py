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

    def step() -> None:
        train_steps(model, batches, opt, bf16)

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

    def gathers(select: bool) -> float:
        t0 = time.perf_counter()
        for src, (_, _, index) in zip(sources, calls):
            src.requires_grad_()
            out = src.index_select(0, index) if select else src[index]
            out.backward(torch.ones_like(out))
            src.grad = None
        return (time.perf_counter() - t0) * 1e3

    times: dict[str, list[float]] = {"src[index]": [], "index_select": [], "whole step": []}
    gathers(True), gathers(False), step()  # warm-up
    for r in range(ROUNDS):
        order = ["src[index]", "index_select"] if r % 2 == 0 else ["index_select", "src[index]"]
        for name in order:
            times[name].append(gathers(name == "index_select"))
        t0 = time.perf_counter()
        step()
        times["whole step"].append((time.perf_counter() - t0) / BATCHES * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{precision}, {torch.get_num_threads()} threads, torch {torch.__version__}; {ROUNDS} rounds alternated")
    print("gathers with gradients in one training step (source rows x width -> gathered rows):")
    for shape, dtype, index in calls:
        print(f"  {tuple(shape)} {str(dtype).replace('torch.', '')} -> {len(index):,} rows")
    print(f"{'ms per step (median of rounds)':34s} {'forward + backward':>18s}")
    for name in ("src[index]", "index_select"):
        print(f"{'all of them, ' + name:34s} {med[name]:18.2f}")
    print(f"{'whole training step (index_select)':34s} {med['whole step']:18.1f}")
    print(f"index_select saves {(med['src[index]'] - med['index_select']) / med['whole step']:.1%} of a step")


if __name__ == "__main__":
    main()

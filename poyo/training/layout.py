"""Which batch layout a run uses. ``layout=auto`` (the default) measures on a GPU instead of guessing.

Packed batches (each sequence group one long sequence, ``cu_seqlens``) and padded ones (``B x N``
with masks) compute the same function (``tests/test_attention.py``) at costs that depend on the
device and on the kernels installed. Measured: on a 2-core CPU, packed (``loop``) trained 1.12x
faster than padded (``sdpa``) in fp32, and its bf16 products are bucketed per sample for oneDNN
(``benchmarks/vs_torch_brain.py``); on an H200 without xformers, packed (nested tensors) trained
2.7-4.8x *slower* than padded SDPA (``benchmarks/README.md``, GPU check). So:

* an explicit ``attention`` kernel fixes the layout (``sdpa`` is padded, the others packed);
* on CPU, ``auto`` is packed;
* on a GPU, ``auto`` times a training step (forward, loss, backward) of the run's first batch in
  both layouts, after one untimed step each, and keeps padded only when it is faster by more than
  ``MARGIN`` (ranks that measure a near tie then agree on packed). The weights, their gradients
  and the random streams are left as they were.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Mapping

import torch

from poyo.model.attention import PACKED_BACKENDS, PADDED_BACKENDS
from poyo.training.stitch import to_device

LAYOUTS = ("auto", "packed", "padded")
MARGIN = 0.10  # padded must be this much faster than packed to be chosen on a GPU


def layout_of_attention(attention: str) -> str | None:
    """The layout an attention kernel needs, or None for ``auto`` (either)."""
    if attention in PADDED_BACKENDS:
        return "padded"
    if attention in PACKED_BACKENDS:
        return "packed"
    return None


def check_layout(layout: str, attention: str) -> None:
    """Raise ``ValueError`` when ``layout`` and ``attention`` cannot run together."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    need = layout_of_attention(attention)
    if need is not None and layout not in ("auto", need):
        raise ValueError(f"attention={attention} runs {need} batches, not layout={layout}: set layout={need} or auto")


def first_batch(data, windows, n: int, collate: Callable[[str], Callable]) -> dict[str, dict]:
    """The first ``n`` of ``windows`` read from ``data`` (a dataset with its transform), collated
    in each layout by ``collate(layout)``: what :func:`choose_layout` times."""
    samples = [data[w] for w in itertools.islice(iter(windows), n)]
    return {layout: collate(layout)(samples) for layout in ("packed", "padded")}


def step_ms(model, batch: dict, device: torch.device, autocast: Callable, repeats: int, train: bool) -> float:
    """Median milliseconds of one forward (and, with ``train``, loss and backward) of ``batch``,
    after one untimed call; gradients are cleared after each call."""

    def once() -> None:
        with autocast():
            preds = model(batch)
            loss = model.loss(preds, batch)[0] if train else None
        if train:
            loss.backward()
            model.zero_grad(set_to_none=True)

    times = []
    for k in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        if train:
            once()
        else:
            with torch.no_grad():
                once()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k:  # the first call warms up (kernel choice, allocator)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure(
    model,
    batches: Mapping[str, dict],
    device: torch.device,
    autocast: Callable,
    *,
    repeats: int = 3,
    train: bool = True,
) -> dict[str, float]:
    """Milliseconds per step of each ``{layout: collated batch}`` on ``device``.

    The model comes back on the device it was on, in its mode, with its gradients, and every
    random generator (CPU and CUDA) as it was: measuring changes nothing of the run."""
    before = next(model.parameters()).device
    was_training = model.training
    grads = [p.grad for p in model.parameters()]
    devices = [device] if device.type == "cuda" else []
    out = {}
    try:
        with torch.random.fork_rng(devices=devices):
            model.to(device).train(train)
            for layout, batch in batches.items():
                out[layout] = step_ms(model, to_device(batch, device), device, autocast, repeats, train)
    finally:
        model.to(before).train(was_training)
        for p, g in zip(model.parameters(), grads):
            p.grad = g
    return out


def choose_layout(
    layout: str,
    attention: str,
    device: torch.device,
    model=None,
    batches: Callable[[], Mapping[str, dict]] | None = None,
    autocast: Callable | None = None,
    *,
    train: bool = True,
    measure_fn: Callable = measure,
) -> tuple[str, str]:
    """The layout a run uses and why, in words (see the module doc). Only ``layout=auto`` with
    ``attention=auto`` on a GPU measures, and needs the rest: ``batches`` returns the first batch
    collated both ways (``{"packed": ..., "padded": ...}``) and ``autocast`` the run's autocast context."""
    check_layout(layout, attention)
    if layout != "auto":
        return layout, "layout"
    need = layout_of_attention(attention)
    if need is not None:
        return need, f"auto: attention={attention} runs {need} batches"
    if device.type != "cuda":
        return "packed", f"auto: packed on {device.type}"
    if model is None or batches is None or autocast is None:
        raise ValueError("layout=auto on a GPU measures both layouts: pass the model, batches and autocast")
    ms = measure_fn(model, batches(), device, autocast, train=train)
    chosen = "padded" if ms["padded"] < (1 - MARGIN) * ms["packed"] else "packed"
    what = "training step" if train else "forward pass"
    return (
        chosen,
        f"auto: measured {ms['packed']:.1f} ms packed, {ms['padded']:.1f} ms padded per {what} of the first batch",
    )

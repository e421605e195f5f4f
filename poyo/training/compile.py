"""``trainer.compile=true``: the latents' self-attention stack through ``torch.compile`` (opt-in).

What is compiled is :meth:`POYO.process`, the six (``depth``) latent layers: their shapes depend
only on the batch size, so they compile to one graph without breaks, whereas the spike tokens'
counts change at every step and the packed layout reads them on the host. The rotary rotation
there runs in real arithmetic (:func:`poyo.model.rotary._rotate_real`), which inductor fuses.

Not the default: on a 2-core AVX512-BF16 CPU a compiled poyo_1.3M training step was slower than the
eager one (``benchmarks/README.md``); it is meant for GPUs, where the eager latent stack is a chain
of small kernel launches, and it has not been timed on one yet. Where inductor cannot build (no C++
compiler on CPU, say), the run says so in one warning line and trains eagerly.
"""

from __future__ import annotations

import warnings

import torch

from poyo.model import POYO


def inductor_problem(device: torch.device | str) -> str | None:
    """None if ``torch.compile`` (inductor) builds and runs a small function on ``device``; else why not."""
    device = torch.device(device)

    def probe(x):
        return torch.nn.functional.gelu(x) * 2 + 1

    x = torch.linspace(-1, 1, 8, device=device)
    try:
        out = torch.compile(probe, dynamic=False)(x)
    except Exception as e:  # noqa: BLE001 -- whatever stops the compiler, the run stays eager
        first = (str(e).strip().splitlines() or [""])[0]  # e.g. "InvalidCxxCompiler: No working C++ compiler ..."
        return (first or type(e).__name__)[:300]
    if not torch.allclose(out, probe(x), atol=1e-5):
        return "a compiled probe computed a different value than eager"
    return None


def compile_latent_stack(model: POYO, device: torch.device | str) -> bool:
    """Compile ``model``'s latent stack in place (an attribute of this model object; its weights and
    state dict are untouched, so checkpoints are the same). False, with one warning, where inductor
    cannot build on ``device``."""
    if not isinstance(model, POYO):
        raise TypeError(f"expected a POYO model, got {type(model).__name__}")
    problem = inductor_problem(device)
    if problem:
        warnings.warn(
            f"trainer.compile=true: torch.compile cannot build here ({problem}); training eagerly", stacklevel=2
        )
        return False
    # one graph per batch size and mode (train, eval) until dynamo marks the size dynamic; its
    # recompile_limit (8 by default) caps the rest: past it, the stack runs eagerly
    # On CPU, dropout masks come from poyo.model.attention.keep_mask's 64-bit draws, through PyTorch's
    # generator: inductor's own made a compiled poyo_1.3M bf16 step 1.29x the eager one, against 1.18x.
    model.process = torch.compile(model.process, options={"fallback_random": torch.device(device).type == "cpu"})
    return True


def compiled(model: POYO) -> bool:
    """Whether :func:`compile_latent_stack` compiled this model's latent stack."""
    return "process" in vars(model)

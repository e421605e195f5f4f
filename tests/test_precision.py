"""Training precision: bf16-mixed where the hardware computes bf16 natively, fp32 elsewhere.

bf16 autocast runs on any CPU (emulated where there are no bf16 units), so the parity checks
at bf16 tolerances run everywhere; the detection is forced both ways with ``POYO_CPU_BF16``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from poyo.data import Dataset, collate_packed, collate_padded
from poyo.model import POYO
from poyo.model.attention import math_attention
from poyo.model.rotary import RotaryTime
from poyo.readouts import ReadoutConfig
from poyo.training import precision as P
from tests.helpers import TINY, rel, tokenized_windows

ROOT = Path(__file__).resolve().parents[1]


def test_detection_follows_the_cpu_and_the_override(monkeypatch):
    monkeypatch.delenv("POYO_CPU_BF16", raising=False)
    monkeypatch.setattr(P, "_cpu_capabilities", lambda: {"amx_bf16": True, "avx512_bf16": True})
    assert P.cpu_bf16_support() == "AMX-BF16" and P.default_precision("cpu") == "bf16-mixed"
    monkeypatch.setattr(P, "_cpu_capabilities", lambda: {"avx512_bf16": True})
    assert P.cpu_bf16_support() == "AVX512-BF16"
    monkeypatch.setattr(P, "_cpu_capabilities", lambda: {"avx2": True})  # e.g. an older x86 or a CI runner
    assert P.cpu_bf16_support() is None and P.resolve_precision("auto", "cpu") == "32-true"
    monkeypatch.setenv("POYO_CPU_BF16", "1")
    assert P.resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(P, "_cpu_capabilities", lambda: {"amx_bf16": True})
    monkeypatch.setenv("POYO_CPU_BF16", "0")
    assert P.resolve_precision("auto", "cpu") == "32-true"
    assert P.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # an explicit choice is kept
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        P.autocast("cpu", "fp8")


@pytest.fixture(scope="module")
def dataset(synthetic_root):
    return Dataset(synthetic_root, behaviour=["cursor.vel"], intervals=["movement_phases.reach_period"])


def batch_samples(dataset, model, n=4):
    return tokenized_windows(dataset, model.tokenizer([ReadoutConfig("cursor_velocity_2d", std=10.0)]), n)


def forward_backward(model, batch, precision):
    model.zero_grad(set_to_none=True)
    with P.autocast("cpu", precision):
        pred = model(batch)["cursor_velocity_2d"]
        loss, _ = model.loss({"cursor_velocity_2d": pred}, batch)
    loss.backward()
    return pred.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_bf16_training_step_agrees_with_fp32_in_both_layouts(dataset):
    """Outputs within 2% and every gradient within 5% (relative norm) of fp32; the packed and
    padded layouts agree with each other under bf16 as closely as bf16 allows."""
    model = POYO(**TINY, unit_ids=dataset.unit_ids, session_ids=dataset.session_ids, seed=3).eval()
    ss = batch_samples(dataset, model)
    results = {}
    for layout, collate, backend in (("packed", collate_packed, "loop"), ("padded", collate_padded, "sdpa")):
        model.attention = backend
        for precision in ("32-true", "bf16-mixed"):
            results[layout, precision] = forward_backward(model, collate(ss), precision)
    for layout in ("packed", "padded"):
        (p32, g32), (p16, g16) = results[layout, "32-true"], results[layout, "bf16-mixed"]
        assert rel(p16, p32) < 2e-2, layout
        assert max(rel(g16[n], g32[n]) for n in g32) < 5e-2, layout
    (pk, gk), (pd, gd) = results["packed", "bf16-mixed"], results["padded", "bf16-mixed"]
    assert rel(pk, pd) < 2e-2 and max(rel(gk[n], gd[n]) for n in gd) < 5e-2


def test_rotary_phases_stay_float32_under_autocast():
    rotary = RotaryTime(16)
    t = torch.tensor([0.0, 0.3117, 0.9999], dtype=torch.float64)
    ref = rotary(t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = rotary(t)
        x = torch.randn(3, 2, 16).bfloat16()
        out = rotary.rotate(x, low)
    assert low.phase.dtype == torch.complex64 and torch.equal(low.phase, ref.phase)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), rotary.rotate(x.float(), ref), atol=2e-2, rtol=1e-2)


def test_own_attention_in_bf16_is_sdpa_in_bf16():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 16).bfloat16() for n in (5, 9, 9))
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., 6:] = False
    ours = math_attention(q, k, v, 0.0, mask)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref, atol=3e-2, rtol=2e-2)


@pytest.mark.parametrize("forced, expected", [("0", "32-true"), ("1", "bf16-mixed")])
def test_train_py_resolves_auto_and_says_so(tmp_path, forced, expected):
    """``trainer.precision=auto`` (the default) on a CPU without bf16 units (forced) trains in
    fp32, the path every run took before; with them, in bf16-mixed. The model line says which."""
    cmd = [
        sys.executable, str(ROOT / "train.py"), f"data_root={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
        "dataset.generate.num_animals=1", "dataset.generate.sessions_per_animal=1", "dataset.generate.duration_s=60",
        "dataset.generate.min_units=10", "dataset.generate.max_units=12", "num_workers=0", "batch_size=8",
        "trainer.max_steps=3", "trainer.min_steps=0",
    ]  # fmt: skip
    env = {**__import__("os").environ, "POYO_CPU_BF16": forced}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    why = "auto: no bf16 matrix units on this CPU" if forced == "0" else "auto: this CPU has forced"
    assert f"precision {expected} ({why})" in out.stdout, out.stdout[-2000:]


def test_bf16_linear_rounds_its_rows_and_changes_nothing_else():
    """Under CPU bf16 autocast, layers.Linear pads its rows to a few sizes (so oneDNN does not
    compile a kernel per packed batch): the same outputs and gradients as nn.Linear, at most
    1/16 more rows, and 16 sizes per doubling of the row count."""
    from poyo.model.attention import bucket
    from poyo.model.layers import Linear

    sizes = {bucket(n) for n in range(1025, 2049)}
    assert len(sizes) == 16 and all(n <= bucket(n) <= max(n + 63, n * 17 / 16) for n in range(1, 70_000, 7))
    torch.manual_seed(0)
    ours, ref = Linear(64, 24), torch.nn.Linear(64, 24)
    ref.load_state_dict(ours.state_dict())
    for shape in [(37, 64), (3, 333, 64), (128, 64)]:
        x = torch.randn(shape, requires_grad=True)
        g = torch.randn(*shape[:-1], 24)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = ours(x), ref(x)
        assert a.shape == b.shape and a.dtype == b.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b.float(), atol=1e-2, rtol=1e-2)
        ga = torch.autograd.grad(a, (x, ours.weight), g.bfloat16())
        gb = torch.autograd.grad(b, (x, ref.weight), g.bfloat16())
        for u, w in zip(ga, gb):
            torch.testing.assert_close(u.float(), w.float(), atol=5e-2, rtol=2e-2)
    x = torch.randn(37, 64)
    assert torch.equal(ours(x), ref(x))  # fp32: nn.Linear itself


def test_bf16_inference_runs_the_plain_products_and_predicts_what_sdpa_predicts(dataset, monkeypatch):
    """Evaluation in bf16 on CPU computes attention with :func:`math_attention` (SDPA's bf16 CPU
    forward was 1.6-2.7x slower, ``benchmarks/cpu_attention.py``); its predictions are SDPA's
    within bf16 rounding, and fp32's within 2%, in both layouts."""
    import poyo.model.attention as A

    model = POYO(**TINY, unit_ids=dataset.unit_ids, session_ids=dataset.session_ids, seed=3).eval()
    ss = batch_samples(dataset, model)
    calls = []
    monkeypatch.setattr(A, "math_attention", lambda *a, **k: calls.append(1) or math_attention(*a, **k))
    for collate, backend in ((collate_packed, "loop"), (collate_padded, "sdpa")):
        model.attention = backend
        batch = collate(ss)
        preds = {}
        for kernel, precision in (("math", "32-true"), ("sdpa", "bf16-mixed"), ("math", "bf16-mixed")):
            monkeypatch.setenv("POYO_CPU_ATTENTION", kernel)
            calls.clear()
            with torch.inference_mode(), P.autocast("cpu", precision):
                preds[kernel, precision] = model(batch)["cursor_velocity_2d"].float()
            # fp32 inference and the sdpa switch keep PyTorch's kernel; bf16 runs the plain products
            assert bool(calls) == ((kernel, precision) == ("math", "bf16-mixed")), (backend, kernel, precision)
        ref = preds["math", "32-true"]
        assert rel(preds["math", "bf16-mixed"], preds["sdpa", "bf16-mixed"]) < 1e-2, backend
        assert rel(preds["math", "bf16-mixed"], ref) < 2e-2, backend

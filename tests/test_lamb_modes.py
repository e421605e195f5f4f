"""LAMB's two modes, each against its reference rule: ``poyo`` (absent vocabulary rows keep
their moments, trust ratio over the touched rows) and ``torch_brain`` (torch_brain's
``SparseLamb`` + ``OneCycleLR``: absent rows' moments reset, trust ratio over the whole matrix,
beta1 cycled).

The real ``SparseLamb`` lives in torch_brain 0.1.x (it left the package in 0.2). ``.ci/run``
downloads that wheel into ``.venv/reference/``; its ``optim.py`` is run from the wheel. Without
it, that comparison skips and the hand-computed rules below still run.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from poyo.model import POYO
from poyo.training.optim import Lamb, OptimConfig

ROOT = Path(__file__).resolve().parents[1]


def one_step(mode: str):
    """A 3-row vocabulary whose row 1 gets no gradient in the second step."""
    w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 0.5], [3.0, 1.0]]))
    opt = Lamb([dict(params=[w], sparse=True)], lr=0.1, weight_decay=0.01, mode=mode)
    w.grad = torch.tensor([[0.1, 0.2], [0.3, -0.1], [-0.2, 0.4]])
    opt.step()
    before = w.detach().clone()
    m0, v0 = opt.state[w]["exp_avg"].clone(), opt.state[w]["exp_avg_sq"].clone()
    w.grad = torch.tensor([[0.05, -0.1], [0.0, 0.0], [0.2, 0.1]])
    opt.step()
    return before, m0, v0, w.detach(), opt.state[w]


@pytest.mark.parametrize("mode", ["poyo", "torch_brain"])
def test_each_mode_follows_its_rule_on_a_row_left_out(mode):
    before, m0, v0, after, state = one_step(mode)
    g = np.array([[0.05, -0.1], [0.0, 0.0], [0.2, 0.1]])
    b1, b2, eps, wd, lr = 0.9, 0.999, 1e-6, 0.01, 0.1
    w, m0, v0 = before.double().numpy(), m0.double().numpy(), v0.double().numpy()
    touched = np.array([True, False, True])
    m, v = b1 * m0 + (1 - b1) * g, b2 * v0 + (1 - b2) * g * g
    if mode == "poyo":  # row 1 keeps its moments; trust over rows 0 and 2
        m[1], v[1] = m0[1], v0[1]
        update = m[touched] / (np.sqrt(v[touched]) + eps) + wd * w[touched]
        trust = min(np.linalg.norm(w[touched]), 10.0) / np.linalg.norm(update)
    else:  # row 1's moments reset; trust over the whole matrix (row 1 contributes its weight decay)
        m[1], v[1] = 0.0, 0.0
        full = m / (np.sqrt(v) + eps) + wd * w
        update = full[touched]
        trust = min(np.linalg.norm(w), 10.0) / np.linalg.norm(full)
    expected = w.copy()
    expected[touched] -= lr * trust * update
    np.testing.assert_allclose(after.double().numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(state["exp_avg"].double().numpy(), m, rtol=1e-6, atol=1e-9)
    assert torch.equal(after[1], before[1])  # the absent row never moves


def test_torch_brain_mode_cycles_beta1_and_keeps_the_lr_schedule():
    model = POYO(dim=16, depth=1, dim_head=8, num_latents_per_step=2, unit_ids=["a/s/u0"], session_ids=["a/s"])
    ours = OptimConfig(name="lamb", mode="torch_brain").build(model, global_batch_size=32, total_steps=20)
    plain = OptimConfig(name="lamb").build(model, global_batch_size=32, total_steps=20)
    lrs, beta1 = [], []
    for opt, sched in (ours, plain):
        seen_lr, seen_b1 = [], []
        for _ in range(20):
            seen_lr.append(opt.param_groups[0]["lr"])
            seen_b1.append(opt.param_groups[0]["betas"][0])
            opt.step()
            sched.step()
        lrs.append(seen_lr)
        beta1.append(seen_b1)
    # the same schedule: constant for half the steps, then the same cosine, OneCycleLR one step ahead
    np.testing.assert_allclose(lrs[0][:10], lrs[1][:10], rtol=1e-6)
    np.testing.assert_allclose(lrs[0][10:19], lrs[1][11:20], rtol=1e-6)
    assert beta1[1] == [0.9] * 20  # ours: fixed
    assert beta1[0][0] == pytest.approx(0.95) and min(beta1[0]) == pytest.approx(0.85, abs=2e-3)  # torch_brain: cycled
    with pytest.raises(ValueError, match="use it with optim=lamb"):
        OptimConfig(name="adamw", mode="torch_brain")


def sparse_lamb() -> type:
    """torch_brain 0.1.2's SparseLamb, run from its wheel (not installed: 0.2 replaces the package)."""
    wheels = sorted((ROOT / ".venv" / "reference").glob("torch_brain-0.1.*-py3-none-any.whl"))
    if not wheels:
        pytest.skip(
            "torch_brain 0.1.x wheel not in .venv/reference (pip download --no-deps torch_brain==0.1.2 -d .venv/reference)"
        )
    with zipfile.ZipFile(wheels[-1]) as z:
        source = z.read("torch_brain/optim.py").decode()
    module = ModuleType("torch_brain_01_optim")
    exec(compile(source, f"{wheels[-1]}/torch_brain/optim.py", "exec"), module.__dict__)
    return module.SparseLamb


def test_torch_brain_mode_reproduces_sparse_lamb_over_20_steps():
    SparseLamb = sparse_lamb()
    torch.manual_seed(0)
    vocab_a, dense_a = torch.nn.Parameter(torch.randn(6, 4)), torch.nn.Parameter(torch.randn(4, 3))
    vocab_b, dense_b = torch.nn.Parameter(vocab_a.detach().clone()), torch.nn.Parameter(dense_a.detach().clone())
    groups = lambda v, d: [dict(params=[v], sparse=True), dict(params=[d], sparse=False)]  # noqa: E731
    lr, steps = 0.05, 20
    reference = SparseLamb(groups(vocab_a, dense_a), lr=lr, weight_decay=1e-4, eps=1e-6)
    ref_sched = torch.optim.lr_scheduler.OneCycleLR(
        reference, max_lr=lr, total_steps=steps, pct_start=0.5, anneal_strategy="cos", div_factor=1
    )
    ours = Lamb(groups(vocab_b, dense_b), lr=lr, weight_decay=1e-4, eps=1e-6, mode="torch_brain")
    our_sched = torch.optim.lr_scheduler.OneCycleLR(
        ours, max_lr=lr, total_steps=steps, pct_start=0.5, anneal_strategy="cos", div_factor=1
    )
    rng = torch.Generator().manual_seed(1)
    worst = 0.0
    for step in range(steps):
        g_vocab, g_dense = torch.randn(6, 4, generator=rng), torch.randn(4, 3, generator=rng)
        g_vocab[torch.randperm(6, generator=rng)[: 2 + step % 3]] = 0.0  # each batch leaves some units out
        for v, d in ((vocab_a, dense_a), (vocab_b, dense_b)):
            v.grad, d.grad = g_vocab.clone(), g_dense.clone()
        reference.step()
        ours.step()
        ref_sched.step()
        our_sched.step()
        with torch.no_grad():
            worst = max(worst, float((vocab_a - vocab_b).abs().max()), float((dense_a - dense_b).abs().max()))
    print(f"\nlargest parameter difference from torch_brain's SparseLamb over {steps} steps: {worst:.1e}")
    assert worst <= 1e-6

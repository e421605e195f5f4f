"""``trainer.compile=true`` (:mod:`poyo.training.compile`): the compiled latent stack computes what
the eager one computes (outputs, gradients, a training run's loss curve), builds a bounded number
of graphs, and where the compiler cannot build the run stays eager with one warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from poyo.data import Dataset, collate_packed
from poyo.model import POYO
from poyo.model.rotary import RotaryTime, _rotate_real
from poyo.readouts import ReadoutConfig
from poyo.training.compile import compile_latent_stack, compiled, inductor_problem
from poyo.training.precision import autocast
from tests.helpers import TINY, rel, tokenized_windows

READOUT = ReadoutConfig("cursor_velocity_2d", std=10.0)

pytestmark = pytest.mark.skipif(
    inductor_problem("cpu") is not None, reason="torch.compile cannot build on this machine"
)


@pytest.fixture(scope="module")
def dataset(synthetic_root):
    return Dataset(synthetic_root, behaviour=["cursor.vel"], intervals=["movement_phases.reach_period"])


def model_and_batches(dataset, n_batches: int = 1, batch_size: int = 4, seed: int = 3):
    model = POYO(**TINY, unit_ids=dataset.unit_ids, session_ids=dataset.session_ids, seed=seed)
    samples = tokenized_windows(dataset, model.tokenizer([READOUT]), n_batches * batch_size, "train", drop_short=True)
    return model, [collate_packed(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]


def step(model, batch, precision="32-true"):
    model.zero_grad(set_to_none=True)
    with autocast("cpu", precision):
        pred = model(batch)["cursor_velocity_2d"]
        loss, _ = model.loss({"cursor_velocity_2d": pred}, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return pred.detach().float(), loss.item(), grads


def test_the_real_arithmetic_rotation_is_the_complex_one():
    rotary = RotaryTime(16)
    rot = rotary(torch.tensor([0.0, 0.123456, 0.999, 7.5], dtype=torch.float64))
    x = torch.randn(4, 3, 16)
    parts = rot.parts[..., :4, :]
    torch.testing.assert_close(_rotate_real(x, parts), rotary.rotate(x, rot), rtol=0, atol=1e-6)
    inv = rotary.rotate(x, rot.inverse())
    torch.testing.assert_close(_rotate_real(x, parts, conjugate=True), inv, rtol=0, atol=1e-6)
    torch.testing.assert_close(_rotate_real(_rotate_real(x, parts), parts, True), x, rtol=0, atol=1e-5)
    xb = x.bfloat16()
    torch.testing.assert_close(_rotate_real(xb, parts), rotary.rotate(xb, rot), rtol=0, atol=0)
    assert rot.parts.data_ptr() == rot.phase.data_ptr()  # one memory, two views


def without_dropout(model: POYO) -> POYO:
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    for mod in (*model.proc_atn, model.enc_atn, model.dec_atn):
        mod.dropout = 0.0
    return model


def graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_compiled_and_eager_agree_on_outputs_and_gradients(dataset, precision):
    """Outputs within bf16 rounding (fp32: 1e-5), every gradient within 2% (relative norm), with
    dropout off so that both compute one function."""
    eager, (batch,) = model_and_batches(dataset)
    mine, _ = model_and_batches(dataset)
    without_dropout(eager.train()), without_dropout(mine.train())
    assert compile_latent_stack(mine, "cpu") and compiled(mine) and not compiled(eager)
    p_e, _, g_e = step(eager, batch, precision)
    p_c, _, g_c = step(mine, batch, precision)
    assert rel(p_c, p_e) < (1e-5 if precision == "32-true" else 1e-2)
    assert g_c.keys() == g_e.keys()
    worst = max(rel(g_c[n], g_e[n]) for n in g_e)
    assert worst < (1e-4 if precision == "32-true" else 2e-2), worst
    assert list(mine.state_dict()) == list(eager.state_dict())  # checkpoints unchanged


def test_100_training_steps_follow_the_eager_loss_curve_with_bounded_graphs(dataset):
    """AdamW, dropout off (the compiled stack draws its own dropout masks, so with dropout the
    curves would differ by their noise), an evaluation in between: the compiled run's loss stays
    within 1e-2 of the eager run's at every step, and it builds a handful of graphs."""
    curves = []
    for compile_it in (False, True):
        torch._dynamo.reset()
        model, batches = model_and_batches(dataset, n_batches=3)
        without_dropout(model)
        if compile_it:
            assert compile_latent_stack(model, "cpu")
        start = graphs()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses = []
        for i in range(100):
            model.train()
            losses.append(step(model, batches[i % len(batches)])[1])
            opt.step()
            if i == 50:
                with torch.no_grad():
                    model.eval()(batches[0])
        curves.append(np.array(losses))
    eager, mine = curves
    assert eager[-10:].mean() < 0.8 * eager[:10].mean()  # it learns
    assert np.abs(mine - eager).max() < 1e-2, np.abs(mine - eager).max()
    assert 1 <= graphs() - start <= 3  # training, evaluation: no graph breaks, no recompiles per step


def test_with_dropout_the_compiled_stack_is_one_graph_that_drops_and_learns(dataset):
    torch._dynamo.reset()
    model, batches = model_and_batches(dataset, n_batches=3)
    assert compile_latent_stack(model, "cpu")
    start = graphs()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for i in range(60):
        losses.append(step(model.train(), batches[i % len(batches)])[1])
        opt.step()
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    with torch.no_grad():
        a, b = (model(batches[0])["cursor_velocity_2d"] for _ in range(2))
        assert not torch.equal(a, b)  # dropout is on in training ...
        model.eval()
        a, b = (model(batches[0])["cursor_velocity_2d"] for _ in range(2))
        assert torch.equal(a, b)  # ... and off in evaluation
    assert 1 <= graphs() - start <= 3


def test_without_a_working_compiler_the_run_stays_eager_with_one_warning(dataset):
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    model, (batch,) = model_and_batches(dataset)
    # (a cached build would not need the compiler)
    with inductor.patch({"fx_graph_cache": False, "cpp.cxx": ("/nonexistent/c++",)}):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert compile_latent_stack(model, "cpu") is False
    lines = [str(w.message) for w in caught if "trainer.compile" in str(w.message)]
    assert len(lines) == 1 and "C++ compiler" in lines[0] and "training eagerly" in lines[0], lines
    assert "\n" not in lines[0] and not compiled(model)
    torch._dynamo.reset()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(batch)["cursor_velocity_2d"]).all()  # the eager model runs


def test_compile_refuses_what_is_not_a_poyo_model():
    with pytest.raises(TypeError, match="expected a POYO model"):
        compile_latent_stack(torch.nn.Linear(2, 2), "cpu")


def test_compiled_dropout_masks_keep_the_asked_fraction():
    from poyo.model.attention import keep_mask

    draw = torch.compile(lambda: keep_mask((64, 1000), 0.3, "cpu", torch.float32), options={"fallback_random": True})
    (a, factor), (b, _) = draw(), draw()
    assert a.dtype == torch.float32 and set(a.unique().tolist()) == {0.0, 1.0}
    p_exact = round(0.3 * 256) / 256  # the masks' 8-bit resolution
    assert abs(a.mean().item() - (1 - p_exact)) < 0.01 and factor == pytest.approx(1 / (1 - p_exact), rel=1e-12)
    assert not torch.equal(a, b)  # a new mask at every call

"""layout=auto: which batch layout a run uses, and the measurement that decides it on a GPU
(run here on CPU through the same code, with the device's timings stubbed where a GPU is needed)."""

import pytest
import torch

from poyo.data import Dataset, collate_packed, collate_padded
from poyo.training.config import RunConfig, SettingError, compose
from poyo.training.layout import MARGIN, choose_layout, first_batch, measure
from tests.test_model import build, samples

CPU, GPU = torch.device("cpu"), torch.device("cuda")


def test_without_measuring():
    assert choose_layout("auto", "auto", CPU) == ("packed", "auto: packed on cpu")
    assert choose_layout("auto", "sdpa", GPU)[0] == "padded"  # the kernel decides, nothing is timed
    assert choose_layout("auto", "xformers", GPU)[0] == "packed"
    assert choose_layout("padded", "auto", GPU) == ("padded", "layout")
    with pytest.raises(ValueError, match="attention=loop runs packed batches, not layout=padded"):
        choose_layout("padded", "loop", CPU)
    with pytest.raises(ValueError, match="measures both layouts"):
        choose_layout("auto", "auto", GPU)


@pytest.mark.parametrize(
    "padded_ms, chosen", [(5.0, "padded"), (10.0 * (1 - MARGIN) - 0.01, "padded"), (9.5, "packed"), (20.0, "packed")]
)
def test_on_a_gpu_the_faster_layout_wins_by_a_margin(padded_ms, chosen):
    calls = []

    def fake_measure(model, batches, device, autocast, *, train):
        calls.append((device, sorted(batches), train))
        return {"packed": 10.0, "padded": padded_ms}

    layout, why = choose_layout(
        "auto", "auto", GPU, object(), lambda: {"packed": {}, "padded": {}}, lambda: None, measure_fn=fake_measure
    )
    assert layout == chosen and calls == [(GPU, ["packed", "padded"], True)]
    assert "10.0 ms packed" in why and f"{padded_ms:.1f} ms padded" in why


@pytest.fixture(scope="module")
def synthetic(synthetic_root):
    return Dataset(synthetic_root, behaviour=["cursor.vel"], intervals=["movement_phases.reach_period"])


@pytest.mark.parametrize("train", [True, False])
def test_measuring_changes_nothing_of_the_run(synthetic, train):
    """Both layouts are timed on the same windows; weights, gradients, the model's mode and the
    random stream (dropout draws from it) are as before, so the run that follows is the same."""
    from contextlib import nullcontext

    model = build(synthetic, ffn_dropout=0.3, atn_dropout=0.2).eval()
    before = {k: v.clone() for k, v in model.named_parameters()}
    windows = samples(synthetic, model, n=4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    batches = first_batch(windows, range(len(windows)), 4, {"packed": collate_packed, "padded": collate_padded}.get)
    assert batches["packed"]["input"]["cu_seqlens"].numel() == 5 and batches["padded"]["input"]["mask"].shape[0] == 4
    ms = measure(model, batches, CPU, nullcontext, train=train)
    assert torch.equal(torch.rand(3), expected)
    assert set(ms) == {"packed", "padded"} and all(v > 0 for v in ms.values())
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.named_parameters())


def test_run_config_checks_layout_against_attention():
    assert RunConfig.preset().layout == "auto" and compose().layout == "auto"
    with pytest.raises(SettingError, match="setting layout='packed': attention=sdpa runs padded batches"):
        RunConfig.preset(layout="packed", attention="sdpa")
    assert compose("attention=sdpa").layout == "auto"

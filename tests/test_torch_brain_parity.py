"""Side by side with the real torch_brain (0.2.x): the same weights and spikes give the same
outputs and gradients, and an imported checkpoint keeps them through poyo's own format.

Runs when ``torch_brain.models`` imports (``pip install torch_brain==0.2.1``; ``.ci/run``
installs it), and skips with that reason otherwise. ``pytest -s`` prints the figures.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poyo.data import Dataset, SequentialFixedWindowSampler, collate_padded
from poyo.model import load_pretrained, save_pretrained
from poyo.model.poyo import targets
from poyo.model.torch_brain import convert, import_torch_brain
from poyo.readouts import ReadoutConfig

tb_models = pytest.importorskip("torch_brain.models", reason="needs torch_brain 0.2: pip install torch_brain==0.2.1")

SETTINGS = dict(
    sequence_length=1.0, latent_step=0.125, num_latents_per_step=8, dim=64, depth=2, dim_head=64,
    cross_heads=2, self_heads=4, ffn_dropout=0.2, lin_dropout=0.4, atn_dropout=0.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def dataset(synthetic_root):
    return Dataset(
        synthetic_root / "synthetic_reaching",
        behaviour=["cursor.vel"],
        intervals=["movement_phases.reach_period", "movement_phases.random_period"],
    )


def their_model(dataset, seed: int = 0):
    """torch_brain's POYO with this dataset's vocabularies and trained-like (not initial) weights."""
    torch.manual_seed(seed)
    tb = tb_models.POYO(dim_out=2, **SETTINGS)
    tb.unit_emb.initialize_vocab(list(dataset.unit_ids))
    tb.session_emb.initialize_vocab(list(dataset.session_ids))
    with torch.no_grad():
        for name, p in tb.named_parameters():
            p.add_(torch.randn_like(p) * (0.5 if "emb" in name else 0.05))
    return tb.eval()


def checkpoint(tb, state=None) -> dict:
    """The Lightning checkpoint torch_brain's training writes for ``tb`` (``state`` replaces its tensors)."""
    state = tb.state_dict() if state is None else state
    hp = {k: v for k, v in SETTINGS.items()} | {"dim_out": 2}
    return {"state_dict": {f"model.{k}": v for k, v in state.items()}, "hyper_parameters": {"model": hp}}


def batches(model, dataset, n: int = 6):
    dataset.transform = model.tokenizer([ReadoutConfig("cursor_velocity_2d", std=1.0)])
    sid = dataset.session_ids[0]
    windows = list(SequentialFixedWindowSampler({sid: dataset.sampling_intervals("valid")[sid]}, 1.0, step=0.5))[:n]
    return collate_padded([dataset[w] for w in windows])


def their_inputs(batch, ours, tb) -> dict:
    """The same windows in torch_brain's forward arguments (its own vocabulary indices)."""
    units = np.array([tb.unit_emb.vocab[u] for u in ours.unit_emb.ids])
    sessions = np.array([tb.session_emb.vocab[s] for s in ours.session_emb.ids])
    inp, lat, out = batch["input"], batch["latent"], batch["output"]
    unit_index = torch.from_numpy(units[inp["unit_index"].numpy()]) * inp["mask"]
    return dict(
        input_unit_index=unit_index, input_timestamps=inp["timestamps"], input_token_type=inp["token_type"], input_mask=inp["mask"],
        latent_index=lat["index"], latent_timestamps=lat["timestamps"],
        session_index=torch.from_numpy(sessions[out["session_index"][:, 0].numpy()]),
        output_timestamps=out["timestamps"], output_mask=out["mask"],
    )  # fmt: skip


def compare(dataset, tmp_path, keep_omega: bool = True):
    tb = their_model(dataset)
    torch.save(checkpoint(tb), tmp_path / "tb.ckpt")
    ours = import_torch_brain(tmp_path / "tb.ckpt").eval()
    if not keep_omega:  # what the importer did before: recompute the frequencies in float64
        from dataclasses import replace

        from poyo.model import POYO

        state = ours.state_dict()
        ours = POYO(replace(ours.config, rotary_omega=None)).eval()
        ours.load_state_dict(state)
    batch = batches(ours, dataset)
    theirs_out = tb(**their_inputs(batch, ours, tb))[batch["output"]["mask"]]
    ours_out = ours(batch)["cursor_velocity_2d"]
    return tb, ours, batch, theirs_out, ours_out


def test_imported_weights_give_torch_brains_outputs(dataset, tmp_path):
    _, _, _, theirs, ours = compare(dataset, tmp_path)
    _, _, _, theirs_f64, ours_f64 = compare(dataset, tmp_path, keep_omega=False)
    gap, gap_f64 = float((theirs - ours).abs().max().detach()), float((theirs_f64 - ours_f64).abs().max().detach())
    scale = float(theirs.abs().max().detach())
    print(f"\nmax |torch_brain - poyo| over {len(ours)} outputs (max |output| {scale:.3f}): {gap:.2e} with the checkpoint's "
          f"float32 rotary frequencies, {gap_f64:.2e} with frequencies recomputed in float64")  # fmt: skip
    assert theirs.shape == ours.shape and gap <= 1e-6 * max(1.0, scale), gap


def test_gradients_agree(dataset, tmp_path):
    tb, ours, batch, theirs_out, ours_out = compare(dataset, tmp_path)
    weight = torch.randn(theirs_out.shape, generator=torch.Generator().manual_seed(1))
    (theirs_out * weight).sum().backward()
    (ours_out * weight).sum().backward()
    # their gradients, renamed and reordered by the importer exactly as their weights were
    grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in tb.named_parameters()}
    state = {k: grads.get(k, v) for k, v in tb.state_dict().items()}
    theirs_grad = dict(convert(checkpoint(tb, state)).named_parameters())
    worst = 0.0
    for name, p in ours.named_parameters():
        g, ref = p.grad, theirs_grad[name].detach()
        if g is None:
            assert ref.abs().max() == 0, name
            continue
        rel = float((g - ref).norm() / ref.norm().clamp_min(1e-12))
        worst = max(worst, rel)
        assert rel < 1e-4, (name, rel)
    print(f"\nlargest relative gradient difference over {len(theirs_grad)} tensors: {worst:.1e}")


def test_import_round_trip_keeps_frequencies_and_window(dataset, tmp_path):
    tb = their_model(dataset)
    torch.save(checkpoint(tb), tmp_path / "tb.ckpt")
    imported = import_torch_brain(tmp_path / "tb.ckpt", tmp_path / "tb.pt")
    omega = tb.rotary_emb.omega.double()
    assert imported.config.rotary_omega == tuple(omega[omega != 0].tolist())  # bit for bit, float32 values
    assert imported.config.window_length == 1.0
    loaded = load_pretrained(tmp_path / "tb.pt")
    assert loaded.config == imported.config
    batch = batches(loaded, dataset)
    with torch.no_grad():
        assert torch.equal(loaded(batch)["cursor_velocity_2d"], imported.eval()(batch)["cursor_velocity_2d"])
    save_pretrained(loaded, tmp_path / "again.pt")
    assert load_pretrained(tmp_path / "again.pt").config.rotary_omega == imported.config.rotary_omega
    assert len(targets(batch, "cursor_velocity_2d")["values"]) > 0

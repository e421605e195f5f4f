"""Adapting a pretrained model to new sessions: vocabulary extension keeps old predictions
bit-identical; unit identification changes nothing but the new embeddings; gradual
unfreezing starts moving the backbone at the set epoch; train.py runs it end to end."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from poyo.data import Dataset, RandomFixedWindowSampler, SequentialFixedWindowSampler, collate_packed
from poyo.model import POYO, load_pretrained, save_pretrained
from poyo.readouts import ReadoutConfig
from poyo.training.finetune import BackboneFreezer, adapt_vocabularies, backbone_parameters, unfreeze_epoch
from poyo.training.module import DataModule, POYOModule

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    dim=32, depth=1, dim_head=16, num_latents_per_step=4, cross_heads=1, self_heads=2, ffn_dropout=0.1, lin_dropout=0.1
)
READOUTS = [ReadoutConfig("cursor_velocity_2d", std=10.0, weights={"movement_phases.reach_period": 5.0})]


@pytest.fixture(scope="module")
def split(synthetic_root):
    """(old sessions, new sessions): animal a was 'pretrained on', animal b is new."""
    ids = Dataset(synthetic_root, validate=False).session_ids
    return [s for s in ids if "monkey_a" in s], [s for s in ids if "monkey_b" in s]


def pretrained(synthetic_root, sessions):
    ds = Dataset(synthetic_root, sessions=sessions, validate=False)
    model = POYO(**TINY, unit_ids=ds.unit_ids, session_ids=ds.session_ids, seed=5)
    model.readout_configs = list(READOUTS)
    return model


def predict_sessions(model, root, sessions, n=4):
    ds = Dataset(
        root, sessions=sessions, behaviour=["cursor.vel"], intervals=["movement_phases.reach_period"], validate=False
    )
    tok = model.tokenizer()
    windows = list(SequentialFixedWindowSampler(ds.sampling_intervals("test"), 1.0, step=0.5))
    batch = collate_packed([tok(ds[windows[i]]) for i in np.linspace(0, len(windows) - 1, n).astype(int)])
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(batch)["cursor_velocity_2d"]
    model.train(was)
    return out


def fit(model, root, sessions, callbacks, *, steps=6, weight_decay=0.1):
    dm = DataModule(root, READOUTS, batch_size=8, num_workers=0, sessions=sessions, validate=False, seed=1)
    dm.attach(model)
    module = POYOModule(
        model, {"name": "adamw", "base_lr": 1e-3, "weight_decay": weight_decay}, global_batch_size=8, total_steps=steps
    )
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False, callbacks=callbacks,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.fixture
def one_thread():
    """Bitwise comparisons of two forward passes run on one thread: with several, how a
    reduction is split can change its last bits from one call to the next (the suite saw it
    only when run whole), which says nothing about the code under test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_extending_the_vocabulary_keeps_old_predictions_bit_identical(synthetic_root, split, one_thread):
    old, new = split
    model = pretrained(synthetic_root, old)
    before = predict_sessions(model, synthetic_root, old)
    ds_new = Dataset(synthetic_root, sessions=new, validate=False)
    added = adapt_vocabularies(model, ds_new.unit_ids, ds_new.session_ids, subset=False, seed=9)
    assert added["units"] == ds_new.unit_ids and added["sessions"] == new
    assert torch.equal(predict_sessions(model, synthetic_root, old), before)
    predict_sessions(model, synthetic_root, new)  # the new sessions are usable too


def test_unit_identification_trains_only_the_new_embeddings(synthetic_root, split):
    old, new = split
    model = pretrained(synthetic_root, old)
    old_units, old_sessions = list(model.unit_emb.ids), list(model.session_emb.ids)
    before_pred = predict_sessions(model, synthetic_root, old)
    ds_new = Dataset(synthetic_root, sessions=new, validate=False)
    adapt_vocabularies(model, ds_new.unit_ids, ds_new.session_ids, subset=False)
    before = snapshot(model)
    freezer = BackboneFreezer(
        model, unfreeze_epoch("unit_identification"), kept_units=old_units, kept_sessions=old_sessions
    )
    fit(model, synthetic_root, new, [freezer], weight_decay=0.5)  # strong decay: frozen must mean frozen
    after = snapshot(model)
    for k in before:
        if k.startswith(("unit_emb", "session_emb")):
            continue
        assert torch.equal(before[k], after[k]), f"{k} changed in unit identification"
    n_old_u, n_old_s = len(old_units), len(old_sessions)
    assert torch.equal(after["unit_emb.weight"][:n_old_u], before["unit_emb.weight"][:n_old_u])
    assert torch.equal(after["session_emb.weight"][:n_old_s], before["session_emb.weight"][:n_old_s])
    moved = (after["unit_emb.weight"][n_old_u:] - before["unit_emb.weight"][n_old_u:]).abs().sum(-1) > 0
    assert moved.float().mean() > 0.9  # nearly every new unit was seen and learned
    assert not torch.equal(after["session_emb.weight"][n_old_s:], before["session_emb.weight"][n_old_s:])
    assert torch.equal(predict_sessions(model, synthetic_root, old), before_pred)  # old sessions untouched


@pytest.mark.parametrize("mode, changes_in_epoch", [("full", [True, True]), ("gradual", [False, True])])
def test_full_and_gradual_fine_tuning_move_the_backbone_when_they_should(synthetic_root, split, mode, changes_in_epoch):
    old, new = split
    model = pretrained(synthetic_root, old)
    ds_new = Dataset(synthetic_root, sessions=new, validate=False)
    adapt_vocabularies(model, ds_new.unit_ids, ds_new.session_ids, subset=True)
    params = backbone_parameters(model)
    seen = []

    class Watch(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.start = [p.detach().clone() for p in params]

        def on_train_epoch_end(self, trainer, pl_module):
            seen.append(any(not torch.equal(a, p) for a, p in zip(self.start, params)))

    steps_per_epoch = len(RandomFixedWindowSampler(ds_new.sampling_intervals("train"), 1.0)) // 8
    freezer = BackboneFreezer(model, unfreeze_epoch(mode, 1))
    fit(model, synthetic_root, new, [freezer, Watch()], steps=2 * steps_per_epoch)
    assert seen == changes_in_epoch


def test_bad_fine_tuning_settings_are_refused():
    with pytest.raises(ValueError, match="unfreeze_epoch >= 1"):
        unfreeze_epoch("gradual", 0)
    with pytest.raises(ValueError, match="must be one of"):
        unfreeze_epoch("partial")


def test_train_py_unit_identification_end_to_end(synthetic_root, split, tmp_path):
    """Pretrained file in, fine-tuned run out: the backbone is bit-identical, the vocabularies
    hold the new session only, and evaluate mode scores the fine-tuned checkpoint."""
    old, new = split
    model = pretrained(synthetic_root, old)
    save_pretrained(model, tmp_path / "pre.pt")
    args = [
        sys.executable, str(ROOT / "train.py"), f"data_root={synthetic_root}", "dataset.generate=null", "num_workers=0",
        "batch_size=8", "trainer.max_steps=8", "trainer.check_val_every_n_epoch=100", f"sessions=[{new[0]}]", "train_seconds=20",
    ]  # fmt: skip
    out = subprocess.run(
        [*args, "finetune=unit_identification", f"finetune.checkpoint={tmp_path / 'pre.pt'}", f"hydra.run.dir={tmp_path / 'ft'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    n_units = len(Dataset(synthetic_root, sessions=[new[0]], validate=False).unit_ids)
    assert (
        f"fine-tuning (unit_identification) {tmp_path / 'pre.pt'}: {n_units} new units and 1 new sessions" in out.stdout
    )
    tuned = load_pretrained(tmp_path / "ft" / "checkpoints" / "model.pt")
    assert tuned.session_emb.ids == [new[0]] and len(tuned.unit_emb) == n_units
    ref = model.state_dict()
    for k, v in tuned.state_dict().items():
        if not k.startswith(("unit_emb", "session_emb")):
            assert torch.equal(v, ref[k]), k
    ev = subprocess.run(
        [*args, "mode=evaluate", f"checkpoint={tmp_path / 'ft' / 'checkpoints' / 'model.pt'}", f"hydra.run.dir={tmp_path / 'ev'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-3000:]
    r2 = [json.loads((tmp_path / d / "test_results.json").read_text())["poyo_mean_r2"] for d in ("ft", "ev")]
    assert abs(r2[0] - r2[1]) < 1e-6
    # A session the model has not been adapted to is refused with the way forward.
    ev = subprocess.run(
        [
            *args[:-2],
            f"sessions=[{new[1]}]",
            "mode=evaluate",
            f"checkpoint={tmp_path / 'ft' / 'checkpoints' / 'model.pt'}",
            f"hydra.run.dir={tmp_path / 'ev2'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert ev.returncode != 0 and "finetune=unit_identification" in ev.stderr


def test_a_model_of_spikes_alone_gets_behaviour_heads_for_full_fine_tuning():
    """A model pretrained by masked modelling without behaviour has no heads; full fine-tuning
    adds the run's (untrained), keeping every other weight; modes that freeze the backbone refuse."""
    from poyo.training.finetune import add_heads

    units, sessions = [f"s/u{i}" for i in range(5)], ["s"]
    alone = POYO(dim=32, depth=1, dim_head=16, readouts=[], masked_modelling=True, unit_ids=units, session_ids=sessions)
    grown = add_heads(alone, ["cursor_velocity_2d"])
    assert grown.readout_names == ["cursor_velocity_2d"] and grown.unit_emb.ids == units
    kept = {k: v for k, v in grown.state_dict().items() if not k.startswith("readout.")}
    assert kept.keys() == alone.state_dict().keys()
    assert all(torch.equal(v, alone.state_dict()[k]) for k, v in kept.items() if isinstance(v, torch.Tensor))

"""Pretrained models: save/load round trips give the same predictions; clear errors for
wrong files; torch_brain checkpoints (built here by hand in their layout) import exactly."""

import argparse
import math
from collections import OrderedDict
from dataclasses import replace

import numpy as np
import pytest
import torch

import poyo
from poyo.data import Dataset, SequentialFixedWindowSampler, collate_packed
from poyo.model import POYO, load_pretrained, save_pretrained
from poyo.model.torch_brain import import_torch_brain
from poyo.model.torch_brain import main as import_main
from poyo.readouts import ReadoutConfig
from tests import helpers

TINY = {**helpers.TINY, "atn_dropout": 0.1}
READOUT = ReadoutConfig("cursor_velocity_2d", std=10.0, mean=[0.5, -0.5], weights={"movement_phases.reach_period": 5.0})


@pytest.fixture(scope="module")
def dataset(synthetic_root):
    return Dataset(synthetic_root, behaviour=["cursor.vel"], intervals=["movement_phases.reach_period"])


def trained_like(dataset, seed=3):
    """A model whose every weight is random (not just the init), so a wrong mapping shows."""
    model = POYO(**TINY, unit_ids=dataset.unit_ids, session_ids=dataset.session_ids, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.readout_configs = [READOUT]
    return model.eval()


def batch_for(dataset, model, n=4):
    tok = model.tokenizer()
    windows = list(SequentialFixedWindowSampler(dataset.sampling_intervals("test"), 1.0, step=0.5))
    return collate_packed([tok(dataset[windows[i]]) for i in np.linspace(0, len(windows) - 1, n).astype(int)])


def predict(model, batch):
    with torch.no_grad():
        return model(batch)["cursor_velocity_2d"]


def test_saved_model_loads_ready_and_predicts_the_same(dataset, tmp_path):
    model = trained_like(dataset)
    model.stitch_centres = {"cursor_velocity_2d": 0.7}  # where validation found it decodes best
    before = predict(model, batch_for(dataset, model))
    path = save_pretrained(model, tmp_path / "m.pt", metadata={"note": "test"})
    raw = torch.load(path, weights_only=True)  # no pickle anywhere
    assert raw["format"] == "poyo" and raw["format_version"] == 1 and raw["metadata"] == {"note": "test"}
    for loader in (load_pretrained, poyo.load_pretrained):
        loaded = loader(path)
        assert not loaded.training
        assert loaded.unit_emb.ids == model.unit_emb.ids and loaded.session_emb.ids == model.session_emb.ids
        assert [r.to_dict() for r in loaded.readout_configs] == [READOUT.to_dict()]
        assert loaded.stitch_centres == {"cursor_velocity_2d": 0.7}
        # The loaded model's own tokenizer normalises as in training: identical predictions.
        assert torch.equal(predict(loaded, batch_for(dataset, loaded)), before)


def test_masked_modelling_models_saved_before_count_kernels_load_without_them(dataset, tmp_path):
    """An MtM model saved before ``count_kernels`` existed has no such setting nor weights: it
    loads as it was (no linear count read); a model saved now keeps its kernels."""
    old = POYO(
        **TINY, masked_modelling=True, count_kernels=(), unit_ids=dataset.unit_ids, session_ids=dataset.session_ids
    )
    path = save_pretrained(old, tmp_path / "old.pt")
    raw = torch.load(path, weights_only=True)
    del raw["model"]["count_kernels"]
    torch.save(raw, path)
    loaded = load_pretrained(path)
    assert loaded.config.count_kernels == () and loaded.rate_read is None
    new = POYO(**TINY, masked_modelling=True, unit_ids=dataset.unit_ids, session_ids=dataset.session_ids)
    again = load_pretrained(save_pretrained(new, tmp_path / "new.pt"))
    assert again.config.count_kernels == (0.02, 0.08, 0.24) and again.rate_read is not None
    for name, value in new.state_dict().items():
        same = (
            torch.equal(value, again.state_dict()[name])
            if isinstance(value, torch.Tensor)
            else value == again.state_dict()[name]
        )
        assert same, name


def test_load_pretrained_errors_name_the_file_and_the_problem(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*missing.pt"):
        load_pretrained(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_pretrained(tmp_path)
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="other.ckpt: not a POYO checkpoint"):
        load_pretrained(tmp_path / "other.ckpt")

    model = trained_like(dataset)
    save_pretrained(model, tmp_path / "m.pt")
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({**raw, "format_version": 2}, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match="newer poyo .*format 2"):
        load_pretrained(tmp_path / "newer.pt")
    torch.save({**raw, "model": {**raw["model"], "mixture_of_experts": 4}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match=r"\['mixture_of_experts'\] are unknown"):
        load_pretrained(tmp_path / "foreign.pt")
    torch.save({**raw, "model": {**raw["model"], "dim": 64}}, tmp_path / "wrong_dim.pt")
    with pytest.raises(RuntimeError, match="weights do not fit"):
        load_pretrained(tmp_path / "wrong_dim.pt")
    torch.save({**raw, "stitch_centres": {"cursor_velocity_2d": 1.5}}, tmp_path / "centres.pt")
    with pytest.raises(ValueError, match="centres.pt: damaged stitch_centres"):
        load_pretrained(tmp_path / "centres.pt")
    torch.save({**raw, "metadata": argparse.Namespace(a=1)}, tmp_path / "pickled.pt")
    with pytest.raises(RuntimeError, match=r"pickled Python object \(argparse.Namespace\)"):
        load_pretrained(tmp_path / "pickled.pt")

    tb = tmp_path / "tb.ckpt"
    torch.save(torch_brain_checkpoint(model), tb)
    with pytest.raises(ValueError, match="torch_brain POYO checkpoint.*python -m poyo.model.torch_brain"):
        load_pretrained(tb)


def test_unknown_units_at_inference_suggest_unit_identification(dataset):
    model = POYO(**TINY, unit_ids=dataset.unit_ids[:5], session_ids=dataset.session_ids)
    window = dataset[next(iter(SequentialFixedWindowSampler(dataset.sampling_intervals("test"), 1.0)))]
    with pytest.raises(KeyError, match="not in the model's unit vocabulary.*finetune=unit_identification"):
        model.tokenizer()(window)


# --- torch_brain layout, written by hand from its documented module names ------------------
def torch_brain_checkpoint(model: POYO, *, permute_vocab=True, extra_hparams=None, t_max=2.0627) -> dict:
    """The Lightning checkpoint torch_brain would write for the same network."""
    c = model.config.to_dict()
    sd = {}

    def vocab(emb):
        ids = list(emb.ids)
        order = (
            list(reversed(range(len(ids)))) if permute_vocab else list(range(len(ids)))
        )  # their row order differs from ours
        weight = torch.cat([torch.zeros(1, c["dim"]), emb.weight.detach()[order]])  # row 0: the reserved "NA"
        return weight, OrderedDict([("NA", 0)] + [(ids[j], i + 1) for i, j in enumerate(order)])

    for name in ("unit_emb", "session_emb"):
        sd[f"{name}.weight"], sd[f"{name}.vocab"] = vocab(getattr(model, name))
    sd["token_type_emb.weight"] = model.token_type_emb.weight
    sd["latent_emb.weight"] = model.latent_emb.weight
    omega = torch.zeros(c["dim_head"] // 2)
    f = c["dim_head"] // 4
    omega[:f] = torch.tensor([2 * math.pi / (1e-4 * (t_max / 1e-4) ** (i / (f - 1))) for i in range(f)])
    sd["rotary_emb.omega"] = omega

    def put(prefix, module):
        for k, v in module.state_dict().items():
            sd[f"{prefix}.{k}"] = v

    def put_ffn(prefix, ffn):  # Sequential(LayerNorm, FeedForward(net=Sequential(Linear, GEGLU, Dropout, Linear)))
        put(f"{prefix}.0", ffn.norm)
        put(f"{prefix}.1.net.0", ffn.proj_in)
        put(f"{prefix}.1.net.3", ffn.proj_out)

    for stage in ("enc", "dec"):
        atn = getattr(model, f"{stage}_atn")
        for part in ("norm", "norm_context", "to_q", "to_kv", "to_out"):
            put(f"{stage}_atn.{part}", getattr(atn, part))
        put_ffn(f"{stage}_ffn", getattr(model, f"{stage}_ffn"))
    for i, (atn, ffn) in enumerate(zip(model.proc_atn, model.proc_ffn)):
        for part in ("norm", "to_qkv", "to_out"):
            put(f"proc_layers.{i}.0.{part}", getattr(atn, part))
        put_ffn(f"proc_layers.{i}.1", ffn)
    head = model.readout["cursor_velocity_2d"]
    sd["readout.weight"], sd["readout.bias"] = head.weight, head.bias
    hparams = dict(
        _target_="torch_brain.models.POYO", sequence_length=1.0, latent_step=c["latent_step"], num_latents_per_step=c["num_latents_per_step"],
        dim=c["dim"], depth=c["depth"], dim_head=c["dim_head"], cross_heads=c["cross_heads"], self_heads=c["self_heads"],
        ffn_dropout=c["ffn_dropout"], lin_dropout=c["lin_dropout"], atn_dropout=c["atn_dropout"], emb_init_scale=c["emb_init_scale"],
    )  # fmt: skip
    return {
        "epoch": 414, "global_step": 9999, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in sd.items()},
        "hyper_parameters": {"model": hparams, "optim": {"base_lr": 3.125e-5}, **(extra_hparams or {})},
        "optimizer_states": [], "lr_schedulers": [],
    }  # fmt: skip


def test_torch_brain_checkpoint_imports_to_identical_predictions(dataset, tmp_path):
    """The importer maps every weight and keeps the checkpoint's float32 rotary frequencies and
    window length: the imported model predicts exactly as the same network with those frequencies
    (how close that is to torch_brain itself: tests/test_torch_brain_parity.py)."""
    model = trained_like(dataset)
    ckpt = torch_brain_checkpoint(model)
    torch.save(ckpt, tmp_path / "tb.ckpt")
    imported = import_torch_brain(tmp_path / "tb.ckpt", tmp_path / "tb.pt", std=10.0, mean=[0.5, -0.5])
    assert "NA" not in imported.unit_emb.ids and sorted(imported.unit_emb.ids) == sorted(model.unit_emb.ids)
    omega = ckpt["state_dict"]["model.rotary_emb.omega"].double()
    assert imported.config == replace(model.config, rotary_omega=omega[omega != 0].tolist(), window_length=1.0)
    same = POYO(imported.config, unit_ids=model.unit_emb.ids, session_ids=model.session_emb.ids)
    same.load_state_dict(model.state_dict())
    same.eval()
    before = predict(same, batch_for(dataset, same))
    assert (before - predict(model, batch_for(dataset, model))).abs().max() < 1e-3  # float32 vs float64 frequencies
    loaded = load_pretrained(tmp_path / "tb.pt")  # our format from now on: no pickle
    assert torch.load(tmp_path / "tb.pt", weights_only=True)["metadata"]["source_format"] == "torch_brain"
    for m in (imported, loaded):
        assert torch.equal(predict(m, batch_for(dataset, m)), before)


def test_torch_brain_import_needs_consent_for_pickle_and_checks_what_it_reads(dataset, tmp_path, capsys):
    model = trained_like(dataset)
    torch.save(
        torch_brain_checkpoint(model, extra_hparams={"args": argparse.Namespace(lr=1)}), tmp_path / "pickled.ckpt"
    )
    with pytest.raises(RuntimeError, match="pickled Python object.*allow_pickle=True"):
        import_torch_brain(tmp_path / "pickled.ckpt")
    import_main([str(tmp_path / "pickled.ckpt"), str(tmp_path / "out.pt"), "--allow-pickle", "--std", "10"])
    assert "poyo.load_pretrained" in capsys.readouterr().out
    assert load_pretrained(tmp_path / "out.pt").readout_configs[0].std == 10.0

    bad = torch_brain_checkpoint(model)
    bad["hyper_parameters"]["model"]["depth"] = 6
    torch.save(bad, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="disagree with the weight shapes.*depth"):
        import_torch_brain(tmp_path / "bad.ckpt")
    torch.save(torch_brain_checkpoint(model, t_max=4.0), tmp_path / "rot.ckpt")
    with pytest.raises(ValueError, match="rotary frequencies differ"):
        import_torch_brain(tmp_path / "rot.ckpt")
    torch.save(torch_brain_checkpoint(model), tmp_path / "ok.ckpt")
    plus = torch_brain_checkpoint(model)
    plus["state_dict"]["model.task_emb.weight"] = torch.zeros(3, 32)
    torch.save(plus, tmp_path / "plus.ckpt")
    with pytest.raises(ValueError, match="no place for.*task_emb"):
        import_torch_brain(tmp_path / "plus.ckpt")
    with pytest.raises(ValueError, match="2 outputs, readout 'reach_target_8' has 8"):
        import_torch_brain(tmp_path / "ok.ckpt", readout="reach_target_8")

"""The POYO model: sizes, layout/backend parity, relative time, permutation and padding
invariance, checkpoints, and a small model that learns."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from poyo.data import Dataset, SequentialFixedWindowSampler, collate_packed, collate_padded
from poyo.model import POYO, POYOConfig
from poyo.model.attention import PACKED_BACKENDS, available
from poyo.model.poyo import targets
from poyo.readouts import ReadoutConfig
from poyo.training.stitch import to_device
from tests.helpers import TINY, assert_gradients_close

CONFIGS = Path(__file__).resolve().parents[1] / "poyo" / "configs" / "model"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("name, expected", [("poyo_1.3M", 1_254_018), ("poyo_11.8M", 11_717_378)])
def test_named_configs_have_the_reference_parameter_counts(name, expected):
    model = POYO(POYOConfig.from_yaml(CONFIGS / f"{name}.yaml"), unit_ids=["a/b/u0", "a/b/u1"], session_ids=["a/b"])
    assert model.config.name == name
    assert model.num_parameters(embeddings=False) == expected
    dim = model.config.dim
    assert model.num_parameters() == expected + 3 * dim  # 2 unit rows + 1 session row


@pytest.fixture(scope="module")
def dataset(synthetic_root):
    return Dataset(
        synthetic_root,
        behaviour=["cursor.vel"],
        intervals=["movement_phases.reach_period", "movement_phases.random_period"],
    )


def build(dataset, **kw):
    return POYO(**{**TINY, **kw}, unit_ids=dataset.unit_ids, session_ids=dataset.session_ids, seed=1)


def samples(dataset, model, n=6, readouts=None):
    tok = model.tokenizer(
        readouts or [ReadoutConfig("cursor_velocity_2d", std=10.0, weights={"movement_phases.reach_period": 5.0})]
    )
    windows = list(SequentialFixedWindowSampler(dataset.sampling_intervals("valid"), 1.0, step=0.5))
    pick = np.linspace(0, len(windows) - 1, n).astype(int)  # spread over sessions
    return [tok(dataset[windows[i]]) for i in pick]


def predict(model, batch):
    return model(batch)["cursor_velocity_2d"]


SETTINGS = [{}, {"time_prior": 3.0}, {"latent_counts": (0.05, 0.2), "latent_presence": True}]


@pytest.mark.parametrize("settings", SETTINGS, ids=["published", "time_prior", "latent_counts"])
@pytest.mark.parametrize("device", DEVICES)
def test_packed_backends_match_padded_model_outputs_and_gradients(dataset, device, settings):
    """Whole-model parity in fp32, eval mode: atol 1e-5 on outputs, 1e-5 relative on gradients."""
    model = build(dataset, **settings).to(device).eval()
    ss = samples(dataset, model)

    def run(batch, backend):
        model.zero_grad()
        model.attention = backend
        batch = to_device(batch, device)
        pred = predict(model, batch)
        loss, _ = model.loss({"cursor_velocity_2d": pred}, batch)
        loss.backward()
        return pred.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref_pred, ref_grads = run(collate_padded(ss), "sdpa")
    tried = 0
    for backend in PACKED_BACKENDS:
        if available(backend, torch.device(device)) or backend == "varlen":  # varlen is bf16-only: see test_attention
            continue
        pred, grads = run(collate_packed(ss), backend)
        torch.testing.assert_close(pred, ref_pred, atol=1e-5, rtol=1e-4)
        assert_gradients_close(grads, ref_grads, backend)
        tried += 1
    assert tried >= 2


@pytest.mark.parametrize("settings", SETTINGS, ids=["published", "time_prior", "latent_counts"])
@pytest.mark.parametrize("shift", [0.37, -3.0, 250.0])
def test_shifting_all_timestamps_leaves_predictions_unchanged(dataset, shift, settings):
    model = build(dataset, **settings).eval()
    batch = collate_packed(samples(dataset, model))
    shifted = {
        **batch,
        **{g: {**batch[g], "timestamps": batch[g]["timestamps"] + shift} for g in ("input", "latent", "output")},
    }
    with torch.no_grad():
        a, b = predict(model, batch), predict(model, shifted)
    torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)
    # the model does use time: moving only the spikes changes the predictions
    moved = {**batch, "input": {**batch["input"], "timestamps": batch["input"]["timestamps"] + 0.05}}
    with torch.no_grad():
        assert (predict(model, moved) - a).abs().max() > 1e-3


def test_spike_token_order_does_not_matter(dataset):
    model = build(dataset).eval()
    ss = samples(dataset, model, n=3)
    g = torch.Generator().manual_seed(0)
    perm = []
    for s in ss:
        order = torch.randperm(len(s["input"]["unit_index"]), generator=g)
        perm.append({**s, "input": {f: t[order] for f, t in s["input"].items()}})
    with torch.no_grad():
        torch.testing.assert_close(
            predict(model, collate_packed(perm)), predict(model, collate_packed(ss)), atol=1e-5, rtol=1e-4
        )


@pytest.mark.parametrize(
    "settings", [{}, {"latent_counts": (0.05,), "latent_presence": True}], ids=["published", "latent_counts"]
)
def test_padded_junk_changes_nothing(dataset, settings):
    model = build(dataset, **settings).eval()
    ss = samples(dataset, model, n=4)
    clean = collate_padded(ss)
    junk = collate_padded(ss, pad_to_multiple=64)
    g = torch.Generator().manual_seed(0)
    for group in ("input", "output"):
        pad = ~junk[group]["mask"]
        for f, t in junk[group].items():
            if f == "mask":
                continue
            if t.dtype == torch.int64:  # valid rows of other units/sessions, so the junk is "plausible"
                t[pad] = torch.randint(0, 3, (int(pad.sum()),), generator=g)
            else:
                t[pad] = torch.rand(int(pad.sum()), generator=g, dtype=t.dtype) * 5
    with torch.no_grad():
        torch.testing.assert_close(predict(model, junk), predict(model, clean), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(predict(model, junk), predict(model, collate_packed(ss)), atol=1e-5, rtol=1e-4)


def test_predictions_line_up_with_targets_per_readout(dataset):
    model = POYO(
        **TINY,
        readouts=["reach_target_8", "cursor_velocity_2d"],
        unit_ids=dataset.unit_ids,
        session_ids=dataset.session_ids,
    )
    ss = samples(dataset, model, n=3, readouts=[ReadoutConfig("cursor_velocity_2d")])
    for batch in (collate_packed(ss), collate_padded(ss)):
        preds = model(batch)
        assert list(preds) == ["cursor_velocity_2d"]  # only what the tokenizer asked for
        assert preds["cursor_velocity_2d"].shape == targets(batch, "cursor_velocity_2d")["values"].shape
    assert model.readout_emb is not None and model.readout_emb.weight.shape == (2, TINY["dim"])


def test_state_dict_round_trip_gives_identical_predictions(dataset, tmp_path):
    model = build(dataset).eval()
    batch = collate_packed(samples(dataset, model, n=3))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    fresh = POYO(**TINY, seed=99).eval()  # other init, empty vocabularies
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(predict(fresh, batch), predict(model, batch), rtol=0, atol=0)


def test_batches_from_a_stale_tokenizer_are_refused(dataset):
    model = build(dataset).eval()
    batch = collate_packed(samples(dataset, model, n=2))
    model.unit_emb.subset(model.unit_emb.ids[::-1])  # same ids, other rows: old batches would be wrong
    with pytest.raises(RuntimeError, match="tokenized for other vocabularies.*model.tokenizer"):
        model(batch)
    model(collate_packed(samples(dataset, model, n=2)))  # a fresh tokenizer works


def test_init_vocabs_from_a_dataset(dataset):
    model = POYO(**TINY)
    model.init_vocabs(dataset)
    assert model.unit_emb.ids == dataset.unit_ids and model.session_emb.ids == dataset.session_ids
    with pytest.raises(TypeError, match="takes a dataset"):
        model.init_vocabs(["a/b/u0"])


def test_same_seed_same_weights_without_touching_global_rng(dataset):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build(dataset), build(dataset)
    after = torch.rand(1)
    assert torch.equal(before, after)
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.equal(x, y)


def test_bf16_autocast_runs_close_to_fp32(dataset):
    model = build(dataset).eval()
    batch = collate_packed(samples(dataset, model, n=2))
    with torch.no_grad():
        ref = predict(model, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = predict(model, batch)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.02


def test_bad_inputs_fail_clearly(dataset):
    model = build(dataset)
    with pytest.raises(KeyError, match="no 'input' group"):
        model({"latent": {}, "output": {}})
    with pytest.raises(ValueError, match="depth must be a non-negative integer"):
        POYO(depth=-1)
    with pytest.raises(ValueError, match="atn_dropout must be in"):
        POYO(atn_dropout=1.5)
    with pytest.raises(ValueError, match="unknown attention backend"):
        model.attention = "fast"
    with pytest.raises(KeyError, match="unknown readout"):
        POYO(readouts=["eeg"])


def test_small_model_overfits_a_handful_of_windows(dataset):
    torch.manual_seed(0)  # dropout masks
    model = build(dataset, ffn_dropout=0.0, lin_dropout=0.0, atn_dropout=0.0)
    batch = collate_packed(samples(dataset, model, n=4))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(150):
        loss, _ = model.loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_poyo_config_is_the_one_description_of_the_network(tmp_path):
    """Built from a YAML, a model's config round-trips through plain values; keyword settings
    override it, and unknown or impossible settings are refused by name."""
    cfg = POYOConfig.from_yaml(CONFIGS / "poyo_mini.yaml")
    model = POYO(cfg, unit_ids=["a/b/u0"], session_ids=["a/b"])
    assert model.config == cfg and POYOConfig.from_dict(cfg.to_dict()) == cfg
    assert POYO(cfg, depth=1).config.depth == 1 and POYO(dim=32).config.dim == 32
    with pytest.raises(TypeError, match=r"unknown POYO settings \['width'\]"):
        POYO(cfg, width=3)
    with pytest.raises(ValueError, match=r"settings \['head_count'\] are unknown"):
        POYOConfig.from_dict({**cfg.to_dict(), "head_count": 4})
    with pytest.raises(ValueError, match="atn_dropout must be in"):
        POYOConfig(atn_dropout=1.5)
    bad = tmp_path / "bad.yaml"
    bad.write_text("_target_: poyo.training.optim.OptimConfig\nname: adamw\n")
    with pytest.raises(ValueError, match="is not POYOConfig"):
        POYOConfig.from_yaml(bad)


def test_a_model_run_on_other_windows_than_it_was_trained_on_warns_once():
    model = POYO(dim=16, depth=1, dim_head=8, num_latents_per_step=2, window_length=1.0)
    assert model.check_window(1.0)
    with pytest.warns(UserWarning, match=r"trained on 1 s windows and now runs on 0\.5 s windows"):
        assert not model.check_window(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.check_window(0.5)  # once per length
        assert POYO(dim=16, depth=1, dim_head=8, num_latents_per_step=2).check_window(2.0)  # length unknown: silent


def test_exact_rotary_frequencies_replace_the_computed_ones():
    base = POYO(dim=16, depth=1, dim_head=8, num_latents_per_step=2)
    computed = base.rotary.omega[:2].tolist()
    as_float32 = [float(torch.tensor(w, dtype=torch.float32)) for w in computed]
    exact = POYO(base.config, rotary_omega=as_float32)
    assert exact.rotary.omega[:2].tolist() == as_float32 and as_float32 != computed
    assert exact.rotary.omega[2:].abs().sum() == 0  # the unrotated half
    with pytest.raises(ValueError, match="rotary_omega must hold 2 positive frequencies"):
        POYOConfig(dim_head=8, rotary_omega=[1.0])


@pytest.mark.parametrize("kernels", [(0.0,), (-0.1, 0.2), (0.02, 0.02), (1e3,)])
def test_bad_count_kernels_are_refused_by_name(kernels):
    with pytest.raises(ValueError, match="count_kernels"):
        POYOConfig(count_kernels=kernels)


@pytest.mark.parametrize("drop", [-0.1, 1.0])
def test_bad_count_read_drop_is_refused_by_name(drop):
    with pytest.raises(ValueError, match="count_read_drop"):
        POYOConfig(count_read_drop=drop)


def test_count_kernels_add_weights_only_to_masked_modelling_models():
    plain = POYO(**TINY, unit_ids=["a/b/u0"], session_ids=["a/b"])
    assert plain.rate_read is None and not [n for n, _ in plain.named_parameters() if n.startswith("rate_")]
    off = POYO(**TINY, masked_modelling=True, count_kernels=[], unit_ids=["a/b/u0"], session_ids=["a/b"])
    assert off.rate_read is None
    on = POYO(**TINY, masked_modelling=True, count_kernels=[0.01, 0.1], unit_ids=["a/b/u0"], session_ids=["a/b"])
    assert on.config.count_kernels == (0.01, 0.1) and on.rate_read.in_features == 2 * TINY["dim"]


def test_time_prior_is_checked_saved_and_off_by_default(tmp_path):
    """time_prior = 0 adds no parameter (published POYO weights load as before); > 0 adds one
    query and one key vector per attention, which a saved model keeps."""
    with pytest.raises(ValueError, match="time_prior"):
        POYOConfig(time_prior=-1.0)
    plain = POYO(**TINY, unit_ids=["a/b/u0"], session_ids=["a/b"])
    assert not [n for n, _ in plain.named_parameters() if ".time_" in n]
    model = POYO(**TINY, time_prior=3.0, unit_ids=["a/b/u0"], session_ids=["a/b"])
    names = [n for n, _ in model.named_parameters() if ".time_" in n]
    assert len(names) == 2 * (2 + TINY["depth"])  # encoder, decoder and each self-attention
    with torch.no_grad():
        model.enc_atn.time_k.add_(0.5)
    from poyo.model.pretrained import load_pretrained, save_pretrained

    back = load_pretrained(save_pretrained(model, tmp_path / "m.pt"))
    assert back.config.time_prior == 3.0
    torch.testing.assert_close(back.enc_atn.time_k, model.enc_atn.time_k)


def test_latent_count_read_is_linear_in_the_spikes_and_local_in_time(dataset, tmp_path):
    """Each latent's count read grows with the number of spikes near it (doubling every spike
    doubles it, less the projection's bias), a spike far from a latent's time leaves that
    latent's read alone, it is off by default (no weights) and a saved model keeps it."""
    for bad in ([0.1, 0.1], [True], ["0.1"]):
        with pytest.raises(ValueError, match="latent_counts"):
            POYOConfig(latent_counts=bad)
    assert POYOConfig(latent_counts=[np.float64(0.05), 0.2]).latent_counts == (0.05, 0.2)  # numpy scalars are numbers
    plain = build(dataset)
    assert plain.latent_read is None and plain.config.latent_counts == ()
    model = build(dataset, latent_counts=(0.02, 0.05)).eval()
    batch = collate_packed(samples(dataset, model, n=3))
    inp, lat = batch["input"], batch["latent"]
    bias = model.latent_read.bias
    with torch.no_grad():
        read = model._latent_counts(inp, lat, model._window_units(inp)) - bias
        spikes = inp["token_type"] == 0
        doubled = {f: torch.cat([t, t[spikes]]) for f, t in inp.items() if f not in ("cu_seqlens", "max_seqlen")}
        order = torch.sort(doubled["batch_index"], stable=True).indices
        doubled = {f: t[order] for f, t in doubled.items()}
        lengths = torch.bincount(doubled["batch_index"], minlength=3)
        doubled["cu_seqlens"] = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(inp["cu_seqlens"].dtype)
        doubled["max_seqlen"] = int(lengths.max())
        torch.testing.assert_close(
            model._latent_counts(doubled, lat, model._window_units(doubled)) - bias, 2 * read, atol=1e-4, rtol=1e-4
        )
        # the first window's spike nearest its middle moves to its start: latents of the first
        # step see it come, those of the last (>= 0.4 s, 8 widths, from both places) do not
        extra = {f: t.clone() if isinstance(t, torch.Tensor) else t for f, t in inp.items()}
        ours = torch.nonzero((inp["batch_index"] == 0) & spikes)[:, 0]
        mid = int(ours[(inp["timestamps"][ours] - 0.5).abs().argmin()])
        assert abs(float(inp["timestamps"][mid]) - 0.5) < 0.03
        extra["timestamps"][mid] = 0.001
        moved = model._latent_counts(extra, lat, model._window_units(extra)) - bias
    w0 = lat["batch_index"] == 0
    t0 = lat["timestamps"][w0]
    changed = (moved[w0] - read[w0]).abs().amax(-1)
    assert float(changed[t0 < 0.125].min()) > 1e-3
    torch.testing.assert_close(moved[w0][t0 > 0.875], read[w0][t0 > 0.875], atol=1e-6, rtol=0)
    from poyo.model.pretrained import load_pretrained, save_pretrained

    back = load_pretrained(save_pretrained(model, tmp_path / "m.pt"))
    assert back.config.latent_counts == (0.02, 0.05)
    with torch.no_grad():
        torch.testing.assert_close(predict(back.eval(), batch), predict(model, batch))


def test_latent_presence_tells_a_silent_unit_from_an_absent_one(dataset, tmp_path):
    """With latent_presence the count read also sums the window's units' normalised embeddings
    (over sqrt(units)), so removing a unit's spikes (it is there, silent) and removing the unit
    (its start and end tokens too) read differently where, without it, they read the same up to
    the sqrt(units) scale; a model saved before it existed loads without it."""
    with pytest.raises(ValueError, match="latent_counts"):
        POYOConfig(latent_presence=True)
    with pytest.raises(ValueError, match="latent_presence"):
        POYOConfig(latent_counts=(0.05,), latent_presence=1)
    model = build(dataset, latent_counts=(0.05,), latent_presence=True).eval()
    assert model.latent_read.in_features == 2 * model.config.dim
    batch = collate_packed(samples(dataset, model, n=2))
    inp, lat = batch["input"], batch["latent"]
    sample, types = inp["batch_index"], inp["token_type"]
    with torch.no_grad():
        found, units_sqrt = model._window_units(inp)
        assert torch.equal(found, sample)
        got = model._presence(inp, sample, units_sqrt)
        for i in range(2):
            units = inp["unit_index"][(sample == i) & (types == 1)]  # start tokens: one per unit
            assert float(units_sqrt[i]) == pytest.approx(len(units) ** 0.5)
            want = model.latent_norm(model.unit_emb(units)).sum(0) / len(units) ** 0.5
            torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-5)

    def without(keep):
        out = {f: t[keep] for f, t in inp.items() if f not in ("cu_seqlens", "max_seqlen")}
        lengths = torch.bincount(out["batch_index"], minlength=2)
        out["cu_seqlens"] = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(inp["cu_seqlens"].dtype)
        out["max_seqlen"] = int(lengths.max())
        return out

    unit = inp["unit_index"][(sample == 0) & (types == 0)][0]  # a unit that fires in window 0
    mine = (sample == 0) & (inp["unit_index"] == unit)
    silent, absent = without(~(mine & (types == 0))), without(~mine)
    w0 = lat["batch_index"] == 0
    with torch.no_grad():
        a, b = (
            model._latent_counts(silent, lat, model._window_units(silent)),
            model._latent_counts(absent, lat, model._window_units(absent)),
        )
        assert float((a[w0] - b[w0]).abs().max()) > 1e-3
        torch.testing.assert_close(a[~w0], b[~w0])  # the other window is untouched
        # less the presence part of the read, the two differ only by the sqrt(units) scale
        n, dim = int(((sample == 0) & (types == 1)).sum()), model.config.dim

        def counts_part(read, x):
            presence = model._presence(x, *model._window_units(x))[lat["batch_index"]]
            return read - model.latent_read.bias - presence @ model.latent_read.weight[:, dim:].T

        scale = ((n - 1) / n) ** 0.5
        torch.testing.assert_close(counts_part(a, silent)[w0], counts_part(b, absent)[w0] * scale, atol=1e-5, rtol=1e-4)
    from poyo.model.pretrained import load_pretrained, save_pretrained

    saved = torch.load(save_pretrained(model, tmp_path / "m.pt"), weights_only=True)
    assert saved["model"]["latent_presence"] is True
    back = load_pretrained(tmp_path / "m.pt")
    assert back.config.latent_presence
    with torch.no_grad():
        torch.testing.assert_close(predict(back.eval(), batch), predict(model, batch))
    old = {k: v for k, v in POYOConfig(latent_counts=(0.05,)).to_dict().items() if k != "latent_presence"}
    assert POYOConfig.from_dict(old).latent_presence is False


def test_presence_scale_mean_reads_the_units_mean_and_old_checkpoints_keep_sqrt(dataset, tmp_path):
    """``presence_scale="mean"`` divides the presence sum by the number of units (the mean of
    their normalised embeddings, the same size for 10 units or 200), ``"sqrt"`` by its square
    root; a model saved before the setting existed reads "sqrt", as it was trained."""
    with pytest.raises(ValueError, match="presence_scale"):
        POYOConfig(latent_counts=(0.05,), latent_presence=True, presence_scale="sum")
    model = build(dataset, latent_counts=(0.05,), latent_presence=True, presence_scale="mean").eval()
    batch = collate_packed(samples(dataset, model, n=2))
    inp = batch["input"]
    sample, types = inp["batch_index"], inp["token_type"]
    with torch.no_grad():
        got = model._presence(inp, *model._window_units(inp))
        for i in range(2):
            units = inp["unit_index"][(sample == i) & (types == 1)]
            assert len(units) > 4
            torch.testing.assert_close(got[i], model.latent_norm(model.unit_emb(units)).mean(0), atol=1e-5, rtol=1e-5)
        sqrt_model = build(dataset, latent_counts=(0.05,), latent_presence=True).eval()
        assert sqrt_model.config.presence_scale == "sqrt"
        sqrt_model.load_state_dict(model.state_dict())  # the same weights: only the scale differs
        n = torch.bincount(sample[types == 1], minlength=2).double()
        torch.testing.assert_close(
            sqrt_model._presence(inp, *sqrt_model._window_units(inp)).double(), got.double() * n.sqrt()[:, None]
        )
        assert not torch.allclose(predict(sqrt_model, batch), predict(model, batch))
    from poyo.model.pretrained import load_pretrained, save_pretrained

    back = load_pretrained(save_pretrained(model, tmp_path / "m.pt"))
    assert back.config.presence_scale == "mean"
    with torch.no_grad():
        torch.testing.assert_close(predict(back.eval(), batch), predict(model, batch))
    old = {k: v for k, v in model.config.to_dict().items() if k != "presence_scale"}
    assert POYOConfig.from_dict(old).presence_scale == "sqrt"

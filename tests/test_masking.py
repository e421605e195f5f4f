"""Masked modelling (MtM): what each scheme hides never reaches the input, the counts asked
for are the hidden ones, one scheme per batch, and both layouts give the same predictions."""

import numpy as np
import pytest
import torch

from poyo.data import Series, UnitDropout, Window, collate_packed
from poyo.model import POYO
from poyo.model.attention import PACKED_BACKENDS, available
from poyo.model.masking import (
    DECODE,
    PROMPTS,
    SCHEMES,
    MaskingCollate,
    MaskSettings,
    apply_mask,
    bin_counts,
    plan_mask,
)
from poyo.model.poyo import COUNT_STATE, COUNTS, count_targets
from poyo.model.tokenizer import UNIT_END
from poyo.readouts import ReadoutConfig
from poyo.training.mtm_eval import SIGMAS_BINS, glm_features, window_counts
from poyo.training.stitch import to_device
from tests.helpers import assert_gradients_close

REGIONS = np.array(["M1", "M1", "M1", "PMd", "PMd", "PMd", "PMd", "S1", "S1", "S1"])
UNITS = np.array([f"b/s/u{i}" for i in range(len(REGIONS))])


def window(seed=0, spikes=None, session="b/s", behaviour=True):
    rng = np.random.default_rng(seed)
    if spikes is None:
        n = 400
        spikes = (np.sort(rng.uniform(0, 1, n)), rng.integers(0, len(UNITS), n))
    vel_t = np.arange(0.005, 1.0, 0.01)
    b = {"cursor.vel": Series(vel_t, rng.normal(size=(len(vel_t), 2)).astype(np.float32), np.arange(len(vel_t)))}
    return Window(
        session_id=session, start=10.0, end=11.0, unit_ids=UNITS, spike_times=spikes[0], spike_units=spikes[1],
        behaviour=b if behaviour else {}, unit_regions=REGIONS,
    )  # fmt: skip


def model(**changes):
    return POYO(dim=32, depth=1, dim_head=16, cross_heads=1, self_heads=2, num_latents_per_step=2,
                masked_modelling=True, unit_ids=UNITS, session_ids=["b/s", "b/t"], seed=3, **changes)  # fmt: skip


RC = ReadoutConfig("cursor_velocity_2d", key="cursor.vel", mean=0.0, std=1.0)


def sample(w, m=None):
    return (m or model()).tokenizer([RC], masking=True)(w, np.random.default_rng(0))


def plan(scheme, seed=1, settings=None, **kw):
    return plan_mask(REGIONS, 1.0, scheme, np.random.default_rng(seed), settings or MaskSettings(), **kw)


def input_units(s, m):
    rows = s["input"]["unit_index"].numpy()
    lookup = m.unit_emb.lookup()
    pos = {lookup[u]: i for i, u in enumerate(UNITS)}
    return {pos[r] for r in rows}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_masked_part_never_reaches_the_input(scheme):
    """Changing every hidden spike (hidden units' spikes, or spikes after the causal cut)
    leaves the input tokens bit-identical; the counts asked for change with them."""
    m, st = model(), MaskSettings()
    p = plan(scheme)
    a = apply_mask(sample(window(0), m), p, st)
    # rewrite the hidden part only
    w = window(0)
    t, u = w.spike_times.copy(), w.spike_units.copy()
    cut = p.first_bin * st.bin_s
    hidden = p.target[u] & (t >= cut - 1e-12) if scheme == "causal" else ~p.visible[u]
    rng = np.random.default_rng(5)
    new_t = np.sort(rng.uniform(cut if scheme == "causal" else 0.0, 1.0, 3 * hidden.sum()))
    new_u = rng.choice(np.flatnonzero(p.target if scheme == "causal" else ~p.visible), len(new_t))
    t2, u2 = np.concatenate([t[~hidden], new_t]), np.concatenate([u[~hidden], new_u])
    order = np.argsort(t2, kind="stable")
    b = apply_mask(sample(window(0, spikes=(t2[order], u2[order])), m), p, st)
    for k in a["input"]:
        assert torch.equal(a["input"][k], b["input"][k]), k
    assert not torch.equal(a["counts"]["counts"], b["counts"]["counts"])

    visible_units = input_units(a, m)
    assert visible_units == set(np.flatnonzero(p.visible))
    if scheme == "causal":
        assert (a["input"]["timestamps"] < cut).all() and not (a["input"]["token_type"] == UNIT_END).any()
    else:
        assert not visible_units & set(np.flatnonzero(p.target))  # no token of a hidden unit, delimiters included
    if scheme == "intra_region":
        (region,) = set(REGIONS[p.target])
        assert set(REGIONS[list(visible_units)]) == {region}
    if scheme == "inter_region":
        assert set(REGIONS[p.target]).isdisjoint(REGIONS[list(visible_units)])
        assert set(REGIONS[p.target] == REGIONS[p.target][0]) == {True}
    assert a["prompt"] == PROMPTS.index(scheme)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_counts_are_the_hidden_spikes(scheme):
    m, st = model(), MaskSettings()
    w = window(2)
    p = plan(scheme, seed=4)
    s = apply_mask(sample(w, m), p, st)
    truth = bin_counts(w.spike_times, w.spike_units, len(UNITS), 50, st.bin_s)
    c = s["counts"]
    units, bins = c["unit_position"].numpy(), c["bin"].numpy()
    assert set(units) == set(np.flatnonzero(p.target))
    assert bins.min() == p.first_bin and bins.max() == 49
    np.testing.assert_array_equal(c["counts"].numpy(), truth[bins, units])
    np.testing.assert_allclose(s["bins"]["timestamps"].numpy(), (np.arange(50) + 0.5) * st.bin_s)
    lookup = m.unit_emb.lookup()
    assert c["unit_index"].tolist() == [lookup[UNITS[u]] for u in units]
    assert c["counts"].sum() == truth[p.first_bin :, p.target].sum() > 0
    # behaviour is not learnt from masked windows
    assert float(s["target/cursor_velocity_2d"]["weight"].sum()) == 0.0


def test_plans_hide_what_each_scheme_says():
    st = MaskSettings(neuron_ratio=0.3, intra_ratio=0.5, causal_min=0.5, causal_max=0.9)
    n = plan("neuron", settings=st)
    assert n.target.sum() == 3 and (n.visible == ~n.target).all() and n.first_bin == 0
    cuts = {plan("causal", seed=s, settings=st).first_bin for s in range(200)}
    assert min(cuts) == 25 and max(cuts) == 45
    for seed in range(20):
        intra = plan("intra_region", seed=seed, settings=st)
        r = set(REGIONS[intra.target])
        assert len(r) == 1 and 1 <= intra.target.sum() < (REGIONS == r.pop()).sum()
    inter = plan("inter_region", region="S1")
    assert (inter.target == (REGIONS == "S1")).all() and (inter.visible == ~inter.target).all()
    # one region only: region schemes fall back to neuron masking, and say so
    one = plan_mask(np.zeros(6), 1.0, "inter_region", np.random.default_rng(0), st)
    assert one.scheme == "neuron" and 1 <= one.target.sum() < 6
    assert plan_mask(np.zeros(1), 1.0, "neuron", np.random.default_rng(0), st).scheme == "causal"
    with pytest.raises(ValueError, match="unknown masking scheme"):
        plan("everything")
    with pytest.raises(ValueError, match="mtm.neuron_ratio"):
        MaskSettings(neuron_ratio=1.0)
    with pytest.raises(ValueError, match="unknown schemes"):
        MaskSettings(schemes={"neurons": 1.0})


def test_one_scheme_per_batch_reproducible_and_fixed_masks_per_session():
    m = model()
    tok = m.tokenizer([RC], masking=True)
    samples = [tok(window(i), np.random.default_rng(100 + i)) for i in range(6)]
    collate = MaskingCollate(MaskSettings(), "packed")
    drawn = set()
    for start in range(0, 6):
        batch = collate(samples[start:] + samples[:start])
        assert len(set(batch["prompt"].tolist())) == 1  # one scheme per batch (this population has 3 regions)
        drawn.add(int(batch["prompt"][0]))
        again = collate(samples[start:] + samples[:start])
        assert torch.equal(batch["counts"]["counts"], again["counts"]["counts"])
    assert len(drawn) >= 2
    fixed = MaskingCollate(MaskSettings(), "packed", scheme="neuron", fixed=True)
    b = fixed(samples)
    t = count_targets(b)
    per_window = [set(t["unit_position"][t["sample"] == i].tolist()) for i in range(6)]
    assert all(p == per_window[0] for p in per_window)  # the same held-out units in every window
    with pytest.raises(KeyError, match="masking=True"):
        MaskingCollate(MaskSettings())([m.tokenizer([RC])(window(0))])


def test_decode_batches_keep_everything():
    m = model()
    s = sample(window(0), m)
    out = apply_mask(s, plan(DECODE), MaskSettings())
    assert torch.equal(out["input"]["unit_index"], s["input"]["unit_index"]) and "counts" not in out
    assert out["prompt"] == 0 and float(out["target/cursor_velocity_2d"]["weight"].sum()) > 0


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_packed_and_padded_predict_the_same_counts(scheme, device):
    """Every packed backend this device has (fp32; varlen is bf16-only) against the padded SDPA
    reference: counts, loss and gradients, with the count read and the time prior switched on."""
    m = model(time_prior=3.0).to(device).eval()
    tok = m.tokenizer([RC], masking=True)
    samples = [
        tok(window(i, session="b/s" if i % 2 else "b/t", behaviour=i != 1), np.random.default_rng(i)) for i in range(3)
    ]
    packed = to_device(MaskingCollate(MaskSettings(), "packed", scheme=scheme)(samples), device)
    padded = to_device(MaskingCollate(MaskSettings(), "padded", scheme=scheme)(samples), device)

    def run(batch, backend):
        m.zero_grad(set_to_none=True)
        m.attention = backend
        out = m(batch)
        loss, _ = m.loss(out, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        return out, loss.detach(), grads

    ref, ref_loss, ref_grads = run(padded, "sdpa")
    assert ref["cursor_velocity_2d"].shape == (200, 2)  # the window without behaviour has no queries
    tried = []
    for backend in PACKED_BACKENDS:
        if backend == "varlen" or available(backend, torch.device(device)):
            continue
        out, loss, grads = run(packed, backend)
        torch.testing.assert_close(out[COUNTS], ref[COUNTS], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
        assert_gradients_close(grads, ref_grads, backend)
        tried.append(backend)
    assert len(tried) >= 2, tried


def test_prompts_change_the_prediction_and_unmasked_batches_use_prompt_zero():
    m = model().eval()
    tok = m.tokenizer([RC], masking=True)
    samples = [tok(window(0), np.random.default_rng(0))]
    batch = MaskingCollate(MaskSettings(), "packed", scheme="neuron")(samples)
    with torch.no_grad():
        base = m(batch)[COUNTS]
        m.prompt_emb.weight[PROMPTS.index("neuron")] += 1.0
        assert not torch.allclose(m(batch)[COUNTS], base)
    plain = collate_packed([m.tokenizer([RC])(window(0))])  # a supervised batch: prompt 0 and no count queries
    out = m(plain)
    assert COUNTS not in out
    loss, _ = m.loss(out, plain)
    loss.backward()
    # every parameter is in the graph (DDP wants that); the masked-modelling ones with zero gradient
    assert [n for n, p in m.named_parameters() if p.grad is None] == []
    for name in ("count_query", "count_head.weight", "count_read.to_q.weight", "rate_read.weight", "rate_norm.weight"):
        assert float(m.get_parameter(name).grad.abs().sum()) == 0.0, name


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_count_state_is_what_the_counts_are_read_from(layout):
    """forward(count_state=True) returns each bin's state (window by window, bins in order),
    and every predicted log count is that state read through its unit's weights and bias."""
    m = model(time_prior=3.0).eval()
    tok = m.tokenizer([RC], masking=True)
    samples = [tok(window(i), np.random.default_rng(i)) for i in range(2)]
    batch = MaskingCollate(MaskSettings(), layout, scheme="causal")(samples)
    with torch.no_grad():
        out = m(batch, count_state=True)
        plain = m(batch)
        unit = m.count_unit(m.count_norm(m.unit_emb(count_targets(batch)["unit_index"])))
    state, t = out[COUNT_STATE], count_targets(batch)
    assert state.shape == (2 * 50, 32) and COUNT_STATE not in plain
    rows = t["sample"] * 50 + t["bin"]
    torch.testing.assert_close((state[rows] * unit[:, :-1]).sum(-1) + unit[:, -1], out[COUNTS], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[COUNTS], plain[COUNTS])
    assert torch.equal(m.loss(out, batch)[0], m.loss(plain, batch)[0])  # the state carries no loss
    with pytest.raises(ValueError, match="count_state=True needs a masked batch"):
        m(collate_packed([m.tokenizer([RC])(window(0))]), count_state=True)


def test_models_without_a_count_head_refuse_masked_batches():
    m = POYO(dim=32, depth=1, dim_head=16, unit_ids=UNITS, session_ids=["b/s"])
    tok = m.tokenizer([RC], masking=True)
    batch = MaskingCollate(MaskSettings(), "packed", scheme="neuron")([tok(window(0), np.random.default_rng(0))])
    with pytest.raises(ValueError, match="masked_modelling=True"):
        m(batch)


def test_unit_dropout_keeps_regions_aligned():
    w = window(0)
    out = UnitDropout(min_units=3, mode_units=4, max_units=5)(w, np.random.default_rng(0))
    pos = [list(UNITS).index(u) for u in out.unit_ids]
    assert out.unit_regions.tolist() == REGIONS[pos].tolist()


def test_a_bin_reads_the_spikes_near_it_from_the_start():
    """Each count bin first reads the visible spikes near it (attention that starts local in
    time): even untrained, a burst of spikes changes the predicted counts of the bins around
    it far more than those of distant bins."""
    m = POYO(dim=32, depth=1, dim_head=64, cross_heads=1, self_heads=1, num_latents_per_step=2,
             masked_modelling=True, unit_ids=UNITS, session_ids=["b/s"], seed=3).eval()  # fmt: skip
    tok = m.tokenizer([RC], masking=True)
    rng = np.random.default_rng(0)
    times, units = np.sort(rng.uniform(0, 1, 300)), rng.integers(0, len(UNITS), 300)
    plan = plan_mask(REGIONS, 1.0, "neuron", np.random.default_rng(1), MaskSettings())
    seen = np.flatnonzero(plan.visible)[0]
    burst = np.full(20, 0.205) + np.arange(20) * 1e-3
    t2 = np.concatenate([times, burst])
    u2 = np.concatenate([units, np.full(20, seen)])
    order = np.argsort(t2, kind="stable")

    def predict(t, u):
        s = apply_mask(tok(window(0, spikes=(t, u)), np.random.default_rng(0)), plan, MaskSettings())
        from poyo.data import collate_packed

        batch = collate_packed([s])
        with torch.no_grad():
            return m(batch)[COUNTS].numpy(), count_targets(batch)["bin"].numpy()

    base, bins = predict(times, units)
    moved, _ = predict(t2[order], u2[order])
    change = np.abs(moved - base)
    near = change[(bins == 10) | (bins == 11)].mean()  # the burst's bins: 200-240 ms
    far = change[bins >= 35].mean()  # 700 ms and later (the change through the latents alone)
    assert near > 4 * far, (near, far)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_linear_count_read_is_the_glm_features_in_embedding_space(scheme):
    """Before its projection, the linear read of a bin is the GLM baseline's features (each
    visible unit's counts smoothed with each kernel over the bins the input holds) weighted
    by the units' normalised embeddings and divided by sqrt(visible units); hidden spikes
    never enter it (the causal part after the cut included)."""
    m, st = model(), MaskSettings()
    assert m.config.count_kernels == tuple(s * st.bin_s for s in SIGMAS_BINS)
    w = window(0)
    s = sample(w, m)
    p = plan(scheme)
    seen = {}
    hook = m.rate_read.register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))
    with torch.no_grad():
        m(collate_packed([apply_mask(s, p, st)]))
    hook.remove()
    feats = glm_features(window_counts(w, st), p)  # (predicted bins, kernels x visible units)
    with torch.no_grad():
        emb = m.rate_norm(m.unit_emb(s["units"]["index"][torch.from_numpy(p.visible)])).double().numpy()
    k, v = len(SIGMAS_BINS), int(p.visible.sum())
    expected = np.concatenate([f @ emb for f in np.split(feats, k, axis=1)], axis=1) / np.sqrt(v)
    got = seen["x"].double().numpy()[p.first_bin :]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_count_read_drop_leaves_out_the_linear_read_in_some_training_batches_only():
    """In training, a batch's counts come either with the linear read or without it (about
    ``count_read_drop`` of batches), whole batches at a time; in evaluation, always with it."""
    m = model(ffn_dropout=0.0, lin_dropout=0.0, atn_dropout=0.0, count_read_drop=0.5)
    batch = collate_packed([apply_mask(sample(window(0), m), plan("neuron"), MaskSettings())])
    with torch.no_grad():
        m.eval()
        full = m(batch)[COUNTS]
        m.rate_read.weight.zero_(), m.rate_read.bias.zero_()
        without = m(batch)[COUNTS]
        assert not torch.allclose(full, without)
    m = model(ffn_dropout=0.0, lin_dropout=0.0, atn_dropout=0.0, count_read_drop=0.5)
    torch.manual_seed(0)
    m.train()
    with torch.no_grad():
        seen = [m(batch)[COUNTS] for _ in range(40)]
    kinds = [0 if torch.allclose(s, full) else 1 if torch.allclose(s, without) else 2 for s in seen]
    assert 2 not in kinds and 10 <= kinds.count(1) <= 30, kinds


def test_a_model_of_spikes_alone_has_no_heads_and_the_same_counts():
    """readouts=[] (masked modelling on recordings without behaviour): no head, no zero loss
    of a placeholder; it predicts the counts a model with a head predicts from the same weights,
    and every parameter is in the graph (DDP). Without masked modelling, no heads is refused."""
    alone, headed = model(readouts=[]), model()
    assert alone.readout_names == [] and len(alone.readout) == 0
    missing = headed.load_state_dict(alone.state_dict(), strict=False)
    assert missing.unexpected_keys == [] and all(k.startswith("readout.") for k in missing.missing_keys)
    samples = [
        alone.tokenizer([], masking=True)(window(i, behaviour=False), np.random.default_rng(i)) for i in range(2)
    ]
    batch = MaskingCollate(MaskSettings(), "packed", scheme="neuron")(samples)
    with torch.no_grad():
        torch.testing.assert_close(alone.eval()(batch)[COUNTS], headed.eval()(batch)[COUNTS])
    out = alone.train()(batch)
    assert set(out) == {COUNTS}
    loss, parts = alone.loss(out, batch)
    assert set(parts) == {COUNTS} and torch.isfinite(loss)
    loss.backward()
    assert [n for n, p in alone.named_parameters() if p.grad is None] == []
    with pytest.raises(ValueError, match="empty only with masked_modelling=True"):
        POYO(dim=32, depth=1, dim_head=16, readouts=[], unit_ids=UNITS, session_ids=["b/s"])
    with pytest.raises(ValueError, match="at least one readout"):
        alone.tokenizer([])

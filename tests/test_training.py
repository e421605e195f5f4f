"""Training pieces: stitching by sample index, LAMB's sparse rows, the schedule, atomic
checkpoints, the resumable loader, the linear baselines' features, and resume after SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from poyo.io import atomic_save, safe_load
from poyo.model import POYO
from poyo.readouts import ReadoutConfig
from poyo.training.linear import ALPHAS, binned_counts, ridge_fits
from poyo.training.module import DataModule, POYOModule, ResumableLoader
from poyo.training.optim import Lamb, OptimConfig, schedule
from poyo.training.stitch import Stitcher, r2_score

ROOT = Path(__file__).resolve().parents[1]


def rows(index, values, pred_shift=0.0, sample=None, t0=0.0):
    index = torch.as_tensor(index)
    n = len(index)
    values = torch.as_tensor(values, dtype=torch.float32).reshape(n, -1)
    return {
        "sample_index": index, "values": values, "eval_mask": torch.ones(n, dtype=torch.bool),
        "sample": torch.zeros(n, dtype=torch.long) if sample is None else torch.as_tensor(sample), "timestamps": torch.arange(n, dtype=torch.float64) * 0.01,
    }, values + pred_shift  # fmt: skip


def test_stitcher_averages_overlapping_predictions_by_sample_index():
    st = Stitcher()
    r, p = rows([0, 1, 2, 3], [[0.0], [1.0], [2.0], [3.0]], pred_shift=1.0)
    st.add(["s"], "cursor_velocity_2d", r, p)
    r, p = rows([2, 3, 4], [[2.0], [3.0], [4.0]], pred_shift=-1.0)  # overlaps samples 2 and 3
    st.add(["s"], "cursor_velocity_2d", r, p)
    s = st.stitched()[("s", "cursor_velocity_2d")]
    assert s["sample_index"].tolist() == [0, 1, 2, 3, 4] and s["count"].tolist() == [1, 1, 2, 2, 1]
    np.testing.assert_allclose(s["pred"][:, 0], [1.0, 2.0, 2.0, 3.0, 3.0])  # +1 and -1 average out on 2, 3


def test_stitching_leans_on_the_windows_that_hold_a_sample_near_their_centre():
    """Sample 7 is at 0.5 s of a 1 s window (weight 1) and at 0.0 s of the next (weight e^-2)."""
    st = Stitcher(window_length=1.0)
    first, _ = rows([7], [[0.0]])
    first["timestamps"] = torch.tensor([0.5], dtype=torch.float64)
    st.add(["s"], "cursor_velocity_2d", first, torch.tensor([[1.0]]))
    second, _ = rows([7], [[0.0]])
    second["timestamps"] = torch.tensor([0.0], dtype=torch.float64)
    st.add(["s"], "cursor_velocity_2d", second, torch.tensor([[-1.0]]))
    s = st.stitched()[("s", "cursor_velocity_2d")]
    w = np.exp(-2.0)
    np.testing.assert_allclose(s["pred"][0, 0], (1.0 - w) / (1.0 + w))
    assert s["count"].tolist() == [2]
    assert Stitcher().add(["s"], "cursor_velocity_2d", first, torch.tensor([[3.0]])) is None  # no length: plain mean
    with pytest.raises(ValueError, match="window_length"):
        Stitcher(window_length=0.0)


def test_gathered_parts_merge_like_one_process():
    """What DDP gather does: every rank's raw rows, pooled, stitch exactly as one process would."""
    rng = np.random.default_rng(0)
    chunks = [(np.sort(rng.choice(50, 20, replace=False)), rng.normal(size=(20, 2))) for _ in range(6)]
    whole, ranks = Stitcher(1.0), [Stitcher(1.0), Stitcher(1.0)]
    for k, (idx, pred) in enumerate(chunks):
        r, _ = rows(idx, np.zeros((20, 2)))
        r["timestamps"] = torch.as_tensor(rng.uniform(0, 1, 20))
        whole.add(["s"], "cursor_velocity_2d", r, torch.tensor(pred))
        ranks[k % 2].add(["s"], "cursor_velocity_2d", r, torch.tensor(pred))
    merged = Stitcher(1.0)
    merged._chunks[("s", "cursor_velocity_2d")] = [rk.predictions("s", "cursor_velocity_2d") for rk in ranks]
    for centres in ({}, {"cursor_velocity_2d": 0.8}):
        a = whole.stitched(centres)[("s", "cursor_velocity_2d")]
        b = merged.stitched(centres)[("s", "cursor_velocity_2d")]
        np.testing.assert_array_equal(a["sample_index"], b["sample_index"])
        np.testing.assert_array_equal(a["count"], b["count"])
        np.testing.assert_allclose(a["pred"], b["pred"], rtol=1e-12)


def lagged_windows(stitcher: Stitcher, good_from: float, seed: int = 0) -> None:
    """Windows of 1 s every 0.1 s over samples every 0.01 s, whose predictions are exact where
    the sample sits at or after ``good_from`` of its window and noise before: a recording whose
    spikes lead the behaviour, so a window decodes only once it holds the spikes before a sample."""
    rng = np.random.default_rng(seed)
    truth = np.sin(np.arange(400) * 0.05)[:, None]
    for start in range(0, 300, 10):
        idx = np.arange(start, start + 100)
        position = (idx - start) / 100
        r, _ = rows(idx, truth[idx])
        r["timestamps"] = torch.as_tensor(position)
        pred = np.where(position[:, None] >= good_from, truth[idx], 0.5 * rng.normal(size=(100, 1)))
        stitcher.add(["s"], "cursor_velocity_2d", r, torch.as_tensor(pred))


def test_best_centre_follows_where_windows_decode():
    """Validation picks the centre where the windows decode, and scores improve there over the middle."""
    late, early = Stitcher(1.0), Stitcher(1.0)
    lagged_windows(late, good_from=0.6)
    lagged_windows(early, good_from=0.0)
    assert late.best_centres() == {"cursor_velocity_2d": 0.9}
    middle, chosen = (
        late.scores()["s"]["cursor_velocity_2d"],
        late.scores(late.best_centres())["s"]["cursor_velocity_2d"],
    )
    assert chosen > 0.75 and chosen > middle + 0.25
    assert early.best_centres() == {"cursor_velocity_2d": 0.5}  # every position exact: the tie goes to the middle
    # the middle stays unless another centre leads it by more than the margin
    assert late.best_centres(margin=chosen - middle + 0.01) == {"cursor_velocity_2d": 0.5}
    assert late.best_centres(margin=chosen - middle - 0.01) == {"cursor_velocity_2d": 0.9}
    assert Stitcher().best_centres() == {}  # no window length: nothing to weight
    with pytest.raises(ValueError, match="cursor_velocity_2d"):
        Stitcher(1.0, {"cursor_velocity_2d": 1.2})
    with pytest.raises(ValueError, match="candidates"):
        late.best_centres([0.5, 0.0])


def test_best_centre_needs_a_gain_across_the_split():
    """A later centre that wins in one stretch of the split only (noise, as on a short validation
    split) does not replace the middle; the same gain spread over the whole split does."""

    def windows(noisy_until: int) -> Stitcher:
        st, rng, truth = Stitcher(1.0), np.random.default_rng(0), np.sin(np.arange(2100) * 0.05)[:, None]
        for start in range(0, 2000, 10):
            idx = np.arange(start, start + 100)
            position = (idx - start) / 100
            r, _ = rows(idx, truth[idx])
            r["timestamps"] = torch.as_tensor(position)
            noise = np.where((position < 0.3) & (start < noisy_until), 2.5, 0.5)[:, None]
            st.add(["s"], "cursor_velocity_2d", r, torch.as_tensor(truth[idx] + noise * rng.normal(size=(100, 1))))
        return st

    one_stretch, everywhere = windows(noisy_until=150), windows(noisy_until=2000)
    for st in (one_stretch, everywhere):  # on the margin alone both would move
        assert st.best_centres(z=0.0)["cursor_velocity_2d"] > 0.5
    assert one_stretch.best_centres() == {"cursor_velocity_2d": 0.5}
    assert everywhere.best_centres()["cursor_velocity_2d"] > 0.5
    with pytest.raises(ValueError, match="blocks"):
        everywhere.best_centres(blocks=1)


def test_r2_score():
    t = np.random.default_rng(1).normal(size=(100, 2))
    assert r2_score(t, t) == 1.0
    assert abs(r2_score(np.zeros_like(t) + t.mean(0), t)) < 1e-12
    with pytest.raises(ValueError):
        r2_score(t[:1], t[:1])


def test_lamb_leaves_rows_without_gradient_and_their_state_alone():
    emb = torch.nn.Parameter(torch.randn(5, 4))
    dense = torch.nn.Parameter(torch.randn(3))
    opt = Lamb([dict(params=[emb], sparse=True), dict(params=[dense])], lr=0.1, weight_decay=0.01)
    for rows_hit in ([0, 1], [1, 2]):
        before = emb.detach().clone()
        state_before = {k: v.clone() for k, v in opt.state[emb].items()} if opt.state[emb] else None
        emb.grad = torch.zeros_like(emb)
        emb.grad[rows_hit] = 1.0
        dense.grad = torch.ones(3)
        opt.step()
        untouched = [i for i in range(5) if i not in rows_hit]
        assert torch.equal(emb[untouched], before[untouched])
        assert not torch.equal(emb[rows_hit], before[rows_hit])
        if state_before is not None:  # row 0's moments survive the step that skipped it
            assert torch.equal(opt.state[emb]["exp_avg"][0], state_before["exp_avg"][0])
    assert opt.state[emb]["exp_avg"][0].abs().sum() > 0


def test_schedule_is_constant_then_cosine():
    f = schedule(100, constant_fraction=0.5, final_factor=1e-4)
    assert [f(0), f(49)] == [1.0, 1.0]
    assert abs(f(75) - (1e-4 + (1 - 1e-4) * 0.5)) < 1e-12 and abs(f(100) - 1e-4) < 1e-12
    assert all(f(i) >= f(i + 1) for i in range(100))


def test_warmup_ramps_the_schedule_linearly_then_leaves_it_alone():
    base = schedule(200, constant_fraction=0.5, final_factor=0.1)
    f = schedule(200, constant_fraction=0.5, final_factor=0.1, warmup_fraction=0.1)
    assert [f(0), f(9), f(19)] == [1 / 20, 10 / 20, 1.0]
    assert all(f(i) < f(i + 1) for i in range(19))
    assert [f(i) for i in range(20, 201)] == [base(i) for i in range(20, 201)]
    model = POYO(dim=16, depth=1, dim_head=8, num_latents_per_step=2, unit_ids=["a/s/u0"], session_ids=["a/s"])
    opt, _ = OptimConfig(warmup_fraction=0.1).build(model, global_batch_size=32, total_steps=200)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 20)  # the first step already runs at the ramp's start
    with pytest.raises(ValueError, match="warmup_fraction"):
        OptimConfig(warmup_fraction=1.5)
    with pytest.raises(ValueError, match="no warm-up"):
        OptimConfig(name="lamb", mode="torch_brain", warmup_fraction=0.1)


def test_atomic_save_replaces_whole_files_only(tmp_path):
    path = atomic_save({"a": torch.ones(2), "ids": ["x", "y"]}, tmp_path / "c.ckpt")
    assert safe_load(path)["ids"] == ["x", "y"]

    class Boom:
        def __reduce__(self):
            raise RuntimeError("crash mid-save")

    with pytest.raises(RuntimeError, match="crash mid-save"):
        atomic_save({"a": torch.zeros(2), "bad": Boom()}, path)
    assert safe_load(path)["ids"] == ["x", "y"]  # the previous checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ckpt"]
    with pytest.raises(FileNotFoundError):
        safe_load(tmp_path / "missing.ckpt")


class _Windows:
    """A window sampler stand-in: a new permutation (offset by 100 x epoch) every epoch."""

    def __init__(self, n):
        self.n, self.epoch = n, 0

    def set_epoch(self, e):
        self.epoch = e

    def __len__(self):
        return self.n

    def __iter__(self):
        rng = np.random.default_rng(self.epoch)
        return iter((rng.permutation(self.n) + 100 * self.epoch).tolist())


def test_resumable_loader_continues_where_the_checkpoint_was():
    ds = list(range(1000))
    full = ResumableLoader(ds, _Windows(100), batch_size=8, collate_fn=list)
    full.window_sampler.set_epoch(3)
    batches = list(full)
    assert len(batches) == len(full) == 12  # the incomplete batch is dropped
    resumed = ResumableLoader(ds, _Windows(100), batch_size=8, collate_fn=list)
    resumed.load_state_dict({"epoch": 3, "batches_done": 5})
    assert list(resumed) == batches[5:]
    assert list(resumed) == batches  # the next pass is a whole epoch again


def test_resumable_loader_after_an_epochs_last_batch_starts_the_next_epoch():
    ds = list(range(1000))
    loader = ResumableLoader(ds, _Windows(100), batch_size=8, collate_fn=list)
    loader.load_state_dict({"epoch": 3, "batches_done": 12})  # all 12 batches of epoch 3 trained
    assert loader.window_sampler.epoch == 4
    loader.batch_sampler.sampler.set_epoch(4)  # what Lightning does at the epoch start
    whole = ResumableLoader(ds, _Windows(100), batch_size=8, collate_fn=list)
    whole.window_sampler.set_epoch(4)
    assert list(loader) == list(whole)  # epoch 4 whole, nothing skipped


class _Recorder(L.Callback):
    """Every training sample as (epoch, session, window start, units kept)."""

    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        cu = batch["input"]["cu_seqlens"].tolist()
        units = batch["input"]["unit_index"]
        for i, sid in enumerate(batch["session_id"]):
            kept = tuple(sorted(set(units[cu[i] : cu[i + 1]].tolist())))
            self.seen.append((trainer.current_epoch, sid, round(float(batch["absolute_start"][i]), 9), kept))


def _fit_three_epochs(root, seed):
    readouts = [ReadoutConfig("cursor_velocity_2d", std=10.0)]
    dm = DataModule(
        root,
        readouts,
        batch_size=8,
        num_workers=0,
        validate=False,
        seed=seed,
        unit_dropout={"min_units": 5, "mode_units": 10, "max_units": 20},
    )
    model = POYO(
        dim=16,
        depth=1,
        dim_head=16,
        num_latents_per_step=2,
        cross_heads=1,
        self_heads=1,
        unit_ids=dm.unit_ids,
        session_ids=dm.session_ids,
    )
    dm.attach(model)
    module = POYOModule(model, {"name": "adamw", "base_lr": 1e-4}, global_batch_size=8, total_steps=100)
    rec = _Recorder()
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False, callbacks=[rec],
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return rec.seen, dm.train_loader.state_dict()


def test_every_epoch_draws_new_windows_and_dropout_reproducibly(synthetic_root):
    """Through the real Trainer: Lightning's set_epoch reaches the window sampler."""
    seen, state = _fit_three_epochs(synthetic_root, seed=3)
    epochs = [[s[1:] for s in seen if s[0] == e] for e in range(3)]
    assert len(epochs[0]) == len(epochs[1]) == len(epochs[2]) > 0
    assert state["epoch"] == 2
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert [w[:2] for w in epochs[a]] != [w[:2] for w in epochs[b]]  # other windows or order
        assert set(w[:2] for w in epochs[a]) != set(w[:2] for w in epochs[b])  # other window offsets
        assert sorted(len(w[2]) for w in epochs[a]) != sorted(len(w[2]) for w in epochs[b])  # new dropout draws
    assert all(len(w[2]) <= 20 for e in epochs for w in e)  # dropout kept at most max_units
    again, _ = _fit_three_epochs(synthetic_root, seed=3)
    assert again == seen  # deterministic for a seed
    other, _ = _fit_three_epochs(synthetic_root, seed=4)
    assert [s[1:3] for s in other] != [s[1:3] for s in seen]


def test_binned_counts_count_spikes_in_bins_around_each_time():
    times = np.array([0.01, 0.04, 0.06, 0.095, 0.12])
    units = np.array([0, 1, 0, 0, 1])
    x = binned_counts(times, units, 2, np.array([0.1]), bin_s=0.05, before=2, after=1)
    # bins [0, 0.05), [0.05, 0.1), [0.1, 0.15): unit 0 has 0.01 | 0.06, 0.095 | -; unit 1 has 0.04 | - | 0.12
    assert x.tolist() == [[[1, 2, 0], [1, 0, 1]]]
    centred = binned_counts(times, units, 2, np.array([0.075]), bin_s=0.05, before=1, after=0, offset=0.025)
    assert centred.tolist() == [[[2], [0]]]  # the bin [0.05, 0.1) centred on 0.075


def test_ridge_fits_solve_the_normal_equations_of_every_penalty():
    rng = np.random.default_rng(0)
    x = rng.poisson(0.3, (300, 40)).astype(np.float64)
    x[:, 7] = 0.0  # a silent unit: the gram matrix is singular without the penalty
    x -= x.mean(0)
    gram, xy = x.T @ x, x.T @ rng.normal(size=(300, 2))
    scale = np.mean(np.diag(gram))
    fits = ridge_fits(gram, xy, ALPHAS)
    assert list(fits) == list(ALPHAS)
    for alpha, w in fits.items():
        np.testing.assert_allclose((gram + alpha * scale * np.eye(40)) @ w, xy, rtol=0, atol=1e-9 * np.abs(xy).max())
    assert ridge_fits(gram, xy[:, 0], [1.0])[1.0].shape == (40,)
    with pytest.raises(ValueError, match="square gram"):
        ridge_fits(gram[:, :5], xy, [1.0])


def test_training_killed_at_an_epoch_boundary_resumes_and_trains_exactly_the_planned_steps(tmp_path):
    """SIGKILL right after the checkpoint of an epoch's last batch; the resumed run must start
    the next epoch (not skip it) and end with the loader where an uninterrupted run ends."""
    from poyo.data import Dataset, RandomFixedWindowSampler
    from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure

    cfg = SyntheticConfig(
        num_animals=1, sessions_per_animal=2, duration_s=60.0, min_units=10, max_units=20, random_target_every=3
    )
    ensure(tmp_path / "data" / "synthetic_reaching", cfg, progress=False)  # what train.py would generate
    windows = len(RandomFixedWindowSampler(Dataset(tmp_path / "data", validate=False).sampling_intervals("train"), 1.0))
    per_epoch = windows // 8
    steps = 3 * per_epoch + 2
    args = [
        sys.executable, str(ROOT / "train.py"), f"data_root={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
        "dataset.generate.num_animals=1", "dataset.generate.sessions_per_animal=2", "dataset.generate.duration_s=60",
        "dataset.generate.min_units=10", "dataset.generate.max_units=20", "num_workers=0", "batch_size=8",
        f"trainer.max_steps={steps}", f"trainer.checkpoint_every_n_steps={per_epoch}", "trainer.check_val_every_n_epoch=100",
    ]  # fmt: skip
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["global_step"] >= per_epoch:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = torch.load(last, weights_only=True)  # intact after the kill
    assert killed["global_step"] in (per_epoch, 2 * per_epoch, 3 * per_epoch)  # checkpoints fall on epoch ends
    loader = killed["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader == {"epoch": killed["global_step"] // per_epoch - 1, "batches_done": per_epoch}
    out = subprocess.run([*args, "resume=true"], capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resuming from {last}" in out.stdout
    final = torch.load(last, weights_only=True)
    assert final["global_step"] == steps
    assert final["lr_schedulers"][0]["last_epoch"] == steps  # the schedule continued, not restarted
    # where an uninterrupted run ends: epoch 3, two batches in (an epoch skipped would say 4)
    assert final["loops"]["fit_loop"]["state_dict"]["combined_loader"][0] == {"epoch": 3, "batches_done": 2}


class _Toy(L.LightningModule):
    """Records every batch it trains on; a checkpoint every step."""

    def __init__(self, seen):
        super().__init__()
        self.lin, self.seen = torch.nn.Linear(1, 1), seen

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch_idx, tuple(batch)))
        self.trainer.train_dataloader.batches_done += 1
        return self.lin(torch.ones(1, 1)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return ResumableLoader(list(range(1000)), _Windows(12), batch_size=4, collate_fn=list)


def _toy_fit(ckpt_dir, max_steps, resume=None):
    seen = []
    cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = L.Trainer(
        max_steps=max_steps, max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[cb], use_distributed_sampler=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(_Toy(seen), ckpt_path=resume)
    return seen


@pytest.mark.parametrize("stop", [2, 3, 4, 6])  # mid-epoch, epoch end, start of the next, epoch end
def test_a_resumed_run_sees_the_batches_of_an_uninterrupted_one(tmp_path, stop):
    whole = _toy_fit(tmp_path / "a", 9)
    assert len({b for _, _, b in whole}) == 9  # 3 epochs of 3 batches, every epoch reshuffled
    first = _toy_fit(tmp_path / "b", stop)
    rest = _toy_fit(tmp_path / "b", 9, resume=str(tmp_path / "b" / "last.ckpt"))
    assert first + rest == whole


def test_adamw_is_fused_on_cpu_and_follows_the_plain_rule():
    """AdamW runs fused where the weights are (one kernel per tensor: ~5x cheaper on CPU) and
    moves the weights as the unfused rule does, to rounding, over 20 steps."""
    from poyo.training.optim import build_optimizer, param_groups

    def model():
        return POYO(dim=16, depth=1, dim_head=8, cross_heads=1, self_heads=2, unit_ids=["a", "b"], session_ids=["s"])

    fused_model, plain_model = model(), model()
    fused = build_optimizer(fused_model, name="adamw", lr=1e-2, weight_decay=0.1)
    same = {k: fused.defaults[k] for k in ("lr", "betas", "eps", "weight_decay")}
    plain = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "sparse"} for g in param_groups(plain_model, 0.1)], **same
    )
    assert all(g["fused"] for g in fused.param_groups) and not any(g["fused"] for g in plain.param_groups)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        for p, q in zip(fused_model.parameters(), plain_model.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        fused.step(), plain.step()
    moved = 0.0
    for (name, p), q, p0 in zip(fused_model.named_parameters(), plain_model.parameters(), model().parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
        moved = max(moved, (p - p0).abs().max().item())
    assert moved > 0.1  # 20 steps of lr 0.01 moved the weights

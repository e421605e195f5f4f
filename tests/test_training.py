"""Training pieces: stitching by sample index, LAMB's sparse rows, the schedule, atomic
checkpoints, the resumable loader, the Wiener baseline, and resume after SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from poyo.model.pretrained import safe_load
from poyo.training.checkpoint import atomic_save
from poyo.training.module import ResumableLoader
from poyo.training.optim import Lamb, schedule
from poyo.training.stitch import Stitcher, r2_score
from poyo.training.wiener import history_features

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


def test_gathered_parts_merge_like_one_process():
    """What DDP gather does: merging per-rank merged parts equals stitching everything at once."""
    rng = np.random.default_rng(0)
    chunks = [(np.sort(rng.choice(50, 20, replace=False)), rng.normal(size=(20, 2))) for _ in range(6)]
    whole, ranks = Stitcher(), [Stitcher(), Stitcher()]
    for k, (idx, pred) in enumerate(chunks):
        r, _ = rows(idx, np.zeros((20, 2)))
        whole.add(["s"], "cursor_velocity_2d", r, torch.tensor(pred))
        ranks[k % 2].add(["s"], "cursor_velocity_2d", r, torch.tensor(pred))
    merged = Stitcher()
    merged._chunks[("s", "cursor_velocity_2d")] = [rk._merge(("s", "cursor_velocity_2d")) for rk in ranks]
    a, b = whole.stitched()[("s", "cursor_velocity_2d")], merged.stitched()[("s", "cursor_velocity_2d")]
    np.testing.assert_array_equal(a["sample_index"], b["sample_index"])
    np.testing.assert_allclose(a["pred"], b["pred"], rtol=1e-12)


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
    def __init__(self, n):
        self.n, self.epoch = n, 0

    def set_epoch(self, e):
        self.epoch = e

    def __len__(self):
        return self.n

    def __iter__(self):
        rng = np.random.default_rng(self.epoch)
        return iter(rng.permutation(self.n).tolist())


def test_resumable_loader_continues_where_the_checkpoint_was():
    ds = list(range(100))
    full = ResumableLoader(ds, _Windows(100), batch_size=8, collate_fn=list)
    full.window_sampler.set_epoch(3)
    batches = list(full)
    assert len(batches) == len(full) == 12  # the incomplete batch is dropped
    resumed = ResumableLoader(ds, _Windows(100), batch_size=8, collate_fn=list)
    resumed.load_state_dict({"epoch": 3, "batches_done": 5})
    assert list(resumed) == batches[5:]
    assert list(resumed) == batches  # the next pass is a whole epoch again


def test_history_features_count_spikes_in_bins_before_each_time():
    times = np.array([0.01, 0.04, 0.06, 0.095, 0.12])
    units = np.array([0, 1, 0, 0, 1])
    x = history_features(times, units, 2, np.array([0.1]), bin_s=0.05, lags=2)
    # unit 0: [0.05, 0.1) has 0.06, 0.095; [0.0, 0.05) has 0.01. unit 1: [0.0, 0.05) has 0.04
    assert x.tolist() == [[2, 1, 0, 1]]


def test_training_killed_with_sigkill_resumes_and_finishes(tmp_path):
    args = [
        sys.executable, str(ROOT / "train.py"), f"data_root={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
        "dataset.generate.num_animals=1", "dataset.generate.sessions_per_animal=2", "dataset.generate.duration_s=60",
        "dataset.generate.min_units=10", "dataset.generate.max_units=20", "num_workers=0", "batch_size=8",
        "trainer.max_steps=60", "trainer.checkpoint_every_n_steps=4", "trainer.check_val_every_n_epoch=100",
    ]  # fmt: skip
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if last.exists():
            try:
                step = torch.load(last, weights_only=True)["global_step"]
            except Exception:  # pragma: no cover - a torn file would fail the test below
                raise
            if step >= 8:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=True)["global_step"]  # intact after the kill
    assert 8 <= killed_at < 60
    out = subprocess.run([*args, "resume=true"], capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resuming from {last}" in out.stdout
    final = torch.load(last, weights_only=True)
    assert final["global_step"] == 60
    assert final["lr_schedulers"][0]["last_epoch"] == 60  # the schedule continued, not restarted

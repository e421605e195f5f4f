"""Data parallelism with Lightning DDP: 2 CPU processes (gloo) against one process.

The global batch is split over the ranks from one shared window permutation, and the loss
is normalised by the global weight sum, so 2 processes take exactly the optimiser steps of
one process (up to float summation order); evaluation intervals are dealt whole to ranks
and gathered, so the stitched test scores are equal too. The same holds for masked modelling
(objective=mtm, one scheme so that every rank's share of a batch draws the same one): its
Poisson loss is normalised by the global number of (unit, bin) entries."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


MTM = ["objective=mtm", "mtm.schemes.causal=0", "mtm.schemes.intra_region=0", "mtm.schemes.inter_region=0",
       "dataset=synthetic_regions", "dataset.generate.regions=2", "dataset.generate.unlabelled_every=0",
       "mtm.report_sessions=1"]  # fmt: skip


@pytest.mark.parametrize("objective", ["supervised", "mtm"])
def test_two_process_ddp_matches_one_process(tmp_path, objective):
    common = [
        sys.executable, str(ROOT / "train.py"), f"data_root={tmp_path / 'data'}",
        "dataset.generate.num_animals=1", "dataset.generate.sessions_per_animal=2", "dataset.generate.duration_s=60",
        "dataset.generate.min_units=10", "dataset.generate.max_units=20", "num_workers=0", "batch_size=16",
        "trainer.max_steps=4", "trainer.check_val_every_n_epoch=100", "model.ffn_dropout=0", "model.lin_dropout=0",
        "trainer.precision=32-true",  # exact to fp32 summation order; bf16 rounding would differ by split
        # Adam moves a weight by about lr whatever its gradient's size, so a gradient that is a
        # near-cancelling sum would turn summation-order rounding into a full step (seen once:
        # 1.1e-4 in token_type_emb); an eps far above such rounding keeps those steps tiny
        "optim.eps=1e-4",
        *(MTM if objective == "mtm" else []),
    ]  # fmt: skip
    one = subprocess.run(
        [*common, f"hydra.run.dir={tmp_path / 'one'}"], capture_output=True, text=True, timeout=400, cwd=tmp_path
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [*common, f"hydra.run.dir={tmp_path / 'two'}", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "two" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    for k, v in a["state_dict"].items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(b["state_dict"][k], v, atol=2e-5, rtol=1e-4)
    init = torch.load(tmp_path / "one" / "checkpoints" / "last.ckpt", weights_only=True)  # weights did move from init:
    assert init["optimizer_states"][0]["state"]  # the optimiser has taken steps
    if objective == "mtm":  # the held-out units' bits per spike, gathered from both ranks
        ma = json.loads((tmp_path / "one" / "mtm_results.json").read_text())["tasks"]
        mb = json.loads((tmp_path / "two" / "mtm_results.json").read_text())["tasks"]
        assert ma.keys() == mb.keys()
        for sid in ma:
            assert abs(ma[sid]["co_smoothing"]["model"] - mb[sid]["co_smoothing"]["model"]) < 1e-4
        return
    ra = json.loads((tmp_path / "one" / "test_results.json").read_text())
    rb = json.loads((tmp_path / "two" / "test_results.json").read_text())
    assert [s["session"] for s in ra["sessions"]] == [s["session"] for s in rb["sessions"]]
    for x, y in zip(ra["sessions"], rb["sessions"]):
        assert abs(x["poyo_r2"] - y["poyo_r2"]) < 1e-4

"""A brainset folder trains with no hand-written config: the behaviour to decode is found in
the sessions, its normalisation comes from the training split and travels with the model;
the linear baselines see the same context as POYO (window) or only the past (causal)."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from poyo.data import Dataset
from poyo.data.discover import behaviour_fields, choose_behaviour, readout_name
from poyo.model import POYO, load_pretrained, save_pretrained
from poyo.pipelines.arrays import from_binned_counts, from_spike_times, write_session
from poyo.readouts import READOUTS, ReadoutConfig, fit_normalisation
from poyo.training.linear import LinearBaseline

ROOT = Path(__file__).resolve().parents[1]


def binned_session(root, brainset="lab", session="s1", bins=6000, units=12, seed=0, **behaviour):
    """Counts driven by a smooth 2-D velocity (cosine tuning), like a reaching recording."""
    rng = np.random.default_rng(seed)
    vel = np.stack([np.convolve(rng.normal(size=bins), np.ones(20) / 20, "same") for _ in range(2)], 1) * 40
    pref = rng.uniform(0, 2 * np.pi, units)
    rate = np.exp(0.5 + 0.08 * (vel @ np.stack([np.cos(pref), np.sin(pref)])))
    counts = rng.poisson(rate * 0.05 * 20)
    behaviour = behaviour or {"hand.vel": vel * 3 + 100.0}
    return write_session(
        from_binned_counts(counts, 0.05, behaviour, brainset=brainset, session_id=session, seed=seed), root
    )


def test_choose_behaviour_takes_the_only_series_or_the_only_velocity(tmp_path):
    vel = np.zeros((2000, 2))
    binned_session(tmp_path / "a", bins=2000, **{"hand.vel": vel, "hand.pos": vel, "eye.x": vel[:, 0]})
    assert behaviour_fields(tmp_path / "a" / "lab" / "s1.h5") == {"hand.vel": 2, "hand.pos": 2, "eye.x": 1}
    assert choose_behaviour(tmp_path / "a" / "lab") == ("hand.vel", 2)
    assert choose_behaviour(tmp_path / "a" / "lab", "eye.x") == ("eye.x", 1)
    with pytest.raises(
        KeyError,
        match=r"behaviour 'eye\.y' is not in every session .* shared series: \['eye.x', 'hand.pos', 'hand.vel'\]",
    ):
        choose_behaviour(tmp_path / "a" / "lab", "eye.y")
    binned_session(tmp_path / "b", bins=2000, **{"hand.pos": vel, "eye.pos": vel})
    with pytest.raises(
        KeyError, match=r"several behaviour series \['eye.pos', 'hand.pos'\]; pick one with dataset.behaviour=KEY"
    ):
        choose_behaviour(tmp_path / "b" / "lab")
    specs = list(READOUTS.values())
    assert readout_name("hand.vel", 2, specs) == "hand_velocity_2d" and readout_name("eye.x", 1, specs) == "eye_x_1d"


def test_normalisation_comes_from_the_training_split_and_far_off_stds_are_reported(tmp_path):
    binned_session(tmp_path)
    ds = Dataset(tmp_path, behaviour=["hand.vel"])
    train = ds.behaviour("lab/s1", "hand.vel", "train").values
    (r,) = fit_normalisation(ds, [ReadoutConfig("hand_velocity_2d", mean=None, std=None)])
    np.testing.assert_allclose(r.mean_vector, train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(r.std_vector, train.std(0), rtol=1e-5)
    assert abs(r.mean_vector.mean() - 100.0) < 10.0  # the offset of the data, not 0
    with pytest.warns(UserWarning, match=r"std \[1000.0, 1000.0\] is up to \d+x off the std of 'hand.vel'"):
        fit_normalisation(ds, [ReadoutConfig("hand_velocity_2d", std=1000.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (kept,) = fit_normalisation(
            ds, [ReadoutConfig("hand_velocity_2d", std=float(train.std()))]
        )  # close: silent, kept
    assert kept.mean_vector.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="mean/std not set"):
        POYO(readouts=["hand_velocity_2d"], unit_ids=ds.unit_ids, session_ids=ds.session_ids).tokenizer(
            [ReadoutConfig("hand_velocity_2d", std=None)]
        )


def test_a_declared_readout_is_registered_and_travels_with_the_checkpoint(tmp_path):
    cfg = ReadoutConfig("pupil_area_1d", key="pupil.area", dim=1, kind="continuous", mean=2.0, std=0.5)
    assert READOUTS["pupil_area_1d"].dim == 1
    with pytest.raises(ValueError, match="registered with dim 2"):
        ReadoutConfig("cursor_velocity_2d", dim=3)
    model = POYO(
        dim=16,
        depth=0,
        dim_head=16,
        num_latents_per_step=2,
        readouts=["pupil_area_1d"],
        unit_ids=["u"],
        session_ids=["s"],
    )
    save_pretrained(model, tmp_path / "m.pt", readouts=[cfg])
    code = (
        "from poyo.model import load_pretrained; m = load_pretrained(r'%s'); r = m.readout_configs[0];"
        "print(m.readout['pupil_area_1d'].out_features, r.key, r.denormalise([1.0]).tolist())" % (tmp_path / "m.pt")
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)  # a fresh registry
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "pupil.area", "[2.5]"]


def test_the_window_decoder_sees_the_future_and_the_causal_one_does_not(tmp_path):
    """Behaviour = a unit's spike count in the 0.1-0.3 s *after* each sample."""
    rng = np.random.default_rng(3)
    duration = 400.0
    spikes = [np.sort(rng.uniform(0, duration, int(duration * r))) for r in (30.0, 10.0, 10.0)]
    t = np.arange(0.0, duration, 0.02)
    ahead = np.searchsorted(spikes[0], t + 0.3) - np.searchsorted(spikes[0], t + 0.1)
    data = from_spike_times(
        spikes, ["a", "b", "c"], {"x.count": (t, ahead.astype(float))}, brainset="lab", session_id="future"
    )
    write_session(data, tmp_path)
    ds = Dataset(tmp_path, behaviour=["x.count"])
    cfg = ReadoutConfig("x_count_1d", key="x.count", dim=1)
    res = LinearBaseline(bin_s=0.05, context_s=1.0, step_s=0.25).evaluate(ds, cfg)
    window, causal = res["window"]["lab/future"], res["causal"]["lab/future"]
    assert window["r2"] > 0.75 and window["after_s"] >= 0.25
    assert causal["r2"] < 0.1 and causal["after_s"] == 0
    assert len(window["pred"]) == len(window["sample_index"]) == len(window["time"])


@pytest.mark.slow
def test_train_py_on_an_imported_folder_needs_no_config(tmp_path):
    data = tmp_path / "data"
    binned_session(
        data,
        brainset="my_rec",
        **{"head.dir": np.stack([np.cos(np.arange(6000) / 50), np.sin(np.arange(6000) / 50)], 1) * 3},
    )
    args = [
        sys.executable, str(ROOT / "train.py"), "dataset=my_rec", f"data_root={data}", f"hydra.run.dir={tmp_path / 'run'}",
        "num_workers=0", "batch_size=16", "trainer.max_steps=20", "trainer.check_val_every_n_epoch=1",
    ]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "readout head_dir_2d: decoding 'head.dir' (2 dims)" in out.stdout
    assert "of 2 s windows" in out.stdout  # window_length=auto: the recipe's 2 s from scratch
    assert "linear R2" in out.stdout and "too little to choose by" in out.stdout  # 30 s of validation: final weights
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "model.pt", weights_only=True)
    (r,) = ckpt["readouts"]
    assert r["name"] == "head_dir_2d" and r["dim"] == 2 and r["key"] == "head.dir"
    assert all(2.0 < s < 2.3 for s in r["std"])  # 3 cos, 3 sin: std ~2.12 each
    model = load_pretrained(tmp_path / "run" / "checkpoints" / "model.pt")
    assert model.readout["head_dir_2d"].out_features == 2 and model.config.window_length == 2.0
    ev = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "dataset=my_rec", f"data_root={data}", f"hydra.run.dir={tmp_path / 'eval'}", "mode=evaluate",
         f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'model.pt'}", "num_workers=0"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-3000:]  # evaluated on the model's own 2 s windows: the same score
    same = json.loads((tmp_path / "eval" / "test_results.json").read_text())["poyo_mean_r2"]
    assert abs(same - json.loads((tmp_path / "run" / "test_results.json").read_text())["poyo_mean_r2"]) < 1e-6

"""What train.py derives from the settings before it trains: the steps it plans and the epochs
it shows, the augmentation a dataset config asks for (or not), the validation-length warning,
and the readable stretches the test plot draws."""

import warnings
from pathlib import Path

import numpy as np
import pytest

from poyo.data import Dataset, FractionUnitDropout, RandomFixedWindowSampler, SpikeJitter, UnitDropout
from poyo.pipelines.arrays import from_binned_counts, write_session
from poyo.readouts import ReadoutConfig
from poyo.training.config import SettingError, compose
from poyo.training.plots import segments

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def train():
    """What train.py runs, as functions."""
    from poyo.training import run

    return run


def config(*overrides):
    return compose(*overrides)


def recording(root, seconds: float, units: int = 8, seed: int = 0) -> Path:
    """One session of binned counts (no trials: 10 time blocks dealt 8/1/1)."""
    rng = np.random.default_rng(seed)
    bins = int(seconds / 0.05)
    vel = rng.normal(size=(bins, 2))
    counts = rng.poisson(1.0, size=(bins, units))
    write_session(
        from_binned_counts(counts, 0.05, {"hand.vel": vel}, brainset="lab", session_id="rec", seed=seed), root
    )
    return root / "lab"


def test_planned_steps_take_min_steps_and_the_progress_bar_shows_the_epochs_they_need(train, tmp_path):
    cfg = config()
    assert (cfg.trainer.max_epochs, cfg.trainer.min_steps, cfg.trainer.max_steps) == (20, 1000, -1)
    assert train.planned_steps(cfg, 42) == 1000  # 20 epochs of 42 batches fall short of min_steps
    assert train.planned_steps(cfg, 100) == 2000  # 20 epochs are more
    recipe = config("+dataset.min_epochs=70")  # a recipe's own least epochs (dataset=<folder>: one recording)
    assert train.planned_steps(recipe, 42) == 2940 and train.planned_steps(recipe, 13) == 1000  # min_steps still holds
    assert train.planned_steps(config("+dataset.min_epochs=10"), 200) == 4000  # trainer.max_epochs (20) is more
    # ... which is about decoding behaviour: masked modelling alone takes trainer.max_epochs, and no spike jitter
    spikes_only = config("+dataset.min_epochs=70", "+dataset.spike_jitter=0.025", "objective=mtm")
    assert train.planned_steps(spikes_only, 2) == 1000 and spikes_only.spike_jitter == 0.0
    assert config("+dataset.spike_jitter=0.025", "objective=both").spike_jitter == 0.025
    cfg.trainer.max_steps = 12
    assert train.planned_steps(cfg, 42) == 12  # max_steps overrides both
    trainer = train.make_trainer(cfg, tmp_path, logger=False, total_steps=1000, steps_per_epoch=42)
    # the epoch count shown is the one the steps take (it read "Epoch 31/-2" with max_steps set)
    assert (trainer.max_epochs, trainer.max_steps) == (24, 1000)


def test_a_dataset_config_without_augmentation_keys_trains_without_augmentation(train, tmp_path):
    root = recording(tmp_path, 300)
    readouts = [ReadoutConfig("hand_velocity_2d", std=1.0)]
    cfg = config("num_workers=0", "validate_data=false")
    cfg.dataset.unit_dropout = None  # a hand-written dataset YAML that names neither key
    assert train.make_datamodule(cfg, root, readouts, progress=False).augment == []
    cfg.dataset.unit_dropout = {"min_fraction": 0.5}
    cfg.dataset.spike_jitter = 0.02
    kinds = [type(t) for t in train.make_datamodule(cfg, root, readouts, progress=False).augment]
    assert kinds == [FractionUnitDropout, SpikeJitter]
    cfg.dataset.unit_dropout = {"min_units": 3, "mode_units": 5, "max_units": 8}
    assert type(train.make_datamodule(cfg, root, readouts, progress=False).augment[0]) is UnitDropout


def test_a_short_validation_split_is_warned_about(train, tmp_path):
    short = Dataset(recording(tmp_path / "short", 300), behaviour=["hand.vel"], validate=False)  # 30 s of validation
    with pytest.warns(UserWarning, match=r"validation split holds only 30 s"):
        train.warn_short_validation(short)
    long = Dataset(recording(tmp_path / "long", 1500), behaviour=["hand.vel"], validate=False)  # 150 s
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.warn_short_validation(long)


def test_plot_stretches_are_readable_and_spread_over_a_long_block():
    t = np.arange(0, 176, 0.05)  # one 176 s test block without trials (the S1 recording's)
    pieces = segments(t, 3)
    assert len(pieces) == 3
    assert all(t[p[-1]] - t[p[0]] <= 8.0 for p in pieces)
    assert t[pieces[0][0]] < 10 and t[pieces[-1][-1]] > 160  # from the start to the end, in time order
    assert all(t[a[-1]] < t[b[0]] for a, b in zip(pieces, pieces[1:]))


def test_plot_stretches_keep_whole_trials_and_never_invent_panels():
    t = np.r_[np.arange(0, 2, 0.01), np.arange(10, 12.5, 0.01)]  # two trials, fewer than 3 panels
    pieces = segments(t, 3)
    assert [len(p) for p in pieces] == [200, 250]
    assert segments(np.array([]), 3) == []


def test_the_documented_overrides_reach_their_typed_fields(tmp_path):
    """The overrides the README and the guide show, composed as ``poyo train`` composes them."""
    cfg = config("model=poyo_1.3M", "optim=lamb", "trainer.max_steps=20000", "batch_size=128", "seed=3")
    assert (cfg.model.name, cfg.model.depth, cfg.optim.name, cfg.trainer.max_steps, cfg.batch_size, cfg.seed) == (
        "poyo_1.3M", 6, "lamb", 20000, 128, 3,
    )  # fmt: skip
    assert cfg.optim.peak_lr(cfg.batch_size) == 3.125e-5 * 128
    cfg = config("dataset=my_lab", "train_seconds=120", "finetune=unit_identification", "finetune.checkpoint=m.pt")
    assert (cfg.dataset.name, cfg.dataset.readouts, cfg.dataset.min_epochs, cfg.train_seconds) == (
        "my_lab",
        "auto",
        70,
        120.0,
    )
    assert (cfg.finetune.mode, cfg.finetune.checkpoint, cfg.finetune.init) == (
        "unit_identification",
        "m.pt",
        "statistics",
    )
    cfg = config("dataset=synthetic_regions", "objective=mtm", "model.time_prior=4", "mtm.schemes.causal=0")
    assert cfg.dataset.generate["regions"] == 3 and cfg.model.time_prior == 4.0 and cfg.mtm.schemes["causal"] == 0
    cfg = config("mode=evaluate", "checkpoint=x.ckpt", "logger=tensorboard", "attention=varlen", "layout=packed")
    assert (cfg.mode, cfg.checkpoint, cfg.logger.name, cfg.attention, cfg.layout) == (
        "evaluate",
        "x.ckpt",
        "tensorboard",
        "varlen",
        "packed",
    )
    cfg = config(
        "trainer.devices=8", "trainer.num_nodes=2", "trainer.precision=32-true", "resume=true", "baseline.gru=true"
    )
    assert (cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.precision, cfg.resume, cfg.baseline.gru) == (
        8,
        2,
        "32-true",
        True,
        True,
    )
    assert config("dataset.circular=false", "dataset=lab2").dataset.circular is False
    assert config("trainer.compile=true").trainer.compile is True and config().trainer.compile is False
    with pytest.raises(SettingError, match=r"trainer.compile.*must be true or false"):
        config("trainer.compile=maybe")
    with pytest.raises(SettingError, match=r"mode=evaluate needs checkpoint=PATH"):
        config("mode=evaluate")
    # a dataset config of one's own, in a folder named on the command line, is used as written
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "mine.yaml").write_text("name: mine\nreadouts: auto\nspike_jitter: 0.01\n")
    mine = config("dataset=mine", f"hydra.searchpath=[file://{tmp_path}]").dataset
    assert (mine.spike_jitter, mine.unit_dropout, mine.min_epochs) == (0.01, None, 0)


def test_a_run_config_round_trips_and_refuses_what_it_does_not_know():
    from poyo.training.config import RunConfig

    cfg = config("model.dim=32", "optim.base_lr=1e-4", "sessions=[a/b]")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.with_changes(**{"trainer.max_steps": 7}).trainer.max_steps == 7 and cfg.trainer.max_steps == -1
    with pytest.raises(SettingError, match=r"setting model.wide: unknown to POYOConfig"):
        RunConfig.from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "wide": 1}})
    with pytest.raises(SettingError, match=r"setting trainer.max_steps=2.5: must be an integer"):
        cfg.with_changes(**{"trainer.max_steps": 2.5})


def test_half_windows_reach_the_training_loader_and_a_model_reads_both_lengths(train, tmp_path):
    import torch

    from poyo.model import POYO

    root = recording(tmp_path, 300, units=6)
    readouts = [ReadoutConfig("hand_velocity_2d", std=1.0)]
    cfg = config("window_length=2", "half_windows=0.5", "num_workers=0", "validate_data=false").resolved()
    assert cfg.batch_size == 21  # 32 s of windows that last 1.5 s on average
    dm = train.make_datamodule(cfg, root, readouts, progress=False)
    lengths = np.array([w.end - w.start for w in dm.train_sampler()])
    whole = len(RandomFixedWindowSampler(dm.train_set.sampling_intervals("train"), 2.0))
    assert whole > 100 and len(lengths) == whole + round(whole / 3)  # a third of them cut in two ...
    assert np.isclose(lengths, 1.0).sum() == 2 * round(whole / 3)  # ... so half of all windows last 1 s
    model = POYO(dim=16, depth=1, dim_head=16, num_latents_per_step=2, cross_heads=1, self_heads=1,
                 readouts=["hand_velocity_2d"], unit_ids=dm.unit_ids, session_ids=dm.session_ids, window_length=2.0)  # fmt: skip
    dm.attach(model)
    batch = next(iter(dm.train_dataloader()))
    latents_per_window = torch.diff(batch["latent"]["cu_seqlens"]).tolist()
    assert sorted(set(latents_per_window)) == [16, 32]  # 8 and 16 grid steps of 2 latents
    out = model(batch)
    assert all(torch.isfinite(v).all() for v in out.values())

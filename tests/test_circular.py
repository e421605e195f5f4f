"""Circular readouts: an angle is decoded through its (cos, sin), scored on the unit circle."""

import numpy as np
import pytest
import torch

from poyo.data import Series, Window
from poyo.data.discover import angle_period, readout_name
from poyo.model import POYO, Tokenizer
from poyo.readouts import ReadoutConfig, ReadoutSpec, readout_loss
from poyo.training.stitch import angular_error_deg, circular_r2, score


def test_spec_has_two_outputs_per_angle():
    spec = ReadoutSpec("test_two_angles", 2, "circular", "arm.angles")
    assert (spec.dim, spec.out_dim) == (2, 4)
    assert ReadoutSpec("x", 2, "continuous", "a.b").out_dim == 2


@pytest.mark.parametrize("period", [2 * np.pi, 360.0])
def test_encode_decode_round_trip_wraps_into_one_turn(period):
    cfg = ReadoutConfig("test_angle_rt", key="head.dir", dim=1, kind="circular", period=period)
    turns = np.array([[0.0], [0.25], [0.49], [-0.49], [1.3]])  # 1.3 turns is 0.3 turns
    enc = cfg.encode(turns * period)
    assert enc.shape == (5, 2)
    np.testing.assert_allclose(enc[1], [0.0, 1.0], atol=1e-12)  # a quarter turn: cos 0, sin 1
    back = cfg.decode(enc) / period
    np.testing.assert_allclose(back[:, 0], [0.0, 0.25, 0.49, -0.49, 0.3], atol=1e-9)


def test_config_checks_and_checkpoint_round_trip():
    cfg = ReadoutConfig("test_angle_ck", key="head.dir", dim=1, kind="circular", period=360)
    again = ReadoutConfig(**cfg.to_dict())
    assert again.period == 360.0 and again.spec.kind == "circular" and again.normalised
    assert ReadoutConfig("test_angle_ck", key="head.dir", dim=1, kind="circular").period == pytest.approx(2 * np.pi)
    with pytest.raises(ValueError, match="period must be positive"):
        ReadoutConfig("test_angle_ck", key="head.dir", dim=1, kind="circular", period=0)
    with pytest.raises(ValueError, match="period is for circular readouts"):
        ReadoutConfig("cursor_velocity_2d", period=360)


def test_scores_see_across_the_wrap():
    rng = np.random.default_rng(0)
    truth = rng.uniform(-np.pi, np.pi, 500)
    enc = lambda a: np.stack([np.cos(a), np.sin(a)], 1)  # noqa: E731
    assert circular_r2(enc(truth), enc(truth), 1) == pytest.approx(1.0)
    # +179 deg against -179 deg is 2 deg apart, not 358
    assert angular_error_deg(enc(np.radians([179.0, -179.0])), enc(np.radians([-179.0, 179.0])), 1) == pytest.approx(
        2.0
    )
    # a fixed 10 deg offset: error 10 deg, R² = 1 - 2(1 - cos 10°) / (1 - |mean u|²)
    off = angular_error_deg(enc(truth + np.radians(10)), enc(truth), 1)
    assert off == pytest.approx(10.0, abs=1e-6)
    resultant = np.abs(np.exp(1j * truth).mean())
    expected = 1 - 2 * (1 - np.cos(np.radians(10))) / (1 - resultant**2)
    assert circular_r2(enc(truth + np.radians(10)), enc(truth), 1) == pytest.approx(expected, rel=1e-9)
    # always the mean vector scores 0; random directions about -1
    assert circular_r2(np.tile(enc(truth).mean(0), (500, 1)), enc(truth), 1) == pytest.approx(0.0, abs=1e-12)
    assert circular_r2(enc(rng.uniform(-np.pi, np.pi, 500)), enc(truth), 1) < -0.8
    # the angular error looks at the direction only
    assert angular_error_deg(3.0 * enc(truth + 0.1), enc(truth), 1) == pytest.approx(np.degrees(0.1))
    assert score(ReadoutSpec("test_angle_s", 1, "circular", "h.d"), enc(truth), enc(truth)) == pytest.approx(1.0)


def test_tokenizer_feeds_cos_sin_and_model_head_matches():
    cfg = ReadoutConfig("test_angle_tok", key="head.dir", dim=1, kind="circular")
    t = np.arange(0.005, 1.0, 0.01)
    angle = np.linspace(-3.0, 3.0, len(t))
    angle[5] = np.nan
    w = Window(
        session_id="b/s", start=0.0, end=1.0, unit_ids=np.array(["b/s/u0"]), spike_times=np.array([0.5]), spike_units=np.array([0]),
        behaviour={"head.dir": Series(t, angle, np.arange(len(t)))}, intervals={},
    )  # fmt: skip
    s = Tokenizer({"b/s/u0": 0}, {"b/s": 0}, [cfg], ["test_angle_tok"], num_latents_per_step=2)(w)
    tgt = s["target/test_angle_tok"]
    assert tgt["values"].shape == (len(t), 2)
    keep = np.isfinite(angle)
    np.testing.assert_allclose(
        tgt["values"].numpy()[keep], np.stack([np.cos(angle), np.sin(angle)], 1)[keep], atol=1e-6
    )
    assert tgt["weight"][5] == 0 and not tgt["eval_mask"][5]
    model = POYO(
        dim=16,
        depth=1,
        dim_head=8,
        num_latents_per_step=2,
        readouts=["test_angle_tok"],
        unit_ids=["b/s/u0"],
        session_ids=["b/s"],
    )
    assert model.readout["test_angle_tok"].out_features == 2
    # the MSE on (cos, sin) is zero for a perfect prediction and counts both components
    perfect = readout_loss(cfg.spec, tgt["values"], tgt["values"], tgt["weight"])
    assert float(perfect) == 0.0
    assert float(
        readout_loss(cfg.spec, torch.zeros_like(tgt["values"]), tgt["values"], tgt["weight"])
    ) == pytest.approx(0.5, rel=1e-5)


def _file_with(path, key, values):
    import h5py

    group, field = key.rsplit(".", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        g = f.create_group(group)
        g.attrs["object"] = "RegularTimeSeries"
        g.create_dataset(field, data=values)


@pytest.mark.parametrize(
    ("key", "values", "period"),
    [
        ("head.dir", np.linspace(-np.pi, np.pi, 50), 2 * np.pi),
        ("reach.reach_angle", np.linspace(0, 2 * np.pi, 50), 2 * np.pi),
        ("head.heading", np.linspace(0, 359, 50), 360.0),
        ("head.dir", np.linspace(0, 10, 50), None),  # between one and two turns of radians: unclear
        ("hand.vel", np.linspace(-1, 1, 50), None),  # not named like an angle
        ("head.dir", np.linspace(0, 500, 50), None),  # beyond one turn of degrees
    ],
)
def test_angle_period_guess(tmp_path, key, values, period):
    _file_with(tmp_path / "b" / "s.h5", key, values)
    got = angle_period(tmp_path / "b", key)
    assert got == (None if period is None else pytest.approx(period))


def test_readout_names_for_angles():
    assert readout_name("head.dir", 1, [], "circular") == "head_dir_angle"
    assert readout_name("arm.angles", 3, [], "circular") == "arm_angles_angle_3"
    assert readout_name("head.dir", 1, []) == "head_dir_1d"

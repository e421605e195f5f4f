"""poyo.Decoder: the README's example learns (it beats a Wiener filter fitted on the same 30 s),
predict equals train.py's stitched evaluation, bad input names the argument at fault, pynapple
objects read like arrays, and save/load keeps predictions."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

import poyo
from poyo.decoder import Session, _behaviour, _trains, session_id_of
from poyo.pipelines.synthetic_reaching import SyntheticConfig, session_arrays
from poyo.training.config import SettingError

ROOT = Path(__file__).resolve().parents[1]
SHORT = SyntheticConfig(duration_s=90.0, min_units=20, max_units=40, seed=3)


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## From Python: `poyo.Decoder`", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The README's example as written, run once for every test here that needs a trained decoder,
    with fewer steps to keep the suite short: pretraining 1,000 -> 250, unit identification
    300 -> 30 (new units start from their firing statistics)."""
    code = readme_example()
    assert "max_steps=1000" in code and "dec.adapt(new)" in code
    code = code.replace("max_steps=1000", "max_steps=250").replace("dec.adapt(new)", "dec.adapt(new, max_steps=30)")
    work = tmp_path_factory.mktemp("readme")
    assert "seed=0)" in code
    code = code.replace("seed=0)", f"seed=0, workdir={str(work / 'work')!r})", 1)  # keep the run folders
    scope: dict = {}
    with pytest.MonkeyPatch.context() as mp:  # anything temporary goes below the test's folder
        mp.setattr(tempfile, "tempdir", str(work))
        exec(compile(code, "README.md", "exec"), scope)
    return scope


@pytest.mark.slow
def test_readme_example_runs_and_beats_the_wiener_filter(readme_run):
    dec, new = readme_run["dec"], readme_run["new"]
    r2 = dec.score(new, intervals=[[60, 240]])["r2"]
    wiener, window = dec.report_["causal_mean_r2"], dec.report_["linear_mean_r2"]
    print(f"README example: POYO {r2:.3f}, Wiener (causal) {wiener:.3f}, window-matched linear {window:.3f}")
    assert r2 > wiener + 0.02, (r2, wiener)
    # score() and the run's own test report stitch the same windows over the same test samples
    assert abs(dec.report_["poyo_mean_r2"] - r2) < 1e-6
    assert len(dec.runs_) == 2 and all((r / "checkpoints" / "model.pt").is_file() for r in dec.runs_)


def test_predict_equals_train_py_stitched_evaluation(readme_run, tmp_path):
    from poyo.data import Dataset
    from poyo.training.config import compose
    from poyo.training.run import evaluate

    dec, a = readme_run["dec"], readme_run["new"]
    path = dec.save(tmp_path / "model.pt")
    sid = f"decoder/{a['session_id']}"
    cfg = compose("dataset=decoder", f"data_root={dec.workdir / 'data'}", f"checkpoint={path}", "mode=evaluate",
                  "num_workers=0", f"sessions=[{sid}]")  # fmt: skip
    out = evaluate(cfg, tmp_path / "eval")
    readout = dec.model_.readout_configs[0]
    st = out["stitched"][(sid, readout.name)]
    test = Dataset(dec.workdir / "data", sessions=[sid], validate=False).sessions[sid].splits["test"]
    pred = dec.predict(a, intervals=test)
    assert len(st["sample_index"]) > 100
    np.testing.assert_allclose(pred[st["sample_index"]], readout.decode(st["pred"]), rtol=0, atol=1e-5)
    outside = np.setdiff1d(np.arange(len(pred)), st["sample_index"])
    assert np.isnan(pred[outside]).all()  # nothing is predicted outside the intervals asked for


def test_save_load_keeps_predictions_and_predict_at_given_times(readme_run, tmp_path):
    dec, a = readme_run["dec"], readme_run["new"]
    back = poyo.Decoder.load(dec.save(tmp_path / "m.pt"), workdir=tmp_path / "w")
    np.testing.assert_array_equal(back.predict(a), dec.predict(a))
    t = a["behaviour"]["cursor.vel"][0]
    at = back.predict({k: a[k] for k in ("spike_times", "unit_ids", "session_id")}, timestamps=t[::7])
    assert at.shape == (len(t[::7]), 2) and np.isfinite(at[5:-5]).all()
    s = back.score(a)
    assert set(s) == {"r2", "r2_per_dim"} and len(s["r2_per_dim"]) == 2


def test_an_unknown_session_is_refused_with_the_way_forward(readme_run, tmp_path):
    dec, new = readme_run["dec"], readme_run["new"]
    with pytest.raises(KeyError, match="adapt"):
        dec.predict(session_arrays(5, 0, SHORT))
    with pytest.raises(
        ValueError, match=r"intervals: no stretch of at least one 2 s window lies inside the session's span"
    ):
        dec.predict(new, intervals=[[1000, 2000]])  # outside the recording (it read "cannot reshape array of size 0")
    for path in ("", tmp_path):
        with pytest.raises(ValueError, match="is not a file path"):
            dec.save(path)


def good(**changes) -> dict:
    rng = np.random.default_rng(0)
    t = np.arange(0, 20, 0.01)
    spikes = np.sort(rng.uniform(0, 20, 2000))
    return {
        "spike_times": spikes,
        "unit_ids": rng.integers(0, 5, 2000),
        "behaviour": (t, rng.normal(size=(len(t), 2))),
        **changes,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        (
            dict(spike_times=[np.array([3.0, 1.0, 2.0]), np.array([0.5, 4.0])], unit_ids=None),
            r"spike_times: unit '0' times are not sorted",
        ),
        (dict(unit_ids=np.zeros(10)), r"unit_ids: 10 entries but spike_times has 2000 spikes"),
        (dict(behaviour=np.zeros((2000, 2))), r"behaviour: expected \(timestamps, values\)"),
        (
            dict(behaviour=(np.arange(0, 20, 0.01), np.full((2000, 2), np.nan))),
            r"behaviour: 2000 NaN or infinite values",
        ),
        (dict(behaviour=(np.arange(0, 20, 0.01)[::-1], np.zeros((2000, 2)))), r"timestamps must increase strictly"),
        (dict(behaviour=(np.arange(0, 0.5, 0.01), np.zeros((50, 2)))), r"shorter than one 2 s window"),
        (dict(spike_times=np.full(2000, np.nan)), r"NaN or infinite spike times"),
        (dict(train=[[0, 10]]), r"give train and valid intervals together"),
        (dict(trials=[[0, 1]]), r"unknown keys \['trials'\]"),
    ],
)
def test_bad_input_names_the_argument(tmp_path, change, message):
    dec = poyo.Decoder(workdir=tmp_path)
    with pytest.raises(ValueError, match=message):
        dec.fit(good(**change))
    assert not (tmp_path / "runs").exists()  # refused before any training


def test_misuse_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="model: no preset 'poyo_huge'"):
        poyo.Decoder("poyo_huge")
    with pytest.raises(RuntimeError, match="call fit"):
        poyo.Decoder(workdir=tmp_path).predict(good())
    with pytest.raises(ValueError, match="max_steps"):
        poyo.Decoder(max_steps=0)
    with pytest.raises(SettingError, match="optim: need base_lr > 0"):
        poyo.Decoder(settings={"optim.base_lr": 0})
    with pytest.raises(SettingError, match="optim.lr: unknown key"):
        poyo.Decoder(settings={"optim.lr": 1e-3})


def split(a: dict, lo: float, hi: float) -> dict:
    """The part of a recording between lo and hi seconds, as a notebook would cut it: no session_id."""
    st, u = a["spike_times"], a["unit_ids"]
    t, v = a["behaviour"]["cursor.vel"]
    k, j = (st >= lo) & (st < hi), (t >= lo) & (t < hi)
    return {"spike_times": st[k], "unit_ids": u[k], "behaviour": {"cursor.vel": (t[j], v[j])}}


def test_a_part_of_a_fitted_recording_without_session_id_is_that_session(readme_run, capsys):
    dec, new = readme_run["dec"], readme_run["new"]  # new: adapted on its first 30 s, with a session_id
    later = dec.score(split(new, 60, 240))  # the notebook split: same unit ids, no session_id
    assert "unit ids are those of the fitted session" in capsys.readouterr().out
    assert later == dec.score(new, intervals=[[60, 240]])  # exactly as if the id had been given
    assert later["r2"] > 0.5, later


@pytest.mark.slow
def test_a_quiet_fit_prints_a_bar_and_its_scores_leaves_no_temporary_folder_and_refuses_ambiguity(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    a = session_arrays(0, 0, SHORT)
    # two parts of one recording, fitted as two sessions (no ids): their units are the same
    two = poyo.Decoder(max_steps=10, num_workers=0, verbose=False).fit([split(a, 0, 40), split(a, 45, 90)])
    out, err = capsys.readouterr()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("poyo-")] == []  # the run's folder is gone
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fit: test R2") and "over 2 session(s)" in lines[0], out
    assert "10/10" in err and "Epoch" not in out + err and "GPU available" not in out + err  # one bar, no banners
    with pytest.raises(ValueError, match=r"match 2 fitted sessions .* pass session_id="):
        two.score(split(a, 40, 45 + 5))


class Ts:  # the parts of pynapple's Ts/Tsd/TsdFrame that poyo reads
    def __init__(self, t, values=None):
        self.t = np.asarray(t)
        if values is not None:
            self.values = np.asarray(values)


def test_pynapple_objects_read_like_arrays():
    a = good()
    units = np.asarray(a["unit_ids"])
    group = {int(u): Ts(a["spike_times"][units == u]) for u in np.unique(units)}  # a TsGroup maps ids to Ts
    t, v = a["behaviour"]
    for x, y in zip(_behaviour("s", Ts(t, v), None), _behaviour("s", (t, v), None)):
        np.testing.assert_array_equal(x, y)
    trains_a, names_a = _trains("s", a["spike_times"], a["unit_ids"])
    trains_p, names_p = _trains("s", group, None)
    assert names_a == names_p and all(np.array_equal(x, y) for x, y in zip(trains_a, trains_p))
    assert session_id_of(trains_a, names_a) == session_id_of(trains_p, names_p)
    assert isinstance(poyo.Session(spike_times=group), Session)


def test_a_tsgroups_location_metadata_becomes_the_units_brain_region(tmp_path):
    import pandas as pd

    from poyo.data import Dataset

    class Group(dict):  # the parts of pynapple's TsGroup that poyo reads: {unit: Ts}, and its metadata table
        metadata = None

    a = good()
    units = np.asarray(a["unit_ids"])
    group = Group({int(u): Ts(a["spike_times"][units == u]) for u in np.unique(units)})
    group.metadata = pd.DataFrame({"location": ["adn", "adn", "ca1", "ca1", "ca1"]}, index=sorted(group))
    dec = poyo.Decoder(workdir=tmp_path)
    sid, _ = dec._write({"spike_times": group, "behaviour": a["behaviour"]}, "s", tmp_path / "data")
    s = Dataset(tmp_path / "data", validate=False).sessions[sid]
    assert dict(zip(s.unit_ids, s.unit_regions)) == {
        f"{sid}/{u}": r for u, r in zip(range(5), ["adn", "adn", "ca1", "ca1", "ca1"])
    }


def test_an_unnamed_series_that_could_be_an_angle_gets_a_hint(tmp_path, capsys):
    a = good()
    t = a["behaviour"][0]
    dec = poyo.Decoder(workdir=tmp_path)
    dec._write({**a, "behaviour": Ts(t, np.angle(np.exp(1j * t)))}, "s", tmp_path / "data")  # a bare pynapple Tsd
    assert "if it is an angle, pass it named like one, e.g. behaviour={'head.dir': ...}" in capsys.readouterr().out
    dec._write(a, "s", tmp_path / "data")  # two dims of anything: no hint
    assert capsys.readouterr().out == ""

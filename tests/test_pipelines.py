"""Dataset pipelines on small raw files built like each real source (no network)."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from poyo.data import Dataset, WindowIndex
from poyo.pipelines import (
    churchland_shenoy_neural_2012 as churchland,
)
from poyo.pipelines import (
    flint_slutzky_accurate_2012 as flint,
)
from poyo.pipelines import (
    odoherty_sabes_nonhuman_2017 as odoherty,
)
from poyo.pipelines import (
    pei_pandarinath_nlb_2021 as nlb,
)
from poyo.pipelines import (
    perich_miller_population_2018 as perich,
)
from poyo.pipelines.common import download as dl
from poyo.pipelines.common.clock import find_epochs, realign
from poyo.pipelines.common.runner import run
from poyo.pipelines.nwb import convert_file, parse_behaviour
from poyo.pipelines.nwb import main as nwb_main
from poyo.readouts import ReadoutConfig
from tests import raw_fixtures as fx

pytest.importorskip("pynwb")
REPO = Path(__file__).resolve().parents[1]


def convert(module, tmp_path, *extra):
    rc = run(module, ["--raw-dir", str(tmp_path / "raw"), "--processed-dir", str(tmp_path / "proc"), "--local", *extra])
    return rc, tmp_path / "proc" / module.BRAINSET_ID


def test_perich_sessions_phases_outliers_and_splits(tmp_path):
    raw = tmp_path / "raw" / perich.BRAINSET_ID
    fx.perich_file(raw, "C", "CO", "20131003")
    fx.perich_file(raw, "T", "RT", "20130821", seed=1)
    rc, out = convert(perich, tmp_path, "-j", "2")  # two worker processes
    assert rc == 0 and sorted(p.name for p in out.glob("*.h5")) == [
        "c_20131003_center_out_reaching.h5",
        "t_20130821_random_target_reaching.h5",
    ]
    keys = [
        "movement_phases.reach_period",
        "movement_phases.random_period",
        "movement_phases.hold_period",
        "cursor_outlier_segments",
    ]
    ds = Dataset(out, behaviour=["cursor.vel"], intervals=keys)  # validates splits, spikes and domains
    co, rt = (
        ds.sessions[f"{perich.BRAINSET_ID}/c_20131003_center_out_reaching"],
        ds.sessions[f"{perich.BRAINSET_ID}/t_20130821_random_target_reaching"],
    )
    assert len(co.unit_ids) == 6  # the unit with no spikes is dropped
    out_iv = co.intervals["cursor_outlier_segments"]
    assert len(out_iv) == 1 and out_iv[0, 0] < 16.0 < out_iv[0, 1]  # the acceleration burst at t = 16 s
    reach = co.intervals["movement_phases.reach_period"]
    assert not ((reach[:, 0] < out_iv[0, 1]) & (reach[:, 1] > out_iv[0, 0])).any()  # phases exclude outliers
    assert (
        co.intervals["movement_phases.reach_period"] is not None
        and rt.intervals["movement_phases.reach_period"] is None
    )
    for s in (co, rt):
        # held-out trials are whole trials, train keeps 1 s away from them
        held = np.concatenate([s.splits["valid"], s.splits["test"]])
        gaps = [abs(a - b) for a in s.splits["train"].ravel() for b in held.ravel()]
        assert min(gaps) >= 1.0 - 1e-9
    with h5py.File(co.path) as f:
        assert (
            f["session"].attrs["id"] == "c_20131003_center_out_reaching"
            and f["subject"].attrs["species"] == "Macaca mulatta"
        )
        np.testing.assert_allclose(
            f["cursor/vel"][:100, 0],
            np.gradient(5 * np.sin(2 * np.pi * 0.4 * (np.arange(100) / 100 + 1.0)), 0.01)[:100],
            rtol=0.05,
            atol=0.2,
        )
    # re-runs skip finished sessions; --reprocess redoes them
    mtime = os.stat(co.path).st_mtime_ns
    assert convert(perich, tmp_path, "-j", "1")[0] == 0 and os.stat(co.path).st_mtime_ns == mtime
    assert (
        convert(perich, tmp_path, "-j", "1", "--reprocess", "--sessions", "c_*")[0] == 0
        and os.stat(co.path).st_mtime_ns != mtime
    )


def test_failed_session_is_reported_and_others_are_written(tmp_path, capsys):
    raw = tmp_path / "raw" / perich.BRAINSET_ID
    fx.perich_file(raw, "C", "CO", "20131003")
    bad = raw / "sub-M" / "sub-M_ses-CO-20140101_behavior+ecephys.nwb"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not an nwb file")
    rc, out = convert(perich, tmp_path, "-j", "1")
    assert (
        rc == 1
        and (out / "c_20131003_center_out_reaching.h5").exists()
        and not (out / "m_20140101_center_out_reaching.h5").exists()
    )
    log = (out / "failed.log").read_text()
    assert "m_20140101_center_out_reaching" in log and "cannot be read as NWB" in log and str(bad) in log
    assert "1 of 2 sessions FAILED" in capsys.readouterr().out


def test_churchland_clock_resets_are_repaired(tmp_path):
    fx.churchland_file(tmp_path / "raw" / churchland.BRAINSET_ID)
    rc, out = convert(churchland, tmp_path, "-j", "1")
    assert rc == 0
    ds = Dataset(out, behaviour=["cursor.vel", "hand.vel_2d"], intervals=["movement_phases.reach_period"])
    s = next(iter(ds.sessions.values()))
    with h5py.File(s.path) as f:
        t = f["cursor/timestamps"][()]
        starts = f["trials/start"][()]
        assert f["session"].attrs["clock_epochs"] == 2 and f["session"].attrs["units_dropped"] == 1
        # the second epoch (which restarted at 0.5 s) now starts 60 s after the first one ended
        assert np.all(np.diff(t) > 0) and np.all(np.diff(starts) > 0)
        second = starts[starts > 30]
        assert len(second) and abs(second[0] - (19.0 + 60.0)) < 1e-6  # first epoch's last trial stopped at 19.0
    assert len(s.unit_ids) == 4  # the unit whose second run fits no epoch is dropped, not misplaced
    w = ds.read(WindowIndex(s.id, 82.0, 83.0))
    assert len(w.spike_times) > 0 and len(w.behaviour["cursor.vel"].timestamps) == 1000


def test_realign_places_runs_in_order():
    epochs, which = find_epochs(np.array([0.0, 5.0, 1.0, 4.0]), np.array([4.0, 9.0, 3.0, 8.0]), gap=10.0)
    assert epochs.count == 2 and which.tolist() == [0, 0, 1, 1] and epochs.shift.tolist() == [0.0, 9.0 + 10.0 - 1.0]
    times, keep = realign(np.array([0.5, 6.0, 8.5, 1.5, 7.0]), epochs)
    assert times.tolist() == [0.5, 6.0, 8.5, 1.5 + 18.0, 7.0 + 18.0] and keep.all()


def test_odoherty_mat_v73(tmp_path):
    fx.odoherty_file(tmp_path / "raw" / odoherty.BRAINSET_ID)
    rc, out = convert(odoherty, tmp_path, "-j", "1")
    assert rc == 0
    s = next(iter(Dataset(out, behaviour=["cursor.vel", "finger.vel_3d"]).sessions.values()))
    assert s.local_id == "indy_20160407_02"
    assert s.local_unit_ids.tolist() == [
        "M1 001/unsorted",
        "M1 002/unsorted",
        "S1 003/unsorted",
        "M1 001/sorted_01",
        "M1 002/sorted_01",
        "S1 003/sorted_01",
        "M1 001/sorted_02",
    ]
    lengths = {k: sum(b - a for a, b in v) for k, v in s.splits.items()}
    assert lengths["valid"] == pytest.approx(6.0) and lengths["test"] == pytest.approx(6.0)  # 1 of 10 blocks each
    assert lengths["train"] == pytest.approx(60.0 - 12.0 - 4.0, abs=0.01)  # 8 blocks minus 1 s guards


def test_flint_mat_v5(tmp_path):
    fx.flint_file(tmp_path / "raw" / flint.BRAINSET_ID, n=2)
    rc, out = convert(flint, tmp_path, "-j", "1")
    assert rc == 0
    ds = Dataset(out, behaviour=["hand.vel"])
    s = ds.sessions[f"{flint.BRAINSET_ID}/monkey_c_e2_reaching"]
    assert s.local_unit_ids.tolist() == ["unit_0", "unit_1", "unit_2"]  # unit_3 never fires
    w = ds.read(WindowIndex(s.id, 4.0, 5.0))
    np.testing.assert_allclose(w.behaviour["hand.vel"].values[:, 0], np.sin(4.0 + np.arange(10) / 10), atol=1e-5)
    assert sum(len(v) for v in s.splits.values()) == 12  # every trial in exactly one split


def test_nlb_nan_gaps_eval_intervals_and_nlb_splits(tmp_path):
    fx.nlb_file(tmp_path / "raw" / nlb.BRAINSET_ID)
    rc, out = convert(nlb, tmp_path, "-j", "1", "--datasets", "mc_maze_small")
    assert rc == 0
    ds = Dataset(out, behaviour=["hand.vel"], intervals=["nlb_eval_intervals"])
    s = ds.sessions[f"{nlb.BRAINSET_ID}/mc_maze_small_train"]
    assert s.behaviour_rate("hand.vel") == 1000.0
    assert s.local_unit_ids[0] == "unit_ä0"  # non-ASCII ids survive the round trip
    with h5py.File(s.path) as f:
        vel = f["hand/vel"][()]
        onsets = f["nlb_eval_intervals/start"][()] + 0.05
    assert (
        np.isnan(vel[5000:5200]).all() and np.isnan(vel[8000:8100]).all() and np.isfinite(vel[:5000]).all()
    )  # gap, NaN values
    np.testing.assert_allclose(onsets, np.arange(1.5, 29.0, 1.2) + 0.3)
    test_trials = np.arange(1.5, 29.0, 1.2)[-6:-3]  # NLB "val" trials are our test set; NLB "test" trials are not used
    np.testing.assert_allclose(s.splits["test"][:, 0], test_trials)
    # NaN targets are masked: weight 0 and never evaluated
    from poyo.model import POYO

    cfg = ReadoutConfig("cursor_velocity_2d", key="hand.vel", std=100.0, eval_intervals="nlb_eval_intervals")
    model = POYO(
        dim=16,
        depth=1,
        dim_head=8,
        cross_heads=1,
        self_heads=1,
        num_latents_per_step=2,
        unit_ids=s.unit_ids.tolist(),
        session_ids=[s.id],
        readouts=["cursor_velocity_2d"],
    )
    sample = model.tokenizer([cfg])(ds.read(WindowIndex(s.id, 8.7, 9.7)))
    tgt = sample["target/cursor_velocity_2d"]
    nan_rows = np.isnan(ds.read(WindowIndex(s.id, 8.7, 9.7)).behaviour["hand.vel"].values).any(1)
    assert (
        nan_rows.sum() == 100
        and (tgt["weight"].numpy()[nan_rows] == 0).all()
        and not tgt["eval_mask"].numpy()[nan_rows].any()
    )


def test_bring_your_own_nwb(tmp_path, capsys):
    rng = np.random.default_rng(0)
    t, pos, vel = fx.reaching(30.0, 100.0, rng)
    path = fx.nwb_file(tmp_path / "mine.nwb", trains=fx.spike_trains(3, 1.0, 31.0, rng), electrodes=False,
                       series=[("Velocity", "cursor_vel", t, vel), ("Position", "cursor_pos", t, pos)])  # fmt: skip
    with pytest.raises(ValueError, match="GROUP.FIELD=SERIES"):
        parse_behaviour(["cursor_vel"])
    with pytest.raises(ValueError, match=r"no time series 'hand_vel'.*processing/behavior/Velocity/cursor_vel"):
        convert_file(path, parse_behaviour(["hand.vel=hand_vel"]), brainset="lab")
    rc = nwb_main(
        [
            str(path),
            "-b",
            "cursor.vel=Velocity/cursor_vel",
            "-b",
            "cursor.pos=cursor_pos",
            "--brainset",
            "lab",
            "--processed-dir",
            str(tmp_path / "proc"),
        ]
    )
    assert rc == 0
    ds = Dataset(tmp_path / "proc" / "lab", behaviour=["cursor.vel", "cursor.pos"])
    s = next(iter(ds.sessions.values()))
    assert s.id == "lab/mine" and len(s.unit_ids) == 3
    w = ds.read(WindowIndex(s.id, 5.0, 6.0))
    np.testing.assert_allclose(w.behaviour["cursor.vel"].values, vel[400:500], rtol=1e-5)
    assert {k: len(v) > 0 for k, v in s.splits.items()} == {"train": True, "valid": True, "test": True}
    assert nwb_main([str(path), "-b", "x.y=nothing", "--processed-dir", str(tmp_path / "p2")]) == 1
    assert "no time series 'nothing'" in capsys.readouterr().err


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP range support (what resumable downloads need)."""

    def log_message(self, *a):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


def test_download_resumes_and_checks_sums(tmp_path):
    import hashlib
    from functools import partial

    served = tmp_path / "served"
    served.mkdir()
    payload = os.urandom(3 * dl.CHUNK + 123)
    (served / "f.bin").write_bytes(payload)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_RangeHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/f.bin"
        dest = tmp_path / "got" / "f.bin"
        dest.parent.mkdir()
        (dest.parent / "f.bin.part").write_bytes(payload[:1000])  # an interrupted download
        remote = dl.RemoteFile("f.bin", url, len(payload), sha256=hashlib.sha256(payload).hexdigest())
        assert dl.fetch(remote, dest, progress=False) == dest and dest.read_bytes() == payload
        assert not (dest.parent / "f.bin.part").exists()
        bad = dl.RemoteFile("g.bin", url, len(payload), md5="0" * 32)
        with pytest.raises(dl.DownloadError, match="md5"):
            dl.fetch(bad, tmp_path / "got" / "g.bin", progress=False)
        assert not (tmp_path / "got" / "g.bin").exists() and not (tmp_path / "got" / "g.bin.part").exists()
    finally:
        server.shutdown()


def test_poyo_leaves_brainsets_pipelines_alone(tmp_path):
    """Installed beside brainsets (or torch_brain 0.2, whose `brainsets` command replaces it), poyo
    adds no top-level name but `poyo`, and `brainsets list` prints exactly what it prints when
    poyo cannot be imported at all: brainsets' own pipelines, none of ours."""
    pytest.importorskip("brainsets")
    from importlib.metadata import distribution

    assert distribution("poyo-decoder").read_text("top_level.txt").split() == ["poyo"]
    code = "import brainsets_pipelines, json; print(json.dumps(list(brainsets_pipelines.__path__)))"
    paths = json.loads(
        subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    )
    own = Path(distribution("brainsets").locate_file("brainsets_pipelines")).resolve()
    assert [Path(p).resolve() for p in paths] == [own]
    cli = Path(sys.executable).parent / "brainsets"
    if not cli.exists():
        pytest.skip("the brainsets command is not installed in this environment")

    def listed(*prefix) -> list[str]:
        out = subprocess.run(
            [sys.executable, *prefix, "list"], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        return [line[2:].strip() for line in out.stdout.splitlines() if line.startswith("- ")]

    with_poyo = listed(str(cli))
    hidden = f"import sys, runpy; sys.modules['poyo'] = None; sys.argv[0] = {str(cli)!r}; runpy.run_path({str(cli)!r}, run_name='__main__')"
    without_poyo = listed("-c", hidden)
    assert with_poyo == without_poyo and len(with_poyo) >= 5
    assert not {"nwb", "arrays", "common", "synthetic_reaching"} & set(with_poyo)


def test_each_brainsets_entry_names_our_distribution():
    """Every brainsets-CLI entry point declares this project (not the `poyo` YAML parser on the index)."""
    import re

    name = re.search(r'^name = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    entries = sorted((REPO / "brainsets_pipelines").glob("*/pipeline.py"))
    assert len(entries) == 5 and name != "poyo"
    for entry in entries:
        text = entry.read_text()
        assert f'dependencies = ["{name}[dev]"]' in text, entry
        assert f'brainsets_pipeline("poyo.pipelines.{entry.parent.name}")' in text, entry
        assert not (entry.parent / "__init__.py").exists()  # not a package: nothing to shadow brainsets' own


def _entry(brainset: str):
    """Load ``brainsets_pipelines/<brainset>/pipeline.py`` the way the brainsets runner does (from its path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"entry_{brainset}", REPO / "brainsets_pipelines" / brainset / "pipeline.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_brainsets_command_runs_our_pipeline_through_local(tmp_path):
    """`brainsets prepare brainsets_pipelines/<id> --local --use-active-env ... --offline` converts with our code."""
    pytest.importorskip("ray")
    cli = Path(sys.executable).parent / "brainsets"
    if not cli.exists():
        pytest.skip("the brainsets command is not installed in this environment")
    raw, proc = tmp_path / "raw", tmp_path / "proc"
    fx.perich_file(raw / perich.BRAINSET_ID, "C", "CO", "20131003")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "disabled",
    }
    cmd = [str(cli), "prepare", str(REPO / "brainsets_pipelines" / perich.BRAINSET_ID), "--local", "--use-active-env",
           "--raw-dir", str(raw), "--processed-dir", str(proc), "-c1", "--offline"]  # fmt: skip
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    made = proc / perich.BRAINSET_ID / "c_20131003_center_out_reaching.h5"
    assert made.exists()
    ds = Dataset(proc / perich.BRAINSET_ID, behaviour=["cursor.vel"])
    assert ds.session_ids == [f"{perich.BRAINSET_ID}/c_20131003_center_out_reaching"]


def test_brainsets_prepare_adapter(tmp_path):
    pytest.importorskip("ray")
    Pipeline = _entry("perich_miller_population_2018").Pipeline

    raw = tmp_path / "raw"
    fx.perich_file(raw, "C", "CO", "20131003")
    args = Pipeline.parser.parse_args(["--local"])
    manifest = Pipeline.get_manifest(raw, args)
    assert manifest.index.tolist() == ["c_20131003_center_out_reaching"]
    (tmp_path / "proc").mkdir()
    p = Pipeline(raw, tmp_path / "proc", args)
    p.process(p.download(next(manifest.itertuples())))
    assert (tmp_path / "proc" / "c_20131003_center_out_reaching.h5").exists()


@pytest.mark.slow
def test_poyo_1_recipe_trains_on_every_brainset(tmp_path):
    """configs/dataset/poyo_1.yaml on converted files of all five sources: one head fed from
    cursor.vel and hand.vel (irregular and 1 kHz regular series, NaN gaps), normalised per
    dataset; Perich monkey T is held out."""
    raw, proc = tmp_path / "raw", tmp_path / "proc"
    for i, subject in enumerate("CJMT"):
        fx.perich_file(raw / perich.BRAINSET_ID, subject, "CO" if i % 2 == 0 else "RT", f"2014010{i}", seed=i)
    fx.churchland_file(raw / churchland.BRAINSET_ID)
    fx.odoherty_file(raw / odoherty.BRAINSET_ID)
    fx.flint_file(raw / flint.BRAINSET_ID)
    fx.nlb_file(raw / nlb.BRAINSET_ID)
    for m in (perich, churchland, odoherty, flint, nlb):
        assert run(m, ["--raw-dir", str(raw), "--processed-dir", str(proc), "--local", "-j", "1"]) == 0
    cmd = [sys.executable, str(REPO / "train.py"), "dataset=poyo_1", f"data_root={proc}", f"hydra.run.dir={tmp_path / 'run'}",
           "num_workers=0", "batch_size=8", "trainer.max_steps=6", "trainer.check_val_every_n_epoch=1", "plot_sessions=2"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "7 sessions" in out.stdout and "t_20140103" not in out.stdout  # 3 Perich (T held out) + 4 other brainsets
    import json

    import torch

    rows = json.loads((tmp_path / "run" / "test_results.json").read_text())["sessions"]
    assert len(rows) == 7 and all(np.isfinite(r["poyo_r2"]) for r in rows)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "model.pt", weights_only=True)
    stds = {r["sessions"][0].split("/")[0]: float(np.ravel(r["std"])[0]) for r in ckpt["readouts"]}
    assert stds == {
        perich.BRAINSET_ID: 20.0,
        churchland.BRAINSET_ID: 800.0,
        odoherty.BRAINSET_ID: 200.0,
        flint.BRAINSET_ID: 0.4,
        nlb.BRAINSET_ID: 100.0,
    }
    # a missing brainset folder says how to prepare it
    out = subprocess.run([sys.executable, str(REPO / "train.py"), "dataset=poyo_1", f"data_root={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'r2'}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert out.returncode != 0 and "python -m poyo.pipelines.<brainset>" in out.stderr


def test_pipeline_base_prefers_torch_brain():
    """torch_brain 0.2 merged brainsets in: its BrainsetPipeline is used when it imports, brainsets' otherwise."""
    from poyo.pipelines.common.runner import pipeline_base

    try:
        from torch_brain.pipeline import BrainsetPipeline as expected
    except ImportError:
        brainsets = pytest.importorskip("brainsets.pipeline")
        expected = brainsets.BrainsetPipeline
    assert pipeline_base() is expected

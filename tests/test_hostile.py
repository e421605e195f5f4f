"""A hostile and careless user: bad files, bad settings, kills, full disks, concurrent runs,
path tricks and malicious pickles. Each case ends in a clear error (naming the file, session,
field or setting) or a correct result, and nothing is written where it should not be.

(Epoch reshuffling, resume at an epoch boundary and SIGKILL during training are in
``test_training.py``; corrupt, truncated and malformed session files in ``test_validation.py``.)
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from poyo.data import Dataset, SessionFormatError
from poyo.io import atomic_save, safe_load
from poyo.model import POYO, load_pretrained
from poyo.pipelines.common import runner
from poyo.pipelines.common.runner import Asset
from poyo.pipelines.nwb import main as nwb_main
from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure
from poyo.readouts import ReadoutConfig
from poyo.training.checkpoint import AtomicCheckpointIO
from poyo.training.config import RunConfig, SettingError
from poyo.training.guards import RunLock, resume_problems
from poyo.training.module import DataModule, POYOModule
from poyo.training.report import results_table
from tests import raw_fixtures as fx

ROOT = Path(__file__).resolve().parents[1]


def settings(**changes):
    """The default run's settings with dotted keys changed (validated when built), the window and
    batch settled (``window_length=auto``: the preset's 1 s, batch 32)."""
    return RunConfig.preset().with_changes(**changes).resolved()


# --- settings -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("batch_size", 0, "batch_size=0: must be auto or a positive integer"),
        ("batch_size", -8, "batch_size=-8: must be auto or a positive integer"),
        ("batch_size", "big", "batch_size='big'"),
        ("optim.base_lr", "1e-3x", "optim.base_lr='1e-3x': must be a finite number"),
        ("optim.base_lr", -1.0, "optim: need base_lr > 0"),
        ("model.dim", "wide", "model.dim='wide': must be an integer"),
        ("trainer.max_step", 10, "trainer.max_step: unknown key"),
        ("train_seconds", "two minutes", "train_seconds='two minutes'"),
        ("sessions", [], "sessions=[]: must be null"),
        (
            "eval_step",
            2.0,
            "eval_step=2.0: must be auto or a number of seconds in [0.01, window_length=1]",
        ),  # once settled
        ("window_length", "long", "window_length='long': must be auto or a positive number of seconds"),
        ("eval_step", 1e-9, "eval_step=1e-09: must be auto or a number of seconds in [0.01"),
        ("optim.base_lr", float("inf"), "optim.base_lr=inf: must be a finite number"),
        ("window_length", 0, "window_length=0"),
        ("trainer.max_steps", 0, "trainer.max_steps=0: must be -1"),
        ("num_workers", -1, "num_workers=-1"),
        ("seed", 1.5, "seed=1.5"),
        ("mode", "predict", "mode='predict'"),
    ],
)
def test_bad_settings_fail_in_one_line_that_names_them(key, value, message):
    settings()  # the defaults are fine
    with pytest.raises(SettingError) as e:
        settings(**{key: value})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_train_py_prints_setting_errors_without_a_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "batch_size=0", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert (
        out.returncode == 1
        and out.stderr.strip()
        == "error: setting batch_size=0: must be auto or a positive integer (the global batch) (e.g. batch_size=32)"
    )


# --- run folders and resuming -----------------------------------------------------------------
def test_a_second_run_in_the_same_folder_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(FileExistsError, match=rf"{tmp_path} is in use by another run .*pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".run.lock").exists()  # released
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".run.lock").write_text(f"{os.uname().nodename} {dead.pid}")  # a run that was killed
    with RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / ".run.lock").read_text().endswith(str(os.getpid()))


def test_resuming_with_other_settings_lists_every_difference():
    cfg = settings().to_dict()
    readouts = [ReadoutConfig("cursor_velocity_2d", std=10.0)]
    saved = {"config": cfg, "readouts": [r.to_dict() for r in readouts]}
    assert resume_problems(saved, cfg, readouts) == []
    changed = settings(batch_size=64, seed=3, **{"optim.name": "lamb"}).to_dict()
    problems = resume_problems(saved, changed, [ReadoutConfig("cursor_velocity_2d", std=7.0)])
    text = "\n".join(problems)
    assert (
        "optim.name: 'adamw' in the checkpoint, 'lamb' now" in text
        and "batch_size: 32 in the checkpoint, 64 now" in text
        and "seed: 0 in the checkpoint, 3 now" in text
    )
    assert "target normalisation" in text and "10.0" in text and "7.0" in text
    # a checkpoint from before optim.eps existed ran with 1e-6: it resumes with that, not with another
    old = {**saved, "config": {**cfg, "optim": {k: v for k, v in cfg["optim"].items() if k != "eps"}}}
    assert resume_problems(old, cfg, readouts) == []
    bigger = settings(**{"optim.eps": 1e-4}).to_dict()
    assert "optim.eps: 1e-06 in the checkpoint, 0.0001 now" in resume_problems(old, bigger, readouts)
    # likewise optim.warmup_fraction (0) and model.latent_counts (none) and latent_presence (off), added later
    older = {**old, "config": {**old["config"], "optim": {k: v for k, v in old["config"]["optim"].items() if k != "warmup_fraction"},
                               "model": {k: v for k, v in cfg["model"].items() if k not in ("latent_counts", "latent_presence")}}}  # fmt: skip
    plain = settings(**{"model.latent_counts": [], "model.latent_presence": False}).to_dict()
    assert resume_problems(older, plain, readouts) == []
    assert "model.latent_presence: False in the checkpoint, True now" in resume_problems(
        older, cfg, readouts
    )  # poyo_mini reads counts now
    # and presence_scale ("sqrt" before it existed): only that setting is named, not the whole model
    before_scale = {
        **saved,
        "config": {**cfg, "model": {k: v for k, v in cfg["model"].items() if k != "presence_scale"}},
    }
    assert resume_problems(before_scale, cfg, readouts) == [
        "model.presence_scale: 'sqrt' in the checkpoint, 'mean' now"
    ]
    warm = settings(
        **{"model.latent_counts": [], "model.latent_presence": False, "optim.warmup_fraction": 0.1}
    ).to_dict()
    assert [
        p
        for p in resume_problems(older, warm, readouts)
        if p.startswith("optim.warmup_fraction: 0.0 in the checkpoint")
    ]


# --- checkpoints ------------------------------------------------------------------------------
def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = atomic_save({"step": 1}, tmp_path / "last.ckpt")

    def full(obj, f, *a, **k):
        f.write(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 4452480 vs 4452372")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr("shutil.disk_usage", lambda p: type("U", (), {"free": 300})())
    with pytest.raises(
        OSError,
        match=r"no space left on the disk of .* \(0.0 MB free after writing 0.0 MB\); the previous last.ckpt is intact",
    ) as e:
        atomic_save({"step": 2}, path)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert safe_load(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_file_that_cannot_be_written_is_not_called_a_full_disk(tmp_path, monkeypatch):
    def refused(obj, f, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(torch, "save", refused)
    monkeypatch.setattr("shutil.disk_usage", lambda p: type("U", (), {"free": 0})())  # as /proc reports
    with pytest.raises(
        OSError, match=r"x.pt: cannot be written \(Permission denied\); nothing was written to x.pt$"
    ) as e:
        atomic_save({"step": 1}, tmp_path / "x.pt")
    assert e.value.errno == errno.EACCES and "space" not in str(e.value)
    monkeypatch.undo()
    full = lambda obj, f, *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))  # noqa: E731
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"no space left .*; nothing was written to new.pt\. Free some space"):
        atomic_save({"step": 1}, tmp_path / "new.pt")  # no earlier file to call intact


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".last.ckpt.{dead.pid}.tmp"
    stale.write_bytes(b"\0" * 4096)
    other = tmp_path / ".best.ckpt.1.tmp"  # another file's temporary (pid 1 is alive): left alone
    other.write_bytes(b"")
    atomic_save({"step": 1}, tmp_path / "last.ckpt")
    assert not stale.exists() and other.exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_no_loader_runs_a_malicious_pickle(tmp_path):
    from poyo.model.torch_brain import import_torch_brain

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Evil(marker)}}, evil)
    loaders = [
        safe_load,
        load_pretrained,
        AtomicCheckpointIO().load_checkpoint,
        import_torch_brain,
    ]
    for load in loaders:
        with pytest.raises((RuntimeError, ValueError), match="pickled Python object"):
            load(evil)
    for args in (["mode=evaluate", f"checkpoint={evil}"], [f"resume={evil}", "trainer.max_steps=1"]):
        out = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, f"data_root={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
                              "dataset.generate.num_animals=1", "dataset.generate.sessions_per_animal=1", "dataset.generate.duration_s=60", "num_workers=0"],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
        assert out.returncode == 1 and "pickled Python object (posix.system)" in out.stderr, out.stderr[-2000:]
    assert not marker.exists()


def test_a_damaged_checkpoint_is_called_damaged_not_a_torch_brain_file(tmp_path):
    path = atomic_save({"a": torch.ones(3)}, tmp_path / "c.ckpt")
    data = path.read_bytes()
    (tmp_path / "half.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.ckpt").write_bytes(np.random.default_rng(0).bytes(2000))
    for name in ("half.ckpt", "noise.ckpt"):
        with pytest.raises(RuntimeError, match="damaged, truncated or of another kind") as e:
            safe_load(tmp_path / name)
        assert "torch_brain" not in str(e.value) and name in str(e.value)


# --- data -------------------------------------------------------------------------------------
def test_synthetic_generation_never_deletes_the_users_files(tmp_path):
    folder = tmp_path / "synthetic_reaching"
    small = SyntheticConfig(num_animals=1, sessions_per_animal=1, duration_s=30.0, min_units=5, max_units=8)
    ensure(folder, small, progress=False)
    mine = folder / "my_recording.h5"
    mine.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"1 file\(s\) the generator did not write \(my_recording.h5\)"):
        ensure(
            folder,
            SyntheticConfig(num_animals=1, sessions_per_animal=1, duration_s=40.0, min_units=5, max_units=8),
            progress=False,
        )
    assert mine.read_bytes() == b"precious" and len(list(folder.glob("*.h5"))) == 2
    mine.unlink()
    ensure(
        folder,
        SyntheticConfig(num_animals=1, sessions_per_animal=1, duration_s=40.0, min_units=5, max_units=8),
        progress=False,
    )  # only ours: rebuilt
    assert json.loads((folder / "manifest.json").read_text())["config"]["duration_s"] == 40.0


def test_a_session_without_spikes_is_refused(make_session):
    path = make_session("silent")
    with h5py.File(path, "r+") as f:
        for k in ("timestamps", "unit_index"):
            del f[f"spikes/{k}"]
        f["spikes/timestamps"] = np.zeros(0)
        f["spikes/unit_index"] = np.zeros(0, np.int64)
    with pytest.raises(
        SessionFormatError, match=r"silent.h5: session 'silent': field 'spikes.timestamps': no spikes at all"
    ):
        Dataset(path.parent, behaviour=["cursor.vel"])


def test_latin1_unit_ids_are_read(make_session):
    path = make_session("latin", n_units=3)
    with h5py.File(path, "r+") as f:
        del f["units/id"]
        f["units/id"] = np.array([b"caf\xe9", b"na\xefve", b"u2"])
    ds = Dataset(path.parent)
    assert ds.unit_ids == ["handmade/latin/café", "handmade/latin/naïve", "handmade/latin/u2"]


def test_a_missing_split_is_reported_before_training(make_session):
    path = make_session("nosplit", splits=False)
    dm = DataModule(path.parent.parent, [ReadoutConfig("cursor_velocity_2d", std=1.0)], num_workers=0, validate=False)
    with pytest.raises(SessionFormatError, match=r"nosplit.h5: session 'nosplit': field 'train_domain': missing"):
        dm.check_splits()


def test_non_finite_loss_names_the_sessions_in_the_batch(synthetic_root):
    from poyo.data import SequentialFixedWindowSampler, collate_packed

    ds = Dataset(synthetic_root, behaviour=["cursor.vel"], validate=False)
    model = POYO(dim=16, depth=0, dim_head=16, num_latents_per_step=2, unit_ids=ds.unit_ids, session_ids=ds.session_ids)
    with torch.no_grad():
        model.readout["cursor_velocity_2d"].bias.fill_(float("nan"))
    tok = model.tokenizer([ReadoutConfig("cursor_velocity_2d", std=10.0)])
    windows = list(SequentialFixedWindowSampler(ds.sampling_intervals("train"), 1.0, drop_short=True))[:2]
    batch = collate_packed([tok(ds[w]) for w in windows])
    module = POYOModule(model, {"name": "adamw", "base_lr": 1e-4}, global_batch_size=2, total_steps=1)
    with pytest.raises(
        FloatingPointError,
        match=rf"non-finite training loss nan at step 0; the batch held windows of sessions \['{windows[0].session}'\]",
    ):
        module.training_step(batch, 0)


def test_a_session_without_evaluable_samples_is_listed_not_dropped():
    table, rows = results_table(
        {"b/good": {"r": 0.8}},
        {"window": {"b/good": {"r2": 0.7, "before_s": 0.5, "after_s": 0.5}}, "causal": {"b/good": {"r2": 0.6}}},
        "r",
        ["b/good", "b/all_nan"],
    )
    assert [r["session"] for r in rows] == ["b/all_nan", "b/good"]
    assert "b/all_nan" in table and "n/a" in table and "left out of the means" in table
    assert "mean over sessions    0.800      0.700      0.600" in table


# --- importers ----------------------------------------------------------------------------------
def nwb(tmp_path, name="rec.nwb", t_shift=0.0, nan_at=None):
    rng = np.random.default_rng(0)
    t, pos, vel = fx.reaching(30.0, 100.0, rng)
    t = t.copy()
    if nan_at is not None:
        t[nan_at] = np.nan
    return fx.nwb_file(
        tmp_path / name,
        trains=fx.spike_trains(3, 1.0 + t_shift, 31.0 + t_shift, rng),
        electrodes=False,
        series=[("Velocity", "cursor_vel", t, vel)],
    )


@pytest.mark.parametrize(
    "flag", [["--brainset", "../../escape"], ["--session-id", "../../x"], ["--session-id", "/tmp/abs"]]
)
def test_nwb_import_cannot_write_outside_the_processed_folder(tmp_path, flag, capsys):
    path = nwb(tmp_path)
    out = tmp_path / "a" / "b" / "processed"
    rc = (
        nwb_main([str(path), "-b", "cursor.vel=cursor_vel", "--processed-dir", str(out), "--overwrite", *flag])
        if flag[0] == "--session-id"
        else None
    )
    if flag[0] == "--brainset":
        with pytest.raises(SystemExit) as e:
            nwb_main([str(path), "-b", "cursor.vel=cursor_vel", "--processed-dir", str(out), *flag])
        assert e.value.code == 2
    else:
        assert rc == 1
    assert "cannot name a file" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.h5"))


def test_nwb_import_reports_each_bad_file_by_name_and_converts_the_others(tmp_path, capsys):
    good = nwb(tmp_path, "good.nwb")
    nan = nwb(tmp_path, "nan_time.nwb", nan_at=500)
    late = nwb(tmp_path, "other_clock.nwb", t_shift=1000.0)
    rc = nwb_main(
        [str(nan), str(late), str(good), "-b", "cursor.vel=cursor_vel", "--processed-dir", str(tmp_path / "p")]
    )
    err = capsys.readouterr()
    assert rc == 1 and (tmp_path / "p" / "my_nwb" / "good.h5").is_file()
    lines = [line for line in err.err.splitlines() if line.startswith("FAILED")]
    assert len(lines) == 2 and "Traceback" not in err.err
    assert (
        str(nan) in lines[0]
        and "cursor.vel (cursor_vel): 1 NaN or infinite timestamps, first at sample 500" in lines[0]
    )
    assert (
        str(late) in lines[1]
        and "no unit has any spike inside the behaviour's time range" in lines[1]
        and "different clocks" in lines[1]
    )


def test_nwb_import_reports_the_spikes_it_cut(tmp_path, capsys):
    path = nwb(tmp_path, t_shift=10.0)  # spikes run 10 s past the behaviour
    assert nwb_main([str(path), "-b", "cursor.vel=cursor_vel", "--processed-dir", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "cut " in out and "spikes outside the behaviour's time span (0 before it, " in out


def test_malformed_command_lines_give_one_line(tmp_path):
    path = nwb(tmp_path)
    for args in (
        ["-m", "poyo.pipelines.nwb", str(path), "-b", "cursor_vel"],
        ["-m", "poyo.pipelines.flint_slutzky_accurate_2012", "--local", "--raw-dir", str(tmp_path / "none")],
    ):
        out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "none").exists()  # --local does not create the raw folder it was told to read


class _FakePipeline:
    """A pipeline module whose sessions fail on demand."""

    BRAINSET_ID = "fake"
    __name__ = "fake"
    fail: set = set()

    @staticmethod
    def manifest(raw, args):
        return [Asset(s, raw / f"{s}.raw") for s in ("a", "b", "c")]

    @classmethod
    def convert(cls, asset):
        if asset.session_id in cls.fail:
            raise ValueError(f"{asset.raw_path}: broken")
        from poyo.pipelines.arrays import from_binned_counts
        from tests.test_arrays import binned

        counts, vel = binned(400)
        return from_binned_counts(counts, 0.05, {"hand.vel": vel}, brainset="fake", session_id=asset.session_id)


def test_failed_log_keeps_the_failures_a_later_run_did_not_retry(tmp_path, monkeypatch):
    monkeypatch.setattr(
        runner,
        "process_one",
        lambda name, asset, out, *a: __import__("poyo.pipelines.common.session", fromlist=["write"]).write(
            _FakePipeline.convert(asset), out
        ),
    )
    for s in "abc":
        (tmp_path / "raw" / "fake").mkdir(parents=True, exist_ok=True)
        (tmp_path / "raw" / "fake" / f"{s}.raw").write_text("")
    args = ["--raw-dir", str(tmp_path / "raw"), "--processed-dir", str(tmp_path / "p"), "-j", "1", "--local"]
    _FakePipeline.fail = {"a", "b"}
    assert runner.run(_FakePipeline, args) == 1
    log = tmp_path / "p" / "fake" / "failed.log"
    assert set(runner.read_failures(log)) == {"a", "b"}
    _FakePipeline.fail = set()
    assert runner.run(_FakePipeline, [*args, "--sessions", "b"]) == 0  # b retried and fixed; a not retried
    assert set(runner.read_failures(log)) == {"a"}
    assert runner.run(_FakePipeline, args) == 0
    assert not log.exists()


# --- round two: the Decoder, the array importer, the generator, the streaming decoder ------------
def recording(seconds: float = 30.0, units: int = 6, seed: int = 0, ids=None) -> dict:
    """A Decoder session: Poisson spikes of a few units and a 2-D behaviour at 100 Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 0.01)
    trains = fx.spike_trains(units, 0.0, seconds, rng, rate=10.0)
    names = ids if ids is not None else [f"u{i}" for i in range(units)]
    return {
        "spike_times": np.concatenate(trains),
        "unit_ids": np.concatenate([[n] * len(tr) for n, tr in zip(names, trains)]),
        "behaviour": (t, rng.normal(size=(len(t), 2))),
    }


def test_decoder_refuses_two_sessions_with_one_id_naming_both(tmp_path):
    import poyo

    a, b = recording(seed=1), recording(seed=2)
    with pytest.raises(ValueError, match=r"sessions\[0\] and sessions\[1\]: both are session 'same'"):
        poyo.Decoder(workdir=tmp_path).fit([dict(a, session_id="same"), dict(b, session_id="same")])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(spike_scale=1000.0), r"spikes fall outside the behaviour's time span .* same unit \(seconds\)"),
        (dict(behaviour=(np.arange(0, 30, 0.01), np.ones(3000) * (1 + 1j))), r"behaviour: complex values"),
        (
            dict(behaviour=(np.arange(0, 30, 0.01), np.zeros((3000, 2, 3)))),
            r"behaviour: values of shape \(3000, 2, 3\)",
        ),
        (dict(behaviour=(np.arange(0, 30, 0.01), np.array(["a"] * 3000))), r"behaviour: values must be numbers"),
    ],
)
def test_decoder_refuses_input_it_would_silently_misread(tmp_path, change, message):
    import poyo

    s = recording()
    if "spike_scale" in change:  # spike times in ms, behaviour in s
        s["spike_times"] = s["spike_times"] * change.pop("spike_scale")
    s.update(change)
    with pytest.raises(ValueError, match=message):
        poyo.Decoder(workdir=tmp_path).fit(s)
    assert not (tmp_path / "runs").exists()


def test_decoder_arguments_are_checked_at_construction():
    import poyo

    for kwargs, message in [
        (dict(max_steps=True), "max_steps"),
        (dict(batch_size=0), r"batch_size=0: must be auto or a positive integer"),
        (dict(seed="abc"), r"seed='abc': must be a non-negative integer"),
        (dict(seed=1e20), r"seed=1e\+20: must be a non-negative integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            poyo.Decoder(**kwargs)


def test_non_ascii_unit_ids_are_the_same_units_when_read_back(tmp_path):
    import poyo
    from poyo.data import Dataset

    dec = poyo.Decoder(workdir=tmp_path)
    sid, units = dec._write(recording(ids=[f"ünit_{i}" for i in range(6)]), "s", tmp_path / "data")
    assert sorted(units) == sorted(f"{sid}/ünit_{i}" for i in range(6))
    assert sorted(Dataset(tmp_path / "data", validate=False).unit_ids) == sorted(
        units
    )  # what the model's vocabulary holds


@pytest.mark.parametrize(
    "trials, message",
    [
        (np.arange(30.0).reshape(10, 3), r"trials: expected an \(n, 2\) array .* got shape \(10, 3\)"),
        (np.stack([np.arange(0, 50, 5.0), np.arange(4, 54, 5.0)]), r"got shape \(2, 10\) \(transposed\?"),
        (np.stack([np.arange(100, 150, 5.0), np.arange(104, 154, 5.0)], 1), r"0 of 10 trials overlap the recording"),
        ([[0, 5], [10, 15]], r"2 of 2 trials overlap the recording .* needs at least 3"),
        ([[0, 5], [10, 8], [20, 25]], r"end > start"),
    ],
)
def test_array_import_refuses_trials_it_would_misread(trials, message):
    from poyo.pipelines.arrays import ArrayContentError, from_spike_times

    rng = np.random.default_rng(0)
    t = np.arange(0, 60, 0.01)
    with pytest.raises(ArrayContentError, match=message):
        from_spike_times(fx.spike_trains(4, 0, 60, rng), ["a", "b", "c", "d"], {"hand.vel": (t, np.zeros((len(t), 2)))},
                         brainset="lab", session_id="s", trials=trials)  # fmt: skip


def test_the_generator_never_deletes_a_sibling_folder_or_a_users_file_under_a_generated_name(tmp_path):
    small = SyntheticConfig(num_animals=1, sessions_per_animal=1, duration_s=30.0, min_units=5, max_units=6)
    out = ensure(tmp_path / "synthetic_reaching", small, progress=False)
    for sibling in ("synthetic_reaching.old", "synthetic_reaching.building"):
        (tmp_path / sibling).mkdir()
        (tmp_path / sibling / "mine.txt").write_text("my notes")
        with pytest.raises(FileExistsError, match=rf"{sibling} is in the way .*nothing was deleted"):
            ensure(out, SyntheticConfig(**{**small.__dict__, "seed": 1}), progress=False)
        assert (tmp_path / sibling / "mine.txt").read_text() == "my notes"
        (tmp_path / sibling / "mine.txt").unlink()
        (tmp_path / sibling).rmdir()
    (h5,) = out.glob("*.h5")
    h5.write_bytes(b"my own recording")  # a user's file saved under a generated name
    with pytest.raises(FileExistsError, match="the generator did not write"):
        ensure(out, SyntheticConfig(**{**small.__dict__, "seed": 1}), progress=False)
    assert h5.read_bytes() == b"my own recording"
    h5.unlink()
    ensure(out, SyntheticConfig(**{**small.__dict__, "seed": 1}), progress=False)  # a missing file: rebuilt
    assert len(list(out.glob("*.h5"))) == 1 and not (tmp_path / "synthetic_reaching.old").exists()


def test_sessions_whose_behaviour_differs_in_width_say_so(tmp_path):
    from poyo.data.discover import choose_behaviour
    from poyo.pipelines.arrays import from_spike_times, write_session

    rng = np.random.default_rng(0)
    t = np.arange(0, 30, 0.01)
    for sid, dims in (("a", 2), ("b", 3)):
        write_session(from_spike_times(fx.spike_trains(3, 0, 30, rng), ["x", "y", "z"],
                                       {"cursor.vel": (t, np.zeros((len(t), dims)))}, brainset="lab", session_id=sid),
                      tmp_path)  # fmt: skip
    with pytest.raises(
        KeyError, match=r"has 'cursor.vel', but with different widths \(2 dims in e.g. \['a.h5'\], 3 dims"
    ):
        choose_behaviour(tmp_path / "lab")


def test_a_model_file_with_non_finite_unit_features_is_refused_on_load(tmp_path):
    from poyo.model import save_pretrained

    model = POYO(dim=32, depth=1, dim_head=16, num_latents_per_step=4, cross_heads=1, self_heads=2,
                 unit_ids=["b/s/u0", "b/s/u1"], session_ids=["b/s"])  # fmt: skip
    values = torch.tensor([[1.0, 0.5], [float("nan"), 0.1]])
    model.unit_features = {
        "key": "cursor_velocity_2d",
        "names": ["rate", "c0"],
        "ids": ["b/s/u0", "b/s/u1"],
        "values": values,
    }
    path = save_pretrained(model, tmp_path / "model.pt", readouts=[ReadoutConfig("cursor_velocity_2d", std=1.0)])
    with pytest.raises(
        ValueError, match=rf"{path}: damaged unit_features entry: NaN or infinite values for units \['b/s/u1'\]"
    ):
        load_pretrained(path)


def test_streaming_refuses_to_predict_from_spikes_it_already_dropped_and_bad_times():
    from poyo.stream import StreamingDecoder

    units = [f"u{i}" for i in range(4)]
    model = POYO(dim=32, depth=1, dim_head=16, num_latents_per_step=4, cross_heads=1, self_heads=2,
                 unit_ids=[f"b/s/{u}" for u in units], session_ids=["b/s"], seed=0).eval()  # fmt: skip
    model.readout_configs = [ReadoutConfig("cursor_velocity_2d", std=1.0)]
    ids = [f"b/s/{u}" for u in units]
    dec = StreamingDecoder(model, session_id="b/s", unit_ids=ids)
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 9.0, 400))
    dec.push(times, rng.integers(0, 4, 400))
    fresh = StreamingDecoder(model, session_id="b/s", unit_ids=ids)
    fresh.push(dec._times[: dec._n].copy(), dec._units[: dec._n].copy())
    expected = fresh.predict(9.3)
    dec.predict(9.8)
    with pytest.raises(
        ValueError,
        match=r"predict: t_now=9.300000 needs the spikes after 8.300000 s, but those up to 8.800000 s were already dropped",
    ):
        dec.predict(9.3)
    np.testing.assert_allclose(fresh.predict(9.3), expected)  # going back within what it still holds is fine
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="t_now must be a finite time"):
            fresh.predict(bad)
    with pytest.raises(ValueError, match="window must be a finite number"):
        StreamingDecoder(model, session_id="b/s", unit_ids=ids, window=float("inf"))
    with pytest.raises(ValueError, match="capacity must be a positive number"):
        StreamingDecoder(model, session_id="b/s", unit_ids=ids, capacity=-1)


def test_resume_true_continues_in_the_runs_own_folder_and_appends_to_its_metrics(tmp_path):
    small = ["dataset.generate.num_animals=1", "dataset.generate.sessions_per_animal=1", "dataset.generate.duration_s=40",
             "dataset.generate.min_units=6", "dataset.generate.max_units=8", "num_workers=0", "batch_size=8",
             "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=3", "trainer.log_every_n_steps=1",
             "trainer.check_val_every_n_epoch=100", "baseline.bin_s=0.1", f"data_root={tmp_path / 'data'}"]  # fmt: skip
    first = subprocess.run([sys.executable, str(ROOT / "train.py"), *small], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    (run,) = [p for p in (tmp_path / "outputs").glob("*/*") if (p / "checkpoints").is_dir()]
    rows = len((run / "metrics.csv").read_text().splitlines())
    again = subprocess.run([sys.executable, str(ROOT / "train.py"), *small, "resume=true"], capture_output=True,
                           text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"in its run folder {run}" in again.stdout
    assert [p for p in (tmp_path / "outputs").glob("*/*") if (p / "checkpoints").is_dir()] == [run]
    assert len((run / "metrics.csv").read_text().splitlines()) > rows  # appended, not started anew elsewhere


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(unit_ids=np.array([None] * 100 + [1] * 200, dtype=object)), r"unit_ids: None is not a unit id"),
        (dict(spike_times=["0.5", "x"] * 150), r"spike_times: spike times must be numbers"),
        (
            dict(behaviour={"spikes.rate": (np.arange(0, 30, 0.01), np.zeros((3000, 2)))}),
            r"behaviour key 'spikes.rate': 'spikes' holds the session's own data",
        ),
        (
            dict(behaviour={"hand.timestamps": (np.arange(0, 30, 0.01), np.zeros((3000, 2)))}),
            r"'timestamps' holds the session's own data",
        ),
        (dict(train=[[0, 10, 12]], valid=[[20, 25]]), r"train: expected \(n, 2\) start/end rows, got shape \(1, 3\)"),
    ],
)
def test_decoder_input_mistakes_are_one_line_naming_the_argument(tmp_path, change, message):
    import poyo

    s = recording()
    s["spike_times"], s["unit_ids"] = s["spike_times"][:300], s["unit_ids"][:300]
    s.update(change)
    with pytest.raises(ValueError, match=message):
        poyo.Decoder(workdir=tmp_path).fit(s)


def test_mixed_type_unit_ids_are_read_as_their_names():
    from poyo.decoder import _trains

    trains, names = _trains("s", [0.1, 0.2, 0.3, 0.4], np.array([1, "a", 1, 2.5], dtype=object))
    assert names == ["1", "2.5", "a"] and [t.tolist() for t in trains] == [[0.1, 0.3], [0.4], [0.2]]

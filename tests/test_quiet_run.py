"""A run prints what the user needs and nothing else; the `logger` group (csv, tensorboard, wandb)."""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from poyo.training import loggers

ROOT = Path(__file__).resolve().parents[1]
# what a library prints that a user did not ask for
NOISE = re.compile(
    r"warn|deprecat|tip:|💡|gpu available|tpu available|litlogger|will be deleted|traceback|stopped:", re.IGNORECASE
)


def train_py(tmp_path, *args, timeout=400):
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        f"data_root={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


@pytest.mark.slow
def test_quick_start_prints_no_warnings(tmp_path):
    """The README's main job (default settings and data), cut to a few steps: the data table, the
    model line, progress bars, the results table and where the files went; no warnings. (The
    linear baselines use 0.1 s bins and 3 contexts instead of 10: their fits were 64 of the test's 84 s.)"""
    out = train_py(tmp_path, "trainer.max_steps=4", "trainer.min_steps=0", "baseline.bin_s=0.1", "baseline.step_s=0.5")
    assert out.returncode == 0, out.stderr[-3000:]
    noisy = [line for line in (out.stdout + out.stderr).splitlines() if NOISE.search(line)]
    assert not noisy, noisy
    for expected in ("9 sessions, 3 subjects", "model poyo_mini", "mean over sessions", "plot: ", "run folder: "):
        assert expected in out.stdout, expected


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None,
    reason="tensorboard is not installed",
)
def test_tensorboard_logger_writes_event_files(tmp_path, synthetic_root):
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"data_root={synthetic_root}", "dataset=synthetic_reaching", "dataset.generate=null",
         f"hydra.run.dir={tmp_path / 'run'}", "logger=tensorboard", "num_workers=0", "batch_size=8", "trainer.max_steps=3", "trainer.min_steps=0"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and sum(e.stat().st_size for e in events) > 0
    assert (tmp_path / "run" / "metrics.csv").exists()  # always written beside the chosen logger


def test_a_missing_logger_package_is_named_with_its_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ModuleNotFoundError, match=r"logger=wandb needs the 'wandb' package: pip install -e \"\.\[wandb\]\""
    ):
        loggers.check_logger({"name": "wandb"})
    with pytest.raises(ModuleNotFoundError, match=r"\.\[tensorboard\]"):
        loggers.check_logger({"name": "tensorboard"})
    loggers.check_logger({"name": "csv"})  # needs nothing
    with pytest.raises(ValueError, match="logger must be one of"):
        loggers.check_logger({"name": "mlflow"})


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_train_py_stops_before_training_when_wandb_is_missing(tmp_path):
    out = train_py(tmp_path, "logger=wandb")
    assert (
        out.returncode == 1
        and "error: logger=wandb needs the 'wandb' package" in out.stderr
        and "Traceback" not in out.stderr
    )
    assert not (tmp_path / "data").exists()  # stopped before generating or reading data


def test_metrics_csv_is_appended_to_on_resume(tmp_path):
    """Lightning's CSV logger deletes an existing metrics.csv; a resumed run keeps its rows."""
    first = loggers.make_loggers({"name": "csv"}, tmp_path)[0]
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.save()
    again = loggers.make_loggers({"name": "csv"}, tmp_path)[0]
    again.log_metrics({"train/loss": 0.5, "val/metric": 0.1}, step=1)
    again.save()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["step"], r["train/loss"], r.get("val/metric")) for r in rows] == [("0", "1.0", ""), ("1", "0.5", "0.1")]

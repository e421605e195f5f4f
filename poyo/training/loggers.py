"""Where a run's record goes: ``metrics.csv`` always, plus TensorBoard or W&B when asked
(``logger=tensorboard`` / ``logger=wandb``; their packages are optional extras, and a missing
one stops the run before training with the command that installs it), and ``run.log``: what
the command printed (:func:`run_log`)."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

LOGGERS = ("csv", "tensorboard", "wandb")
NEEDS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}  # any one of these modules


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv`` (and warns, even about a fresh
    run folder that holds only Hydra's files); a resumed run must append to it instead."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class RunCSVLogger(CSVLogger):
    """``metrics.csv`` in the run folder, kept and appended to across resumes."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def quiet_libraries() -> None:
    """Keep a run's output to what the user needs: Lightning's start-up notes (accelerator lines,
    a cloud-logger advertisement, "fit stopped" notes) and a deprecation inside Lightning's own
    code are dropped; our warnings print as one ``warning: ...`` line, without a source line."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    # short recordings have fewer batches per epoch than the logging interval: metrics are still logged every epoch
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"


def check_logger(settings: Mapping) -> None:
    """Raise if ``settings["name"]`` is unknown or its package is not installed."""
    name = settings.get("name", "csv")
    if name not in LOGGERS:
        raise ValueError(f"logger must be one of {LOGGERS}, got {name!r}")
    modules = NEEDS.get(name, ())
    if modules and not any(importlib.util.find_spec(m) is not None for m in modules):
        raise ModuleNotFoundError(
            f"logger={name} needs the '{modules[0]}' package: pip install -e \".[{name}]\" (or pip install {modules[0]}); logger=csv needs nothing"
        )


def make_loggers(settings: Mapping, run_dir: Path) -> list:
    """The Lightning loggers for a run folder: a CSV logger first (``metrics.csv``), then the chosen one."""
    check_logger(settings)
    name = settings.get("name", "csv")
    loggers = [RunCSVLogger(run_dir, name="", version="")]
    if name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False))
    elif name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        extra = {k: v for k, v in settings.items() if k not in ("name",) and v is not None}
        loggers.append(WandbLogger(save_dir=str(run_dir), **extra))
    return loggers


class _Tee:
    """A text stream that also copies what is written to ``log``, except progress-bar redraws
    (carriage returns and terminal control codes)."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        if "\r" not in text and "\x1b" not in text:
            self._log.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._log.flush()
        self._stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding...: the terminal's
        return getattr(self._stream, name)


@contextlib.contextmanager
def run_log(path: Path) -> Iterator:
    """Within the block, what the run prints (its tables, scores and warnings; not the progress
    bars) is also appended to ``path``, so a run folder keeps its own account."""
    log = open(path, "a", encoding="utf-8")
    stdout, show = sys.stdout, warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        show(message, category, filename, lineno, file, line)
        log.write(warnings.formatwarning(message, category, filename, lineno, line))

    sys.stdout, warnings.showwarning = _Tee(stdout, log), showwarning
    try:
        yield log
    finally:
        sys.stdout, warnings.showwarning = stdout, show
        log.close()

"""Checks before a run starts: the settings, the run folder, and a resume's plan.

A bad setting should fail in one line that names it, before any data is read; two runs must
not write into one folder; a resumed run must continue the plan it was started with (same
model, optimiser, batch, data, normalisation), not silently change it half-way.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path

from hydra.utils import to_absolute_path

from poyo.data import Dataset
from poyo.data import intervals as ivs
from poyo.io import pid_alive
from poyo.model import BACKENDS
from poyo.training.module import OBJECTIVES
from poyo.training.optim import OptimConfig
from poyo.training.precision import SETTINGS as PRECISION_SETTINGS
from poyo.training.unit_init import INITS

# the settings that define a run's plan: a resume must not change them
PLAN = (
    "objective",
    "mtm",
    "model",
    "optim",
    "dataset",
    "batch_size",
    "seed",
    "window_length",
    "sessions",
    "train_seconds",
    "finetune",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.min_steps",
)


class SettingError(ValueError):
    """A setting with a value it cannot take; the message names it and says what it needs."""


def _get(cfg: Mapping, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _integer(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def check_settings(cfg: Mapping) -> None:
    """Raise :class:`SettingError` for the first setting of ``train.py`` with an impossible value."""

    def need(key: str, ok, what: str, example: str) -> None:
        value = _get(cfg, key)
        if not ok(value):
            raise SettingError(f"setting {key}={value!r}: {what} (e.g. {key}={example})")

    need("mode", lambda v: v in ("train", "evaluate"), "must be train or evaluate", "train")
    need("layout", lambda v: v in ("packed", "padded"), "must be 'packed' or 'padded'", "packed")
    need(
        "objective",
        lambda v: v in OBJECTIVES,
        "must be supervised (behaviour readouts), mtm (masked modelling of spikes, no behaviour needed) or both",
        "mtm",
    )
    need("attention", lambda v: v in BACKENDS, f"must be one of {list(BACKENDS)}", "auto")
    need("seed", lambda v: _integer(v) and v >= 0, "must be a non-negative integer", "0")
    need("batch_size", lambda v: _integer(v) and v >= 1, "must be a positive integer (the global batch)", "32")
    need("eval_batch_size", lambda v: v is None or (_integer(v) and v >= 1), "must be a positive integer or null", "64")
    need("num_workers", lambda v: _integer(v) and v >= 0, "must be an integer >= 0", "2")
    need("window_length", lambda v: _number(v) and v > 0, "must be a positive number of seconds", "1.0")
    window = float(_get(cfg, "window_length"))
    need(
        "eval_step",
        lambda v: _number(v) and 0 < v <= window,
        f"must be a number of seconds in (0, window_length={window:g}]",
        "0.5",
    )
    need(
        "train_seconds",
        lambda v: v is None or (_number(v) and v > 0),
        "must be null or a positive number of seconds",
        "120",
    )
    need(
        "sessions",
        lambda v: (
            v is None
            or (
                not isinstance(v, (str, bytes))
                and hasattr(v, "__len__")
                and len(v) > 0
                and all(isinstance(s, str) and s for s in v)
            )
        ),
        "must be null (every session) or a non-empty list of session ids or patterns",
        "[brainset/session_a]",
    )
    need("optim.name", lambda v: v in ("adamw", "lamb"), "must be adamw or lamb", "adamw")
    need(
        "optim.base_lr",
        lambda v: _number(v) and v > 0,
        "must be a positive number (the peak lr is base_lr x batch_size)",
        "3.125e-5",
    )
    need("optim.weight_decay", lambda v: v is None or (_number(v) and v >= 0), "must be a number >= 0", "1e-4")
    for key in ("optim.constant_fraction", "optim.final_factor"):
        need(key, lambda v: v is None or (_number(v) and 0 <= v <= 1), "must be a number in [0, 1]", "0.5")
    need(
        "optim.eps",
        lambda v: v is None or (_number(v) and 0 < v < 1),
        "must be a number in (0, 1)",
        f"{OptimConfig.eps:g}",
    )
    need("optim.mode", lambda v: v in (None, "poyo", "torch_brain"), "must be poyo or torch_brain (optim=lamb)", "poyo")
    need("optim.warmup_steps", lambda v: v is None or (_integer(v) and v >= 0), "must be an integer >= 0", "0")
    need("trainer.max_epochs", lambda v: _integer(v) and v >= 1, "must be a positive integer", "20")
    need("trainer.min_steps", lambda v: v is None or (_integer(v) and v >= 0), "must be an integer >= 0", "1000")
    need("dataset.min_steps", lambda v: v is None or (_integer(v) and v >= 0), "must be an integer >= 0", "3000")
    need(
        "trainer.max_steps",
        lambda v: _integer(v) and (v == -1 or v >= 1),
        "must be -1 (use max_epochs) or a positive integer",
        "1000",
    )
    for key in ("trainer.check_val_every_n_epoch", "trainer.checkpoint_every_n_steps", "trainer.log_every_n_steps"):
        need(key, lambda v: _integer(v) and v >= 1, "must be a positive integer", "5")
    need(
        "trainer.precision",
        lambda v: str(v) in PRECISION_SETTINGS,
        "must be auto (bf16-mixed where the hardware computes bf16, else 32-true), 32-true or bf16-mixed",
        "auto",
    )
    need(
        "finetune.init",
        lambda v: v is None or v in INITS,
        "must be statistics (new units start from their firing statistics) or random",
        "statistics",
    )
    need(
        "trainer.gradient_clip_val",
        lambda v: v is None or (_number(v) and v > 0),
        "must be null or a positive number",
        "1.0",
    )


def plan_differences(saved: Mapping, current: Mapping) -> list[str]:
    """The plan settings (:data:`PLAN`) that differ between a checkpoint's config and this run's."""
    out = []
    for key in PLAN:
        a, b = _get(saved, key), _get(current, key)
        if a is None and key in ("objective", "mtm"):  # checkpoints from before masked modelling
            a = "supervised" if key == "objective" else b
        if key == "optim" and isinstance(a, Mapping) and "eps" not in a:  # before optim.eps: always the default
            a = {**a, "eps": OptimConfig.eps}
        if a != b:
            out.append(f"{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def resume_problems(saved_hparams: Mapping, current: Mapping, readouts) -> list[str]:
    """Why resuming a checkpoint (its ``hyper_parameters``) with the config ``current`` and
    these (normalised) readouts would not continue the same run; empty if it would."""
    problems = plan_differences(saved_hparams.get("config") or {}, current)
    saved = [(r.get("name"), r.get("mean"), r.get("std")) for r in saved_hparams.get("readouts") or []]
    now = [(r.name, r.to_dict()["mean"], r.to_dict()["std"]) for r in readouts]
    if saved != now:
        problems.append(f"target normalisation: {saved} in the checkpoint, {now} now (did the training data change?)")
    return problems


class RunLock:
    """One writer per run folder: ``<run_dir>/.run.lock`` holds the owner's host and pid.

    A lock left by a process that no longer runs (a crash, SIGKILL) is taken over; a live
    one makes a second run fail with a message naming it, instead of mixing two runs'
    checkpoints and results in one folder. Only the first process of a job takes it (DDP
    workers share their launcher's folder).
    """

    def __init__(self, run_dir):
        self.path = Path(run_dir) / ".run.lock"
        self.held = False

    def acquire(self) -> RunLock:
        if any(os.environ.get(k, "0") != "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK")):
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.path.read_text().split() if self.path.is_file() else []
                if (
                    len(owner) == 2
                    and owner[1].isdigit()
                    and (owner[0] != socket.gethostname() or pid_alive(int(owner[1])))
                ):
                    raise FileExistsError(
                        f"{self.path.parent} is in use by another run (host {owner[0]}, pid {owner[1]}); wait for it to finish, "
                        "or give this run its own folder (hydra.run.dir=...)"
                    ) from None
                self.path.unlink(missing_ok=True)  # left by a run that died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return self
        raise RuntimeError(f"could not take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def find_resume(cfg: Mapping, run_dir: Path) -> Path | None:
    """The checkpoint ``resume`` points at: a path, this run's last.ckpt, or the newest run's."""
    if cfg.resume in (False, None, "false"):
        return None
    if cfg.resume not in (True, "true"):
        p = Path(to_absolute_path(str(cfg.resume)))
        p = p / "checkpoints" / "last.ckpt" if p.is_dir() else p
        if not p.is_file():
            raise FileNotFoundError(f"resume={cfg.resume}: no checkpoint at {p}")
        return p
    own = run_dir / "checkpoints" / "last.ckpt"
    if own.is_file():
        return own
    outputs = Path(to_absolute_path("outputs"))  # where the default run folders go
    candidates = sorted(outputs.glob("*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"resume=true: no checkpoints/last.ckpt in {run_dir} or in the runs below {outputs}")
    return candidates[-1]


def warn_short_validation(ds: Dataset, least: float = 120.0) -> None:
    """Validation R² picks the tested checkpoint; on a few seconds of data it is mostly noise."""
    seconds = sum(ivs.total_length(iv) for iv in ds.sampling_intervals("valid").values())
    if seconds < least:
        warnings.warn(
            f"the validation split holds only {seconds:.0f} s of data (less than {least:.0f} s): its R² is a noisy guide for "
            "choosing the checkpoint to test. Longer recordings, or splits with more validation time, make it reliable.",
            stacklevel=2,
        )

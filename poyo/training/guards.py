"""Checks before a run starts: the run folder, and a resume's plan (the settings themselves
are checked once, when the :class:`poyo.training.config.RunConfig` is built).

Two runs must not write into one folder; a resumed run must continue the plan it was started
with (same model, optimiser, batch, data, normalisation), not silently change it half-way.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from poyo.data import Dataset
from poyo.data import intervals as ivs
from poyo.io import pid_alive
from poyo.model import POYOConfig
from poyo.training.optim import OptimConfig

_DEFAULTS = {"model": lambda: POYOConfig().to_dict(), "optim": lambda: asdict(OptimConfig())}

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
    "half_windows",
    "sessions",
    "train_seconds",
    "finetune",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.min_steps",
)


def _get(cfg: Mapping, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def plan_differences(saved: Mapping, current: Mapping) -> list[str]:
    """The plan settings (:data:`PLAN`) that differ between a checkpoint's config and this run's."""
    out = []
    for key in PLAN:
        a, b = _get(saved, key), _get(current, key)
        if a is None and key in ("objective", "mtm"):  # checkpoints from before masked modelling
            a = "supervised" if key == "objective" else b
        if a is None and key == "half_windows":  # checkpoints from before it: whole windows only
            a = 0.0
        if key in ("model", "optim") and isinstance(a, Mapping):  # runs saved by the Hydra-only poyo had _target_
            a = {k: v for k, v in a.items() if k != "_target_"}
        if key in ("model", "optim") and isinstance(a, Mapping):
            # a setting added since the checkpoint was written (optim.eps, optim.warmup_fraction,
            # model.latent_counts, ...) ran with its default, which is the earlier behaviour
            a = {**_DEFAULTS[key](), **a}
        if key == "dataset" and isinstance(a, Mapping) and isinstance(b, Mapping):
            # a recipe setting added since the checkpoint was written (dataset.window_length): what the
            # run used is in its own keys (window_length), compared on their own
            b = {k: v for k, v in b.items() if k in a}
        if isinstance(a, Mapping) and isinstance(b, Mapping):  # name the settings inside that differ
            out += [
                f"{key}.{k}: {a.get(k)!r} in the checkpoint, {b.get(k)!r} now"
                for k in sorted(set(a) | set(b), key=str)
                if a.get(k) != b.get(k)
            ]
        elif a != b:
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


def find_resume(resume, run_dir: Path) -> Path | None:
    """The checkpoint the ``resume`` setting points at: a path, this run's last.ckpt, or the newest run's."""
    if resume in (False, None, "false"):
        return None
    if resume not in (True, "true"):
        p = Path(str(resume)).expanduser().absolute()
        p = p / "checkpoints" / "last.ckpt" if p.is_dir() else p
        if not p.is_file():
            raise FileNotFoundError(f"resume={resume}: no checkpoint at {p}")
        return p
    own = run_dir / "checkpoints" / "last.ckpt"
    if own.is_file():
        return own
    outputs = Path("outputs").absolute()  # where the default run folders go
    candidates = sorted(outputs.glob("*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"resume=true: no checkpoints/last.ckpt in {run_dir} or in the runs below {outputs}")
    return candidates[-1]


SHORT_VALIDATION = 120.0  # s: below this, validation figures are mostly noise (they do not choose the tested weights)


def validation_seconds(ds: Dataset) -> float:
    """How much data the validation split holds, over all sessions (s)."""
    return float(sum(ivs.total_length(iv) for iv in ds.sampling_intervals("valid").values()))


def warn_short_validation(ds: Dataset, metric: str = "R²", least: float = SHORT_VALIDATION) -> None:
    """The validation figure (``metric``: R², or co-bps for masked modelling) picks the tested
    checkpoint; on a few seconds of data it is mostly noise, so the final weights are tested."""
    seconds = validation_seconds(ds)
    if seconds < least:
        warnings.warn(
            f"the validation split holds only {seconds:.0f} s of data (less than {least:.0f} s): its {metric} is too noisy to "
            "choose the checkpoint to test, so the final weights are tested. Longer recordings, or splits with more "
            "validation time, make it reliable.",
            stacklevel=2,
        )

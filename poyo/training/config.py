"""One typed description of a run: :class:`RunConfig`.

Every setting of ``poyo train`` (and ``train.py``) lives in one dataclass of this file, or in
the two it holds: ``model`` (:class:`poyo.model.POYOConfig`) and ``optim``
(:class:`poyo.training.optim.OptimConfig`). A setting is typed and given its default here,
validated once when the config is built, and handed only to the part of the run that uses it
(``run.train`` passes ``cfg.optim`` to the optimiser, ``cfg.model`` to the model, ...).

Two ways to build one:

* in Python: ``RunConfig.preset(dataset="synthetic_reaching", model="poyo_mini")`` from the
  presets shipped in the package (``poyo/configs``), then ``dataclasses.replace`` or
  :meth:`RunConfig.with_changes` (``poyo.Decoder`` does this);
* from the command line: Hydra composes ``poyo/configs/train.yaml`` (groups ``dataset``,
  ``model``, ``optim``, ``finetune``, ``logger``; every other key from these dataclasses'
  defaults) with the user's ``key=value`` overrides, and :func:`from_hydra` types the result.
"""

from __future__ import annotations

import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from poyo.configs import CONFIG_DIR, names, preset
from poyo.model import BACKENDS, POYOConfig
from poyo.model.masking import DECODE, MaskSettings
from poyo.training.finetune import MODES as FINETUNE_MODES
from poyo.training.layout import LAYOUTS, check_layout
from poyo.training.loggers import LOGGERS
from poyo.training.module import EVAL_WINDOWS, OBJECTIVES
from poyo.training.optim import OptimConfig
from poyo.training.precision import SETTINGS as PRECISION_SETTINGS
from poyo.training.unit_init import INITS

GROUPS = ("dataset", "model", "optim", "finetune", "logger")  # chosen by preset name on the command line
STANDARD_WINDOW = 1.0  # s: POYO's window since the paper; every published checkpoint was trained on it
BATCH_SECONDS = 32.0  # batch_size=auto: 32 windows of 1 s, 16 of 2 s (the same spikes, so the same time, per step)


class SettingError(ValueError):
    """A setting with a value it cannot take; the message names it and says what it needs."""


def _need(key: str, value, ok: bool, what: str, example: str) -> None:
    if not ok:
        raise SettingError(f"setting {key}={value!r}: {what} (e.g. {key}={example})")


def _int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class DatasetConfig:
    """Where the sessions are and what to decode from them (a ``dataset`` preset, or ``auto``)."""

    name: str  # the brainset folder below data_root (or the preset's name)
    readouts: Any = "auto"  # "auto" (from the sessions' behaviour) or a list of readout settings (poyo.readouts)
    behaviour: str | None = None  # auto: the series to decode when sessions hold several (e.g. hand.pos)
    circular: Any = "auto"  # auto | true | false: decode a one-dim angle through its cos and sin
    unit_dropout: dict | None = None  # augmentation: each training window keeps a random subset of its units
    spike_jitter: float = 0.0  # augmentation: every spike moves by up to +- this many seconds (not with objective=mtm)
    min_epochs: int = 0  # least epochs for this recipe (the larger of this and trainer.max_epochs; not objective=mtm)
    window_length: float = STANDARD_WINDOW  # the recipe's window (s) from scratch (window_length=auto)
    half_windows: float = 0.0  # the share of its training windows cut in two (half_windows=auto)
    brainsets: list[str] | None = None  # several brainset folders below data_root (POYO-1)
    include: list[str] | None = None  # the session ids or patterns kept (default: all)
    generate: dict | None = None  # the synthetic set's generator settings: generated when missing

    def __post_init__(self):
        _need("dataset.name", self.name, isinstance(self.name, str) and bool(self.name), "must name a folder", "lab")
        _need(
            "dataset.spike_jitter", self.spike_jitter, _num(self.spike_jitter) and self.spike_jitter >= 0,
            "must be a number of seconds >= 0", "0.025",
        )  # fmt: skip
        _need(
            "dataset.min_epochs", self.min_epochs, _int(self.min_epochs) and self.min_epochs >= 0,
            "must be an integer >= 0", "70",
        )  # fmt: skip
        _need(
            "dataset.window_length", self.window_length, _num(self.window_length) and self.window_length > 0,
            "must be a positive number of seconds", "2.0",
        )  # fmt: skip
        h = self.half_windows
        _need("dataset.half_windows", h, _num(h) and 0 <= h < 1, "must be a share in [0, 1)", "0.5")


@dataclass
class TrainerConfig:
    """How long and where to train (Lightning). Multi-GPU: devices=8; multi-node: num_nodes=N."""

    accelerator: str = "auto"  # auto | cpu | gpu
    devices: Any = 1  # GPUs per node (or "auto"); batch_size stays the GLOBAL batch
    num_nodes: int = 1  # launched with torchrun or SLURM
    strategy: str = "auto"  # auto | ddp | ddp_find_unused_parameters_true ...
    precision: str = (
        "auto"  # auto (bf16-mixed where the CPU or GPU computes bf16 natively, else 32-true) | 32-true | bf16-mixed
    )
    max_epochs: int = 20  # train this many epochs ...
    min_steps: int = 1000  # ... but at least this many steps (short recordings have few windows per epoch)
    max_steps: int = -1  # > 0 overrides both
    gradient_clip_val: float | None = None  # clip the gradient norm to this (None: no clipping)
    check_val_every_n_epoch: int = 5  # validation R2 picks the tested weights
    log_every_n_steps: int = 10  # metrics.csv rows
    checkpoint_every_n_steps: int = 50  # last.ckpt, written atomically
    keep_freed_memory: bool = True  # glibc: freed activations stay in the process for the next step (poyo.memory)
    compile: bool = False  # torch.compile the latents' self-attention stack (poyo.training.compile); opt-in, for GPUs

    def __post_init__(self):
        t = "trainer."
        _need(
            t + "max_epochs",
            self.max_epochs,
            _int(self.max_epochs) and self.max_epochs >= 1,
            "must be a positive integer",
            "20",
        )
        _need(
            t + "min_steps",
            self.min_steps,
            _int(self.min_steps) and self.min_steps >= 0,
            "must be an integer >= 0",
            "1000",
        )
        _need(
            t + "max_steps", self.max_steps, _int(self.max_steps) and (self.max_steps == -1 or self.max_steps >= 1),
            "must be -1 (use max_epochs) or a positive integer", "1000",
        )  # fmt: skip
        for key in ("check_val_every_n_epoch", "checkpoint_every_n_steps", "log_every_n_steps"):
            v = getattr(self, key)
            _need(t + key, v, _int(v) and v >= 1, "must be a positive integer", "5")
        _need(
            t + "precision", self.precision, str(self.precision) in PRECISION_SETTINGS,
            "must be auto (bf16-mixed where the hardware computes bf16, else 32-true), 32-true or bf16-mixed", "auto",
        )  # fmt: skip
        self.precision = str(self.precision)
        _need(
            t + "keep_freed_memory",
            self.keep_freed_memory,
            isinstance(self.keep_freed_memory, bool),
            "must be true or false",
            "true",
        )
        _need(t + "compile", self.compile, isinstance(self.compile, bool), "must be true or false", "false")
        _need(
            t + "gradient_clip_val", self.gradient_clip_val,
            self.gradient_clip_val is None or (_num(self.gradient_clip_val) and self.gradient_clip_val > 0),
            "must be null or a positive number", "1.0",
        )  # fmt: skip


@dataclass
class FinetuneConfig:
    """Adapting a pretrained model to new sessions (``poyo.training.finetune``)."""

    mode: str = "none"  # none (pretrain from scratch) | unit_identification | full | gradual
    checkpoint: str | None = None  # the pretrained model: a train.py checkpoint (.ckpt) or model.pt
    subset: bool = True  # keep only the new data's ids; false keeps the pretrained ids too (their rows stay fixed)
    unfreeze_epoch: int | None = None  # gradual: epochs of embeddings only before everything learns
    init: str = "statistics"  # new units start from embeddings predicted from their firing (statistics) or at random

    def __post_init__(self):
        _need("finetune.mode", self.mode, self.mode in FINETUNE_MODES, f"must be one of {list(FINETUNE_MODES)}", "full")
        _need(
            "finetune.init", self.init, self.init in INITS,
            "must be statistics (new units start from their firing statistics) or random", "statistics",
        )  # fmt: skip
        if self.mode != "none" and not self.checkpoint:
            raise SettingError(
                f"finetune={self.mode} needs finetune.checkpoint=PATH (a poyo checkpoint or pretrained .pt)"
            )
        if self.mode == "gradual":
            _need(
                "finetune.unfreeze_epoch", self.unfreeze_epoch,
                _int(self.unfreeze_epoch) and self.unfreeze_epoch >= 1, "must be a positive integer (embedding-only epochs)", "2",
            )  # fmt: skip


@dataclass
class LoggerConfig:
    """Where metrics go besides ``metrics.csv`` (always written)."""

    name: str = "csv"  # csv | tensorboard (pip install tensorboard) | wandb (pip install wandb)
    project: str | None = None  # wandb project
    entity: str | None = None  # wandb team or user
    mode: str | None = None  # wandb: online | offline | disabled

    def __post_init__(self):
        _need("logger", self.name, self.name in LOGGERS, f"must be one of {list(LOGGERS)}", "csv")


@dataclass
class MtmConfig:
    """Masked modelling of spikes (``objective=mtm|both``): :class:`poyo.model.masking.MaskSettings`."""

    bin_s: float = 0.02  # predicted spike counts per 20 ms bin (Poisson loss)
    neuron_ratio: float = 0.3  # units hidden by neuron masking
    intra_ratio: float = 0.3  # units of the chosen region hidden by intra-region masking
    causal_min: float = 0.5  # causal masking: the cut falls between these fractions of the window
    causal_max: float = 0.9
    # how often each scheme is drawn (per batch; neuron most: it teaches co-smoothing fastest)
    schemes: dict = field(
        default_factory=lambda: {"neuron": 3.0, "causal": 1.0, "intra_region": 1.0, "inter_region": 1.0}
    )
    decode: float = 1.0  # objective=both: how often a batch is left unmasked to train the behaviour readouts
    forward_s: float = 0.2  # scoring forward prediction: the last 0.2 s of each window
    report_sessions: int | None = (
        20  # the closing table scores at most this many sessions (each fits its own baselines)
    )

    def __post_init__(self):
        self.masking("mtm")  # MaskSettings validates the masking itself
        _need("mtm.decode", self.decode, _num(self.decode) and self.decode >= 0, "must be a number >= 0", "1.0")
        _need(
            "mtm.report_sessions", self.report_sessions,
            self.report_sessions is None or (_int(self.report_sessions) and self.report_sessions >= 1),
            "must be null or a positive integer", "20",
        )  # fmt: skip

    def masking(self, objective: str) -> MaskSettings | None:
        """The masking of an ``objective=mtm|both`` run (``both`` adds unmasked batches); None if supervised."""
        if objective == "supervised":
            return None
        schemes = dict(self.schemes)
        if objective == "both":
            schemes[DECODE] = self.decode
        try:
            return MaskSettings(
                bin_s=self.bin_s, neuron_ratio=self.neuron_ratio, intra_ratio=self.intra_ratio,
                causal_min=self.causal_min, causal_max=self.causal_max, schemes=schemes, forward_s=self.forward_s,
            )  # fmt: skip
        except ValueError as e:
            raise SettingError(f"setting {e}") from None


@dataclass
class BaselineConfig:
    """The decoders printed beside POYO: ridge on binned counts (and GRUs when asked)."""

    bin_s: float = 0.05  # count bins
    step_s: float = 0.25  # ridge: training samples every step_s
    gru: bool = False  # add bidirectional and causal GRU decoders (minutes more per session)

    def __post_init__(self):
        for key in ("bin_s", "step_s"):
            v = getattr(self, key)
            _need(f"baseline.{key}", v, _num(v) and v > 0, "must be a positive number of seconds", "0.05")
        _need("baseline.gru", self.gru, isinstance(self.gru, bool), "must be true or false", "true")


def _data_root() -> str:
    return os.environ.get("POYO_DATA_DIR", "data/processed")


@dataclass
class RunConfig:
    """Every setting of a run. Built once, validated once; each part of the run reads its own section."""

    dataset: DatasetConfig  # the sessions and what to decode (a preset, or dataset=<folder>)
    model: POYOConfig = field(default_factory=lambda: POYOConfig.from_name("poyo_mini"))  # the network
    optim: OptimConfig = field(default_factory=lambda: OptimConfig.from_name("adamw"))  # optimiser and schedule
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # steps, devices, precision
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # adapting a pretrained model
    mtm: MtmConfig = field(default_factory=MtmConfig)  # masked modelling (objective=mtm|both)
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # metrics beside metrics.csv
    baseline: BaselineConfig = field(default_factory=BaselineConfig)  # decoders printed beside POYO
    mode: str = "train"  # train | evaluate
    objective: str = "supervised"  # supervised | mtm (masked modelling of spikes: needs no behaviour) | both
    seed: int = 0  # seeds every random choice of the run (init, windows, augmentation; workers get their own)
    data_root: str = field(default_factory=_data_root)  # the folder of brainset folders ($POYO_DATA_DIR)
    sessions: list[str] | None = None  # session ids or patterns to keep (default: the dataset's)
    train_seconds: float | None = None  # keep only the earliest N seconds of each session's train split (few-shot)
    window_length: float | str = "auto"  # seconds of spikes per window; auto: see resolved()
    half_windows: float | str = "auto"  # the share of training windows cut to half as long; auto: see resolved()
    eval_step: float | str = "auto"  # evaluation windows start every eval_step s (stitched); auto: a quarter window
    batch_size: int | str = "auto"  # the GLOBAL batch (split over devices); auto: BATCH_SECONDS of windows
    eval_batch_size: int | None = 64  # windows per evaluation batch (None: batch_size)
    num_workers: int = 2  # DataLoader worker processes
    layout: str = "auto"  # auto (packed on CPU; on a GPU the faster, measured on the first batch) | packed | padded
    attention: str = "auto"  # auto | sdpa | loop | nested | varlen | xformers (the kernel; auto picks per batch)
    validate_data: bool = True  # check every spike array once at start-up
    resume: Any = False  # false | true (the latest run with a checkpoint) | a run folder or .ckpt
    checkpoint: str | None = None  # mode=evaluate: the checkpoint to evaluate
    plot_sessions: int = 3  # sessions drawn in test_predictions.png

    def __post_init__(self):
        _need("mode", self.mode, self.mode in ("train", "evaluate"), "must be train or evaluate", "train")
        _need("layout", self.layout, self.layout in LAYOUTS, f"must be one of {list(LAYOUTS)}", "auto")
        _need(
            "objective", self.objective, self.objective in OBJECTIVES,
            "must be supervised (behaviour readouts), mtm (masked modelling of spikes, no behaviour needed) or both", "mtm",
        )  # fmt: skip
        _need("attention", self.attention, self.attention in BACKENDS, f"must be one of {list(BACKENDS)}", "auto")
        try:
            check_layout(self.layout, self.attention)
        except ValueError as e:
            raise SettingError(f"setting layout={self.layout!r}: {e}") from None
        _need("seed", self.seed, _int(self.seed) and self.seed >= 0, "must be a non-negative integer", "0")
        _need(
            "batch_size", self.batch_size, self.batch_size == "auto" or (_int(self.batch_size) and self.batch_size >= 1),
            "must be auto or a positive integer (the global batch)", "32",
        )  # fmt: skip
        b = self.eval_batch_size
        _need("eval_batch_size", b, b is None or (_int(b) and b >= 1), "must be a positive integer or null", "64")
        _need(
            "num_workers",
            self.num_workers,
            _int(self.num_workers) and self.num_workers >= 0,
            "must be an integer >= 0",
            "2",
        )
        w = self.window_length
        ok = w == "auto" or (_num(w) and w > 0)
        _need("window_length", w, ok, "must be auto or a positive number of seconds", "1.0")
        h = self.half_windows
        _need("half_windows", h, h == "auto" or (_num(h) and 0 <= h < 1), "must be auto or a share in [0, 1)", "0.5")
        e = self.eval_step
        _need(
            "eval_step", e, e == "auto" or (_num(e) and 0.01 <= e <= (w if _num(w) else math.inf)),
            f"must be auto or a number of seconds in [0.01, window_length={f'{w:g}' if _num(w) else w}] (a window every eval_step s)",
            "0.25",
        )  # fmt: skip
        s = self.train_seconds
        _need(
            "train_seconds", s, s is None or (_num(s) and s > 0), "must be null or a positive number of seconds", "120"
        )
        _need(
            "sessions", self.sessions,
            self.sessions is None or (len(self.sessions) > 0 and all(isinstance(x, str) and x for x in self.sessions)),
            "must be null (every session) or a non-empty list of session ids or patterns", "[brainset/session_a]",
        )  # fmt: skip
        _need(
            "plot_sessions",
            self.plot_sessions,
            _int(self.plot_sessions) and self.plot_sessions >= 0,
            "must be an integer >= 0",
            "3",
        )
        if self.mode == "evaluate" and not self.checkpoint:
            raise SettingError("mode=evaluate needs checkpoint=PATH (a .ckpt written by train.py, or a pretrained .pt)")

    # --- building ---------------------------------------------------------------------------
    @classmethod
    def preset(
        cls, dataset: str = "synthetic_reaching", model: str = "poyo_mini", optim: str = "adamw", **changes
    ) -> RunConfig:
        """A config from the presets shipped with poyo; ``dataset`` that is not a preset names a
        brainset folder below ``data_root`` (the ``auto`` recipe). ``changes``: other fields,
        e.g. ``seed=3`` or ``trainer=TrainerConfig(max_steps=100)``."""
        return cls(
            dataset=dataset_config(dataset),
            model=POYOConfig.from_name(model),
            optim=OptimConfig.from_name(optim),
            **changes,
        )

    @classmethod
    def from_dict(cls, settings: Mapping) -> RunConfig:
        """A config from plain nested settings (what :meth:`to_dict` and checkpoints hold):
        unknown keys and values of the wrong type are refused, naming them."""
        return _build(cls, settings, "")

    def to_dict(self) -> dict:
        """Plain values (stored in checkpoints; loads with ``torch.load(weights_only=True)``)."""
        out = asdict(self)
        out["model"], out["optim"] = self.model.to_dict(), asdict(self.optim)
        return out

    def with_changes(self, **changes) -> RunConfig:
        """A copy with dotted keys changed and the result validated, e.g.
        ``cfg.with_changes(**{"trainer.max_steps": 100, "seed": 1})``."""
        d = self.to_dict()
        for key, value in changes.items():
            node, *path, last = [d, *key.split(".")]
            for part in path:
                if not isinstance(node.get(part), dict):
                    raise SettingError(f"setting {key}: '{part}' is not a section")
                node = node[part]
            if last not in node:
                raise SettingError(f"setting {key}: unknown key '{last}'")
            node[last] = value
        return RunConfig.from_dict(d)

    def resolved(self, trained: Mapping | None = None) -> RunConfig:
        """This config with ``window_length``, ``half_windows``, ``batch_size`` and ``eval_step``
        settled where they are ``auto`` (the one place that settles them; a value given is kept as
        it is). ``trained``: what the model this run continues was trained with, when it continues
        one: the ``window_length``, ``half_windows`` and ``batch_size`` of a resumed run, or the
        ``window_length`` of a model fine-tuned or evaluated (None: unknown, from before models
        recorded it).

        ``window_length=auto``: the continued model's window (a model runs on the window it learned:
        its latent grid and time spans assume it), else the recipe's ``dataset.window_length``
        (1 s; 2 s for a lab's own recording, the ``auto`` recipe: on S1 it never lost to 1 s and
        gained up to 0.021 R², benchmarks/README.md). Masked modelling (``objective=mtm|both``,
        tuned on 1 s windows) and a fine-tuned model that does not say take :data:`STANDARD_WINDOW`.
        ``half_windows=auto``: a resumed run's share, else the recipe's ``dataset.half_windows``
        when a model is trained from scratch on the recipe's window (0.5 for a lab's own recording:
        half of its 2 s windows cut to 1 s, for behaviour that turns within a second;
        benchmarks/README.md), else 0: a fine-tuned model keeps whole windows of the length it learned.
        ``batch_size=auto``: a resumed run's batch, else :data:`BATCH_SECONDS` of windows (of their
        mean length, with ``half_windows``), so a longer window does not make a step slower (the
        learning rate, base_lr x batch, follows).
        ``eval_step=auto``: a quarter of the window (:data:`EVAL_WINDOWS` overlapping windows per
        sample): 0.25 s for 1 s windows; for 2 s windows 0.5 s halves every validation's and
        the test's work and moved S1's test R² by 0.0002 (benchmarks/README.md)."""
        trained = dict(trained or {})
        continued = trained or self.finetune.mode != "none" or self.mode == "evaluate"
        scratch = not continued and self.objective == "supervised"
        window = self.window_length
        if window == "auto":
            window = trained.get("window_length") or (self.dataset.window_length if scratch else STANDARD_WINDOW)
        half = self.half_windows
        if half == "auto":
            recipe = scratch and window == self.dataset.window_length
            half = trained.get("half_windows", self.dataset.half_windows if recipe else 0.0)
        batch = self.batch_size
        if batch == "auto":
            mean = window * (1 - half / 2)
            batch = trained.get("batch_size") or max(1, round(BATCH_SECONDS / mean))
        step = self.eval_step
        if step == "auto":
            step = float(window) / EVAL_WINDOWS
        settled = (window, half, batch, step)
        if (self.window_length, self.half_windows, self.batch_size, self.eval_step) == settled:
            return self
        return self.with_changes(
            window_length=float(window), half_windows=float(half), batch_size=int(batch), eval_step=float(step)
        )

    @property
    def is_resolved(self) -> bool:
        """Whether window_length, half_windows, batch_size and eval_step are numbers (what every part of a run reads)."""
        return "auto" not in (self.window_length, self.half_windows, self.batch_size, self.eval_step)

    @property
    def planned_epochs(self) -> int:
        """The epochs to train: the larger of ``trainer.max_epochs`` and the recipe's
        ``dataset.min_epochs``, which is about decoding behaviour: masked modelling alone
        (``objective=mtm``) takes ``trainer.max_epochs`` (on a 289-unit Neuropixels recording,
        1,000 steps beat the GLM in under 10 minutes on 2 cores; benchmarks/README.md)."""
        if self.objective == "mtm":
            return self.trainer.max_epochs
        return max(self.trainer.max_epochs, self.dataset.min_epochs)

    @property
    def spike_jitter(self) -> float:
        """The training windows' spike jitter: ``dataset.spike_jitter``, except with
        ``objective=mtm``, whose targets are the spikes' own 20 ms counts (jitter would blur
        them: validation co-bps 0.13 against 0.18 at step 400 on the Neuropixels recording)."""
        return 0.0 if self.objective == "mtm" else self.dataset.spike_jitter


def dataset_config(name: str, **changes) -> DatasetConfig:
    """The ``dataset`` preset ``name``, or the ``auto`` recipe for a brainset folder of that name."""
    settings = preset("dataset", name) if name in names("dataset") else {**preset("dataset", "auto"), "name": name}
    return _build(DatasetConfig, {**settings, **changes}, "dataset.")


# --- typing plain values -------------------------------------------------------------------
def _build(cls, settings: Mapping, prefix: str):
    """``cls(**settings)`` with each value checked against its field's annotation (nested
    dataclasses built the same way); a model/optim YAML's Hydra ``_target_`` key is ignored."""
    if not isinstance(settings, Mapping):
        raise SettingError(f"setting {prefix.rstrip('.') or 'config'}: expected a mapping, got {settings!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(settings) - known - {"_target_"})
    if unknown:
        raise SettingError(
            f"setting {', '.join(prefix + k for k in unknown)}: unknown to {cls.__name__} (it takes {sorted(known)})"
        )
    values = {}
    for k, v in settings.items():
        if k == "_target_":
            continue
        t = hints[k]
        values[k] = (
            _build(t, v, f"{prefix}{k}.") if is_dataclass(t) and isinstance(v, Mapping) else _typed(v, t, prefix + k)
        )
    missing = [
        f.name for f in fields(cls) if f.name not in values and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise SettingError(f"setting {', '.join(prefix + m for m in missing)}: missing (no default)")
    try:
        return cls(**values)
    except SettingError:
        raise
    except (TypeError, ValueError) as e:
        raise SettingError(f"setting {prefix.rstrip('.')}: {e}") from None


def _typed(value, t, key: str):
    """``value`` as the annotation ``t`` wants it (ints stay ints, ints become floats, lists
    of str), or a :class:`SettingError` naming ``key``."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _typed(value, a, key)
            except SettingError:
                pass
        raise SettingError(f"setting {key}={value!r}: must be {_describe(t)}")
    if is_dataclass(t) and isinstance(value, t):
        return value
    ok = {
        bool: isinstance(value, bool),
        int: _int(value),
        float: _num(value),
        str: isinstance(value, str),
    }
    if t in ok:
        if not ok[t]:
            raise SettingError(f"setting {key}={value!r}: must be {_describe(t)}")
        return float(value) if t is float else value
    if origin in (list, tuple, Sequence) or t in (list, tuple):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise SettingError(f"setting {key}={value!r}: must be {_describe(t)}")
        inner = args[0] if args else Any
        return [_typed(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping) or t is dict:
        if not isinstance(value, Mapping):
            raise SettingError(f"setting {key}={value!r}: must be a mapping")
        return dict(value)
    return value


def _describe(t) -> str:
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(t))
    return {
        bool: "true or false",
        int: "an integer",
        float: "a finite number",
        str: "a string",
        type(None): "null",
    }.get(t, "a list" if typing.get_origin(t) in (list, tuple, Sequence) else str(t))


# --- Hydra: the command line's front end -----------------------------------------------------
def hydra_defaults() -> dict:
    """The settings outside the preset groups, from the dataclass defaults above (one place):
    the node Hydra composes first (``poyo_run_defaults`` in ``train.yaml``)."""
    out = {}
    for f in fields(RunConfig):
        if f.name in GROUPS:
            continue
        value = f.default_factory() if f.default_factory is not MISSING else f.default
        out[f.name] = asdict(value) if is_dataclass(value) else value
    out["data_root"] = "${oc.env:POYO_DATA_DIR,data/processed}"  # resolved when the run starts
    return out


def register(argv: Sequence[str] = ()) -> None:
    """Put the defaults node into Hydra's ConfigStore, and the ``auto`` recipe under the name of
    every ``dataset=NAME`` in ``argv`` that no preset has: neither the package's nor one in a
    folder of ``hydra.searchpath=[file:///path]`` (a brainset folder below data_root)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="poyo_run_defaults", node=hydra_defaults())
    own = []  # the user's config folders
    for arg in argv:
        key, _, value = str(arg).partition("=")
        if key.lstrip("+~") == "hydra.searchpath":
            own += [
                Path(p.strip(" '\"")[len("file://") :])
                for p in value.strip("[]").split(",")
                if p.strip(" '\"").startswith("file://")
            ]
    for arg in argv:
        key, eq, value = str(arg).partition("=")
        if key.lstrip("+~") != "dataset" or not (eq and value) or value in names("dataset"):
            continue
        if not any((d / "dataset" / f"{value}.yaml").is_file() for d in own):
            store.store(group="dataset", name=value, node={**preset("dataset", "auto"), "name": value})


def from_hydra(cfg) -> RunConfig:
    """A composed Hydra config (``DictConfig``) as a :class:`RunConfig` (the ``hydra`` key dropped)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return RunConfig.from_dict(plain)


def compose(*overrides: str) -> RunConfig:
    """The config ``poyo train`` would build from these ``key=value`` overrides (for tests and notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register(overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return from_hydra(hydra_compose("train", overrides=list(overrides)))

"""Training and evaluation runs, as functions: ``train(cfg, run_dir)`` and
``evaluate(cfg, run_dir)`` take a :class:`poyo.training.config.RunConfig` and a run folder.
``poyo train`` / ``train.py`` call them from the command line, ``poyo.Decoder`` from Python.

A run: the dataset's folder is prepared (the synthetic set generated when missing), readouts
chosen and normalised from the training split, the model built from ``cfg.model`` (a
:class:`poyo.model.POYOConfig`) or a pretrained file (fine-tuning), trained with Lightning,
and the weights chosen on validation tested against the linear baselines (:mod:`.report`).
Each helper below takes the config and reads only its own section of it.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch

from poyo.data import DistributedStitchingSampler
from poyo.io import safe_load
from poyo.memory import freed_memory_kept
from poyo.model import POYO, load_pretrained, save_pretrained
from poyo.model.pretrained import pretrained_payload, pretrained_settings
from poyo.readouts import ReadoutConfig, fit_normalisation, readouts_from_settings
from poyo.training.checkpoint import AtomicCheckpointIO
from poyo.training.compile import compile_latent_stack
from poyo.training.config import RunConfig
from poyo.training.finetune import pretrained_for_finetuning
from poyo.training.gru import GRUBaseline
from poyo.training.guards import (
    SHORT_VALIDATION,
    find_resume,
    resume_problems,
    validation_seconds,
    warn_short_validation,
)
from poyo.training.layout import choose_layout, first_batch, layout_of_attention
from poyo.training.linear import LinearBaseline
from poyo.training.loggers import make_loggers
from poyo.training.module import DataModule, POYOModule
from poyo.training.mtm_eval import evaluate_masked, region_note, write_report
from poyo.training.precision import autocast as precision_autocast
from poyo.training.precision import cpu_bf16_support, resolve_precision
from poyo.training.report import report, summary_table
from poyo.training.unit_init import unit_features


def prepare_data(cfg: RunConfig) -> Path | list[Path]:
    """The dataset's folder(s) below ``data_root``: ``dataset.brainsets`` if listed, else ``dataset.name``."""
    data_root = Path(cfg.data_root).expanduser().absolute()  # relative: from where the run started
    if cfg.dataset.generate:
        from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure

        root = data_root / cfg.dataset.name
        ensure(root, SyntheticConfig(**cfg.dataset.generate))
        return root
    brainsets = list(cfg.dataset.brainsets or [cfg.dataset.name])
    missing = [b for b in brainsets if not (data_root / b).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"dataset '{cfg.dataset.name}' needs the brainset folder(s) {[str(data_root / b) for b in missing]}; prepare each with "
            f"`python -m poyo.pipelines.<brainset> --raw-dir data/raw --processed-dir {data_root}` (or set data_root=...)"
        )
    return [data_root / b for b in brainsets] if cfg.dataset.brainsets else data_root / brainsets[0]


def resolve(cfg: RunConfig, resumed: Mapping | None = None) -> RunConfig:
    """``cfg`` with its ``auto`` window settings settled (:meth:`RunConfig.resolved`),
    from what the model the run continues was trained with: ``resumed``, the resumed
    checkpoint's ``hyper_parameters`` (read once by :func:`train`), else the model fine-tuned
    (``finetune.checkpoint``) or evaluated (``checkpoint``), read from its file."""
    if cfg.is_resolved:
        return cfg
    trained = None
    if resumed is not None:
        saved = resumed.get("config") or {}
        trained = {k: saved[k] for k in ("window_length", "half_windows", "batch_size") if k in saved}
    else:
        key, path = "finetune.checkpoint", cfg.finetune.checkpoint if cfg.finetune.mode != "none" else None
        if cfg.mode == "evaluate":
            key, path = "checkpoint", cfg.checkpoint
        if path:
            path = Path(path).expanduser().absolute()
            if not path.is_file():
                raise FileNotFoundError(f"{key}={path}: no such file")
            trained = {"window_length": pretrained_settings(path).get("window_length")}
    return cfg.resolved(trained)


def build_model(cfg: RunConfig, readouts: list[ReadoutConfig], unit_ids, session_ids) -> POYO:
    """The model ``cfg.model`` describes (a :class:`POYOConfig`), with one head per readout name
    and these units and sessions in its vocabularies."""
    cfg = resolve(cfg)
    config = replace(
        cfg.model,
        readouts=list(dict.fromkeys(r.name for r in readouts)),
        window_length=cfg.window_length,
        masked_modelling=cfg.objective != "supervised",
    )
    return POYO(config, unit_ids=unit_ids, session_ids=session_ids, attention=cfg.attention, seed=cfg.seed)


def run_readouts(cfg: RunConfig, root) -> list[ReadoutConfig]:
    """The dataset's readouts. Masked modelling on sessions that share no behaviour series
    has none: the model then has no behaviour heads (it models spikes alone), and says so."""
    try:
        return readouts_from_settings(asdict(cfg.dataset), root)
    except KeyError as e:
        if cfg.objective != "mtm" or "share no behaviour" not in str(e):
            raise
        print(f"{e.args[0]}: masked modelling of the spikes alone (no behaviour heads)")
        return []


def make_datamodule(cfg: RunConfig, root: Path, readouts, *, progress: bool) -> DataModule:
    """The run's data module: the dataset's sessions (or ``sessions``), its augmentation, the batch settings."""
    cfg = resolve(cfg)
    return DataModule(
        root,
        readouts,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        window_length=cfg.window_length,
        half_windows=cfg.half_windows,
        eval_step=cfg.eval_step,
        num_workers=cfg.num_workers,
        # layout=auto is settled once the model exists (run_layout); until then, what needs no measuring
        layout=cfg.layout if cfg.layout != "auto" else layout_of_attention(cfg.attention) or "packed",
        unit_dropout=cfg.dataset.unit_dropout or None,
        spike_jitter=cfg.spike_jitter,
        seed=cfg.seed,
        validate=cfg.validate_data,
        progress=progress,
        # top-level `sessions` (few-shot, fine-tuning) replaces the dataset's own selection
        sessions=list(cfg.sessions) if cfg.sessions else (list(cfg.dataset.include) if cfg.dataset.include else None),
        train_seconds=cfg.train_seconds,
        objective=cfg.objective,
        masking=cfg.mtm.masking(cfg.objective),
    )


def planned_steps(cfg: RunConfig, steps_per_epoch: int) -> int:
    """``trainer.max_steps`` if set, else ``max_epochs`` epochs (or the dataset recipe's own
    ``dataset.min_epochs``, if more: one recording of a lab's own, 70) but at least
    ``trainer.min_steps`` steps (a short recording has few windows per epoch, and the model
    needs a few hundred steps before it starts to decode at all). Epochs, not steps, are what
    a recording's size asks for: on S1's first 13 minutes 3,000 steps (154 epochs) overfitted
    where 1,000 did not (benchmarks/README.md, "Real recordings")."""
    t = cfg.trainer
    return t.max_steps if t.max_steps > 0 else max(cfg.planned_epochs * steps_per_epoch, t.min_steps)


def run_precision(cfg: RunConfig) -> tuple[str, str]:
    """``trainer.precision`` resolved for the device the run uses (``auto``: bf16 where the
    hardware computes it natively, see :mod:`poyo.training.precision`), and why, in words."""
    wanted = str(cfg.trainer.precision)
    gpu = run_device(cfg).type == "cuda"
    resolved = resolve_precision(wanted, "cuda" if gpu else "cpu")
    if wanted != "auto":
        return resolved, "trainer.precision"
    if gpu:
        return resolved, "auto: " + ("the GPU computes bf16" if resolved != "32-true" else "no bf16 on this GPU")
    units = cpu_bf16_support()
    return resolved, f"auto: this CPU has {units}" if units else "auto: no bf16 matrix units on this CPU"


def run_device(cfg: RunConfig) -> torch.device:
    """The device this process trains on: its GPU (``LOCAL_RANK`` under torchrun, SLURM or
    Lightning's launcher) where the run uses GPUs, else the CPU."""
    gpu = str(cfg.trainer.accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if not gpu:
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())


def per_device_batch(cfg: RunConfig, eval: bool = False) -> int:
    """Windows per batch on one device: the global batch over the devices of the run."""
    t = cfg.trainer
    devices = t.devices if isinstance(t.devices, int) and t.devices > 0 else max(1, torch.cuda.device_count())
    batch = (cfg.eval_batch_size or cfg.batch_size) if eval else cfg.batch_size
    return max(1, batch // (devices * t.num_nodes))


def run_layout(cfg: RunConfig, model: POYO, dm: DataModule, *, train: bool = True) -> str:
    """Settle ``layout`` (:func:`poyo.training.layout.choose_layout`) for ``dm``; on a GPU with
    ``layout=auto`` this times the first batch (of training, or with ``train=False`` of the test
    split) in both layouts. Returns the layout and why, for the run's summary line."""
    device = run_device(cfg)
    precision = run_precision(cfg)[0]

    def batches() -> dict:
        if train:
            windows = dm.train_sampler()
            data, stage = dm.train_set, "train"
        else:
            windows = DistributedStitchingSampler(
                dm.eval_set.sampling_intervals("test"), cfg.window_length, step=cfg.eval_step, drop_short=True
            )
            data, stage = dm.eval_set, "test"
        return first_batch(data, windows, per_device_batch(cfg, eval=not train), partial(dm.collate_fn, stage))

    layout, why = choose_layout(
        cfg.layout,
        cfg.attention,
        device,
        model,
        batches,
        lambda: precision_autocast(device.type, precision),
        train=train,
    )
    dm.layout = layout
    return f"layout {layout} ({why})"


def make_trainer(
    cfg: RunConfig,
    run_dir: Path,
    *,
    callbacks=(),
    logger=True,
    total_steps: int = -1,
    steps_per_epoch: int = 1,
    progress: bool = True,
) -> L.Trainer:
    """The Lightning Trainer; it trains ``total_steps`` (shown as the epochs they take)."""
    t = cfg.trainer
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=run_precision(cfg)[0],
        max_epochs=-(-total_steps // steps_per_epoch) if total_steps > 0 else t.max_epochs,
        max_steps=total_steps,
        gradient_clip_val=t.gradient_clip_val,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # our samplers shard by rank themselves
        plugins=[AtomicCheckpointIO()],
        callbacks=list(callbacks),
        logger=make_loggers(asdict(cfg.logger), run_dir) if logger else False,
        default_root_dir=run_dir,
        enable_model_summary=False,
        enable_progress_bar=progress,
    )


class StepBar(L.Callback):
    """One progress bar over a run's training steps (on stderr), for quiet runs."""

    def __init__(self, total: int, describe: str):
        self.total, self.describe, self.bar = total, describe, None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.total, initial=trainer.global_step, desc=self.describe, unit="step", file=sys.stderr
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.bar is not None:
            self.bar.update(trainer.global_step - self.bar.n)
            loss = trainer.callback_metrics.get("train/loss")
            if loss is not None:
                self.bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


LINEAR_CONTEXT_S = 1.0  # the most the window-matched linear decoder spans (see linear_baseline)


def linear_baseline(cfg: RunConfig) -> LinearBaseline:
    """The linear decoders printed beside POYO; the window one spans at most POYO's window, and
    at most :data:`LINEAR_CONTEXT_S`: given 2 s it chose longer contexts on validation that did
    worse on test (S1's 15-unit subset: 0.407 against 0.488 up to 1 s, benchmarks/README.md), and
    its ridge fits grow with the cube of the context (a 2 s span had not finished after 20
    minutes on the quick start's sessions of up to 149 units, where 1 s takes about 70 s)."""
    b, cfg = cfg.baseline, resolve(cfg)
    return LinearBaseline(bin_s=b.bin_s, step_s=b.step_s, context_s=min(cfg.window_length, LINEAR_CONTEXT_S))


def gru_baseline(cfg: RunConfig) -> GRUBaseline | None:
    """The GRU decoders printed beside POYO when ``baseline.gru`` is true: the bidirectional
    one reads three quarters of a window before each sample and one quarter after (what
    POYO's window holds), the causal one a window before it."""
    if not cfg.baseline.gru:
        return None
    cfg = resolve(cfg)
    return GRUBaseline.for_window(cfg.window_length, bin_s=cfg.baseline.bin_s, seed=cfg.seed)


def train(cfg: RunConfig, run_dir: Path, *, progress: bool = True, describe: str = "training") -> dict:
    """Train (or fine-tune, ``cfg.finetune``) as ``cfg`` says, then test the weights chosen on
    validation; everything goes into ``run_dir``. Returns the test results (:func:`results`).
    ``progress=False``: one bar over the training steps (on stderr, titled ``describe``)
    instead of Lightning's bars for every stage."""
    _check_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = find_resume(cfg.resume, run_dir)
    resumed = (safe_load(resume).get("hyper_parameters") or {}) if resume is not None else None
    cfg = resolve(cfg, resumed)
    root = prepare_data(cfg)
    readouts = run_readouts(cfg, root)
    dm = make_datamodule(cfg, root, readouts, progress=progress)
    ds = dm.train_set
    print(f"\n{len(ds.session_ids)} sessions, {len(ds.subject_ids)} subjects, {len(ds.unit_ids)} units in {root}\n")
    print(summary_table(ds))
    dm.check_splits()
    warn_short_validation(ds, "co-bps" if cfg.objective == "mtm" else "R²")
    if cfg.spike_jitter != cfg.dataset.spike_jitter:
        print(
            f"dataset.spike_jitter={cfg.dataset.spike_jitter:g} is not used by objective=mtm: spikes keep their times"
        )
    readouts = dm.readouts = fit_normalisation(ds, readouts)
    if resume is not None:
        problems = resume_problems(resumed, cfg.to_dict(), readouts)
        if problems:
            raise ValueError(
                f"resume={resume}: this run's settings differ from the checkpoint's, so it would not continue the same run:\n  "
                + "\n  ".join(problems)
                + "\nresume with the checkpoint's settings, or start a new run without resume"
            )

    callbacks = []
    if cfg.finetune.mode == "none":
        model = build_model(cfg, readouts, dm.unit_ids, dm.session_ids)
        model.unit_features = unit_features(ds, readouts)  # what adapting to new units later starts from
        name = model.config.name
    else:
        model, readouts, freezer = pretrained_for_finetuning(
            cfg.finetune, dm, readouts, attention=cfg.attention, seed=cfg.seed
        )
        dm.readouts = readouts
        callbacks.append(freezer)
        name = f"pretrained ({Path(cfg.finetune.checkpoint).name})"
    model.readout_configs = readouts
    dm.attach(model)
    layout = run_layout(cfg, model, dm)
    if cfg.trainer.compile and compile_latent_stack(model, run_device(cfg)):
        layout += "; latent stack compiled (trainer.compile)"
    windows = len(dm.train_sampler())
    steps_per_epoch = windows // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"only {windows} training windows: fewer than one global batch of {cfg.batch_size}; lower batch_size"
        )
    total = planned_steps(cfg, steps_per_epoch)
    # the checkpoints carry what model.pt carries, plus the run's settings (for resume and evaluate)
    hparams = {**pretrained_payload(model, readouts), "config": cfg.to_dict()}
    optim = cfg.optim
    module = POYOModule(model, optim, global_batch_size=cfg.batch_size, total_steps=total, hparams=hparams)
    half = f" ({cfg.half_windows:.0%} of them {cfg.window_length / 2:g} s)" if cfg.half_windows else ""
    print(
        f"\nmodel {name}: {model.num_parameters(embeddings=False):,} parameters + "
        f"{model.num_parameters() - model.num_parameters(embeddings=False):,} in the unit/session vocabularies; "
        f"{optim.name} peak lr {optim.peak_lr(cfg.batch_size):.3g} (= {optim.base_lr:g} x global batch {cfg.batch_size}), "
        f"{total} steps ({steps_per_epoch} per epoch, {total / steps_per_epoch:.3g} epochs) of {cfg.window_length:g} s windows{half}; "
        "precision {} ({}); {}\n".format(*run_precision(cfg), layout)
    )
    ckpt_dir = run_dir / "checkpoints"
    best = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="val/metric", mode="max", save_top_k=1, enable_version_counter=False
    )
    callbacks += [
        best,
        L.pytorch.callbacks.ModelCheckpoint(
            dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=cfg.trainer.checkpoint_every_n_steps
        ),
        L.pytorch.callbacks.LearningRateMonitor("step"),
    ]
    if not progress:
        callbacks.append(StepBar(total, describe))
    trainer = make_trainer(
        cfg, run_dir, callbacks=callbacks, total_steps=total, steps_per_epoch=steps_per_epoch, progress=progress
    )
    if resume is not None:
        print(f"resuming from {resume}")
    # every step reuses the memory the last one freed, instead of faulting in fresh pages (poyo.memory)
    with warnings.catch_warnings(), freed_memory_kept(cfg.trainer.keep_freed_memory):
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
        trainer.save_checkpoint(ckpt_dir / "last.ckpt", weights_only=False)  # the final state, whatever the step
        chosen, which = choose_checkpoint(trainer, module, dm, best)
        trainer.test(module, datamodule=dm, verbose=False, ckpt_path=chosen)
    if trainer.is_global_zero:
        step = safe_step(chosen) if chosen else trainer.global_step
        save_pretrained(
            model,
            ckpt_dir / "model.pt",
            readouts=readouts,
            metadata={"run": str(run_dir), "steps": step, "chosen": which},
        )
        summary = (
            report(module, dm, readouts, run_dir, which, linear_baseline(cfg), gru_baseline(cfg), cfg.plot_sessions)
            if cfg.objective != "mtm"
            else None
        )
        masked = masked_report(cfg, model, dm, readouts, run_dir, which)
        print(f"\nrun folder: {run_dir} (the trained model: checkpoints/model.pt; poyo.load_pretrained() reads it)")
        return results(module, summary, masked)
    return results(module, None)


def masked_report(
    cfg: RunConfig, model: POYO, dm: DataModule, readouts, run_dir: Path, chosen: str = ""
) -> dict | None:
    """Masked-modelling scores of a model with a count head on the test split, beside the GLM
    and mean-rate baselines (:mod:`poyo.training.mtm_eval`); None for supervised runs.
    ``chosen``: which weights are tested and why (printed with the table)."""
    settings = cfg.mtm.masking(cfg.objective)
    if settings is None or model.count_head is None:
        return None
    device = next(model.parameters()).device
    precision = run_precision(cfg)[0]
    sessions = dm.eval_set.session_ids
    limit = cfg.mtm.report_sessions
    if limit and len(sessions) > limit:  # each session fits its own GLMs: a pretraining set would take hours
        print(f"\nscoring masked modelling on {limit} of the {len(sessions)} sessions (mtm.report_sessions)")
        sessions = sessions[:limit]
    scores = evaluate_masked(
        model,
        dm.eval_set,
        readouts,
        settings,
        split="test",
        window_length=cfg.window_length,
        batch_size=cfg.eval_batch_size or cfg.batch_size,
        layout=dm.layout,
        autocast=lambda: precision_autocast(device.type, precision),
        sessions=sessions,
    )
    notes = {sid: region_note(dm.eval_set.sessions[sid].unit_regions, len(dm.eval_set.sessions[sid].unit_ids))
             for sid in scores}  # fmt: skip
    summary = write_report(scores, run_dir, notes=notes, chosen=chosen, window_length=cfg.window_length)
    return {"scores": scores, "summary": summary}


def results(module: POYOModule, summary: dict | None, masked: dict | None = None) -> dict:
    """The last test of ``module``: ``{"scores": {session: {readout: score}}, "stitched":
    {(session, readout): {"sample_index", "pred", "target", ...}}, "report": what
    test_results.json holds (POYO beside the linear decoders; None off rank 0 and for
    objective=mtm), "masked": masked-modelling bits per spike beside their baselines
    (``{"scores", "summary"}``, what mtm_results.json holds; None for supervised runs)}``.
    Stitched predictions are normalised, as the model predicts; ``readout.decode`` gives the behaviour's units."""
    return {"scores": module.last_scores, "stitched": module.last_stitched, "report": summary, "masked": masked}


CHOICE_MARGIN = 0.01  # best.ckpt replaces the final weights only if validation prefers it by more than this


def choose_checkpoint(trainer: L.Trainer, module: POYOModule, dm: DataModule, best) -> tuple[str | None, str]:
    """The weights to test, chosen on the validation split: ``best.ckpt`` or the final ones.

    Validation runs every few epochs, so the final weights are validated once more here. The
    schedule ends at a tiny learning rate, so the final weights are kept unless an earlier
    checkpoint scored more than ``CHOICE_MARGIN`` higher (validation R² is noisy), and always
    when the validation split is shorter than ``SHORT_VALIDATION``: on a 120 s Neuropixels
    recording (12 s of validation) best.ckpt scored 0.012 co-bps and 0.039 forward bits per
    spike below the final weights on the test split, its validation lead being noise.
    Returns (checkpoint path or None for the weights in memory, a description for the table).
    """
    final = trainer.validate(module, datamodule=dm, verbose=False)[0].get("val/metric", float("nan"))
    name = "R2" if module.last_scores or not module.last_count_scores else "co-bps"  # masked modelling: co-bps
    best_score = float(best.best_model_score) if best.best_model_score is not None else float("nan")
    seconds = validation_seconds(dm.train_set)
    if seconds < SHORT_VALIDATION:
        return None, f"final weights, step {trainer.global_step} (validation holds {seconds:.0f} s, too little to choose by; {name} {final:.3f}" + (
            f", best.ckpt {best_score:.3f})" if np.isfinite(best_score) else ")"
        )  # fmt: skip
    if best.best_model_path and Path(best.best_model_path).is_file() and best_score > final + CHOICE_MARGIN:
        return (
            best.best_model_path,
            f"best.ckpt, step {safe_step(best.best_model_path)}, chosen on validation ({name} {best_score:.3f}; final weights {final:.3f})",
        )
    return None, f"final weights, step {trainer.global_step}, chosen on validation ({name} {final:.3f}" + (
        f"; best.ckpt {best_score:.3f})" if np.isfinite(best_score) else ")"
    )


def _check_config(cfg) -> None:
    if not isinstance(cfg, RunConfig):
        raise TypeError(
            f"expected a poyo.training.config.RunConfig, got {type(cfg).__name__}; build one with RunConfig.preset(...), "
            "RunConfig.from_dict(...) or poyo.training.config.compose('key=value', ...)"
        )


def safe_step(path) -> int:
    return int(safe_load(path).get("global_step", -1))


def evaluate(cfg: RunConfig, run_dir: Path) -> dict:
    """Test ``cfg.checkpoint`` on the test split of ``cfg.dataset``; the report goes into
    ``run_dir``. Returns the test results (:func:`results`)."""
    _check_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.checkpoint:
        raise ValueError("mode=evaluate needs checkpoint=PATH (a .ckpt written by train.py, or a pretrained .pt)")
    path = str(Path(cfg.checkpoint).expanduser().absolute())
    model = load_pretrained(path)
    cfg = cfg.resolved({"window_length": model.config.window_length})  # the window the model learned
    model.attention = cfg.attention
    module = POYOModule(model, cfg.optim, global_batch_size=cfg.batch_size, total_steps=1)
    readouts = model.readout_configs
    root = prepare_data(cfg)
    dm = make_datamodule(cfg, root, readouts, progress=True)
    unknown = [s for s in dm.session_ids if s not in model.session_emb]
    if unknown:
        raise KeyError(
            f"{len(unknown)} sessions of {root} are not in the vocabulary of {path} (e.g. {unknown[:3]}); "
            "adapt the model to them first: python train.py finetune=unit_identification finetune.checkpoint=..."
        )
    dm.attach(model)
    print(run_layout(cfg, model, dm, train=False))
    trainer = make_trainer(cfg, run_dir, logger=False)
    trainer.test(module, datamodule=dm, verbose=False)
    summary = masked = None
    if trainer.is_global_zero:
        if cfg.objective != "mtm":
            summary = report(
                module,
                dm,
                readouts,
                run_dir,
                f"{Path(path).name}",
                linear_baseline(cfg),
                gru_baseline(cfg),
                cfg.plot_sessions,
            )
        masked = masked_report(cfg, model, dm, readouts, run_dir, Path(path).name)
    return results(module, summary, masked)

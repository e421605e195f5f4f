"""The one entry point: ``python train.py [overrides]``.

``mode=train`` (default): prepare the data (the synthetic set is generated when missing),
pretrain POYO with Lightning, then evaluate the weights chosen on validation on the test
split by stitching overlapping windows, print per-session R² beside the linear baselines
(window-matched and causal), and write into the run folder: ``checkpoints/`` (``last.ckpt``
every few steps, ``best.ckpt`` by validation R², ``model.pt`` the tested weights),
``metrics.csv``, ``test_results.csv`` and ``test_predictions.png``.

``dataset=<folder>``: any brainset folder below ``data_root`` without a config of its own
(``configs/dataset/auto.yaml``: readout and normalisation from the data).

``mode=evaluate checkpoint=PATH``: the same test evaluation for a saved checkpoint.
``finetune=unit_identification|full|gradual finetune.checkpoint=PATH``: adapt a pretrained
model to the sessions of ``dataset`` (optionally ``sessions=[...]`` and ``train_seconds=N``):
new unit and session ids join the vocabularies, then only the embeddings (unit
identification), everything (full), or embeddings first then everything (gradual) learn.
``resume=true``: continue the latest run from its last checkpoint (same data order,
learning-rate schedule and optimiser state).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import hydra
import lightning as L
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from poyo.data import Dataset, RandomFixedWindowSampler
from poyo.data import intervals as ivs
from poyo.data.discover import angle_period, choose_behaviour, readout_name
from poyo.io import safe_load
from poyo.model import POYO, ReadoutConfig, load_pretrained, save_pretrained
from poyo.model.pretrained import FORMAT, FORMAT_VERSION
from poyo.model.readout import READOUTS
from poyo.training.checkpoint import AtomicCheckpointIO
from poyo.training.finetune import MODES, BackboneFreezer, adapt_vocabularies, unfreeze_epoch
from poyo.training.guards import RunLock, check_settings, resume_problems
from poyo.training.linear import LinearBaseline
from poyo.training.loggers import check_logger, make_loggers, quiet_libraries
from poyo.training.module import DataModule, POYOModule
from poyo.training.normalise import fit_normalisation
from poyo.training.report import report

CONFIGS = Path(__file__).resolve().parent / "configs"
# errors that describe a problem with the settings or the data, printed without a traceback
USER_ERRORS = (
    ValueError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    FloatingPointError,
    OSError,
    ModuleNotFoundError,
)


def register_brainset_folders(argv: list[str]) -> None:
    """``dataset=NAME`` without ``configs/dataset/NAME.yaml`` names a brainset folder below
    ``data_root``: it gets ``configs/dataset/auto.yaml`` with ``name: NAME`` (readout from
    the sessions' behaviour, normalisation from the training split)."""
    for arg in argv:
        key, eq, value = arg.partition("=")
        if key.lstrip("+~") == "dataset" and eq and value and not (CONFIGS / "dataset" / f"{value}.yaml").exists():
            node = OmegaConf.load(CONFIGS / "dataset" / "auto.yaml")
            node.name = value
            ConfigStore.instance().store(group="dataset", name=value, node=node)


def prepare_data(cfg: DictConfig) -> Path | list[Path]:
    """The dataset's folder(s) below ``data_root``: ``dataset.brainsets`` if listed, else ``dataset.name``."""
    data_root = Path(to_absolute_path(cfg.data_root))
    if cfg.dataset.get("generate"):
        from poyo.pipelines.synthetic_reaching import SyntheticConfig, ensure

        root = data_root / cfg.dataset.name
        ensure(root, SyntheticConfig(**OmegaConf.to_container(cfg.dataset.generate)))
        return root
    brainsets = list(cfg.dataset.get("brainsets") or [cfg.dataset.name])
    missing = [b for b in brainsets if not (data_root / b).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"dataset '{cfg.dataset.name}' needs the brainset folder(s) {[str(data_root / b) for b in missing]}; prepare each with "
            f"`python -m poyo.pipelines.<brainset> --raw-dir data/raw --processed-dir {data_root}` (or set data_root=...)"
        )
    return [data_root / b for b in brainsets] if cfg.dataset.get("brainsets") else data_root / brainsets[0]


def readout_configs(cfg: DictConfig, root) -> list[ReadoutConfig]:
    """The dataset's readouts. ``readouts: auto`` decodes the behaviour series the sessions
    share (``dataset.behaviour`` picks one); a mean or std not given is left to the data."""
    if cfg.dataset.readouts == "auto":
        key, dim = choose_behaviour(root, cfg.dataset.get("behaviour"))
        circular = cfg.dataset.get("circular", "auto")
        if circular not in ("auto", True, False):
            raise ValueError(f"dataset.circular must be auto, true or false, got {circular!r}")
        # guessed for one-dim series only: a 2-D "dir" is more often a (cos, sin) pair already
        period = angle_period(root, key) if circular is True or (circular == "auto" and dim == 1) else None
        if circular is True and period is None:
            period = 2 * np.pi
        if period is not None:
            name = readout_name(key, dim, list(READOUTS.values()), "circular")
            unit = "radians" if np.isclose(period, 2 * np.pi) else "degrees" if period == 360 else f"period {period:g}"
            print(
                f"readout {name}: decoding '{key}' as {dim} angle(s) in {unit}, through their cos and sin (dataset.circular=false: as a plain series)"
            )
            return [ReadoutConfig(name, key=key, dim=dim, kind="circular", period=period)]
        name = readout_name(key, dim, list(READOUTS.values()))
        print(f"readout {name}: decoding '{key}' ({dim} dims), normalised by the training split's mean and std")
        return [ReadoutConfig(name, key=key, mean=None, std=None, dim=dim, kind="continuous")]
    if not OmegaConf.is_list(cfg.dataset.readouts):
        raise ValueError(f"dataset.readouts must be a list of readout configs or 'auto', got {cfg.dataset.readouts!r}")
    return [ReadoutConfig(**{"mean": None, "std": None, **r}) for r in OmegaConf.to_container(cfg.dataset.readouts)]


def build_model(cfg: DictConfig, readouts: list[ReadoutConfig], unit_ids, session_ids) -> POYO:
    """The model named by ``cfg.model`` with these units and sessions in its vocabularies."""
    kwargs = OmegaConf.to_container(cfg.model)
    kwargs.pop("name", None)
    readouts = list(dict.fromkeys(r.name for r in readouts))  # one head per name
    return POYO(**kwargs, readouts=readouts, unit_ids=unit_ids, session_ids=session_ids, seed=cfg.seed)


def summary_table(ds: Dataset) -> str:
    w = max(len(sid) for sid in ds.session_ids)
    head = f"{'session':{w}s} {'units':>5s} {'spikes':>8s} {'Hz/unit':>7s} {'length':>7s} {'train':>6s} {'valid':>6s} {'test':>6s}"
    rows = [head, "-" * len(head)]
    for sid, s in ds.sessions.items():
        dur = s.end - s.start
        split = [ivs.total_length(s.splits[k]) if s.splits[k] is not None else 0.0 for k in ("train", "valid", "test")]
        rows.append(
            f"{sid:{w}s} {len(s.unit_ids):5d} {s.num_spikes:8d} {s.num_spikes / len(s.unit_ids) / dur:7.1f} "
            f"{dur:6.0f}s {split[0]:5.0f}s {split[1]:5.0f}s {split[2]:5.0f}s"
        )
    return "\n".join(rows)


def make_datamodule(cfg: DictConfig, root: Path, readouts, *, progress: bool) -> DataModule:
    return DataModule(
        root,
        readouts,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        window_length=cfg.window_length,
        eval_step=cfg.eval_step,
        num_workers=cfg.num_workers,
        layout=cfg.layout,
        unit_dropout=OmegaConf.to_container(cfg.dataset.unit_dropout) if cfg.dataset.get("unit_dropout") else None,
        spike_jitter=cfg.dataset.get("spike_jitter") or 0.0,
        seed=cfg.seed,
        validate=cfg.validate_data,
        progress=progress,
        # top-level `sessions` (few-shot, fine-tuning) replaces the dataset's own selection
        sessions=list(cfg.sessions)
        if cfg.sessions
        else (list(cfg.dataset.include) if cfg.dataset.get("include") else None),
        train_seconds=cfg.train_seconds,
    )


def planned_steps(cfg: DictConfig, steps_per_epoch: int) -> int:
    """``trainer.max_steps`` if set, else ``max_epochs`` epochs but at least ``min_steps`` steps
    (a short recording has few windows per epoch, and the model needs a few hundred steps
    before it starts to decode at all)."""
    t = cfg.trainer
    return t.max_steps if t.max_steps > 0 else max(t.max_epochs * steps_per_epoch, t.get("min_steps") or 0)


def make_trainer(
    cfg: DictConfig, run_dir: Path, *, callbacks=(), logger=True, total_steps: int = -1, steps_per_epoch: int = 1
) -> L.Trainer:
    """The Lightning Trainer; it trains ``total_steps`` (shown as the epochs they take)."""
    t = cfg.trainer
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_epochs=-(-total_steps // steps_per_epoch) if total_steps > 0 else t.max_epochs,
        max_steps=total_steps,
        gradient_clip_val=t.gradient_clip_val,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # our samplers shard by rank themselves
        plugins=[AtomicCheckpointIO()],
        callbacks=list(callbacks),
        logger=make_loggers(cfg.logger, run_dir) if logger else False,
        default_root_dir=run_dir,
        enable_model_summary=False,
    )


def find_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
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


def linear_baseline(cfg: DictConfig) -> LinearBaseline:
    """The linear decoders printed beside POYO; the window one spans at most POYO's window."""
    return LinearBaseline(**{"context_s": cfg.window_length, **cfg.baseline})


def pretrained_normalisation(trained, config: ReadoutConfig, sessions) -> ReadoutConfig | None:
    """The pretrained config whose normalisation fine-tuning on ``sessions`` should keep.

    A head trained with one normalisation keeps it. A multi-dataset head (one config per
    brainset) keeps the one its patterns give these sessions (a new session of a known
    brainset); if none or several different ones apply, None: the dataset's own is used.
    """
    if config.spec.kind != "continuous":
        return None
    same = [t for t in trained if t.name == config.name]
    norm = lambda t: (tuple(t._mean), tuple(t._std))  # noqa: E731
    if len({norm(t) for t in same}) == 1:
        return same[0]
    fitting = {norm(t): t for t in same if any(t.applies_to(s) for s in sessions)}
    return next(iter(fitting.values())) if len(fitting) == 1 else None


def pretrained_for_finetuning(
    cfg: DictConfig, dm: DataModule, readouts: list[ReadoutConfig]
) -> tuple[POYO, list[ReadoutConfig], BackboneFreezer]:
    """The pretrained model with the dataset's ids in its vocabularies, and the freezing callback."""
    ft = cfg.finetune
    if not ft.checkpoint:
        raise ValueError(f"finetune={ft.mode} needs finetune.checkpoint=PATH (a poyo checkpoint or pretrained .pt)")
    path = to_absolute_path(str(ft.checkpoint))
    model = load_pretrained(path).train()
    model.attention = cfg.model.get("attention", "auto")
    missing = [r.name for r in readouts if r.name not in model.readout_names]
    if missing:
        raise ValueError(
            f"{path}: the pretrained model has no head for readouts {missing} (it has {model.readout_names})"
        )
    # The pretrained heads were trained on targets normalised their way: keep it.
    for i, r in enumerate(readouts):
        t = pretrained_normalisation(model.readout_configs or (), r, [s for s in dm.session_ids if r.applies_to(s)])
        if t is not None and (not np.allclose(t._mean, r._mean) or not np.allclose(t._std, r._std)):
            print(
                f"readout {r.name}: using the pretrained normalisation (mean {t.mean}, std {t.std}) instead of the dataset's ({r.mean}, {r.std})"
            )
            readouts[i] = ReadoutConfig(**{**r.to_dict(), "mean": t.mean, "std": t.std})
    before_units, before_sessions = set(model.unit_emb.ids), set(model.session_emb.ids)
    added = adapt_vocabularies(model, dm.unit_ids, dm.session_ids, subset=ft.subset, seed=cfg.seed)
    print(
        f"\nfine-tuning ({ft.mode}) {path}: {len(added['units'])} new units and {len(added['sessions'])} new sessions "
        f"({len(dm.unit_ids) - len(added['units'])} units, {len(dm.session_ids) - len(added['sessions'])} sessions already known); "
        f"vocabularies {'subset to this data' if ft.subset else 'keep the pretrained ids'}: {len(model.unit_emb)} units, {len(model.session_emb)} sessions"
    )
    kept_units = sorted(before_units - set(dm.unit_ids)) if not ft.subset else []
    kept_sessions = sorted(before_sessions - set(dm.session_ids)) if not ft.subset else []
    freezer = BackboneFreezer(
        model, unfreeze_epoch(ft.mode, ft.unfreeze_epoch), kept_units=kept_units, kept_sessions=kept_sessions
    )
    return model, readouts, freezer


def train(cfg: DictConfig, run_dir: Path) -> None:
    if cfg.finetune.mode not in MODES:
        raise ValueError(f"finetune.mode must be one of {MODES}, got {cfg.finetune.mode!r}")
    root = prepare_data(cfg)
    readouts = readout_configs(cfg, root)
    dm = make_datamodule(cfg, root, readouts, progress=True)
    ds = dm.train_set
    print(f"\n{len(ds.session_ids)} sessions, {len(ds.subject_ids)} subjects, {len(ds.unit_ids)} units in {root}\n")
    print(summary_table(ds))
    dm.check_splits()
    warn_short_validation(ds)
    readouts = dm.readouts = fit_normalisation(ds, readouts)
    resume = find_resume(cfg, run_dir)
    if resume is not None:
        problems = resume_problems(
            safe_load(resume).get("hyper_parameters") or {}, OmegaConf.to_container(cfg, resolve=True), readouts
        )
        if problems:
            raise ValueError(
                f"resume={resume}: this run's settings differ from the checkpoint's, so it would not continue the same run:\n  "
                + "\n  ".join(problems)
                + "\nresume with the checkpoint's settings, or start a new run without resume"
            )

    callbacks = []
    if cfg.finetune.mode == "none":
        model = build_model(cfg, readouts, dm.unit_ids, dm.session_ids)
        name = cfg.model.name
    else:
        model, readouts, freezer = pretrained_for_finetuning(cfg, dm, readouts)
        dm.readouts = readouts
        callbacks.append(freezer)
        name = f"pretrained ({Path(str(cfg.finetune.checkpoint)).name})"
    model.readout_configs = readouts
    dm.attach(model)
    windows = len(RandomFixedWindowSampler(ds.sampling_intervals("train"), cfg.window_length, seed=cfg.seed))
    steps_per_epoch = windows // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"only {windows} training windows: fewer than one global batch of {cfg.batch_size}; lower batch_size"
        )
    total = planned_steps(cfg, steps_per_epoch)
    hparams = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.config,
        "readouts": [r.to_dict() for r in readouts],
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    module = POYOModule(
        model, OmegaConf.to_container(cfg.optim), global_batch_size=cfg.batch_size, total_steps=total, hparams=hparams
    )
    lr = cfg.optim.base_lr * cfg.batch_size
    print(
        f"\nmodel {name}: {model.num_parameters(embeddings=False):,} parameters + "
        f"{model.num_parameters() - model.num_parameters(embeddings=False):,} in the unit/session vocabularies; "
        f"{cfg.optim.name} peak lr {lr:.3g} (= {cfg.optim.base_lr:g} x global batch {cfg.batch_size}), "
        f"{total} steps ({steps_per_epoch} per epoch, {total / steps_per_epoch:.3g} epochs)\n"
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
    trainer = make_trainer(cfg, run_dir, callbacks=callbacks, total_steps=total, steps_per_epoch=steps_per_epoch)
    if resume is not None:
        print(f"resuming from {resume}")
    with warnings.catch_warnings():
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
        report(module, dm, readouts, run_dir, which, linear_baseline(cfg))
        print(f"\nrun folder: {run_dir} (the trained model: checkpoints/model.pt; poyo.load_pretrained() reads it)")


CHOICE_MARGIN = 0.01  # best.ckpt replaces the final weights only if validation prefers it by more than this


def choose_checkpoint(trainer: L.Trainer, module: POYOModule, dm: DataModule, best) -> tuple[str | None, str]:
    """The weights to test, chosen on the validation split: ``best.ckpt`` or the final ones.

    Validation runs every few epochs, so the final weights are validated once more here. The
    schedule ends at a tiny learning rate, so the final weights are kept unless an earlier
    checkpoint scored more than ``CHOICE_MARGIN`` higher (validation R² is noisy).
    Returns (checkpoint path or None for the weights in memory, a description for the table).
    """
    final = trainer.validate(module, datamodule=dm, verbose=False)[0].get("val/metric", float("nan"))
    best_score = float(best.best_model_score) if best.best_model_score is not None else float("nan")
    if best.best_model_path and Path(best.best_model_path).is_file() and best_score > final + CHOICE_MARGIN:
        return (
            best.best_model_path,
            f"best.ckpt, step {safe_step(best.best_model_path)}, chosen on validation (R2 {best_score:.3f}; final weights {final:.3f})",
        )
    return None, f"final weights, step {trainer.global_step}, chosen on validation (R2 {final:.3f}" + (
        f"; best.ckpt {best_score:.3f})" if np.isfinite(best_score) else ")"
    )


def warn_short_validation(ds: Dataset, least: float = 120.0) -> None:
    """Validation R² picks the tested checkpoint; on a few seconds of data it is mostly noise."""
    seconds = sum(ivs.total_length(iv) for iv in ds.sampling_intervals("valid").values())
    if seconds < least:
        warnings.warn(
            f"the validation split holds only {seconds:.0f} s of data (less than {least:.0f} s): its R² is a noisy guide for "
            "choosing the checkpoint to test. Longer recordings, or splits with more validation time, make it reliable.",
            stacklevel=2,
        )


def safe_step(path) -> int:
    return int(safe_load(path).get("global_step", -1))


def evaluate(cfg: DictConfig, run_dir: Path) -> None:
    if not cfg.checkpoint:
        raise ValueError("mode=evaluate needs checkpoint=PATH (a .ckpt written by train.py, or a pretrained .pt)")
    path = to_absolute_path(str(cfg.checkpoint))
    model = load_pretrained(path)
    model.attention = cfg.model.get("attention", "auto")
    module = POYOModule(model, OmegaConf.to_container(cfg.optim), global_batch_size=cfg.batch_size, total_steps=1)
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
    trainer = make_trainer(cfg, run_dir, logger=False)
    trainer.test(module, datamodule=dm, verbose=False)
    if trainer.is_global_zero:
        report(module, dm, readouts, run_dir, f"{Path(path).name}", linear_baseline(cfg))


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    try:
        check_settings(cfg)
        check_logger(cfg.logger)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        L.seed_everything(cfg.seed, workers=False, verbose=False)
        with RunLock(run_dir):
            (train if cfg.mode == "train" else evaluate)(cfg, run_dir)
    except USER_ERRORS as e:  # a message for the user, not a traceback (POYO_DEBUG=1 shows it)
        if os.environ.get("POYO_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    register_brainset_folders(sys.argv[1:])
    main()

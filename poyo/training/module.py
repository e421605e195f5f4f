"""Lightning wiring: :class:`DataModule` (datasets, samplers, loaders) and
:class:`POYOModule` (loss, optimiser, stitched evaluation).

Under DDP the samplers are ours, sharded by rank (Lightning's replacement is turned off in
``train.py``): training windows are split evenly between ranks from one shared
permutation, evaluation intervals are dealt whole to ranks so stitching never crosses
them. ``batch_size`` is the *global* batch; each rank loads ``batch_size / world_size``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import partial

import lightning as L
import numpy as np
import torch

from poyo.data import (
    Compose,
    Dataset,
    DistributedStitchingSampler,
    RandomFixedWindowSampler,
    SpikeJitter,
    collate_packed,
    collate_padded,
    init_worker,
)
from poyo.data import unit_dropout as make_unit_dropout
from poyo.model import POYO
from poyo.model.masking import DECODE, MaskingCollate, MaskSettings
from poyo.model.poyo import COUNTS, count_targets
from poyo.readouts import ReadoutConfig, behaviour_keys, interval_keys, readouts_for
from poyo.training.mtm_eval import CountScores
from poyo.training.optim import OptimConfig
from poyo.training.stitch import Stitcher, stitch_centres, window_length

# What a run learns from: behaviour readouts, masked modelling of spikes (MtM), or both
# (each batch either unmasked for the readouts or masked by one scheme).
OBJECTIVES = ("supervised", "mtm", "both")
EVAL_WINDOWS = 4  # evaluation windows start every quarter window (eval_step=auto), so each sample is in 4


def collate(samples, layout: str) -> dict:
    return collate_packed(samples) if layout == "packed" else collate_padded(samples)


EVAL_IN_PROCESS = 4  # batches: an evaluation split this short is read without worker processes


class ResumableLoader(torch.utils.data.DataLoader):
    """Training loader whose place in the epoch survives a checkpoint.

    Lightning saves ``state_dict()`` (the epoch and the batches trained in it) in each
    checkpoint and hands it back on resume; the loader then skips, by index and reading
    nothing, the batches the run already trained on. A checkpoint taken after an epoch's
    last batch resumes at the start of the next epoch. ``batches_done`` is advanced by the
    training step, after the batch was used.

    Lightning calls ``set_epoch`` on ``batch_sampler.sampler`` at every epoch start: that
    is the window sampler, so every epoch draws new windows and augmentation seeds.
    """

    def __init__(self, dataset, sampler: RandomFixedWindowSampler, batch_size: int, **kwargs):
        self.window_sampler = sampler
        self.batches_done = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip in it)
        super().__init__(dataset, batch_sampler=_SkippingBatches(self, batch_size), **kwargs)

    def state_dict(self) -> dict:
        return {"epoch": self.window_sampler.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict) -> None:
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= len(self.batch_sampler):  # saved after the epoch's last batch
            epoch, done = epoch + 1, 0
        self.window_sampler.set_epoch(epoch)
        self._resume = (epoch, done)


class _SkippingBatches(torch.utils.data.Sampler):
    def __init__(self, loader: ResumableLoader, batch_size: int):
        self.loader, self.batch_size = loader, batch_size
        self.sampler = loader.window_sampler  # Lightning's set_epoch reaches it here

    def __len__(self) -> int:  # the whole epoch: Lightning's restored progress counts the skipped part
        return len(self.sampler) // self.batch_size

    def __iter__(self):
        skip = 0
        resume, self.loader._resume = self.loader._resume, None
        if resume is not None and resume[0] == self.sampler.epoch:
            skip = resume[1]
        self.loader.batches_done = skip
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                if skip:
                    skip -= 1
                else:
                    yield batch
                batch = []  # the last incomplete batch is dropped (equal steps on every rank)


class DataModule(L.LightningDataModule):
    """The training, validation and test loaders of a run: windows of the sessions below
    ``root``, tokenized for the attached model and collated padded or packed.

    Args:
        root: folder(s) of session files (see :class:`poyo.data.Dataset`).
        readouts: the :class:`~poyo.readouts.ReadoutConfig` list; it decides which behaviour
            fields and intervals are read, and the data module owns it (``dm.readouts``).
        batch_size: the GLOBAL batch (split over data-parallel ranks); ``eval_batch_size``
            likewise for evaluation (default: ``batch_size``).
        window_length, eval_step: seconds per window; evaluation windows start every
            ``eval_step`` seconds (overlapping; predictions are stitched; None: a quarter window,
            :data:`EVAL_WINDOWS`).
        half_windows: the share of training windows half as long (:class:`RandomFixedWindowSampler`).
        num_workers: DataLoader worker processes (each seeded from ``seed``).
        layout: ``"packed"`` (one long sequence, ``cu_seqlens``) or ``"padded"`` (with masks).
        unit_dropout, spike_jitter: augmentation of training windows (``poyo/configs/dataset``).
        seed: seeds the window sampler and every window's augmentation.
        validate, progress: check every session file at start-up; show progress bars.
        sessions, train_seconds: keep only these sessions / the earliest seconds of their
            train split (few-shot).
        objective, masking: ``"supervised"`` (no masking), ``"mtm"`` or ``"both"`` with the
            :class:`~poyo.model.masking.MaskSettings` training batches are masked by
            (sessions may then lack behaviour). Validation then scores co-smoothing (mtm)
            or the readouts on unmasked windows (both).
    """

    def __init__(
        self,
        root,
        readouts: Sequence[ReadoutConfig],
        *,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        window_length: float = 1.0,
        half_windows: float = 0.0,
        eval_step: float | None = None,
        num_workers: int = 0,
        layout: str = "packed",
        unit_dropout: Mapping | None = None,
        spike_jitter: float = 0.0,
        seed: int = 0,
        validate: bool = True,
        progress: bool = False,
        sessions: Sequence[str] | None = None,
        train_seconds: float | None = None,
        objective: str = "supervised",
        masking: MaskSettings | None = None,
    ):
        super().__init__()
        if layout not in ("packed", "padded"):
            raise ValueError(f"layout must be 'packed' or 'padded', got {layout!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if (objective == "supervised") != (masking is None):
            raise ValueError(f"objective={objective!r} needs masking settings exactly when it is not 'supervised'")
        self.objective, self.masking = objective, masking
        self.readouts = list(readouts)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size or batch_size)
        self.window_length = float(window_length)
        self.half_windows = float(half_windows)
        self.eval_step = float(eval_step) if eval_step is not None else self.window_length / EVAL_WINDOWS
        self.num_workers, self.layout, self.seed = int(num_workers), layout, int(seed)
        augment = [
            make_unit_dropout(**unit_dropout) if unit_dropout else None,
            SpikeJitter(spike_jitter) if spike_jitter else None,
        ]
        self.augment = [t for t in augment if t is not None]  # training windows only
        # each session reads what its own readout configs need (datasets may mix brainsets)
        kw = dict(
            behaviour=partial(behaviour_keys, self.readouts),
            intervals=partial(interval_keys, self.readouts),
            seed=seed,
            train_seconds=train_seconds,
            optional_behaviour=masking is not None,
        )
        self.train_set = Dataset(root, validate=validate, progress=progress, sessions=sessions, **kw)
        unfed = [sid for sid in self.train_set.session_ids if self.readouts and not readouts_for(self.readouts, sid)]
        if unfed:
            raise ValueError(
                f"{len(unfed)} sessions match no readout config, e.g. {unfed[:3]} "
                f"(the readouts' `sessions` patterns are {[r.sessions for r in self.readouts]})"
            )
        self.eval_set = Dataset(root, validate=False, sessions=self.train_set.session_ids, **kw)
        self.tokenizer = None
        self.train_loader: ResumableLoader | None = None

    @property
    def unit_ids(self) -> list[str]:
        return self.train_set.unit_ids

    @property
    def session_ids(self) -> list[str]:
        return self.train_set.session_ids

    def attach(self, model: POYO) -> None:
        """Tokenize for this model's current vocabularies (call again after changing them)."""
        model.check_window(self.window_length)
        self.tokenizer = model.tokenizer(self.readouts, masking=self.masking is not None)
        self.train_set.transform = Compose([*self.augment, self.tokenizer]) if self.augment else self.tokenizer
        self.eval_set.transform = self.tokenizer

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def per_rank(self, global_batch: int) -> int:
        world, _ = self._ranks()
        if global_batch % world:
            raise ValueError(f"the global batch size {global_batch} does not split evenly over {world} processes")
        return global_batch // world

    def collate_fn(self, stage: str, layout: str | None = None):
        """What turns a list of ``stage``'s samples (``"train"`` or an evaluation split) into a
        batch, in ``layout`` (default: the module's)."""
        layout = layout or self.layout
        if layout not in ("packed", "padded"):
            raise ValueError(f"layout must be 'packed' or 'padded', got {layout!r}")
        if self.masking is None:
            return partial(collate, layout=layout)
        if stage == "train":
            return MaskingCollate(self.masking, layout)
        if self.objective == "mtm":  # co-smoothing: the same held-out units in every window of a session
            return MaskingCollate(self.masking, layout, scheme="neuron", fixed=True)
        return MaskingCollate(self.masking, layout, scheme=DECODE)

    def _loader_kwargs(self, stage: str = "train") -> dict:
        return dict(
            num_workers=self.num_workers,
            collate_fn=self.collate_fn(stage),
            worker_init_fn=init_worker,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def check_splits(self) -> None:
        """Raise now, not after training, if a session lacks a usable train, valid or test split."""
        self.train_sampler()
        for split in ("valid", "test"):
            DistributedStitchingSampler(
                self.eval_set.sampling_intervals(split), self.window_length, step=self.eval_step, drop_short=True
            )

    def train_sampler(self, num_replicas: int = 1, rank: int = 0) -> RandomFixedWindowSampler:
        """The training windows of this rank (all of them by default): what the loader and the
        run's step count read."""
        return RandomFixedWindowSampler(
            self.train_set.sampling_intervals("train"),
            self.window_length,
            seed=self.seed,
            num_replicas=num_replicas,
            rank=rank,
            half_windows=self.half_windows,
        )

    def train_dataloader(self):
        if self.tokenizer is None:
            raise RuntimeError("DataModule.attach(model) must be called before training")
        world, rank = self._ranks()
        sampler = self.train_sampler(num_replicas=world, rank=rank)
        if self.trainer is not None:
            sampler.set_epoch(self.trainer.current_epoch)
        self.train_loader = ResumableLoader(
            self.train_set, sampler, self.per_rank(self.batch_size), **self._loader_kwargs()
        )
        return self.train_loader

    def eval_dataloader(self, split: str):
        if self.tokenizer is None:
            raise RuntimeError("DataModule.attach(model) must be called before evaluation")
        world, rank = self._ranks()
        sampler = DistributedStitchingSampler(
            self.eval_set.sampling_intervals(split),
            self.window_length,
            step=self.eval_step,
            drop_short=True,
            num_replicas=world,
            rank=rank,
        )
        batch = self.per_rank(self.eval_batch_size) if world > 1 else self.eval_batch_size
        kwargs = {**self._loader_kwargs("eval"), "persistent_workers": False}
        if len(sampler) <= EVAL_IN_PROCESS * batch:
            # eval loaders start their workers anew each time (~1 s); a short recording validated every
            # 10 steps spent more on that than on training (Neuropixels, 120 s: 0.53 -> 0.37 s/step)
            kwargs["num_workers"] = 0
        return torch.utils.data.DataLoader(self.eval_set, sampler=sampler, batch_size=batch, **kwargs)

    def val_dataloader(self):
        return self.eval_dataloader("valid")

    def test_dataloader(self):
        return self.eval_dataloader("test")


class POYOModule(L.LightningModule):
    """Trains a :class:`POYO` with weighted per-readout losses; evaluates by stitching."""

    def __init__(
        self,
        model: POYO,
        optim: OptimConfig | Mapping,
        *,
        global_batch_size: int,
        total_steps: int,
        hparams: Mapping | None = None,
    ):
        super().__init__()
        self.model = model
        self.optim = optim if isinstance(optim, OptimConfig) else OptimConfig.from_dict(optim)
        self.global_batch_size, self.total_steps = int(global_batch_size), int(total_steps)
        self.save_hyperparameters(dict(hparams or {}))  # plain containers only: checkpoints load with weights_only=True
        self.stitcher = self._stitcher()
        self.count_scores = CountScores()
        self.last_scores: dict[str, dict[str, float]] = {}
        self.last_stitched: dict = {}
        self.last_count_scores: dict = {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.model.unit_features is not None:  # beside the hyper-parameters, not in them (loggers print those)
            checkpoint["unit_features"] = dict(self.model.unit_features)
        # the centres chosen on the validation these weights had: testing best.ckpt stitches with its own
        checkpoint["stitch_centres"] = stitch_centres(self.model)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "stitch_centres" in checkpoint:
            self.model.stitch_centres = dict(checkpoint["stitch_centres"])

    def _stitcher(self) -> Stitcher:
        return Stitcher(window_length(self.model), stitch_centres(self.model))

    def on_fit_start(self):
        self._fit_start = time.monotonic()  # val/elapsed_s: R² against wall time

    def forward(self, batch):
        return self.model(batch)

    def training_step(self, batch, batch_idx):
        loss, parts = self.model.loss(self.model(batch), batch, global_batch=True)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at step {self.global_step}; the batch held windows of sessions "
                f"{sorted(set(batch['session_id']))}: check their behaviour values (NaN and inf are skipped, huge ones are not), "
                "the readout's std and the learning rate"
            )
        bs = len(batch["session_id"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        if len(parts) > 1:
            for name, part in parts.items():
                self.log(f"train/loss_{name}", part, batch_size=bs)
        loader = getattr(self.trainer.datamodule, "train_loader", None) if self._trainer is not None else None
        if loader is not None:
            loader.batches_done += 1
        return loss

    def configure_optimizers(self):
        opt, lr_schedule = self.optim.build(
            self.model, global_batch_size=self.global_batch_size, total_steps=self.total_steps
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_schedule, "interval": "step"}}

    # --- evaluation ------------------------------------------------------------------------
    def _eval_step(self, batch, stage: str) -> None:
        preds = self.model(batch)
        loss, _ = self.model.loss(preds, batch)
        if COUNTS in preds:  # masked validation: co-smoothing of each session's held-out units
            t = {k: v.cpu().numpy() for k, v in count_targets(batch).items()}
            log_rate = preds[COUNTS].detach().float().cpu().numpy()
            for i in np.unique(t["sample"]):
                rows = t["sample"] == i
                self.count_scores.add(
                    batch["session_id"][i],
                    "co_smoothing",
                    t["unit_position"][rows],
                    t["counts"][rows],
                    {"model": log_rate[rows]},
                )
        else:
            self.stitcher.add_batch(batch, preds)
        self.log(f"{stage}/loss", loss, batch_size=len(batch["session_id"]), sync_dist=True)

    def _eval_end(self, stage: str):
        self.stitcher.gather()
        if stage == "val":  # where in the window each head decodes best, for these weights (poyo.training.stitch)
            self.model.stitch_centres = self.stitcher.centres = {
                **self.stitcher.centres,
                **self.stitcher.best_centres(),
            }
        scores = self.stitcher.scores()
        self.last_scores, self.last_stitched = scores, self.stitcher.stitched()
        self.stitcher = self._stitcher()
        self.count_scores.gather()
        self.last_count_scores = self.count_scores.scores()
        self.count_scores = CountScores()
        values = [v for per in scores.values() for v in per.values()]
        if not values:  # masked modelling: mean co-bps over sessions
            values = [per["co_smoothing"]["model"] for per in self.last_count_scores.values()]
        if values:
            self.log(f"{stage}/metric", sum(values) / len(values), prog_bar=True, sync_dist=False, rank_zero_only=False)
        if stage == "val" and self.trainer.state.fn == "fit":  # wall time of this fit so far, for R² against time
            self.log("val/elapsed_s", time.monotonic() - self._fit_start, sync_dist=False, rank_zero_only=False)

    def on_validation_epoch_start(self):
        self.stitcher, self.count_scores = self._stitcher(), CountScores()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        self._eval_end("val")

    def on_test_epoch_start(self):
        self.stitcher, self.count_scores = self._stitcher(), CountScores()

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self):
        self._eval_end("test")

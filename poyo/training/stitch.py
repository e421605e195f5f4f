"""Evaluation by stitching overlapping windows.

Evaluation windows overlap (step < window), so most behaviour samples are predicted more
than once. :class:`Stitcher` collects every prediction with its session, readout and the
sample's *integer* index in the session's array, averages the predictions of each sample
(logits, for categorical readouts; cos/sin vectors, for circular ones), and scores each
session on its evaluation samples with :func:`score`.

A prediction near a window's edge has seen spikes on one side of its sample only, and decodes
worse: on the S1 recording single-window R² was 0.62 in a window's first tenth and 0.74 in its
last against 0.80 in the middle (benchmarks/README.md, "Real recordings"). Given the window
length, the average is weighted by :func:`position_weight`, a Gaussian of the sample's
position centred on the window's middle (sd a quarter window), so each sample leans on the
windows that hold it near their centre. A sample that one window alone predicts keeps that
prediction.

Under data parallelism each rank stitches what it saw; :meth:`Stitcher.gather` merges the
ranks by sample index, so the result equals a single-process evaluation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from poyo.model.poyo import targets
from poyo.readouts import ReadoutSpec, get_readout


def r2_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination per output dim, averaged uniformly over dims."""
    pred, target = (
        np.asarray(pred, np.float64).reshape(len(pred), -1),
        np.asarray(target, np.float64).reshape(len(target), -1),
    )
    if pred.shape != target.shape or len(pred) < 2:
        raise ValueError(f"r2_score needs matching (n >= 2, d) arrays, got {pred.shape} and {target.shape}")
    ss_res = ((target - pred) ** 2).sum(0)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)))


def _vectors(x: np.ndarray, dim: int, unit: bool = False) -> np.ndarray:
    """``(n, 2 * dim)`` [cos..., sin...] rows as ``(n, dim, 2)`` vectors (scaled to length 1 if ``unit``)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    v = np.stack([x[:, :dim], x[:, dim:]], axis=-1)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12) if unit else v


def circular_r2(pred: np.ndarray, target: np.ndarray, dim: int) -> float:
    """R² of an angle's (cos, sin) taken as one 2-D vector: ``1 - sum|p - u|² / sum|u - mean(u)|²``
    with ``u`` the true angle's (cos, sin) and ``p`` the model's output for it (what the loss
    trains), averaged over the ``dim`` angles. 1 is perfect; 0 is what always predicting the
    mean vector scores. For unit-length predictions ``|p - u|² = 2 - 2 cos(error)``."""
    p, t = _vectors(pred, dim), _vectors(target, dim)
    if p.shape != t.shape or len(p) < 2:
        raise ValueError(
            f"circular_r2 needs matching (n >= 2, {2 * dim}) arrays, got {np.shape(pred)} and {np.shape(target)}"
        )
    ss_res = ((p - t) ** 2).sum((0, 2))
    ss_tot = ((t - t.mean(0)) ** 2).sum((0, 2))
    return float(np.mean(1 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)))


def angular_error_deg(pred: np.ndarray, target: np.ndarray, dim: int) -> float:
    """Mean absolute angle between decoded and true directions, in degrees of a full turn
    (whatever the readout's period), averaged over the ``dim`` angles."""
    p, t = _vectors(pred, dim, unit=True), _vectors(target, dim, unit=True)
    cos = np.clip((p * t).sum(-1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def score(spec: ReadoutSpec, pred: np.ndarray, target: np.ndarray) -> float:
    """The headline number of a readout: R² (mean over dims) for continuous, :func:`circular_r2`
    for circular, accuracy for categorical."""
    if spec.kind == "continuous":
        return r2_score(pred, target)
    if spec.kind == "circular":
        return circular_r2(pred, target, spec.dim)
    return float((np.asarray(pred).argmax(-1) == np.asarray(target)).mean())


def position_weight(t: np.ndarray, window_length: float | None) -> np.ndarray:
    """Weight of predictions at times ``t`` (s from their window's start) in the stitched
    average: ``exp(-((t / L - 1/2) / (1/4))^2 / 2)`` for windows of length ``L`` (from 1 in the
    middle to 0.14 at the edges); all 1 without a window length."""
    t = np.asarray(t, np.float64)
    if window_length is None:
        return np.ones(len(t))
    return np.exp(-0.5 * ((t / float(window_length) - 0.5) / 0.25) ** 2)


class Stitcher:
    """Accumulates predictions per (session, readout) and scores them per session.

    Args:
        window_length: the evaluation windows' length (s); predictions are then weighted by
            their position in the window (:func:`position_weight`). None: a plain mean.
    """

    def __init__(self, window_length: float | None = None):
        if window_length is not None and not (np.isfinite(window_length) and window_length > 0):
            raise ValueError(f"window_length must be a positive number of seconds or None, got {window_length}")
        self.window_length = window_length
        self._chunks: dict[tuple[str, str], list[dict]] = defaultdict(list)

    def add(
        self,
        session_ids: Sequence[str],
        readout: str,
        rows: Mapping[str, torch.Tensor],
        pred: torch.Tensor,
        absolute_start: torch.Tensor | None = None,
    ) -> None:
        """Add one batch of one readout. ``rows`` is :func:`poyo.model.targets` of the batch
        (values, eval_mask, sample_index, sample, timestamps); ``pred`` lines up with it."""
        sample = rows["sample"].cpu().numpy()
        in_window = rows["timestamps"].double().cpu().numpy()  # s from each window's start
        arrays = {
            "sample_index": rows["sample_index"].cpu().numpy(),
            "pred": pred.detach().float().cpu().numpy(),
            "target": rows["values"].cpu().numpy(),
            "eval": rows["eval_mask"].cpu().numpy(),
            "weight": position_weight(in_window, self.window_length),
            "time": in_window + (absolute_start.double().cpu().numpy()[sample] if absolute_start is not None else 0.0),
        }
        for i in np.unique(sample):
            keep = sample == i
            self._chunks[(session_ids[i], readout)].append({k: v[keep] for k, v in arrays.items()})

    def add_batch(self, batch: Mapping, preds: Mapping[str, torch.Tensor]) -> None:
        """Add a model's predictions (``{readout: tensor}``) for one collated evaluation batch."""
        for name, pred in preds.items():
            self.add(batch["session_id"], name, targets(batch, name), pred, batch["absolute_start"])

    def gather(self) -> None:
        """Merge the chunks of every rank (no-op without torch.distributed)."""
        if (
            not (torch.distributed.is_available() and torch.distributed.is_initialized())
            or torch.distributed.get_world_size() == 1
        ):
            return
        mine = {k: self._merge(k) for k in self._chunks}
        everyone = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(everyone, mine)
        self._chunks = defaultdict(list)
        for part in everyone:
            for k, v in part.items():
                self._chunks[k].append(v)

    def _merge(self, key) -> dict[str, np.ndarray]:
        """One row per sample index: predictions averaged with their weights, the rest taken
        from the first. Merged parts carry their weight and prediction count, so merging again
        (the ranks' parts, under DDP) gives the same average."""
        parts = self._chunks[key]
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        n = len(cat["sample_index"])
        uniq, first, inv = np.unique(cat["sample_index"], return_index=True, return_inverse=True)
        count = np.bincount(inv, weights=cat.get("count", np.ones(n))).astype(np.int64)
        weight = np.bincount(inv, weights=cat["weight"])
        total = np.zeros((len(uniq), *cat["pred"].shape[1:]))
        np.add.at(total, inv, cat["pred"] * cat["weight"].reshape(-1, *[1] * (cat["pred"].ndim - 1)))
        return {
            "sample_index": uniq,
            "pred": total / weight.reshape(-1, *[1] * (total.ndim - 1)),
            "count": count,
            "weight": weight,
            "target": cat["target"][first],
            "eval": cat["eval"][first],
            "time": cat["time"][first],
        }

    def stitched(self) -> dict[tuple[str, str], dict[str, np.ndarray]]:
        """Per (session, readout): sample_index, pred (averaged), count, weight, target, eval, time."""
        return {k: self._merge(k) for k in sorted(self._chunks)}

    def scores(self) -> dict[str, dict[str, float]]:
        """``{session: {readout: score}}`` (:func:`score`) on each session's evaluation samples."""
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for (session, readout), s in self.stitched().items():
            e = s["eval"]
            if e.sum() < 2:
                continue
            out[session][readout] = score(get_readout(readout), s["pred"][e], s["target"][e])
        return dict(out)

    def __len__(self) -> int:
        return sum(len(c["sample_index"]) for parts in self._chunks.values() for c in parts)


def window_length(model: torch.nn.Module) -> float | None:
    """The window length a POYO model was trained on (its config's), or None if it has none."""
    length = getattr(getattr(model, "config", None), "window_length", None)
    return float(length) if length else None


def to_device(batch, device):
    """A collated batch (nested dicts of tensors, lists, numbers) with its tensors on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def stitch_predictions(model: torch.nn.Module, batches: Iterable[Mapping]) -> Stitcher:
    """``model``'s predictions on evaluation ``batches`` (eval mode, no gradients), stitched
    with its window length's weights; the model's training mode is restored."""
    was = model.training
    model.eval()
    stitcher = Stitcher(window_length(model))
    with torch.no_grad():
        for batch in batches:
            stitcher.add_batch(batch, model(batch))
    model.train(was)
    return stitcher

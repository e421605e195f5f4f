"""Evaluation by stitching overlapping windows.

Evaluation windows overlap (step < window), so most behaviour samples are predicted more
than once. :class:`Stitcher` collects every prediction with its session, readout, the
sample's *integer* index in the session's array and its position in its window, averages the
predictions of each sample (logits, for categorical readouts; cos/sin vectors, for circular
ones), and scores each session on its evaluation samples with :func:`score`.

A prediction decodes best where its window holds the spikes that carry the behaviour: near an
edge it has seen one side only. On S1 single-window R² was 0.62 in a window's first tenth
and 0.74 in its last against 0.80 in the middle. Where spikes lead the behaviour (a motor
area), the best position moves towards the window's end: with S1's behaviour delayed by
0.3 s it was 0.04 in the first tenth and 0.82 in the eighth (benchmarks/README.md, "Where in
the window"). So the average is weighted by :func:`position_weight`, a Gaussian of the
sample's position (sd a quarter window) centred on each readout's *stitching centre*:
:meth:`Stitcher.best_centres` picks it among :data:`CENTRES` on the validation split, training
keeps it with the model (``model.stitch_centres``), and the test split and
:class:`poyo.Decoder` use it. 0.5, the window's middle, where none was chosen. A sample that
one window alone predicts keeps that prediction.

Under data parallelism each rank collects what it saw; :meth:`Stitcher.gather` hands every
rank all predictions, so the result equals a single-process evaluation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from poyo.model.poyo import check_centres, targets
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


CENTRES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # stitching centres validation chooses among
DEFAULT_CENTRE = 0.5
# Another centre replaces the middle only when validation prefers it by more than CENTRE_MARGIN,
# and then the one whose gain less CENTRE_Z jackknife standard errors (the split cut into
# CENTRE_BLOCKS stretches of time) is highest and above zero. The margin alone let noise through:
# over 18 runs on S1 and its 9- and 13-minute subsets (54-78 s of validation) and simulated head
# direction it moved 8 runs, 6 of which lost on test (by up to 0.030); this rule moved 4, and kept
# the gains where spikes lead the behaviour by 0.3 s (benchmarks/README.md, "The stitching centre").
CENTRE_MARGIN = 0.002
CENTRE_Z = 1.5
CENTRE_BLOCKS = 10


def position_weight(position: np.ndarray, centre: float = DEFAULT_CENTRE) -> np.ndarray:
    """Weight of predictions at ``position`` (fractions of their window, 0 its start) in the
    stitched average: ``exp(-((position - centre) / (1/4))^2 / 2)``, from 1 at ``centre`` to
    0.14 half a window away."""
    return np.exp(-0.5 * ((np.asarray(position, np.float64) - centre) / 0.25) ** 2)


class Stitcher:
    """Accumulates predictions per (session, readout) and scores them per session.

    Args:
        window_length: the evaluation windows' length (s); predictions are then weighted by
            their position in the window (:func:`position_weight`). None: a plain mean.
        centres: ``{readout: stitching centre}`` (fractions of the window) for the weights;
            a readout not in it is centred on the window's middle. :meth:`best_centres`
            finds them on a validation split.
    """

    def __init__(self, window_length: float | None = None, centres: Mapping[str, float] | None = None):
        if window_length is not None and not (np.isfinite(window_length) and window_length > 0):
            raise ValueError(f"window_length must be a positive number of seconds or None, got {window_length}")
        self.window_length = window_length
        self.centres = check_centres(centres or {}, "centres")
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
            "position": in_window / self.window_length if self.window_length else np.full(len(in_window), np.nan),
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
        """Give every rank the predictions of all ranks (no-op without torch.distributed): the
        stitching centres are chosen from the predictions themselves, so they travel unmerged."""
        if (
            not (torch.distributed.is_available() and torch.distributed.is_initialized())
            or torch.distributed.get_world_size() == 1
        ):
            return
        mine = {k: self.predictions(*k) for k in self._chunks}
        everyone = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(everyone, mine)
        self._chunks = defaultdict(list)
        for part in everyone:
            for k, v in part.items():
                self._chunks[k].append(v)

    def predictions(self, session: str, readout: str) -> dict[str, np.ndarray]:
        """Every window's prediction of ``readout`` in ``session``, unmerged: sample_index, pred,
        target, eval, position (fraction of its window; NaN without a window length), time."""
        parts = self._chunks.get((session, readout))
        if not parts:
            raise KeyError(f"no predictions of {readout!r} in session {session!r} (have {sorted(self._chunks)[:5]})")
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _group(self, key) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """(predictions, unique sample indices, first row of each, each row's group) of one
        (session, readout): computed once however many centres are tried."""
        cat = self.predictions(*key)
        uniq, first, inv = np.unique(cat["sample_index"], return_index=True, return_inverse=True)
        return cat, uniq, first, inv.reshape(-1)

    def _merge(self, key, centre: float, group=None) -> dict[str, np.ndarray]:
        """One row per sample index: predictions averaged with their weights (centred on
        ``centre``), the rest taken from the first. ``group``: :meth:`_group` of ``key``, if known."""
        cat, uniq, first, inv = group or self._group(key)
        w = np.ones(len(inv)) if self.window_length is None else position_weight(cat["position"], centre)
        weight = np.bincount(inv, weights=w, minlength=len(uniq))
        flat = cat["pred"].reshape(len(inv), -1) * w[:, None]
        total = np.stack([np.bincount(inv, weights=col, minlength=len(uniq)) for col in flat.T], axis=1)
        return {
            "sample_index": uniq,
            "pred": (total / weight[:, None]).reshape(len(uniq), *cat["pred"].shape[1:]),
            "count": np.bincount(inv, minlength=len(uniq)),
            "weight": weight,
            "target": cat["target"][first],
            "eval": cat["eval"][first],
            "time": cat["time"][first],
        }

    def stitched(self, centres: Mapping[str, float] | None = None) -> dict[tuple[str, str], dict[str, np.ndarray]]:
        """Per (session, readout): sample_index, pred (averaged), count, weight, target, eval,
        time; weighted with ``centres`` (default: the stitcher's own)."""
        centres = self.centres if centres is None else centres
        return {k: self._merge(k, centres.get(k[1], DEFAULT_CENTRE)) for k in sorted(self._chunks)}

    def scores(self, centres: Mapping[str, float] | None = None) -> dict[str, dict[str, float]]:
        """``{session: {readout: score}}`` (:func:`score`) on each session's evaluation samples,
        stitched with ``centres`` (default: the stitcher's own)."""
        centres = self.centres if centres is None else centres
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for session, readout in sorted(self._chunks):
            value = self._score((session, readout), centres.get(readout, DEFAULT_CENTRE))
            if value is not None:
                out[session][readout] = value
        return dict(out)

    def _score(self, key, centre: float) -> float | None:
        """:func:`score` of one (session, readout) on its evaluation samples; None with fewer than 2."""
        s = self._merge(key, centre)
        e = s["eval"]
        return score(get_readout(key[1]), s["pred"][e], s["target"][e]) if e.sum() >= 2 else None

    def best_centres(
        self,
        candidates: Sequence[float] = CENTRES,
        margin: float = CENTRE_MARGIN,
        z: float = CENTRE_Z,
        blocks: int = CENTRE_BLOCKS,
    ) -> dict[str, float]:
        """``{readout: centre}`` chosen here (call it on the validation split): for each readout,
        among the candidates that beat the window's middle by more than ``margin``
        (:meth:`centre_gains`), the one whose gain less ``z`` standard errors is highest, if that
        is above zero; else the middle. Ties go to the candidate nearer the middle. Empty
        without a window length (nothing to weight)."""
        if self.window_length is None:
            return {}
        best: dict[str, float] = {}
        for readout in sorted({r for _, r in self._chunks}):
            gains = self.centre_gains(readout, candidates, blocks)
            if gains is None:
                continue
            chosen, bound = DEFAULT_CENTRE, 0.0
            for c, (gain, se) in sorted(gains.items(), key=lambda kv: abs(kv[0] - DEFAULT_CENTRE)):
                if gain > margin and gain - z * se > bound:
                    chosen, bound = c, gain - z * se
            best[readout] = chosen
        return best

    def centre_gains(
        self, readout: str, candidates: Sequence[float] = CENTRES, blocks: int = CENTRE_BLOCKS
    ) -> dict[float, tuple[float, float]] | None:
        """``{centre: (gain, se)}`` for each candidate but the middle: how much the stitched
        score of ``readout``, averaged over sessions, rises when the weights are centred there
        instead of on the window's middle, and the jackknife standard error of that gain over
        ``blocks`` contiguous stretches of each session's evaluation samples (in sample order),
        left out one at a time, so that a gain one stretch carries does not look certain
        (``inf`` where every session has fewer than ``2 * blocks`` samples). None where no
        session has two evaluation samples of it."""
        if not (isinstance(blocks, int) and blocks >= 2):
            raise ValueError(f"blocks must be an integer >= 2, got {blocks!r}")
        candidates = check_centres(dict(enumerate(candidates)), "candidates").values()
        spec = get_readout(readout)
        merged = {k: {c: self._merge(k, c, g) for c in {DEFAULT_CENTRE, *candidates}}
                  for k, g in ((k, self._group(k)) for k in self._chunks if k[1] == readout)}  # fmt: skip
        rows = {k: np.flatnonzero(m[DEFAULT_CENTRE]["eval"]) for k, m in merged.items()}
        rows = {k: r for k, r in rows.items() if len(r) >= 2}
        if not rows:
            return None
        # the rows each jackknife replicate keeps: all but one stretch, of the sessions long enough to cut
        cut = {k: np.array_split(r, blocks) for k, r in rows.items() if len(r) >= 2 * blocks}
        replicates = [
            {k: np.concatenate(cut[k][:j] + cut[k][j + 1 :]) if k in cut else r for k, r in rows.items()}
            for j in range(blocks)
        ]

        def mean_score(centre: float, kept: Mapping) -> float:
            return float(np.mean([score(spec, merged[k][centre]["pred"][r], merged[k][centre]["target"][r])
                                  for k, r in kept.items()]))  # fmt: skip

        middle = np.array([mean_score(DEFAULT_CENTRE, kept) for kept in replicates]) if cut else None
        base, out = mean_score(DEFAULT_CENTRE, rows), {}
        for c in candidates:
            if c == DEFAULT_CENTRE:
                continue
            se = np.inf
            if cut:
                d = np.array([mean_score(c, kept) for kept in replicates]) - middle
                se = float(np.sqrt((blocks - 1) / blocks * np.sum((d - d.mean()) ** 2)))
            out[float(c)] = (mean_score(c, rows) - base, se)
        return out

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


def stitch_centres(model: torch.nn.Module) -> dict[str, float]:
    """The stitching centres a POYO model keeps (chosen on validation when it was trained); {} if none."""
    return dict(getattr(model, "stitch_centres", None) or {})


def stitch_predictions(model: torch.nn.Module, batches: Iterable[Mapping]) -> Stitcher:
    """``model``'s predictions on evaluation ``batches`` (eval mode, no gradients), stitched
    with its window length and stitching centres; the model's training mode is restored."""
    was = model.training
    model.eval()
    stitcher = Stitcher(window_length(model), stitch_centres(model))
    with torch.no_grad():
        for batch in batches:
            stitcher.add_batch(batch, model(batch))
    model.train(was)
    return stitcher

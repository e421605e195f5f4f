"""The peer a careful user fits instead of POYO: a small GRU on binned spike counts.

Like the linear baselines (:mod:`poyo.training.linear`) it is fitted per session on the
training split and scored on the same test samples as POYO, and it sees at most what POYO
sees: ``window`` is a bidirectional GRU over the bins from ``before_s`` before to ``after_s``
after each sample (POYO reads a whole window, future spikes included), ``causal`` a GRU over
the ``causal_s`` before it, as an online decoder would. Counts are square-rooted and z-scored
per unit on the training split; the targets (each angle's cos and sin, for circular readouts)
are z-scored too. Hidden size and dropout are chosen on the validation split, and each fit
stops early on it (the epoch with the best validation score is kept).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from poyo.data.dataset import Dataset
from poyo.readouts import ReadoutConfig
from poyo.training.linear import binned_counts, session_samples
from poyo.training.stitch import angular_error_deg, score

VARIANTS = ("window", "causal")


class GRUNet(nn.Module):
    """GRU over ``(batch, bins, units)`` features, read out at bin ``read_at``.

    A bidirectional GRU's output at ``read_at`` joins the forward pass over the bins up to it
    and the backward pass over the bins from it on: it has seen the whole context."""

    def __init__(self, n_in: int, hidden: int, n_out: int, dropout: float, bidirectional: bool, read_at: int):
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, batch_first=True, bidirectional=bidirectional)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden * (2 if bidirectional else 1), n_out)
        self.read_at = read_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.drop(x))
        return self.out(self.drop(h[:, self.read_at]))


class GRUBaseline:
    """Fit per session on ``train``, choose size and dropout on ``valid``, score ``test``.

    Args:
        bin_s: bin width (s).
        before_s, after_s: the ``window`` decoder's context around each sample.
        causal_s: the ``causal`` decoder's context before each sample.
        hidden, dropout: the sizes and dropout rates to choose from (every pair is fitted).
        lr, batch_size: Adam's learning rate and the minibatch.
        max_epochs, patience: an epoch is one pass over the training samples; a fit stops
            after ``patience`` epochs without a better validation score.
        seed: initialisation and minibatch order (each fit starts from this seed).
        verbose: print one line per fit (its validation score, epochs and seconds).
    """

    def __init__(
        self,
        bin_s: float = 0.05,
        before_s: float = 0.75,
        after_s: float = 0.25,
        causal_s: float = 1.0,
        hidden: Sequence[int] = (64, 128),
        dropout: Sequence[float] = (0.3, 0.5),
        lr: float = 1e-3,
        batch_size: int = 256,
        max_epochs: int = 40,
        patience: int = 5,
        seed: int = 0,
        verbose: bool = False,
    ):
        if not (bin_s > 0 and before_s >= 0 and after_s >= 0 and before_s + after_s >= bin_s and causal_s >= bin_s):
            raise ValueError(
                f"need bin_s > 0 and contexts of at least one bin, got bin_s={bin_s}, before_s={before_s}, "
                f"after_s={after_s}, causal_s={causal_s}"
            )
        if not hidden or not dropout or any(int(h) < 1 for h in hidden) or any(not 0 <= d < 1 for d in dropout):
            raise ValueError(f"need hidden sizes >= 1 and dropout rates in [0, 1), got {hidden} and {dropout}")
        if not (lr > 0 and batch_size >= 1 and max_epochs >= 1 and patience >= 1):
            raise ValueError(
                f"need lr > 0, batch_size, max_epochs and patience >= 1, got {lr}, {batch_size}, {max_epochs}, {patience}"
            )
        self.bin_s, self.before_s, self.after_s, self.causal_s = (
            float(bin_s),
            float(before_s),
            float(after_s),
            float(causal_s),
        )
        self.hidden, self.dropout = tuple(int(h) for h in hidden), tuple(float(d) for d in dropout)
        self.lr, self.batch_size, self.max_epochs, self.patience = (
            float(lr),
            int(batch_size),
            int(max_epochs),
            int(patience),
        )
        self.seed, self.verbose = int(seed), bool(verbose)

    @classmethod
    def for_window(cls, window_length: float, **kwargs) -> GRUBaseline:
        """The GRUs that read what a POYO window of ``window_length`` s holds: the bidirectional
        one three quarters of it before each sample and one quarter after, the causal one the
        whole window before it. ``kwargs``: the other settings (bin_s, seed, ...)."""
        if not (isinstance(window_length, (int, float)) and window_length > 0):
            raise ValueError(f"window_length must be a positive number of seconds, got {window_length!r}")
        w = float(window_length)
        return cls(before_s=0.75 * w, after_s=0.25 * w, causal_s=w, **kwargs)

    def bins(self, variant: str) -> tuple[int, int]:
        """(bins up to the sample, bins after it) for a variant. ``causal``: the bins ending at
        the sample. ``window``: a bin centred on the sample, ``before_s`` of bins before it and
        ``after_s`` after (21 bins for 0.75 s and 0.25 s of 50 ms bins)."""
        if variant == "causal":
            return max(1, round(self.causal_s / self.bin_s)), 0
        if variant == "window":
            return round(self.before_s / self.bin_s) + 1, round(self.after_s / self.bin_s)
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")

    def _fit(
        self, x: dict, y: dict, scale: tuple, spec, hidden: int, dropout: float, bidirectional: bool, read_at: int
    ):
        """Train one network on z-scored targets ``y["train"]``; ``scale`` (mean, std) maps its
        outputs back to the behaviour's units, scored against ``y["valid"]``. Returns (best validation score,
        the network with the weights of that epoch)."""
        # the seed drives the initial weights, the minibatch order and the dropout masks (which draw
        # from torch's global generator: forked here, so the fit neither reads nor moves the caller's)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            net = GRUNet(x["train"].shape[-1], hidden, y["train"].shape[-1], dropout, bidirectional, read_at)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            xt, yt = torch.from_numpy(x["train"]), torch.from_numpy(y["train"])
            xv = torch.from_numpy(x["valid"])
            best, best_state, since, best_epoch, t0 = -np.inf, None, 0, 0, time.monotonic()
            for epoch in range(1, self.max_epochs + 1):
                net.train()
                for idx in torch.randperm(len(xt), generator=gen).split(self.batch_size):
                    loss = nn.functional.mse_loss(net(xt[idx]), yt[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                fit = (
                    score(spec, self._predict(net, xv) * scale[1] + scale[0], y["valid"])
                    if len(xv) >= 2
                    else -float(loss)
                )
                if fit > best:
                    best, best_state, since, best_epoch = fit, copy.deepcopy(net.state_dict()), 0, epoch
                else:
                    since += 1
                    if since >= self.patience:
                        break
        net.load_state_dict(best_state)
        if self.verbose:
            kind = "bidirectional" if bidirectional else "causal"
            print(f"  GRU {kind} {hidden} units, dropout {dropout:g}: validation {best:.3f} at epoch {best_epoch} "
                  f"of {epoch} ({time.monotonic() - t0:.0f} s)", flush=True)  # fmt: skip
        return best, net

    @staticmethod
    @torch.no_grad()
    def _predict(net: GRUNet, x: torch.Tensor) -> np.ndarray:
        net.eval()
        return torch.cat([net(c) for c in x.split(2048)]).numpy()

    def evaluate(
        self,
        ds: Dataset,
        readout: ReadoutConfig,
        sessions: Sequence[str] | None = None,
        variants=VARIANTS,
        progress: bool = False,
    ) -> dict[str, dict[str, dict]]:
        """``{variant: {session: {"r2", "hidden", "dropout", "pred", "sample_index", "time"}}}``
        (``angle_error_deg`` too, for circular readouts); scores in the behaviour's own units.
        ``progress``: a bar over the fits (one can take minutes on a long recording with many units),
        showing the last fit's validation score."""
        if readout.spec.kind == "categorical":
            raise ValueError(
                f"the GRU baselines decode continuous and circular readouts, not '{readout.name}' (categorical)"
            )
        bad = [v for v in variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"variants must be among {VARIANTS}, got {bad}")
        spec = readout.spec
        out: dict[str, dict[str, dict]] = {v: {} for v in variants}
        sessions = list(sessions if sessions is not None else ds.session_ids)
        fits = len(variants) * len(self.hidden) * len(self.dropout)  # per session
        bar = tqdm(
            total=len(sessions) * fits,
            desc=f"GRU fits ({readout.name})",
            unit="fit",
            disable=not progress,
        )
        for sid in sessions:
            samples = session_samples(ds, sid, readout, self.bin_s)
            if samples is None:
                bar.update(fits)
                continue
            w, y, rows, t, index = samples
            my, sy = y[rows["train"]].mean(0), y[rows["train"]].std(0) + 1e-8
            targets = {"train": ((y[rows["train"]] - my) / sy).astype(np.float32), "valid": y[rows["valid"]]}
            spikes = (w.spike_times + w.start, w.spike_units, len(w.unit_ids))
            for variant in variants:
                before, after = self.bins(variant)
                offset = 0.0 if variant == "causal" else self.bin_s / 2  # as the linear decoders bin
                x = {
                    k: np.sqrt(binned_counts(*spikes, t[r], self.bin_s, before, after, offset)).transpose(0, 2, 1)
                    for k, r in rows.items()
                }  # (samples, bins, units)
                mu = x["train"].mean((0, 1), dtype=np.float64)
                sd = x["train"].std((0, 1), dtype=np.float64) + 1e-3
                x = {k: np.ascontiguousarray((v - mu) / sd, np.float32) for k, v in x.items()}
                bi = variant == "window"
                best = None
                for hidden in self.hidden:
                    for dropout in self.dropout:
                        fit, net = self._fit(x, targets, (my, sy), spec, hidden, dropout, bi, before - 1)
                        bar.set_postfix_str(
                            f"{sid} {variant} {hidden} units, dropout {dropout:g}: validation {fit:.3f}"
                        )
                        bar.update()
                        if best is None or fit > best[0]:
                            best = (fit, hidden, dropout, net)
                _, hidden, dropout, net = best
                pred = self._predict(net, torch.from_numpy(x["test"])) * sy + my
                out[variant][sid] = {
                    "r2": score(spec, pred, y[rows["test"]]), "hidden": hidden, "dropout": dropout,
                    "pred": pred, "sample_index": index[rows["test"]], "time": t[rows["test"]],
                }  # fmt: skip
                if spec.kind == "circular":
                    out[variant][sid]["angle_error_deg"] = angular_error_deg(pred, y[rows["test"]], spec.dim)
        bar.close()
        return out

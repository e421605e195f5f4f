"""Masked modelling of spikes (MtM, Zhang et al. 2024): hide part of a window's population,
predict the hidden spike counts.

Four schemes, one per batch (a learned *prompt* tells the model which one it is):

* ``neuron``: a random fraction of the units is hidden; the rest is seen.
* ``causal``: every spike after a cut is hidden; the counts after it are predicted.
* ``intra_region``: one region is chosen; a fraction of its units is hidden and only the
  region's other units are seen.
* ``inter_region``: one region is hidden whole; the other regions are seen.

A hidden unit leaves no token at all in the input (neither spikes nor delimiters); in
``causal`` no token at or after the cut is kept. The model is asked for the spike count of
each hidden (unit, ``bin_s`` bin) pair (Poisson loss): one output query per bin (the prompt
at the bin's centre time, group ``bins``) reads the visible spikes near it and then the
latents into the population's state, to which a linear read of the visible counts smoothed
around the bin is added (``POYOConfig.count_kernels``); each hidden unit reads its log
expected count from that state through weights predicted from its embedding (group
``counts``: one entry per pair).

:func:`plan_mask` decides what to hide from the units' regions only, so the model
(:func:`apply_mask` on tokenized samples) and the baselines (:mod:`poyo.training.mtm_eval`,
on windows) hide exactly the same entries. :class:`MaskingCollate` draws a scheme per batch
and collates.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from poyo.data.collate import collate_packed, collate_padded

SCHEMES = ("neuron", "causal", "intra_region", "inter_region")
DECODE = "decode"  # no masking: behaviour decoding (prompt 0)
PROMPTS = (DECODE, *SCHEMES)  # row of the prompt embedding of each


@dataclass(frozen=True)
class MaskSettings:
    """Args:
    bin_s: width of the predicted count bins (s); windows are cut into ``floor(W / bin_s)``.
    neuron_ratio: fraction of the units hidden by ``neuron`` masking.
    intra_ratio: fraction of the chosen region's units hidden by ``intra_region`` masking.
    causal_min, causal_max: the ``causal`` cut is drawn on the bin grid between these
        fractions of the window (the part before the cut is seen).
    schemes: relative frequency of each scheme during training (``decode``, a batch
        without masking, only trains behaviour readouts: ``objective=both``). ``neuron``
        is drawn 3x as often as each other scheme by default: with all four equal, co-bps
        learnt at a third of the speed (0.215 against 0.300 at step 1,419 with neuron only).
    forward_s: evaluation of forward prediction: the last ``forward_s`` of each window.
    """

    bin_s: float = 0.02
    neuron_ratio: float = 0.3
    intra_ratio: float = 0.3
    causal_min: float = 0.5
    causal_max: float = 0.9
    schemes: dict = field(default_factory=lambda: {s: 3.0 if s == "neuron" else 1.0 for s in SCHEMES})
    forward_s: float = 0.2

    def __post_init__(self):
        if not 0 < self.bin_s <= 0.5:
            raise ValueError(f"mtm.bin_s must be in (0, 0.5] s, got {self.bin_s}")
        for name in ("neuron_ratio", "intra_ratio"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"mtm.{name} must be in (0, 1), got {getattr(self, name)}")
        if not 0 < self.causal_min <= self.causal_max < 1:
            raise ValueError(f"need 0 < mtm.causal_min <= mtm.causal_max < 1, got {self.causal_min}, {self.causal_max}")
        unknown = sorted(set(self.schemes) - set(PROMPTS))
        if unknown:
            raise ValueError(f"mtm.schemes: unknown schemes {unknown}; choose from {list(PROMPTS)}")
        weights = [float(w) for w in self.schemes.values()]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mtm.schemes needs non-negative weights with a positive sum, got {dict(self.schemes)}")
        if not self.forward_s > 0:
            raise ValueError(f"mtm.forward_s must be > 0, got {self.forward_s}")

    def num_bins(self, duration: float) -> int:
        return int(np.floor(duration / self.bin_s + 1e-9))

    def draw_scheme(self, rng: np.random.Generator) -> str:
        names = list(self.schemes)
        p = np.array([float(self.schemes[n]) for n in names])
        return names[int(rng.choice(len(names), p=p / p.sum()))]


class Plan(NamedTuple):
    """What one window hides: ``visible``/``target`` flag units (by position in the window),
    ``first_bin`` is the first predicted bin (the causal cut, in bins; 0 otherwise)."""

    scheme: str
    visible: np.ndarray  # (U,) bool: units whose tokens stay in the input
    target: np.ndarray  # (U,) bool: units whose counts are predicted
    first_bin: int


def _some(rng: np.random.Generator, members: np.ndarray, ratio: float) -> np.ndarray:
    """A random subset of ``members`` (positions), about ``ratio`` of them, at least one and
    (when there are two or more) not all."""
    k = int(np.clip(round(ratio * len(members)), 1, max(len(members) - 1, 1)))
    return np.sort(rng.choice(members, size=k, replace=False))


def plan_mask(
    regions: np.ndarray,
    duration: float,
    scheme: str,
    rng: np.random.Generator,
    settings: MaskSettings,
    *,
    region=None,
) -> Plan:
    """What to hide in a window whose units have these region labels (any comparable labels,
    one per unit). ``region`` fixes the region of the two region schemes (evaluation).
    A region scheme a window cannot use (one region; one unit in each) falls back to
    ``neuron``, and the plan says so; a window of one unit always gets ``causal``."""
    regions = np.asarray(regions)
    u = len(regions)
    if u == 0:
        raise ValueError("cannot mask a window without units")
    if scheme not in PROMPTS:
        raise ValueError(f"unknown masking scheme {scheme!r}; choose from {list(PROMPTS)}")
    all_units = np.ones(u, bool)
    if scheme == DECODE:
        return Plan(DECODE, all_units, np.zeros(u, bool), 0)
    if scheme == "causal" or u == 1:  # one unit: hiding it would leave no input at all
        n = settings.num_bins(duration)
        lo = max(1, int(np.ceil(settings.causal_min * n)))
        hi = max(lo, int(np.floor(settings.causal_max * n)))
        return Plan("causal", all_units, all_units.copy(), int(rng.integers(lo, hi + 1)))
    labels, counts = np.unique(regions, return_counts=True)
    if scheme == "inter_region" and len(labels) >= 2:
        r = labels[rng.integers(len(labels))] if region is None else region
        target = regions == r
        if target.any():
            return Plan("inter_region", ~target, target, 0)
    if scheme == "intra_region":
        usable = labels[counts >= 2]
        if len(usable):
            r = usable[rng.integers(len(usable))] if region is None else region
            members = np.flatnonzero(regions == r)
            if len(members) >= 2:
                target = np.zeros(u, bool)
                target[_some(rng, members, settings.intra_ratio)] = True
                return Plan("intra_region", (regions == r) & ~target, target, 0)
    target = np.zeros(u, bool)
    target[_some(rng, np.arange(u), settings.neuron_ratio)] = True
    return Plan("neuron", ~target, target, 0)


def bin_counts(
    spike_times: np.ndarray, spike_pos: np.ndarray, num_units: int, num_bins: int, bin_s: float
) -> np.ndarray:
    """Spike counts ``(num_bins, num_units)`` of spikes at window times ``spike_times`` by unit position."""
    b = np.floor(np.asarray(spike_times) / bin_s + 1e-9).astype(np.int64)
    ok = (b >= 0) & (b < num_bins)
    counts = np.zeros((num_bins, num_units), np.float32)
    np.add.at(counts, (b[ok], np.asarray(spike_pos)[ok]), 1.0)
    return counts


def region_codes(regions: np.ndarray | None, num_units: int) -> tuple[list[str], np.ndarray]:
    """The sorted region names of a session and each unit's code (its position among them);
    one unnamed region when there are no labels. The tokenizer emits these codes and the
    scoring plans by them, so both must come from here."""
    if regions is None:
        return [""], np.zeros(num_units, np.int64)
    names, codes = np.unique(np.asarray(regions), return_inverse=True)
    return [str(n) for n in names], codes.reshape(-1).astype(np.int64)


def stable_seed(*parts) -> int:
    """A seed from strings and numbers that is the same in every process and Python run."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode())


def apply_mask(sample: dict, plan: Plan, settings: MaskSettings) -> dict:
    """A tokenized sample (made by a tokenizer with ``masking=True``) with ``plan`` applied:
    hidden tokens removed from ``input``, a ``bins`` group (one query per bin of the window)
    and a ``counts`` group (the hidden (unit, bin) pairs and their spike counts), ``bin_s``
    and ``seen_bins`` (bins before the causal cut; all otherwise), ``prompt`` set, behaviour
    targets silenced in masked samples (weights 0: behaviour is learnt from unmasked windows)."""
    from poyo.model.tokenizer import SPIKE, UNIT_END

    units = sample["units"]
    rows = units["index"].numpy()
    inp = sample["input"]
    unit_index, token_type = inp["unit_index"].numpy(), inp["token_type"].numpy()
    times = inp["timestamps"].numpy()
    duration = float(sample["duration"])
    if len(plan.visible) != len(rows):
        raise ValueError(f"the plan covers {len(plan.visible)} units, the sample has {len(rows)}")
    order = np.argsort(rows)
    pos = order[np.searchsorted(rows, unit_index, sorter=order)]  # token -> unit position
    n_bins = settings.num_bins(duration)
    cut = plan.first_bin * settings.bin_s
    keep = plan.visible[pos]
    if plan.first_bin > 0:
        keep &= (times < cut - 1e-9) & (token_type != UNIT_END)
    out = {k: v for k, v in sample.items() if k not in ("units", "duration")}
    out["input"] = {k: v[torch.from_numpy(keep)] for k, v in inp.items()}
    out["prompt"] = PROMPTS.index(plan.scheme)
    if plan.scheme == DECODE:
        return out
    spikes = token_type == SPIKE
    counts = bin_counts(times[spikes], pos[spikes], len(rows), n_bins, settings.bin_s)
    tu = np.flatnonzero(plan.target)
    bins = np.arange(plan.first_bin, n_bins)
    out["bins"] = {"timestamps": torch.from_numpy((np.arange(n_bins) + 0.5) * settings.bin_s)}
    out["bin_s"] = float(settings.bin_s)
    out["seen_bins"] = plan.first_bin or n_bins  # bins whose spikes the input may hold (the causal cut)
    out["counts"] = {
        "unit_index": torch.from_numpy(np.repeat(rows[tu], len(bins))),
        "counts": torch.from_numpy(np.ascontiguousarray(counts[bins][:, tu].T).reshape(-1)),
        "unit_position": torch.from_numpy(np.repeat(tu, len(bins))),
        "bin": torch.from_numpy(np.tile(bins, len(tu))),
    }
    for key in [k for k in out if k.startswith("target/")]:
        out[key] = {**out[key], "weight": torch.zeros_like(out[key]["weight"])}
    return out


class MaskingCollate:
    """``collate_fn`` for masked modelling: one scheme per batch, drawn from the first
    sample's ``mask_seed`` (so it does not depend on workers), then each sample's own mask
    from its own seed; then the samples are collated ``layout`` ("packed" or "padded").

    ``scheme`` fixes the scheme (evaluation); ``fixed=True`` draws each session's mask from
    the session id alone, so every window of a session hides the same units.
    """

    def __init__(self, settings: MaskSettings, layout: str = "packed", *, scheme: str | None = None, fixed=False):
        if layout not in ("packed", "padded"):
            raise ValueError(f"layout must be 'packed' or 'padded', got {layout!r}")
        if scheme is not None and scheme not in PROMPTS:
            raise ValueError(f"unknown masking scheme {scheme!r}; choose from {list(PROMPTS)}")
        self.settings, self.layout, self.scheme, self.fixed = settings, layout, scheme, bool(fixed)

    def plan(self, sample: dict, scheme: str, region=None) -> Plan:
        seed = stable_seed(sample["session_id"], scheme, region) if self.fixed else int(sample["mask_seed"])
        regions = sample["units"]["region"].numpy()
        return plan_mask(
            regions, float(sample["duration"]), scheme, np.random.default_rng(seed), self.settings, region=region
        )

    def __call__(self, samples):
        if not samples:
            raise ValueError("cannot collate an empty batch")
        missing = [k for k in ("units", "mask_seed", "duration") if k not in samples[0]]
        if missing:
            raise KeyError(
                f"samples lack {missing}: tokenize with model.tokenizer(..., masking=True) for masked modelling"
            )
        scheme = self.scheme or self.settings.draw_scheme(np.random.default_rng(int(samples[0]["mask_seed"]) ^ 0x5EED))
        masked = []
        for s in samples:
            out = apply_mask(s, self.plan(s, scheme), self.settings)
            out.pop("mask_seed")
            masked.append(out)
        return collate_packed(masked) if self.layout == "packed" else collate_padded(masked)

"""Scoring masked modelling (MtM): bits per spike of the model beside two baselines.

Tasks, each on non-overlapping windows of a split, with masks fixed per session (every
window of a session hides the same units, chosen from the session id):

* ``co_smoothing``: held-out units (``neuron`` masking) from the others (NLB's co-bps);
* ``forward``: every unit's counts in the last ``mtm.forward_s`` of the window from the rest;
* ``intra:<region>``: held-out units of a region from that region's other units only;
* ``inter:<region>``: a whole region from the other regions.

Bits per spike (Neural Latents Benchmark): ``(LL(model) - LL(null)) / (spikes * ln 2)``,
Poisson log-likelihoods summed over the predicted (unit, bin) entries, the null model being
each unit's mean count over those same entries. Baselines, on exactly the same entries:

* ``mean_rate``: each predicted unit's mean count per bin on the training split;
* ``glm``: a Poisson GLM per task from the *visible* spikes of the same window, smoothed with
  Gaussian kernels of 20, 80 and 240 ms (visible bins only), fitted on the training
  split's windows with the same masks, its L2 penalty chosen on the validation split.

The model is scored twice: ``model``, its own readout (one per unit, learnt across every
mask), and ``model_fitted``: the state each bin's counts are read from, with a readout fitted
per task exactly as the GLM is (same Poisson fit, same windows and masks, same penalty
choice). The GLM fits each task's mask separately, so the second compares what the two *see*
on equal terms: the model's state against smoothed counts (as the Neural Latents Benchmark
scores latent models such as GPFA: a Poisson regression from the latents to each held-out unit).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from poyo.data import Dataset, SequentialFixedWindowSampler
from poyo.data.window import Window
from poyo.model.masking import MaskSettings, Plan, apply_mask, bin_counts, plan_mask, region_codes, stable_seed
from poyo.model.poyo import COUNT_STATE, COUNTS, POYO, count_targets
from poyo.training.stitch import to_device

# what is scored, and its column in the tables (the model's own readout, its state read by a
# readout fitted as the GLM is, the GLM, each unit's mean rate)
LABELS = {"model": "POYO-MtM", "model_fitted": "fitted", "glm": "GLM", "mean_rate": "mean rate"}
METHODS = tuple(LABELS)
SIGMAS_BINS = (1.0, 4.0, 12.0)  # Gaussian kernels of the GLM features, in bins (20, 80, 240 ms at 20 ms)
PENALTIES = (1e-2, 1e-1, 1.0)  # validation chose 0.1 or 1 on every synthetic session we looked at


class Task(NamedTuple):
    name: str  # "co_smoothing", "forward", "intra:M1", "inter:PMd"
    scheme: str
    region: int | None  # region code (position in the session's sorted region names)


def session_tasks(regions: np.ndarray | None, num_units: int) -> list[Task]:
    """The tasks a session supports: region tasks need labelled regions (two units for intra,
    two regions for inter)."""
    names, codes = region_codes(regions, num_units)
    tasks = [Task("co_smoothing", "neuron", None), Task("forward", "causal", None)]
    if regions is None:
        return tasks
    counts = np.bincount(codes, minlength=len(names))
    tasks += [Task(f"intra:{n}", "intra_region", c) for c, n in enumerate(names) if counts[c] >= 2]
    if len(names) >= 2:
        tasks += [Task(f"inter:{n}", "inter_region", c) for c, n in enumerate(names)]
    return tasks


def task_plan(task: Task, session_id: str, codes: np.ndarray, duration: float, settings: MaskSettings) -> Plan:
    """The fixed mask of ``task`` in every window of a session."""
    if task.scheme == "causal":
        n = settings.num_bins(duration)
        first = n - max(1, int(round(settings.forward_s / settings.bin_s)))
        if first < 1:
            raise ValueError(f"mtm.forward_s={settings.forward_s} leaves nothing to see in {duration:g} s windows")
        everyone = np.ones(len(codes), bool)
        return Plan("causal", everyone, everyone.copy(), first)
    # the seed is what the validation loader's MaskingCollate(fixed=True) uses for co-smoothing
    rng = np.random.default_rng(stable_seed(session_id, task.scheme, task.region))
    return plan_mask(codes, duration, task.scheme, rng, settings, region=task.region)


class CountScores:
    """Accumulates predicted log counts per (session, task, unit) and scores bits per spike."""

    def __init__(self):
        self._chunks: dict[tuple[str, str], list[dict]] = defaultdict(list)

    def add(self, session: str, task: str, unit: np.ndarray, counts: np.ndarray, log_rates: Mapping[str, np.ndarray]):
        self._chunks[(session, task)].append(
            {
                "unit": np.asarray(unit),
                "y": np.asarray(counts, np.float64),
                **{k: np.asarray(v, np.float64) for k, v in log_rates.items()},
            }
        )

    def gather(self) -> None:
        """Merge every rank's entries (no-op without torch.distributed)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        if torch.distributed.get_world_size() == 1:
            return
        everyone = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(everyone, dict(self._chunks))
        self._chunks = defaultdict(list)
        for part in everyone:
            for k, v in part.items():
                self._chunks[k].extend(v)

    def scores(self) -> dict[str, dict[str, dict]]:
        """``{session: {task: {"spikes", "bins", method: bits per spike}}}``."""
        out: dict[str, dict[str, dict]] = defaultdict(dict)
        for (session, task), parts in sorted(self._chunks.items()):
            cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            out[session][task] = bits_per_spike(
                cat["unit"], cat["y"], {m: cat[m] for m in cat if m not in ("unit", "y")}
            )
        return dict(out)


def bits_per_spike(unit: np.ndarray, y: np.ndarray, log_rates: Mapping[str, np.ndarray]) -> dict:
    """Bits per spike of each prediction (log expected counts) against each unit's mean count,
    and ``saturated``: what predicting every count exactly would score (no Poisson model scores more)."""
    y = np.asarray(y, np.float64)
    units, inv = np.unique(unit, return_inverse=True)
    total = np.bincount(inv, weights=y, minlength=len(units))
    n = np.bincount(inv, minlength=len(units))
    rate = total / np.maximum(n, 1)
    ll_null = float(np.sum(np.where(total > 0, total * np.log(np.maximum(rate, 1e-300)), 0.0) - total))
    ll_saturated = float(np.sum(np.where(y > 0, y * np.log(np.maximum(y, 1e-300)), 0.0) - y))
    spikes = float(y.sum())
    out = {"spikes": spikes, "bins": int(len(y))}
    out["saturated"] = (ll_saturated - ll_null) / (spikes * math.log(2)) if spikes > 0 else float("nan")
    for name, lr in log_rates.items():
        ll = float(np.sum(y * lr - np.exp(lr)))
        out[name] = (ll - ll_null) / (spikes * math.log(2)) if spikes > 0 else float("nan")
    return out


BITS_FLOOR = -10.0  # bits per spike: 2^10 times less likely per spike than each unit's mean rate


class ScoreRangeError(ValueError):
    """A bits-per-spike figure outside what a Poisson prediction can score: a numerical fault."""


def out_of_range(scores: Mapping[str, Mapping[str, dict]]) -> list[str]:
    """Every figure of ``scores`` that cannot be a real fit, named by session, task and model:
    not finite (with spikes to score), above the saturated model (impossible) or below
    :data:`BITS_FLOOR` (the mean-rate baseline scores near 0; a fit this far below it has blown up)."""
    bad = []
    for sid, per in scores.items():
        for task, v in per.items():
            if not v.get("spikes", 0) > 0:
                continue
            for m in METHODS:
                if m not in v:
                    continue
                x, top = v[m], v.get("saturated", np.inf)
                if not np.isfinite(x) or x > top + 1e-6 or x < BITS_FLOOR:
                    why = "not finite" if not np.isfinite(x) else (
                        f"above the saturated model's {top:.3f}" if x > top + 1e-6 else f"below {BITS_FLOOR:g}"
                    )  # fmt: skip
                    bad.append(f"session '{sid}', task {task}, {LABELS[m]}: {x:.6g} bits per spike ({why})")
    return bad


def pooled(per_task: Mapping[str, dict], prefix: str) -> dict | None:
    """Bits per spike over all tasks starting with ``prefix`` (spike-weighted)."""
    parts = [v for k, v in per_task.items() if k.startswith(prefix)]
    spikes = sum(p["spikes"] for p in parts)
    if not parts or spikes <= 0:
        return None
    return {
        "spikes": spikes,
        **{m: sum(p[m] * p["spikes"] for p in parts) / spikes for m in METHODS if all(m in p for p in parts)},
    }


# --- the GLM baseline ------------------------------------------------------------------------
def window_counts(window: Window, settings: MaskSettings) -> np.ndarray:
    """``(bins, units)`` spike counts of a window."""
    n = settings.num_bins(window.duration)
    return bin_counts(window.spike_times, window.spike_units, len(window.unit_ids), n, settings.bin_s)


def glm_features(counts: np.ndarray, plan: Plan) -> np.ndarray:
    """Features of the predicted bins from the visible spikes: each visible unit's counts
    smoothed with each kernel, normalised by the kernel's weight on visible bins."""
    n = counts.shape[0]
    seen = np.ones(n)
    if plan.first_bin > 0:
        seen[plan.first_bin :] = 0.0
    vis = counts[:, plan.visible] * seen[:, None]
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    feats = []
    for sigma in SIGMAS_BINS:
        k = np.exp(-0.5 * (d / sigma) ** 2)
        feats.append((k @ vis) / np.maximum(k @ seen, 1e-6)[:, None])
    return np.concatenate(feats, axis=1)[plan.first_bin :]


def _targets(counts: np.ndarray, plan: Plan) -> np.ndarray:
    return counts[plan.first_bin :][:, plan.target]


SD_FLOOR = 0.01  # features are counts per bin: one that barely varies in training is scaled as if its std were this
RATE_HEADROOM = 1.0  # predictions stay below e^1 x (the most a target counted in one training bin + 1)
RATE_FLOOR = 7.0  # ... and above e^-7 (~1/1000) x its mean count on the training split


class PoissonGLM:
    """``log E[y] = x W + b`` per target column, L2 on ``W``, fitted by L-BFGS (float32: as
    accurate to the third decimal of bits per spike, and twice as fast).

    Two guards keep it in a plausible range. Features are standardised with their training std
    floored at :data:`SD_FLOOR`: a feature nearly constant in training (a unit that fired once,
    std 1e-9) would otherwise turn one test spike into a value of 1e9 and a rate at the
    ceiling. Predictions are clipped per target between :data:`RATE_FLOOR` below its mean count
    and :data:`RATE_HEADROOM` above its largest training count (in log units)."""

    def __init__(self, penalty: float):
        self.penalty = float(penalty)

    def fit(self, x: np.ndarray, y: np.ndarray, init: PoissonGLM | None = None) -> PoissonGLM:
        self.mu, self.sd = x.mean(0), np.maximum(x.std(0), SD_FLOOR)
        self.lo = np.log(np.maximum(y.mean(0), 1e-6)) - RATE_FLOOR
        self.hi = np.log(y.max(0) + 1.0) + RATE_HEADROOM
        X = torch.from_numpy(((x - self.mu) / self.sd).astype(np.float32))
        Y = torch.from_numpy(y.astype(np.float32))
        W = torch.zeros(X.shape[1], Y.shape[1], dtype=torch.float32)
        b = torch.log(Y.mean(0) + 1e-3)
        if init is not None:
            W, b = torch.from_numpy(init.W.astype(np.float32)), torch.from_numpy(init.b.astype(np.float32))
        W.requires_grad_(True)
        b.requires_grad_(True)
        opt = torch.optim.LBFGS([W, b], max_iter=40, tolerance_grad=1e-5, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            eta = X @ W + b
            loss = (torch.exp(eta) - Y * eta).mean() + self.penalty * W.pow(2).sum() / Y.shape[1]
            loss.backward()
            return loss

        opt.step(closure)
        self.W, self.b = W.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64)
        return self

    def log_rate(self, x: np.ndarray) -> np.ndarray:
        return np.clip(((x - self.mu) / self.sd) @ self.W + self.b, self.lo, self.hi)


def _all_targets(windows: Sequence[np.ndarray], plan: Plan) -> np.ndarray:
    return np.concatenate([_targets(c, plan) for c in windows]).astype(np.float64)


def _design(windows: Sequence[np.ndarray], plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([glm_features(c, plan) for c in windows]), _all_targets(windows, plan)


def fit_glm(train: Sequence[np.ndarray], valid: Sequence[np.ndarray], plan: Plan) -> PoissonGLM:
    """The GLM of one task on the smoothed visible counts (:func:`fit_poisson`)."""
    x, y = _design(train, plan)
    return fit_poisson(x, y, *(_design(valid, plan) if valid else (None, None)))


def fit_poisson(x: np.ndarray, y: np.ndarray, xv: np.ndarray | None = None, yv: np.ndarray | None = None) -> PoissonGLM:
    """A :class:`PoissonGLM` of ``y (rows, targets)`` on ``x (rows, features)``, its penalty
    chosen by the log-likelihood of ``yv`` on ``xv`` (the middle one without them)."""
    if len(x) != len(y) or (xv is not None and len(xv) != len(yv)):
        raise ValueError(f"features and targets differ in rows: {len(x)} and {len(y)}")
    if xv is None or len(xv) == 0:
        return PoissonGLM(PENALTIES[len(PENALTIES) // 2]).fit(x, y)
    best, best_ll, prev = None, -np.inf, None
    for p in PENALTIES[::-1]:  # strongest first: each fit starts from the previous one
        glm = PoissonGLM(p).fit(x, y, init=prev)
        lr = glm.log_rate(xv)
        ll = float(np.sum(yv * lr - np.exp(lr)))
        if ll > best_ll:
            best, best_ll = glm, ll
        prev = glm
    return best


# --- evaluation ------------------------------------------------------------------------------
def _windows(ds: Dataset, session: str, split: str, length: float) -> list[Window]:
    iv = ds.sampling_intervals(split).get(session)
    if iv is None or len(iv) == 0:
        return []
    try:
        sampler = SequentialFixedWindowSampler({session: iv}, length, step=length, drop_short=True)
    except ValueError:  # no interval holds a whole window
        return []
    return [ds.read(ix) for ix in sampler]


@torch.no_grad()
def evaluate_masked(
    model: POYO,
    ds: Dataset,
    readouts,
    settings: MaskSettings,
    *,
    split: str = "test",
    window_length: float = 1.0,
    batch_size: int = 32,
    layout: str = "packed",
    baselines: bool = True,
    autocast=None,
    progress: bool = True,
    sessions: Sequence[str] | None = None,
) -> dict[str, dict[str, dict]]:
    """Bits per spike of every task of every session of ``ds`` on ``split``:
    ``{session: {task: {"spikes", "bins", "windows", "saturated", "model", "model_fitted", "glm", "mean_rate"}}}``
    (the last three only with ``baselines``: each is fitted on the session's train and valid
    splits). ``autocast``: a context manager factory the forward runs under; ``sessions``:
    score only these."""
    from poyo.data import collate_packed, collate_padded

    if model.count_head is None:
        raise ValueError("this model has no count head (masked_modelling=False): it cannot be scored on masked spikes")
    collate = collate_packed if layout == "packed" else collate_padded
    device = next(model.parameters()).device
    tokenizer = model.tokenizer(readouts, masking=True)
    was_training = model.training
    model.eval()
    scores = CountScores()
    chosen = list(ds.session_ids if sessions is None else sessions)
    counted: dict[str, int] = {}

    def run(samples: list[dict], plan: Plan):
        """The model on ``samples`` masked by ``plan``: its entries (unit position, count, log
        rate), window by window, and the state of every predicted bin ``(windows x bins, dim)``."""
        parts = []
        for i in range(0, len(samples), batch_size):
            batch = to_device(collate([apply_mask(s, plan, settings) for s in samples[i : i + batch_size]]), device)
            with autocast() if autocast is not None else contextlib.nullcontext():
                out = model(batch, count_state=True)
            t = count_targets(batch)
            state = out[COUNT_STATE].cpu().numpy()  # every window has num_bins(window_length) bins
            state = state.reshape(len(state) // settings.num_bins(window_length), -1, state.shape[-1])[
                :, plan.first_bin :
            ]
            parts.append((t["unit_position"].cpu().numpy(), t["counts"].cpu().numpy(),
                          out[COUNTS].float().cpu().numpy(), state.reshape(-1, state.shape[-1])))  # fmt: skip
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(4))

    for sid in tqdm(chosen, desc=f"masked-modelling scores ({split})", unit="session", disable=not progress):
        windows = _windows(ds, sid, split, window_length)
        if not windows:
            continue
        counted[sid] = len(windows)
        session = ds.sessions[sid]
        _, codes = region_codes(session.unit_regions, len(session.unit_ids))
        samples = [tokenizer(w) for w in windows]
        duration = windows[0].duration
        tasks = session_tasks(session.unit_regions, len(session.unit_ids))
        if baselines:
            train_windows = _windows(ds, sid, "train", window_length)
            valid_windows = _windows(ds, sid, "valid", window_length)
            train_samples = [tokenizer(w) for w in train_windows]
            valid_samples = [tokenizer(w) for w in valid_windows]
            train = [window_counts(w, settings) for w in train_windows]
            valid = [window_counts(w, settings) for w in valid_windows]
            test = [window_counts(w, settings) for w in windows]
            if not train:
                raise ValueError(
                    f"session '{sid}': no whole {window_length:g} s window in its train split to fit the baselines on"
                )
            mean_count = np.concatenate(train).mean(0)
        for task in tasks:
            plan = task_plan(task, sid, codes, duration, settings)
            unit, y, log_rate, state = run(samples, plan)
            rates = {"model": log_rate}
            if baselines:
                # the model's state on the same windows and masks as the GLM's counts
                states = (run(train_samples, plan)[3], run(valid_samples, plan)[3] if valid else None, state)
                rates.update(_baseline_rates(plan, train, valid, test, mean_count, y, states))
            scores.add(sid, task.name, unit, y, rates)
    model.train(was_training)
    out = scores.scores()
    for sid, per in out.items():  # how many windows each figure rests on
        for v in per.values():
            v["windows"] = counted[sid]
    return out


def _baseline_rates(plan, train, valid, test, mean_count, y, states) -> dict[str, np.ndarray]:
    """Baseline log counts for the model's entries, which come window by window, unit-major
    within a window (the order :func:`apply_mask` writes); checked against the counts.
    ``states``: the model's state at the predicted bins of the train, valid (None without
    validation windows) and test windows, ``(windows x bins, dim)``, read by a readout fitted
    exactly as the GLM is (``model_fitted``)."""
    glm = fit_glm(train, valid, plan)
    valid_fit = (states[1], _all_targets(valid, plan)) if valid else (None, None)
    fitted = fit_poisson(states[0], _all_targets(train, plan), *valid_fit)
    targets = np.flatnonzero(plan.target)
    fitted_by_window = fitted.log_rate(states[2]).reshape(len(test), -1, len(targets))  # (windows, bins, targets)
    glm_lr, fitted_lr, mean_lr, ys = [], [], [], []
    for c, f in zip(test, fitted_by_window):
        lr = glm.log_rate(glm_features(c, plan))  # (bins, targets)
        glm_lr.append(lr.T.reshape(-1))
        fitted_lr.append(f.T.reshape(-1))
        mean_lr.append(np.repeat(np.log(np.maximum(mean_count[targets], 1e-6)), lr.shape[0]))
        ys.append(_targets(c, plan).T.reshape(-1))
    if not np.array_equal(np.concatenate(ys), y):
        raise RuntimeError("the baselines' entries differ from the model's (window or unit order); cannot compare them")
    return {
        "glm": np.concatenate(glm_lr),
        "model_fitted": np.concatenate(fitted_lr),
        "mean_rate": np.concatenate(mean_lr),
    }


# --- the report ------------------------------------------------------------------------------
SUMMARY = (
    ("co_smoothing", "co-bps"),
    ("forward", "forward bps"),
    ("intra:", "intra-region bps"),
    ("inter:", "inter-region bps"),
)


def region_note(regions: np.ndarray | None, num_units: int) -> str | None:
    """Why a session has no intra- or inter-region rows, in words (None when it has both)."""
    if regions is None or not any(str(r) for r in np.asarray(regions).ravel()):
        return "no region labels: intra/inter-region tasks skipped"
    tasks = {t.scheme for t in session_tasks(regions, num_units)}
    names = region_codes(regions, num_units)[0]
    missing = [k for k, scheme in (("intra", "intra_region"), ("inter", "inter_region")) if scheme not in tasks]
    if not missing:
        return None
    why = "one region" if len(names) == 1 else "no region with 2 units"
    return f"{why} ({', '.join(names[:3])}{'...' if len(names) > 3 else ''}): {'/'.join(missing)}-region tasks skipped"


MIN_TEST_WINDOWS = 60  # fewer test windows than this: co-bps moves by a few hundredths between splits
MIN_TEST_SPIKES = 2000  # fewer held-out spikes scored than this: the same


def thin_tests(scores: Mapping[str, Mapping[str, dict]], window_length: float) -> list[str]:
    """Sessions whose co-smoothing score rests on too little test data to be stable, in words."""
    out = []
    for sid, per in scores.items():
        v = per.get("co_smoothing")
        if v is None:
            continue
        n = int(v.get("windows", 0))
        if n < MIN_TEST_WINDOWS or v["spikes"] < MIN_TEST_SPIKES:
            out.append(
                f"session '{sid}': co-bps rests on {n} test windows of {window_length:g} s "
                f"and {int(v['spikes'])} held-out spikes (below {MIN_TEST_WINDOWS} windows or {MIN_TEST_SPIKES} spikes): "
                "expect it to move by a few hundredths with another split"
            )
    return out


def summarise(scores: Mapping[str, Mapping[str, dict]]) -> dict[str, dict[str, dict]]:
    """Per session, the four headline metrics (region tasks pooled over regions)."""
    out = {}
    for sid, per in scores.items():
        row = {}
        for prefix, label in SUMMARY:
            p = pooled(per, prefix)
            if p is not None:
                row[label] = p
        out[sid] = row
    return out


def format_table(summary: Mapping[str, Mapping[str, dict]], notes: Mapping[str, str | None] | None = None) -> str:
    """A text table: one row per session and metric, bits per spike of each method; ``notes``:
    a line per session saying which rows are missing and why (:func:`region_note`)."""
    head = f"{'session':<44} {'metric':<18} " + " ".join(f"{LABELS[m]:>9}" for m in METHODS) + f" {'spikes':>8}"
    lines = [head, "-" * len(head)]
    for sid, row in summary.items():
        for label, v in row.items():
            cells = " ".join(f"{v.get(m, float('nan')):>9.3f}" for m in METHODS)
            lines.append(f"{sid[-44:]:<44} {label:<18} {cells} {int(v['spikes']):>8d}")
        if (notes or {}).get(sid):
            lines.append(f"{sid[-44:]:<44} {notes[sid]}")
    means = {}
    for row in summary.values():
        for label, v in row.items():
            means.setdefault(label, []).append(v)
    for label, vs in means.items():
        cells = " ".join(f"{np.mean([v.get(m, np.nan) for v in vs]):>9.3f}" for m in METHODS)
        lines.append(f"{'mean over sessions':<44} {label:<18} {cells} {int(sum(v['spikes'] for v in vs)):>8d}")
    return "\n".join(lines)


def write_report(
    scores,
    run_dir: Path,
    *,
    notes: Mapping[str, str | None] | None = None,
    chosen: str = "",
    window_length: float = 1.0,
) -> dict:
    """Print the table, write ``mtm_results.json`` (per task and summary); returns the summary.
    ``notes``: per session, the rows left out and why; ``chosen``: which weights were tested and
    by what validation figure. Warns about sessions whose test split is too thin (:func:`thin_tests`).
    Raises :class:`ScoreRangeError` naming every impossible figure (:func:`out_of_range`), after
    writing them into the JSON under ``out_of_range``."""
    summary = summarise(scores)
    print(
        "\nMasked modelling on the test split, bits per spike (higher is better; 0 = each unit's mean rate on these bins).\n"
        "POYO-MtM: the model's own readout; fitted: its state read by a Poisson readout fitted per task as the GLM is"
        + (f".\nTested: {chosen}" if chosen else "")
        + ":"
    )
    print(format_table(summary, notes))
    thin = thin_tests(scores, window_length)
    for line in thin:
        print(f"warning: {line}")
    bad = out_of_range(scores)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    report = {"summary": summary, "tasks": scores, "tested": chosen, "notes": dict(notes or {}), "thin_tests": thin}
    (Path(run_dir) / "mtm_results.json").write_text(json.dumps({**report, "out_of_range": bad}, indent=2))
    if bad:
        raise ScoreRangeError(
            "masked-modelling scores out of range (a numerical fault, not a result; written to mtm_results.json "
            "under out_of_range):\n  " + "\n  ".join(bad)
        )
    return summary

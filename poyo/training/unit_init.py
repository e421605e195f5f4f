"""Starting embeddings for new units, from what the pretrained model learned about similar units.

A new session's units have no embedding; drawn at random, they tell the frozen backbone
nothing, and unit identification must learn every row from the new session's few seconds of
data. But two units that fire alike play alike roles: a unit's embedding is largely a function
of how it fires with the decoded behaviour. So each unit gets a short description that needs
only its spikes and the behaviour (:data:`FEATURES`):

* its log mean rate;
* the correlation of its 50 ms spike counts with each behaviour dimension (and, for several
  dimensions, with their magnitude, e.g. speed), with the behaviour 100 ms before to 200 ms after
  the bin (neurons often lead movement).

Pretraining stores the description of every unit beside the model (``model.unit_features``,
written into ``model.pt`` and the checkpoints). Adapting to a new session (``finetune.init=
statistics``) fits a ridge map from description to embedding on the pretrained units, gives
each new unit the embedding its description predicts, and each new session the mean of the
pretrained session embeddings; training then goes on from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from poyo.data import intervals as ivs
from poyo.data.dataset import Dataset
from poyo.data.window import WindowIndex
from poyo.model import POYO
from poyo.readouts import ReadoutConfig
from poyo.training.linear import binned_counts

BIN_S = 0.05
LAGS_S = (-0.1, -0.05, 0.0, 0.05, 0.1, 0.15, 0.2)  # behaviour this long after the count's bin
MAP_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)  # ridge penalties of the feature -> embedding map
INITS = ("random", "statistics")


def feature_names(readout: ReadoutConfig) -> list[str]:
    """Names of the description's columns for this readout (see the module docstring)."""
    dims = readout.spec.dim * (2 if readout.spec.kind == "circular" else 1)
    channels = [f"{readout.name}[{d}]" for d in range(dims)] + ([f"|{readout.name}|"] if dims > 1 else [])
    return ["log_rate"] + [f"corr({c}, {lag:+g}s)" for lag in LAGS_S for c in channels]


def _behaviour_channels(readout: ReadoutConfig, values: np.ndarray) -> np.ndarray:
    y = np.asarray(values, np.float64).reshape(len(values), -1)
    if readout.spec.kind == "circular":
        y = readout.encode(y)
    return np.concatenate([y, np.linalg.norm(y, axis=1, keepdims=True)], axis=1) if y.shape[1] > 1 else y


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std(0)
    return (x - x.mean(0)) / np.where(sd > 1e-9, sd, np.inf)


def session_unit_features(ds: Dataset, session_id: str, readout: ReadoutConfig, split: str = "train") -> np.ndarray:
    """``(units, features)`` description of every unit of one session, from its ``split``
    (what :func:`feature_names` names; units without spikes there get zero correlations)."""
    s = ds.sessions[session_id]
    where = s.splits[split] if split is not None else s.domain
    if where is None or ivs.total_length(where) < 2 * BIN_S:
        raise ValueError(f"session '{session_id}': no {split} split to describe its units with")
    w = ds.read(WindowIndex(session_id, s.start, s.end + 1e-6))
    series = w.behaviour.get(readout.key)
    if series is None:
        raise KeyError(f"session '{session_id}': behaviour '{readout.key}' was not loaded")
    t_b = series.timestamps + w.start
    y = _behaviour_channels(readout, series.values)
    ok = np.isfinite(y).all(1)
    t_b, y = t_b[ok], y[ok]
    centres = np.concatenate([np.arange(a + BIN_S / 2, b - BIN_S / 2, BIN_S) for a, b in where])
    n_units = len(w.unit_ids)
    counts = binned_counts(w.spike_times + w.start, w.spike_units, n_units, centres, BIN_S, 1, 0, BIN_S / 2)[:, :, 0]
    rate = counts.mean(0) / BIN_S
    out = [np.log(rate + 0.1)[:, None]]
    zc = _zscore(counts.astype(np.float64))
    for lag in LAGS_S:
        at = centres + lag
        inside = (at >= t_b[0]) & (at <= t_b[-1]) if len(t_b) >= 2 else np.zeros(len(at), bool)
        if inside.sum() < 10:
            out.append(np.zeros((n_units, y.shape[1])))
            continue
        yl = _zscore(np.stack([np.interp(at[inside], t_b, y[:, d]) for d in range(y.shape[1])], axis=1))
        out.append(zc[inside].T @ yl / inside.sum())
    return np.concatenate(out, axis=1).astype(np.float32)


def unit_features(ds: Dataset, readouts: Sequence[ReadoutConfig], sessions: Sequence[str] | None = None) -> dict | None:
    """The description of every unit of ``sessions`` (default: all) against the first readout
    (each session through the config of that head that feeds it), as stored with a model:
    ``{"key": readout name, "names", "ids", "values": float32 tensor (units, features)}``.
    None for a categorical first readout or none at all (nothing to correlate with)."""
    if not readouts:
        return None
    head = readouts[0]
    if head.spec.kind == "categorical":
        return None
    ids, rows = [], []
    chosen = list(sessions if sessions is not None else ds.session_ids)
    for sid in tqdm(chosen, desc="describing units", unit="session", disable=len(chosen) < 20):
        config = next((r for r in readouts if r.name == head.name and r.applies_to(sid)), None)
        if config is None or config.key not in ds.sessions[sid].behaviour_keys:
            continue  # a session this head does not decode, or one without behaviour: its units stay undescribed
        rows.append(session_unit_features(ds, sid, config))
        ids += ds.sessions[sid].unit_ids.tolist()
    if not rows:
        return None
    return {
        "key": head.name,
        "names": feature_names(head),
        "ids": ids,
        "values": torch.from_numpy(np.concatenate(rows)),
    }


def merge_features(old: Mapping | None, new: Mapping | None, keep: Sequence[str]) -> dict | None:
    """``new`` plus the rows of ``old`` for ids in ``keep`` that ``new`` lacks (same columns only)."""
    if new is None:
        return old
    if old is None or list(old["names"]) != list(new["names"]) or old["key"] != new["key"]:
        return dict(new)
    have = set(new["ids"])
    pos = {i: r for r, i in enumerate(old["ids"])}
    extra = [i for i in keep if i in pos and i not in have]
    values = torch.cat([new["values"], old["values"][[pos[i] for i in extra]]]) if extra else new["values"]
    return {**new, "ids": list(new["ids"]) + extra, "values": values}


def fit_map(features: np.ndarray, embeddings: np.ndarray, groups: np.ndarray, seed: int = 0):
    """Ridge map from standardised features to embeddings, its penalty chosen on held-out groups
    (a fifth of the sessions). Returns ``(predict, held_out_r2)``; ``predict(features)`` gives rows."""
    x, e = np.asarray(features, np.float64), np.asarray(embeddings, np.float64)
    mx, sx = x.mean(0), x.std(0)
    sx = np.where(sx > 1e-9, sx, 1.0)
    z = np.concatenate([(x - mx) / sx, np.ones((len(x), 1))], axis=1)
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    held = rng.choice(uniq, size=max(1, len(uniq) // 5), replace=False) if len(uniq) > 1 else uniq[:0]
    test = np.isin(groups, held)
    train = ~test if test.any() else np.ones(len(x), bool)

    def solve(rows, alpha):
        reg = alpha * np.eye(z.shape[1])
        reg[-1, -1] = 0.0  # the bias is not shrunk
        return np.linalg.solve(z[rows].T @ z[rows] + reg, z[rows].T @ e[rows])

    def r2(w):
        if not test.any():
            return float("nan")
        res = ((z[test] @ w - e[test]) ** 2).sum()
        return float(1 - res / ((e[test] - e[train].mean(0)) ** 2).sum())

    scores = {a: r2(solve(train, a)) for a in MAP_ALPHAS}
    alpha = max(scores, key=lambda a: scores[a]) if test.any() else 10.0
    w = solve(np.ones(len(x), bool), alpha)
    return (lambda f: np.concatenate([(np.asarray(f, np.float64) - mx) / sx, np.ones((len(f), 1))], 1) @ w), scores[
        alpha
    ]


def _session_of(unit_id: str, sessions: Sequence[str]) -> str:
    """The session of a global unit id ``<brainset>/<session>/<unit>`` (unit names may hold '/')."""
    return max((s for s in sessions if unit_id.startswith(s + "/")), key=len, default=unit_id.rsplit("/", 1)[0])


def init_new_embeddings(
    model: POYO,
    features: Mapping | None,
    new_units: Sequence[str],
    new_sessions: Sequence[str],
    known_sessions: Sequence[str],
    seed: int = 0,
) -> str:
    """Overwrite the rows of ``new_sessions`` with the mean of the ``known_sessions`` rows, and those of
    ``new_units`` with the embeddings their descriptions predict (a map fitted on the model's
    described units; ``features``: the new units' descriptions, :func:`unit_features`, None when
    there are none). Returns what it did, in words (printed by the caller)."""
    said = _sessions_at_mean(model, new_sessions, known_sessions)
    units = _units_from_statistics(model, features, new_units, seed)
    return f"{units}; {said}"


def _sessions_at_mean(model: POYO, new_sessions: Sequence[str], known_sessions: Sequence[str]) -> str:
    """New sessions start at the mean of the known ones: their embedding is what every output query
    carries, and a random one reads the latents as no pretrained session did."""
    if not new_sessions:
        return "no new session"
    known = [s for s in known_sessions if s in model.session_emb]
    if not known:
        return f"{len(new_sessions)} new session embedding(s) start at random (no pretrained session to average)"
    w = model.session_emb.weight
    with torch.no_grad():
        mean = w[torch.as_tensor(model.session_emb.index(known))].mean(0)
        w[torch.as_tensor(model.session_emb.index(list(new_sessions)))] = mean
    return f"{len(new_sessions)} new session embedding(s) start at the mean of {len(known)} pretrained ones"


def _units_from_statistics(model: POYO, features: Mapping | None, new_units: Sequence[str], seed: int) -> str:
    stored = model.unit_features
    if features is None:
        return _random("this data's first readout gives nothing to describe units by (categorical, or none)")
    if stored is None:
        return _random(
            "the pretrained model carries no unit descriptions (trained before they existed, or on sessions without behaviour)",
        )
    if stored["key"] != features["key"] or list(stored["names"]) != list(features["names"]):
        return _random(
            f"the pretrained units were described against readout '{stored['key']}', these against '{features['key']}'",
        )
    pos = {i: r for r, i in enumerate(stored["ids"])}
    known = [i for i in stored["ids"] if i in model.unit_emb and i not in set(new_units)]
    if len(known) < 2 * len(stored["names"]):
        return _random(f"only {len(known)} pretrained units are described")
    x = stored["values"][[pos[i] for i in known]].numpy()
    e = model.unit_emb.weight.detach()[torch.as_tensor(model.unit_emb.index(known))].float().cpu().numpy()
    groups = np.array([_session_of(i, model.session_emb.ids) for i in known])
    predict, r2 = fit_map(x, e, groups, seed=seed)
    fpos = {i: r for r, i in enumerate(features["ids"])}
    lacking = [u for u in new_units if u not in fpos]
    if lacking:
        raise KeyError(f"no description for new units {lacking[:3]}")
    rows = predict(features["values"][[fpos[u] for u in new_units]].numpy())
    w = model.unit_emb.weight
    with torch.no_grad():
        if len(new_units):
            w[torch.as_tensor(model.unit_emb.index(list(new_units)))] = torch.as_tensor(rows, dtype=w.dtype).to(
                w.device
            )
    fit = (
        f"pretrained units explains {r2:.0%} of the embedding variance of held-out sessions' units)"
        if np.isfinite(r2)
        else "units of one session)"
    )
    return f"{len(new_units)} new unit embeddings start from their firing statistics (a ridge map fitted on {len(known)} {fit}"


def _random(why: str) -> str:
    return f"unit embeddings start at random: {why}"

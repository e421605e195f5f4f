"""Target normalisation policy: readouts whose mean or std is not given get the training
split's, a given std far from the data's is reported, and a fine-tuned head keeps the
normalisation it was pretrained with.

A target scale off by orders of magnitude does not fail loudly: the model learns to predict
the mean (R² near 0) or trains on huge losses. So the scale is measured, not assumed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from poyo.data.dataset import Dataset
from poyo.readouts.config import ReadoutConfig

FAR = 10.0  # a given std more than this factor from the data's is warned about


def behaviour_stats(
    ds: Dataset, key: str, sessions: Sequence[str], split: str = "train"
) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and std per dim (finite samples only) of ``key`` over the ``split`` of ``sessions``;
    warns about sessions without a single finite sample there (they add nothing to training)."""
    parts = []
    for sid in sessions:
        v = np.asarray(ds.behaviour(sid, key, split).values, np.float64)
        v = v.reshape(len(v), -1)
        v = v[np.isfinite(v).all(axis=1)]
        if not len(v):
            warnings.warn(
                f"session '{sid}': no finite '{key}' sample in its {split} split; it adds nothing to training",
                stacklevel=3,
            )
        parts.append(v)
    x = np.concatenate(parts)
    if len(x) < 2:
        raise ValueError(
            f"behaviour '{key}': fewer than 2 finite samples in the {split} split of {list(sessions)[:3]}; cannot normalise it"
        )
    return x.mean(0), x.std(0), len(x)


def fit_normalisation(ds: Dataset, readouts: Sequence[ReadoutConfig], split: str = "train") -> list[ReadoutConfig]:
    """``readouts`` with every missing (None) mean and std set from the ``split`` of the sessions
    each config feeds; warns where a given std is more than ``FAR`` times off the data's."""
    out = []
    for r in readouts:
        # sessions without this behaviour (self-supervised data) have nothing to contribute
        sessions = [s for s in ds.session_ids if r.applies_to(s) and r.key in ds.sessions[s].behaviour_keys]
        if r.spec.kind != "continuous" or not sessions:
            out.append(r)
            continue
        mean, std, n = behaviour_stats(ds, r.key, sessions, split)
        where = f"the {split} split of {len(sessions)} session(s), {n} samples"
        if r.std is None and np.any(std <= 0):
            raise ValueError(
                f"readout '{r.name}': behaviour '{r.key}' is constant in {where} (std {std.tolist()}); nothing to decode"
            )
        if r.std is not None:
            ratio = np.maximum(r.std_vector / np.maximum(std, 1e-12), std / r.std_vector)
            if np.any(ratio > FAR):
                warnings.warn(
                    f"readout '{r.name}': the given std {np.round(r.std_vector, 4).tolist()} is up to {ratio.max():.0f}x off the std of "
                    f"'{r.key}' in {where} ({np.round(std, 4).tolist()}); the model then learns far-from-unit targets. "
                    "Leave std out (null) to use the data's.",
                    stacklevel=2,
                )
        if r.mean is None or r.std is None:
            r = ReadoutConfig(
                **{
                    **r.to_dict(),
                    "mean": mean.tolist() if r.mean is None else r.mean,
                    "std": std.tolist() if r.std is None else r.std,
                }
            )
        out.append(r)
    return out


def pretrained_normalisation(trained: Sequence[ReadoutConfig], config: ReadoutConfig, sessions) -> ReadoutConfig | None:
    """The pretrained config whose normalisation fine-tuning ``config`` on ``sessions`` should keep.

    A head trained with one normalisation keeps it. A multi-dataset head (one config per
    brainset) keeps the one its patterns give these sessions (a new session of a known
    brainset); if none or several different ones apply, None: the dataset's own is used.
    """
    if config.spec.kind != "continuous":
        return None
    same = [t for t in trained if t.name == config.name]
    norm = lambda t: (tuple(t.mean_vector), tuple(t.std_vector))
    if len({norm(t) for t in same}) == 1:
        return same[0]
    fitting = {norm(t): t for t in same if any(t.applies_to(s) for s in sessions)}
    return next(iter(fitting.values())) if len(fitting) == 1 else None


def keep_pretrained_normalisation(
    trained: Sequence[ReadoutConfig], readouts: Sequence[ReadoutConfig], session_ids
) -> list[ReadoutConfig]:
    """``readouts`` with each head's pretrained normalisation where :func:`pretrained_normalisation`
    says to keep it (the pretrained head learned targets scaled that way); says what changed."""
    out = []
    for r in readouts:
        t = pretrained_normalisation(trained, r, [s for s in session_ids if r.applies_to(s)])
        if t is not None and (
            not np.allclose(t.mean_vector, r.mean_vector) or not np.allclose(t.std_vector, r.std_vector)
        ):
            print(
                f"readout {r.name}: using the pretrained normalisation (mean {t.mean}, std {t.std}) "
                f"instead of the dataset's ({r.mean}, {r.std})"
            )
            r = ReadoutConfig(**{**r.to_dict(), "mean": t.mean, "std": t.std})
        out.append(r)
    return out

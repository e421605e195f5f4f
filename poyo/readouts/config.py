"""How a readout is fed from the sessions: which behaviour field, its normalisation, loss
weights, evaluation intervals, and which sessions it applies to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import numpy as np

from poyo.readouts.spec import READOUTS, ReadoutSpec, get_readout, register_readout


@dataclass
class ReadoutConfig:
    """How one readout is fed from a session: which behaviour key, normalisation, weights.

    Continuous targets enter the loss as ``(value - mean) / std`` (per output dim or one
    number for all). ``None`` leaves them to be computed from the training split
    (:func:`poyo.readouts.fit_normalisation`, which training calls); a config
    with an unresolved normalisation cannot tokenize.

    ``weights`` maps interval keys (e.g. ``"movement_phases.reach_period"``) to factors that
    multiply the weight of the samples inside them. ``eval_intervals`` (one key or a list,
    united) restricts evaluation; ``None`` evaluates every sample. Samples with a NaN target
    get weight 0 and are not evaluated.

    ``sessions`` (glob patterns on global session ids, e.g. ``"perich_miller_population_2018/*"``)
    says which sessions this config feeds; ``None`` means all. Several configs may share one
    readout ``name`` (one head) with different keys and normalisations for different datasets,
    as long as no session matches two of them: that is how a multi-dataset model keeps
    per-dataset target normalisation.

    ``dim`` and ``kind`` declare a readout the registry does not know yet (it is registered
    under ``name``, e.g. ``head_direction_2d``); for a known one they must agree with it.

    A ``circular`` readout reads angles, one full turn every ``period`` (2 pi for radians,
    the default; 360 for degrees), and feeds the model their (cos, sin): it needs no mean
    or std.
    """

    name: str
    key: str | None = None
    mean: float | Sequence[float] | None = 0.0
    std: float | Sequence[float] | None = 1.0
    weights: Mapping[str, float] = field(default_factory=dict)
    eval_intervals: str | Sequence[str] | None = None
    sessions: str | Sequence[str] | None = None
    dim: int | None = None
    kind: str | None = None
    period: float | None = None

    def __post_init__(self):
        if self.dim is not None or self.kind is not None:
            declared = ReadoutSpec(self.name, int(self.dim or 0), self.kind or "continuous", self.key or "")
            if self.name not in READOUTS:
                if not self.key:
                    raise ValueError(
                        f"readout '{self.name}': a new readout needs the behaviour key it reads (e.g. key: head.dir)"
                    )
                register_readout(declared)
            elif (READOUTS[self.name].dim, READOUTS[self.name].kind) != (declared.dim, declared.kind):
                known = READOUTS[self.name]
                raise ValueError(
                    f"readout '{self.name}' is registered with dim {known.dim} ({known.kind}); this config says dim {declared.dim} ({declared.kind})"
                )
        self.spec: ReadoutSpec = get_readout(self.name)
        self.key = self.key or self.spec.key
        if isinstance(self.eval_intervals, str):
            self.eval_intervals = [self.eval_intervals]
        if isinstance(self.sessions, str):
            self.sessions = [self.sessions]
        if self.sessions is not None:
            self.sessions = [str(p) for p in self.sessions]
            if not self.sessions:
                raise ValueError(f"readout '{self.name}': sessions is an empty list (use null for every session)")
        self.weights = {str(k): float(v) for k, v in dict(self.weights).items()}
        bad = {k: v for k, v in self.weights.items() if not (np.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"readout '{self.name}': weights must be finite and >= 0, got {bad}")
        self._mean = self._std = None
        if self.spec.kind == "circular":
            self.period = 2 * np.pi if self.period is None else float(self.period)
            if not (np.isfinite(self.period) and self.period > 0):
                raise ValueError(
                    f"readout '{self.name}': period must be positive (2 pi for radians, 360 for degrees), got {self.period}"
                )
        elif self.period is not None:
            raise ValueError(f"readout '{self.name}': period is for circular readouts; this one is {self.spec.kind}")
        if self.spec.kind == "continuous":
            if self.mean is not None:
                self._mean = self._per_dim(self.mean, "mean")
                if not np.all(np.isfinite(self._mean)):
                    raise ValueError(f"readout '{self.name}': mean must be finite, got {self.mean}")
            if self.std is not None:
                self._std = self._per_dim(self.std, "std")
                if not (np.all(np.isfinite(self._std)) and np.all(self._std > 0)):
                    raise ValueError(f"readout '{self.name}': std must be positive, got {self.std}")

    def _per_dim(self, value, what: str) -> np.ndarray:
        try:
            return np.broadcast_to(np.asarray(value, np.float64), (self.spec.dim,)).copy()
        except (ValueError, TypeError):
            raise ValueError(
                f"readout '{self.name}': {what} must be one number or {self.spec.dim} numbers, got {value!r}"
            ) from None

    @property
    def mean_vector(self) -> np.ndarray | None:
        """The mean per output dim (None until known; None for non-continuous readouts)."""
        return None if self._mean is None else self._mean.copy()

    @property
    def std_vector(self) -> np.ndarray | None:
        """The std per output dim (None until known; None for non-continuous readouts)."""
        return None if self._std is None else self._std.copy()

    @property
    def normalised(self) -> bool:
        """True once mean and std are known (always for categorical readouts)."""
        return self.spec.kind != "continuous" or (self._mean is not None and self._std is not None)

    def _check_normalised(self) -> None:
        if not self.normalised:
            raise ValueError(
                f"readout '{self.name}': mean/std not set ({self.mean}, {self.std}); give them, or compute them from "
                "the training data with poyo.readouts.fit_normalisation (train.py does)"
            )

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Behaviour values ``(n, dim)`` as the model's targets: normalised for a continuous
        readout, ``[cos, sin]`` of each angle ``(n, 2 * dim)`` for a circular one."""
        if self.spec.kind == "circular":
            radians = np.asarray(values, np.float64) * (2 * np.pi / self.period)
            return np.concatenate([np.cos(radians), np.sin(radians)], axis=-1)
        return self.normalise(values)

    def decode(self, values: np.ndarray) -> np.ndarray:
        """Model outputs (or encoded targets) back in the behaviour's units; angles of a circular
        readout come back in ``[-period / 2, period / 2)``."""
        if self.spec.kind == "circular":
            values = np.asarray(values, np.float64)
            d = self.spec.dim
            turns = np.arctan2(values[..., d:], values[..., :d]) / (2 * np.pi)
            return (turns + 0.5) % 1.0 * self.period - self.period / 2
        return self.denormalise(values)

    def normalise(self, values: np.ndarray) -> np.ndarray:
        """Behaviour values in model units, ``(values - mean) / std``."""
        self._check_normalised()
        return (np.asarray(values, np.float64) - self._mean) / self._std

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        """Model outputs back in the behaviour's own units."""
        self._check_normalised()
        return np.asarray(values, np.float64) * self._std + self._mean

    def to_dict(self) -> dict:
        """The fields as plain Python values (what checkpoints store)."""
        plain = lambda v: None if v is None else np.asarray(v, dtype=np.float64).tolist()  # noqa: E731
        return dict(
            name=self.name, key=self.key, mean=plain(self.mean), std=plain(self.std), weights=dict(self.weights),
            eval_intervals=None if self.eval_intervals is None else list(self.eval_intervals),
            sessions=None if self.sessions is None else list(self.sessions), dim=self.spec.dim, kind=self.spec.kind,
            **({"period": self.period} if self.spec.kind == "circular" else {}),
        )  # fmt: skip

    def interval_keys(self) -> list[str]:
        return sorted(set(self.weights) | set(self.eval_intervals or ()))

    def applies_to(self, session_id: str) -> bool:
        return self.sessions is None or any(fnmatchcase(session_id, p) for p in self.sessions)


def readouts_for(readouts: Sequence[ReadoutConfig], session_id: str) -> list[ReadoutConfig]:
    """The configs that feed ``session_id``; raises if two of them feed the same head."""
    chosen = [r for r in readouts if r.applies_to(session_id)]
    names = [r.name for r in chosen]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(
            f"session '{session_id}' matches more than one config for readout(s) {twice} "
            f"(patterns: {[r.sessions for r in chosen if r.name in twice]}); make their `sessions` patterns disjoint"
        )
    return chosen


def behaviour_keys(readouts: Sequence[ReadoutConfig], session_id: str | None = None) -> list[str]:
    """The behaviour fields a dataset must read for these readouts (for one session, if given)."""
    chosen = readouts if session_id is None else readouts_for(readouts, session_id)
    return sorted({r.key for r in chosen})


def interval_keys(readouts: Sequence[ReadoutConfig], session_id: str | None = None) -> list[str]:
    """The interval sets a dataset must carry into windows for these readouts (for one session, if given)."""
    chosen = readouts if session_id is None else readouts_for(readouts, session_id)
    return sorted({k for r in chosen for k in r.interval_keys()})

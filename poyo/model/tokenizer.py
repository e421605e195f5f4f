"""From a data window to the model's tensors: one token per spike, latents, output queries.

A tokenized sample is a dict of sequence groups (see :mod:`poyo.data.collate`)::

    input:   unit_index (int64, row in the unit vocabulary), token_type (0 spike,
             1 unit start, 2 unit end), timestamps (float64 s, window-relative)
    latent:  index (which of the K learned latents), timestamps (centres of a
             ``latent_step`` grid: K latents at each grid time)
    output:  timestamps, session_index, readout_index -- one query per behaviour sample
    target/<readout>: values (normalised; [cos, sin] of circular ones; int64 classes of categorical ones),
             weight (float32, 0 = ignore), eval_mask (bool), sample_index (int64),
             timestamps (as the readout's queries)

plus ``session_id`` (str), ``absolute_start`` (float) and ``vocab`` (str: a fingerprint of
the vocabularies the rows refer to, which the model checks). The input starts with a start
and an end delimiter token (at 0 and at the window's end) for every unit of the session,
so silent units and the window bounds are seen too. The same samples collate padded or
packed; the tokenizer does not know which attention backend will run.

The tokenizer holds copies of the vocabularies' id -> row maps, not the model, so it is
cheap to send to DataLoader workers. Build a new one after changing a vocabulary (the
model refuses batches made for another one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from poyo.data import intervals as ivs
from poyo.data.window import Window
from poyo.model.masking import region_codes
from poyo.readouts import ReadoutConfig, readouts_for

SPIKE, UNIT_START, UNIT_END = 0, 1, 2
NUM_TOKEN_TYPES = 4  # one spare type, as in the published checkpoints


def latent_grid(duration: float, step: float, per_step: int) -> tuple[np.ndarray, np.ndarray]:
    """Latent indices and times: ``per_step`` latents at each centre of a ``step`` grid on
    ``[0, duration)`` (8 centres 0.0625, 0.1875, ... 0.9375 for 1 s and 1/8 s)."""
    centres = np.arange(0.0, duration - 1e-9, step) + step / 2
    return np.tile(np.arange(per_step, dtype=np.int64), len(centres)), np.repeat(centres, per_step)


class Tokenizer:
    """Callable ``(window, rng=None) -> sample dict``; usable as the last dataset transform.

    Args:
        unit_lookup, session_lookup: global id -> row of the model's unit / session vocabulary.
        readouts: the :class:`~poyo.readouts.ReadoutConfig` of each head to feed (normalised).
        readout_names: the model's heads, in order (a query's ``readout_index`` points here).
        latent_step, num_latents_per_step: the latent grid (K latents every ``latent_step`` s).
        vocab: a fingerprint of the vocabularies, which the model checks on every batch.
        masking: also emit what masked modelling needs (:mod:`poyo.model.masking`): a
            ``units`` group (each unit's vocabulary row and region code), ``duration`` and a
            ``mask_seed`` drawn from the sample's generator; a session without the behaviour
            of a readout then just gets no queries for it (self-supervised sessions).

    A sample holds ``input`` (one token per spike plus two per unit: ``(n_units * 2 + n_spikes,)``),
    ``latent`` (``(K * window / latent_step,)``), ``output`` (one query per behaviour sample) and
    ``target/<readout>`` groups (values ``(n, out_dim)``, weights, evaluation mask).
    """

    def __init__(
        self,
        unit_lookup: Mapping[str, int],
        session_lookup: Mapping[str, int],
        readouts: Sequence[ReadoutConfig],
        readout_names: Sequence[str],
        *,
        latent_step: float = 0.125,
        num_latents_per_step: int = 16,
        vocab: str = "",
        masking: bool = False,
    ):
        if not readouts and not masking:
            raise ValueError("the tokenizer needs at least one readout (or masking=True: spikes alone)")
        for r in readouts:
            r._check_normalised()
        if not (latent_step > 0 and num_latents_per_step >= 1):
            raise ValueError(
                f"need latent_step > 0 and num_latents_per_step >= 1, got {latent_step}, {num_latents_per_step}"
            )
        names = [r.name for r in readouts]
        everywhere = [r.name for r in readouts if r.sessions is None]
        if len(set(everywhere)) != len(everywhere):
            raise ValueError(f"readouts listed twice for every session: {everywhere}")
        unknown = sorted({n for n in names if n not in readout_names})
        if unknown:
            raise ValueError(f"readouts {unknown} are not heads of this model (it has {list(readout_names)})")
        self.units, self.sessions = dict(unit_lookup), dict(session_lookup)
        self.readouts = list(readouts)
        self.readout_index = {n: list(readout_names).index(n) for n in names}
        self._chosen: dict[str, list[ReadoutConfig]] = {}
        self.latent_step, self.num_latents_per_step = float(latent_step), int(num_latents_per_step)
        self.vocab = vocab
        self.masking = bool(masking)

    def _unit_rows(self, window: Window) -> np.ndarray:
        try:
            return np.fromiter((self.units[u] for u in window.unit_ids), dtype=np.int64, count=len(window.unit_ids))
        except KeyError:
            missing = [str(u) for u in window.unit_ids if u not in self.units]
            raise KeyError(
                f"session '{window.session_id}': {len(missing)} of its {len(window.unit_ids)} units are not in the model's unit "
                f"vocabulary (e.g. {missing[:3]}); a new session needs its own unit embeddings first: fine-tune with "
                f"`python train.py finetune=unit_identification finetune.checkpoint=...`, or call model.init_vocabs(dataset) and train them"
            ) from None

    def _targets(self, window: Window, cfg: ReadoutConfig) -> dict:
        if cfg.key not in window.behaviour:
            raise KeyError(
                f"session '{window.session_id}': no behaviour '{cfg.key}' for readout '{cfg.name}' (window has {sorted(window.behaviour)})"
            )
        series = window.behaviour[cfg.key]
        spec, n = cfg.spec, len(series)
        values = np.asarray(series.values)
        if spec.kind != "categorical":
            values = values.reshape(n, -1).astype(np.float64)
            if values.shape[1] != spec.dim:
                raise ValueError(
                    f"session '{window.session_id}': '{cfg.key}' has {values.shape[1]} dims, readout '{cfg.name}' needs {spec.dim}"
                )
            bad = ~np.isfinite(values).all(axis=1)
            values = np.where(bad[:, None], 0.0, cfg.encode(np.where(bad[:, None], 0.0, values))).astype(np.float32)
        else:
            values = values.reshape(n)
            bad = ~np.isfinite(values.astype(np.float64))
            classes = np.where(bad, 0, values).astype(np.int64)
            out_of_range = ~bad & ((classes < 0) | (classes >= spec.dim) | (classes != values))
            if out_of_range.any():
                raise ValueError(
                    f"session '{window.session_id}': '{cfg.key}' has classes outside 0..{spec.dim - 1}: {np.unique(values[out_of_range])[:5]}"
                )
            values = classes
        t = series.timestamps
        weight = np.ones(n, np.float64)
        for key, w in cfg.weights.items():
            weight[ivs.contains(self._interval(window, key), t)] *= w
        weight[bad] = 0.0
        if cfg.eval_intervals is None:
            eval_mask = np.ones(n, bool)
        else:
            eval_mask = np.zeros(n, bool)
            for key in cfg.eval_intervals:
                eval_mask |= ivs.contains(self._interval(window, key), t)
        eval_mask &= ~bad
        return {
            "timestamps": torch.from_numpy(np.asarray(t, np.float64)),
            "values": torch.from_numpy(values),
            "weight": torch.from_numpy(weight.astype(np.float32)),
            "eval_mask": torch.from_numpy(eval_mask),
            "sample_index": torch.from_numpy(np.asarray(series.sample_index, np.int64)),
        }

    def _no_targets(self, name: str) -> dict:
        spec = next(r.spec for r in self.readouts if r.name == name)  # not the registry: workers may not share it
        values = (
            torch.zeros((0, spec.out_dim), dtype=torch.float32)
            if spec.kind != "categorical"
            else torch.zeros(0, dtype=torch.int64)
        )
        return {
            "timestamps": torch.zeros(0, dtype=torch.float64),
            "values": values,
            "weight": torch.zeros(0, dtype=torch.float32),
            "eval_mask": torch.zeros(0, dtype=torch.bool),
            "sample_index": torch.zeros(0, dtype=torch.int64),
        }

    def readouts_for(self, session_id: str) -> list[ReadoutConfig]:
        """The readout configs that feed this session (cached)."""
        if not self.readouts:  # masked modelling of spikes alone
            return []
        chosen = self._chosen.get(session_id)
        if chosen is None:
            chosen = readouts_for(self.readouts, session_id)
            if not chosen:
                raise ValueError(
                    f"session '{session_id}': no readout config applies to it (patterns: {[r.sessions for r in self.readouts]})"
                )
            self._chosen[session_id] = chosen
        return chosen

    @staticmethod
    def _interval(window: Window, key: str) -> np.ndarray:
        if key not in window.intervals:
            raise KeyError(
                f"session '{window.session_id}': interval '{key}' was not loaded; add it to the dataset's intervals (loaded: {sorted(window.intervals)})"
            )
        return window.intervals[key]

    def __call__(self, window: Window, rng: np.random.Generator | None = None) -> dict:
        if not isinstance(window, Window):
            raise TypeError(f"the tokenizer takes a poyo.data.Window, got {type(window).__name__}")
        if len(window.unit_ids) == 0:
            raise ValueError(f"session '{window.session_id}': a window needs at least one unit")
        if window.session_id not in self.sessions:
            raise KeyError(
                f"session '{window.session_id}' is not in the model's session vocabulary ({len(self.sessions)} sessions); extend it first"
            )
        duration = window.duration
        rows = self._unit_rows(window)
        u = len(rows)
        # [u0 start, u0 end, u1 start, u1 end, ...] then one token per spike
        unit_index = np.concatenate([np.repeat(rows, 2), rows[window.spike_units]])
        token_type = np.concatenate(
            [np.tile(np.array([UNIT_START, UNIT_END], np.int64), u), np.full(len(window.spike_times), SPIKE, np.int64)]
        )
        timestamps = np.concatenate([np.tile(np.array([0.0, duration]), u), np.asarray(window.spike_times, np.float64)])

        latent_index, latent_times = latent_grid(duration, self.latent_step, self.num_latents_per_step)

        chosen = {r.name: r for r in self.readouts_for(window.session_id)}

        # every head gets an entry (empty where this session does not feed it) so that
        # windows of differently-labelled datasets collate into one batch
        def feeds(name: str) -> bool:
            return name in chosen and (not self.masking or chosen[name].key in window.behaviour)

        targets = {n: self._targets(window, chosen[n]) if feeds(n) else self._no_targets(n) for n in self.readout_index}
        out_t = np.concatenate([np.zeros(0)] + [np.asarray(t["timestamps"]) for t in targets.values()])
        readout_index = np.concatenate(
            [np.zeros(0, np.int64)]
            + [np.full(len(t["weight"]), self.readout_index[name], np.int64) for name, t in targets.items()]
        )
        sample = {
            "input": {
                "unit_index": torch.from_numpy(unit_index),
                "token_type": torch.from_numpy(token_type),
                "timestamps": torch.from_numpy(timestamps),
            },
            "latent": {"index": torch.from_numpy(latent_index), "timestamps": torch.from_numpy(latent_times)},
            "output": {
                "timestamps": torch.from_numpy(out_t),
                "session_index": torch.full((len(out_t),), self.sessions[window.session_id], dtype=torch.int64),
                "readout_index": torch.from_numpy(readout_index),
            },
            "session_id": window.session_id,
            "absolute_start": float(window.start),
            "vocab": self.vocab,
        }
        for name, t in targets.items():
            sample[f"target/{name}"] = t
        if self.masking:
            codes = region_codes(window.unit_regions, u)[1]
            sample["units"] = {"index": torch.from_numpy(rows), "region": torch.from_numpy(codes)}
            sample["duration"] = float(duration)
            sample["mask_seed"] = int(rng.integers(2**62)) if rng is not None else 0
        return sample

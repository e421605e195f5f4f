"""The POYO model: spike tokens -> latents -> output queries -> readouts.

``POYO(POYOConfig(...))`` (or ``POYO(dim=...)``) builds the network; ``model.tokenizer(readouts)`` gives the transform
that turns windows into samples; ``model(batch)`` takes a padded or packed batch of
those samples and returns ``{readout name: predictions}``, where the rows of each readout
line up with :func:`targets` of the same batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace

import torch
from torch import nn

from poyo.model.attention import BACKENDS, Layout
from poyo.model.config import POYOConfig
from poyo.model.layers import CrossAttention, Dropout, FeedForward, Linear, SelfAttention, take_rows
from poyo.model.masking import PROMPTS
from poyo.model.rotary import RotaryTime, Rotation
from poyo.model.tokenizer import NUM_TOKEN_TYPES, SPIKE, UNIT_END, UNIT_START, Tokenizer
from poyo.model.vocab import VocabEmbedding
from poyo.readouts import ReadoutConfig, get_readout, readout_loss


def layout_of(group: Mapping) -> Layout:
    """The :class:`Layout` of a collated sequence group (padded or packed)."""
    if "mask" in group:
        return Layout.padded(group["mask"])
    if "cu_seqlens" in group:
        any_field = next(
            v for k, v in group.items() if isinstance(v, torch.Tensor) and k not in ("cu_seqlens", "batch_index")
        )
        return Layout.packed(group["cu_seqlens"], group["max_seqlen"], any_field.shape[0])
    raise ValueError(f"not a collated sequence group (no 'mask' or 'cu_seqlens'): fields {sorted(group)}")


def _flat(group: Mapping, field: str) -> torch.Tensor:
    """A group's field with padding removed: ``(total tokens, ...)`` in (sample, token) order."""
    x = group[field]
    return x[group["mask"]] if "mask" in group else x


def _sample_of(group: Mapping) -> torch.Tensor:
    """Which sample of the batch each of a group's tokens (padding removed, as :func:`_flat`) belongs to."""
    return group["mask"].nonzero()[:, 0] if "mask" in group else group["batch_index"]


COUNTS = "spike_counts"  # the prediction of masked modelling's (unit, bin) queries
COUNT_STATE = "count_state"  # forward(count_state=True): the state each bin's counts are read from
READ_PRIOR = 8.0  # nats: how local in time a count bin's read of the spikes starts (RotaryTime.local_bump)
FINE_BINS = 8  # bins per latent step in which a latent's count read (POYO._latent_counts) places spikes
COUNT_INIT = 0.5  # initial spread (sd) of a unit's log rate per unit of spread of the state it reads
# (window of each input token, sqrt(units in each window)): what POYO._window_units finds for both count reads
WindowUnits = tuple[torch.Tensor, torch.Tensor]


def _per_token(group: Mapping, per_sample: torch.Tensor) -> torch.Tensor:
    """A per-sample vector ``(B, dim)`` laid out like the group's tokens (padded or packed)."""
    if "mask" in group:
        return per_sample[:, None, :]
    return take_rows(per_sample, group["batch_index"])


def poisson_loss(log_rate: torch.Tensor, counts: torch.Tensor, denominator: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Poisson negative log-likelihood of ``counts`` under ``exp(log_rate)`` (the
    constant ``log(counts!)`` left out); ``denominator`` replaces the count of terms (DDP)."""
    log_rate = log_rate.float().clamp(max=20.0)
    total = (torch.exp(log_rate) - counts.float() * log_rate).sum()
    n = torch.tensor(float(len(counts)), device=log_rate.device) if denominator is None else denominator
    return total / n.clamp_min(1.0)


def targets(batch: Mapping, name: str) -> dict[str, torch.Tensor]:
    """The ``target/<name>`` fields of a batch, flattened to line up with ``model(batch)[name]``,
    plus ``sample``: which sample of the batch each row belongs to."""
    key = f"target/{name}"
    if key not in batch:
        raise KeyError(
            f"batch has no targets for readout '{name}' (has {sorted(k for k in batch if k.startswith('target/'))})"
        )
    group = batch[key]
    out = {f: _flat(group, f) for f in ("values", "weight", "eval_mask", "sample_index", "timestamps")}
    out["sample"] = _sample_of(group)
    return out


def count_targets(batch: Mapping) -> dict[str, torch.Tensor]:
    """The ``counts`` group of a masked batch flattened to line up with ``model(batch)["spike_counts"]``:
    ``counts``, ``unit_index`` (vocabulary row), ``unit_position`` (in its window), ``bin``, and
    ``sample`` (row of the batch)."""
    if "counts" not in batch:
        raise KeyError("batch has no 'counts' group: it was not made by poyo.model.masking.MaskingCollate")
    group = batch["counts"]
    out = {f: _flat(group, f) for f in ("counts", "unit_index", "unit_position", "bin")}
    out["sample"] = _sample_of(group)
    return out


def check_centres(centres: Mapping, what: str) -> dict:
    """``centres`` as ``{key: float}``, each strictly inside (0, 1): stitching centres, fractions
    of the window (:attr:`POYO.stitch_centres`; poyo.training.stitch weighs predictions with them)."""
    if not isinstance(centres, Mapping):
        raise TypeError(
            f"{what} must be a mapping of readout to a fraction of the window, got {type(centres).__name__}"
        )
    out = {}
    for k, v in centres.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            out[k] = float("nan")
        if not 0.0 < out[k] < 1.0:
            raise ValueError(
                f"{what}: the stitching centre of {k!r} must be a fraction of the window in (0, 1), got {v!r}"
            )
    return out


class POYO(nn.Module):
    """PerceiverIO over spike tokens with rotary time (Azabou et al., 2023).

    Args:
        config: the architecture (:class:`POYOConfig`); keyword settings (``dim=...``) override
            its fields, so ``POYO(dim=64, depth=6)`` also works. Sizes follow the paper's
            configs (``poyo/configs/model/``): poyo_1.3M is ``dim=64, depth=6,
            num_latents_per_step=16, cross_heads=2, self_heads=8``.
        unit_ids, session_ids: the ids the vocabularies start with (more join with
            :meth:`init_vocabs`); ids are global, e.g. ``"<brainset>/<session>/<unit>"``.
        attention: the attention kernel (:mod:`poyo.model.attention`); ``"auto"`` picks per batch.
        seed: makes the initial weights reproducible without touching the global RNG.

    ``model(batch)`` takes a collated batch (``input`` tokens ``(n_tokens,)``, ``latent``
    ``(n_latents,)``, ``output`` queries ``(n_queries,)``; padded or packed) and returns
    ``{readout: (n_queries_of_that_readout, out_dim)}``.
    """

    def __init__(
        self,
        config: POYOConfig | None = None,
        *,
        unit_ids: Iterable[str] = (),
        session_ids: Iterable[str] = (),
        attention: str = "auto",
        seed: int = 0,
        **settings,
    ):
        super().__init__()
        if config is not None and not isinstance(config, POYOConfig):
            raise TypeError(
                f"config must be a POYOConfig, got {type(config).__name__} (settings go as keywords: POYO(dim=64))"
            )
        try:
            config = replace(config or POYOConfig(), **settings)
        except TypeError as e:
            unknown = sorted(set(settings) - {f.name for f in fields(POYOConfig)})
            raise TypeError(
                f"unknown POYO settings {unknown}; POYOConfig has {[f.name for f in fields(POYOConfig)]}"
            ) from e
        self.config = c = config
        specs = [get_readout(r) for r in c.readouts]
        self.readout_names = list(c.readouts)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.unit_emb = VocabEmbedding(
                c.dim, unit_ids, init_scale=c.emb_init_scale, seed=seed, name="unit vocabulary"
            )
            self.session_emb = VocabEmbedding(
                c.dim, session_ids, init_scale=c.emb_init_scale, seed=seed + 1, name="session vocabulary"
            )
            self.token_type_emb = nn.Embedding(NUM_TOKEN_TYPES, c.dim)
            self.latent_emb = nn.Embedding(c.num_latents_per_step, c.dim)
            # Several readouts share a time and session: tell their queries apart.
            self.readout_emb = nn.Embedding(len(c.readouts), c.dim) if len(c.readouts) > 1 else None
            for emb in (self.token_type_emb, self.latent_emb, self.readout_emb):
                if emb is not None:
                    nn.init.normal_(emb.weight, std=c.emb_init_scale)

            self.rotary = RotaryTime(c.dim_head, c.t_min, c.t_max, omega=c.rotary_omega)

            def cross(rotate_value: bool, time_prior: float) -> CrossAttention:
                return CrossAttention(
                    c.dim, self.rotary, heads=c.cross_heads, dim_head=c.dim_head, dropout=c.atn_dropout,
                    rotate_value=rotate_value, time_prior=time_prior,
                )  # fmt: skip

            self.enc_atn = cross(rotate_value=True, time_prior=c.time_prior)
            self.enc_ffn = FeedForward(c.dim, dropout=c.ffn_dropout)
            self.proc_atn = nn.ModuleList(
                SelfAttention(
                    c.dim,
                    self.rotary,
                    heads=c.self_heads,
                    dim_head=c.dim_head,
                    dropout=c.atn_dropout,
                    rotate_value=True,
                    time_prior=c.time_prior,
                )
                for _ in range(c.depth)
            )
            self.proc_ffn = nn.ModuleList(FeedForward(c.dim, dropout=c.ffn_dropout) for _ in range(c.depth))
            self.proc_dropout = Dropout(c.lin_dropout)
            self.dec_atn = cross(rotate_value=False, time_prior=c.time_prior)
            self.dec_ffn = FeedForward(c.dim, dropout=c.ffn_dropout)
            self.readout = nn.ModuleDict({s.name: Linear(c.dim, s.out_dim) for s in specs})
            self.latent_norm = self.latent_read = None
            if c.latent_counts:  # each latent's linear read of the spike counts near it (_latent_counts)
                self.latent_norm = nn.LayerNorm(c.dim)
                self.latent_read = Linear((len(c.latent_counts) + c.latent_presence) * c.dim, c.dim)
            self.prompt_emb = self.count_query = self.count_read = None
            self.count_head = self.count_norm = self.count_unit = self.rate_norm = self.rate_read = None
            before = {name for name, _ in self.named_parameters()}
            if c.masked_modelling:
                self.prompt_emb = nn.Embedding(len(PROMPTS), c.dim)
                nn.init.normal_(self.prompt_emb.weight, std=c.emb_init_scale)
                self.count_query = nn.Parameter(torch.randn(c.dim) * c.emb_init_scale)
                # Each bin first reads the visible spikes near it (attention that starts local in
                # time), then the latents: through the latents alone the counts came out as if
                # smoothed over ~0.5 s (co-bps 0.20 against 0.30 at step 1,419, benchmarks/mtm.py set).
                self.count_read = cross(rotate_value=True, time_prior=READ_PRIOR)
                self.count_head = Linear(c.dim, c.dim)  # the population state at a bin
                # A unit's readout weights and bias, from its normalised embedding: embeddings start
                # at std emb_init_scale, and weights that small would start the bilinear readout
                # near a saddle (little gradient through either factor).
                self.count_norm = nn.LayerNorm(c.dim)
                self.count_unit = Linear(c.dim, c.dim + 1)
                nn.init.normal_(self.count_unit.weight, std=COUNT_INIT / c.dim)
                nn.init.zeros_(self.count_unit.bias)
                nn.init.constant_(self.count_unit.bias[-1], -2.0)  # ~0.14 spikes per bin: a typical start
                if c.count_kernels:  # the visible counts, smoothed, read linearly (_smoothed_counts)
                    self.rate_norm = nn.LayerNorm(c.dim)
                    self.rate_read = Linear(len(c.count_kernels) * c.dim, c.dim)
            # what a batch without count queries leaves unused (loss() keeps it in the graph for DDP)
            self._count_path = tuple(name for name, _ in self.named_parameters() if name not in before)
            # ... and what a model without behaviour heads never uses (it has no session queries to decode)
            self._decode_path = () if c.readouts else tuple(
                name for name, _ in self.named_parameters() if name.startswith(("dec_atn.", "dec_ffn.", "session_emb."))
            )  # fmt: skip
        self.attention = attention
        # How each head's targets were normalised and weighted when the model was trained
        # (ReadoutConfigs); set by training and by load_pretrained, used by tokenizer().
        self.readout_configs: list[ReadoutConfig] | None = None
        # A short description of each unit's firing, {"key", "names", "ids", "values" (units, k)}
        # (poyo.training.unit_init): what new units' starting embeddings are predicted from.
        self.unit_features: dict | None = None
        # Where in a window each head decodes best, {readout: fraction of the window}: chosen on
        # validation by training; evaluation's stitching leans on it (poyo.training.stitch).
        self.stitch_centres: dict[str, float] = {}
        self._warned_windows: set[float] = set()

    # --- configuration -----------------------------------------------------------------
    def check_window(self, length: float) -> bool:
        """Warn (once per length) when windows of ``length`` s differ from the ones the model was
        trained on (``config.window_length``); True when they agree or the training length is unknown."""
        trained = self.config.window_length
        if trained is None or abs(float(length) - trained) < 1e-9:
            return True
        if float(length) not in self._warned_windows:
            self._warned_windows.add(float(length))
            warnings.warn(
                f"this model was trained on {trained:g} s windows and now runs on {float(length):g} s windows: its latent "
                "grid and the time spans it learned assume the former, so predictions may degrade (set window_length to match)",
                stacklevel=2,
            )
        return False

    @property
    def attention(self) -> str:
        return self._attention

    @attention.setter
    def attention(self, backend: str) -> None:
        """Set the attention backend of every layer ("auto", "sdpa", "loop", "nested", "varlen", "xformers")."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
        self._attention = backend
        for m in self.modules():
            if hasattr(m, "backend"):
                m.backend = backend

    def num_parameters(self, *, embeddings: bool = True) -> int:
        """Parameter count, optionally without the unit and session vocabularies."""
        skip = set() if embeddings else {id(self.unit_emb.weight), id(self.session_emb.weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    def init_vocabs(self, source, session_ids: Iterable[str] | None = None, *, seed: int = 0) -> None:
        """Add the unit and session ids not yet known, from a :class:`poyo.data.Dataset` (or
        anything with ``unit_ids`` and ``session_ids``) or from two lists of ids."""
        if session_ids is None:
            if not (hasattr(source, "unit_ids") and hasattr(source, "session_ids")):
                raise TypeError("init_vocabs takes a dataset, or unit ids and session ids")
            source, session_ids = source.unit_ids, source.session_ids
        self.unit_emb.extend(source, seed=seed)
        self.session_emb.extend(session_ids, seed=seed + 1)

    @property
    def vocab_fingerprint(self) -> str:
        return f"units:{self.unit_emb.fingerprint}/sessions:{self.session_emb.fingerprint}"

    def tokenizer(
        self, readouts: Sequence[ReadoutConfig | Mapping | str] | None = None, *, masking: bool = False
    ) -> Tokenizer:
        """The transform that turns windows into samples for this model's current vocabularies.

        ``readouts``: one :class:`ReadoutConfig` (or dict of its fields, or name) per readout
        to train or evaluate; by default the configs the model was trained with
        (``readout_configs``), else every head with its registry defaults. ``masking``: the
        samples also carry what :class:`poyo.model.masking.MaskingCollate` needs.
        """
        if readouts is None:
            readouts = self.readout_configs if self.readout_configs is not None else self.readout_names
        configs = []
        for r in readouts:
            configs.append(
                r if isinstance(r, ReadoutConfig) else ReadoutConfig(r) if isinstance(r, str) else ReadoutConfig(**r)
            )
        return Tokenizer(
            self.unit_emb.lookup(),
            self.session_emb.lookup(),
            configs,
            self.readout_names,
            latent_step=self.config.latent_step,
            num_latents_per_step=self.config.num_latents_per_step,
            vocab=self.vocab_fingerprint,
            masking=masking,
        )

    # --- forward -------------------------------------------------------------------------
    def forward(self, batch: Mapping, *, count_state: bool = False) -> dict[str, torch.Tensor]:
        """Predictions per readout for a collated batch (padded or packed). ``count_state``: also
        return, under ``"count_state"``, the state every bin of a masked batch reads its counts
        from ``(bins in the batch, dim)`` (each window's bins in order), e.g. to fit another readout."""
        for key in ("input", "latent", "output"):
            if key not in batch:
                raise KeyError(f"batch has no '{key}' group: was it made by POYO.tokenizer() and a poyo.data collate?")
        stale = {v for v in batch.get("vocab", ()) if v and v != self.vocab_fingerprint}  # "" = hand-made tokenizer
        if stale:
            raise RuntimeError(
                f"this batch was tokenized for other vocabularies ({sorted(stale)[0]}, model has {self.vocab_fingerprint}): "
                "the unit or session vocabulary changed since the tokenizer was made; build a new one with model.tokenizer()"
            )
        inp, lat, out = batch["input"], batch["latent"], batch["output"]
        in_layout, lat_layout, out_layout = layout_of(inp), layout_of(lat), layout_of(out)
        if in_layout.is_packed != lat_layout.is_packed or in_layout.is_packed != out_layout.is_packed:
            raise ValueError("all sequence groups of a batch must share one layout")

        counts = batch.get("counts")
        if counts is not None and self.count_head is None:
            raise ValueError(
                "this batch asks for spike counts (masked modelling) but the model has no count head: "
                "build it with masked_modelling=True"
            )
        # both count reads need each token's window and sqrt(units per window): found once, here
        reads_counts = self.latent_read is not None or (counts is not None and self.rate_read is not None)
        units = self._window_units(inp) if reads_counts else None

        x, pair_of = self._input_pairs(inp)
        latents = self.latent_emb(lat["index"])
        if self.latent_read is not None:
            latents = latents + self._latent_counts(inp, lat, units)
        queries = self.session_emb(out["session_index"])
        if self.readout_emb is not None:
            queries = queries + self.readout_emb(out["readout_index"])
        if self.prompt_emb is not None:  # which masking scheme (0: none) each sample saw
            prompt = batch.get("prompt")
            if prompt is None:
                prompt = torch.zeros(len(batch["session_id"]), dtype=torch.long, device=latents.device)
            prompt = self.prompt_emb(prompt.to(latents.device))
            latents = latents + _per_token(lat, prompt)
            queries = queries + _per_token(out, prompt)

        in_rot, lat_rot, out_rot = (
            self.rotary(inp["timestamps"]),
            self.rotary(lat["timestamps"]),
            self.rotary(out["timestamps"]),
        )

        latents = latents + self.enc_atn(latents, x, lat_rot, in_rot, lat_layout, in_layout, pair_of)
        latents = latents + self.enc_ffn(latents)
        latents = self.process(latents, lat_rot, lat_layout)
        preds = {}
        if count_state and counts is None:
            raise ValueError("count_state=True needs a masked batch (a 'counts' group, made by poyo.model.masking)")
        if counts is not None:
            preds[COUNTS], state = self._counts(
                batch, prompt, latents, lat_rot, lat_layout, (x, pair_of), in_rot, in_layout, units
            )
            if count_state:
                preds[COUNT_STATE] = state.float()
        if not self.readout_names:  # a model of spikes alone (masked modelling, no behaviour heads)
            return preds
        tokens = self._decode(queries, out, out_rot, latents, lat_rot, lat_layout)  # (queries in the batch, dim)
        if len(self.readout_names) == 1:
            return {self.readout_names[0]: self.readout[self.readout_names[0]](tokens), **preds}
        # Heads the batch's tokenizer asked for (it writes a target group per readout).
        asked = [n for n in self.readout_names if f"target/{n}" in batch] or self.readout_names
        which = _flat(out, "readout_index")
        return {**{n: self.readout[n](tokens[which == self.readout_names.index(n)]) for n in asked}, **preds}

    def process(self, latents: torch.Tensor, rot: Rotation, layout: Layout) -> torch.Tensor:
        """The self-attention stack over the latents (``(n_latents, dim)`` packed or ``(B, N, dim)``
        padded, rotated by ``rot``): most of a step's work, and the part whose shapes depend only on
        the batch size (the window fixes the latent count), which ``trainer.compile=true`` compiles
        (:mod:`poyo.training.compile`)."""
        for atn, ffn in zip(self.proc_atn, self.proc_ffn):
            latents = latents + self.proc_dropout(atn(latents, rot, layout))
            latents = latents + self.proc_dropout(ffn(latents))
        return latents

    def _counts(self, batch, prompt, latents, lat_rot, lat_layout, context, in_rot, in_layout, units: WindowUnits):
        """Log expected spike count of every (unit, bin) entry of ``batch["counts"]``, and the
        state of every bin it is read from ``(bins in the batch, dim)``: one query
        per bin reads the visible spikes near it, then the latents, into a state; each unit
        reads that state through weights and a bias predicted from its (normalised) embedding
        (a bilinear readout, as NDT's per-unit linear readout but shared across sessions
        through the embeddings). The state also holds a linear read of the visible counts
        (:meth:`_smoothed_counts`), left out of ``count_read_drop`` of the training batches."""
        bins = batch["bins"]
        q = self.count_query.expand(*bins["timestamps"].shape, -1) + _per_token(bins, prompt)
        bin_rot = self.rotary(bins["timestamps"])
        x, pair_of = context  # the input's distinct (unit, token type) embeddings, each token's row
        q = q + self.count_read(q, x, bin_rot, in_rot, layout_of(bins), in_layout, pair_of)
        state = self.count_head(self._decode(q, bins, bin_rot, latents, lat_rot, lat_layout))
        lengths = bins["mask"].sum(1) if "mask" in bins else torch.diff(bins["cu_seqlens"].long())
        offsets = torch.nn.functional.pad(lengths.cumsum(0), (1, 0))
        if self.rate_read is not None:
            read = self._smoothed_counts(batch, lengths, units).to(state.dtype)
            if self.training and self.config.count_read_drop > 0:
                # drawn from torch's generator, as dropout is; times 0, not skipped: DDP wants every weight used
                read = read * (torch.rand((), device=read.device) >= self.config.count_read_drop).to(read.dtype)
            state = state + read
        t = count_targets(batch)
        rows = offsets[t["sample"].to(offsets.device)] + t["bin"].to(offsets.device)
        unit = self.count_unit(self.count_norm(self.unit_emb(t["unit_index"])))
        at = take_rows(state, rows)
        return ((at * unit[:, :-1]).sum(-1) + unit[:, -1]).float(), state

    def _smoothed_counts(self, batch, lengths: torch.Tensor, units: WindowUnits) -> torch.Tensor:
        """A linear read of the visible spike counts near each bin ``(bins in the batch, dim)``.

        Each visible spike adds its unit's normalised embedding to its bin; the bins are smoothed
        with a Gaussian of each width in ``config.count_kernels`` (normalised by the kernel's
        weight on the bins the input can hold: before the causal cut), summed over units
        divided by sqrt(visible units), and projected. So a bin's state can grow with how many
        spikes fell near it, which attention's weighted average cannot show; this is the
        low-rank form of a GLM on the other units' smoothed counts. ``units``: :meth:`_window_units`."""
        inp = batch["input"]
        token_type, times = _flat(inp, "token_type"), _flat(inp, "timestamps")
        sample, units_sqrt = units
        n_max = int(lengths.max())
        bin_s = batch["bin_s"].to(times.device, torch.float64)
        seen = batch["seen_bins"].to(times.device).long().clamp(max=lengths)
        b = torch.floor(times.double() / bin_s[sample] + 1e-6).long()
        spike = (token_type == SPIKE) & (b >= 0) & (b < seen[sample])
        grid = self._spike_grid(inp, sample, b, spike, n_max, self.rate_norm, units_sqrt)
        j = torch.arange(n_max, device=grid.device)
        in_view = (j[None, :] < seen[:, None]).to(grid.dtype)  # (samples, bins)
        d = (j[:, None] - j[None, :]).to(torch.float64)
        feats = []
        for width in self.config.count_kernels:
            k = torch.exp(-0.5 * (d[None] * bin_s[:, None, None] / width) ** 2).to(grid.dtype)  # (samples, i, j)
            k = k * in_view[:, None, :]
            k = k / k.sum(-1, keepdim=True).clamp_min(1e-6)
            feats.append(k @ grid)
        feats = torch.cat(feats, -1)  # (samples, n_max, kernels * dim)
        rows = torch.arange(n_max, device=grid.device)[None, :] < lengths[:, None].to(grid.device)
        # each sample's bins, without the padding
        return self.rate_read(take_rows(feats.flatten(0, 1), rows.flatten().nonzero().squeeze(1)))

    def _input_pairs(self, inp: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, pair_of)``: the embeddings of the input's distinct (unit, token type) pairs
        ``(pairs, dim)`` and each token's row in them (laid out as the tokens). A token's embedding
        depends only on its pair, so the input's layer norm and key and value projections run once
        per pair (S1: 156 pairs, ~14,000 tokens) and attention gathers them per token
        (CrossAttention's ``context_index``)."""
        pairs, pair_of = torch.unique(inp["unit_index"] * NUM_TOKEN_TYPES + inp["token_type"], return_inverse=True)
        x = self.unit_emb(pairs.div(NUM_TOKEN_TYPES, rounding_mode="floor")) + self.token_type_emb(
            pairs.remainder(NUM_TOKEN_TYPES)
        )
        return x, pair_of

    @staticmethod
    def _window_units(inp: Mapping) -> WindowUnits:
        """``(sample, units_sqrt)``: the window of each input token (padding removed, as
        :func:`_flat`) and ``(samples,)`` sqrt(units in each window: their start tokens, at
        least 1), the scale both count reads divide their sums over units by. ``forward``
        finds them once and hands them to both reads."""
        token_type = _flat(inp, "token_type")
        sample = _sample_of(inp).to(token_type.device)
        n_samples = inp["mask"].shape[0] if "mask" in inp else len(inp["cu_seqlens"]) - 1
        units = torch.bincount(sample[token_type == UNIT_START], minlength=n_samples)
        return sample, units.clamp_min(1).sqrt()

    def _spike_grid(self, inp, sample, bin_index, keep, n_bins: int, norm, units_sqrt) -> torch.Tensor:
        """The linear count input both count reads start from ``(samples, bins, dim)``: each kept
        spike token's unit embedding, normalised by ``norm``, summed into its bin of its sample,
        divided by ``units_sqrt`` (:meth:`_window_units`)."""
        n_samples = len(units_sqrt)
        emb = norm(self.unit_emb(_flat(inp, "unit_index")[keep]))
        grid = emb.new_zeros(n_samples * n_bins, emb.shape[-1])
        grid = grid.index_add(0, sample[keep] * n_bins + bin_index[keep], emb).view(n_samples, n_bins, -1)
        return grid / units_sqrt.to(grid.dtype)[:, None, None]

    def _presence(self, inp: Mapping, sample: torch.Tensor, units_sqrt: torch.Tensor) -> torch.Tensor:
        """``(samples, dim)``: the normalised embeddings of each window's units (their start
        tokens) summed, over the number of units (``presence_scale="mean"``) or its square root
        ``units_sqrt`` (``"sqrt"``, as :meth:`_spike_grid` sums their spikes)."""
        starts = _flat(inp, "token_type") == UNIT_START
        emb = self.latent_norm(self.unit_emb(_flat(inp, "unit_index")[starts]))
        total = emb.new_zeros(len(units_sqrt), emb.shape[-1]).index_add(0, sample[starts], emb)
        scale = units_sqrt.to(emb.dtype)
        return total / (scale.square() if self.config.presence_scale == "mean" else scale)[:, None]

    def _latent_counts(self, inp: Mapping, lat: Mapping, units: WindowUnits) -> torch.Tensor:
        """Each latent's linear read of the spike counts near its time, laid out like the latents.

        Spikes add their unit's normalised embedding to bins of ``latent_step / FINE_BINS``;
        for each width in ``config.latent_counts`` the bins are weighted by a Gaussian around
        each latent step's centre (normalised over the bins inside the window, times
        ``FINE_BINS``: the expected count per unit of one latent step), summed over units
        divided by sqrt(units in the window), and projected (with ``latent_presence``, beside the
        window's units themselves: :meth:`_presence`). Unlike attention, this grows with the
        number of spikes: a firing rate, as a binned-count decoder reads it. ``units``:
        :meth:`_window_units`."""
        step = self.config.latent_step
        fine = step / FINE_BINS
        token_type, times = _flat(inp, "token_type"), _flat(inp, "timestamps")
        sample, units_sqrt = units
        lat_times = _flat(lat, "timestamps")
        lat_sample = _sample_of(lat).to(lat_times.device)
        n_samples = len(units_sqrt)
        # Times from each window's start (its first latent sits half a step after it), so that
        # shifting a whole window in time changes nothing, as with rotary time.
        origin = lat_times.new_full((n_samples,), float("inf")).scatter_reduce(0, lat_sample, lat_times, "amin")
        origin = torch.where(torch.isfinite(origin), origin - step / 2, torch.zeros_like(origin))
        j = torch.floor((lat_times - origin[lat_sample]).double() / step + 1e-6).long().clamp_min(0)  # its step
        n_steps = int(j.max()) + 1
        n_bins = n_steps * FINE_BINS
        rel = (times - origin.to(times.device)[sample]).double()
        b = torch.floor(rel / fine).long()
        spike = (token_type == SPIKE) & (b >= 0) & (b < n_bins)
        grid = self._spike_grid(inp, sample, b, spike, n_bins, self.latent_norm, units_sqrt)
        ends = token_type == UNIT_END  # every unit's end token sits at the window's end
        duration = rel.new_full((n_samples,), n_steps * step).scatter_reduce(0, sample[ends], rel[ends], "amin")
        centres = (torch.arange(n_steps, device=grid.device, dtype=torch.float64) + 0.5) * step
        bin_mid = (torch.arange(n_bins, device=grid.device, dtype=torch.float64) + 0.5) * fine
        in_view = (bin_mid[None, :] < duration[:, None]).to(grid.dtype)  # (samples, bins)
        feats = []
        for width in self.config.latent_counts:
            k = torch.exp(-0.5 * ((centres[:, None] - bin_mid[None, :]) / width) ** 2).to(grid.dtype)
            k = k[None] * in_view[:, None, :]  # (samples, steps, bins)
            k = FINE_BINS * k / k.sum(-1, keepdim=True).clamp_min(1e-6)
            feats.append(k @ grid)
        if self.config.latent_presence:  # the window's units, there whether or not they fire
            feats.append(self._presence(inp, sample, units_sqrt)[:, None, :].expand(-1, n_steps, -1).to(feats[0].dtype))
        table = torch.cat(feats, -1).flatten(0, 1)  # (samples * steps, features)
        read = self.latent_read(take_rows(table, lat_sample * n_steps + j))  # each latent's row
        if "mask" not in lat:
            return read
        out = read.new_zeros(*lat["mask"].shape, read.shape[-1])
        out[lat["mask"]] = read
        return out

    def _decode(self, queries, group, q_rot, latents, lat_rot, lat_layout) -> torch.Tensor:
        """Queries cross-attend to the latents; returns their outputs without padding ``(n, dim)``.
        A batch without any query (windows of sessions without behaviour) skips the attention."""
        flat_mask = group.get("mask")
        if (flat_mask.sum() if flat_mask is not None else queries.shape[0]) == 0:
            return queries.reshape(-1, queries.shape[-1])[:0]
        layout = layout_of(group)
        queries = queries + self.dec_atn(queries, latents, q_rot, lat_rot, layout, lat_layout)
        queries = queries + self.dec_ffn(queries)
        return queries[flat_mask] if flat_mask is not None else queries

    def loss(
        self, preds: Mapping[str, torch.Tensor], batch: Mapping, *, global_batch: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum over readouts of each readout's weighted loss; also returns them per readout.

        ``global_batch=True`` under torch.distributed: each readout is normalised by the
        weight sum of the *global* batch (divided by the world size), so that DDP's gradient
        averaging gives exactly the gradient of the weighted mean over the whole batch.
        """
        parts = {}
        dist = global_batch and torch.distributed.is_available() and torch.distributed.is_initialized()

        def global_mean_weight(local: torch.Tensor) -> torch.Tensor | None:
            if not dist:
                return None
            total = local.detach().float().clone()
            torch.distributed.all_reduce(total)
            return total / torch.distributed.get_world_size()

        for name, pred in preds.items():
            if name == COUNT_STATE:  # a view of the model, not a prediction with a loss
                continue
            if name == COUNTS:
                y = _flat(batch["counts"], "counts").to(pred.dtype)
                denominator = global_mean_weight(torch.tensor(float(len(y)), device=pred.device))
                parts[name] = poisson_loss(pred, y, denominator)
                continue
            t = targets(batch, name)
            denominator = global_mean_weight(t["weight"].sum())
            parts[name] = readout_loss(get_readout(name), pred, t["values"], t["weight"], denominator)
        total = sum(parts.values())
        unused = (self._count_path if COUNTS not in preds else ()) + self._decode_path
        if unused:
            # a batch without count queries leaves the masked-modelling parts unused (a model
            # without heads, its decoder); DDP needs every parameter in the graph, so they join it with weight 0
            total = total + 0.0 * sum(self.get_parameter(name).sum() for name in unused)
        return total, parts

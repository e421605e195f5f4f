"""The settings that define a POYO network, as one typed object: the model is built from it,
saved from it (``model.pt``, checkpoints) and loaded from it. The presets are the package's
``poyo/configs/model/*.yaml`` (:meth:`POYOConfig.from_name`)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields


def _real(x) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclass(frozen=True)
class POYOConfig:
    """Args:
    name: what to call this architecture in reports (``poyo_mini``, ``poyo_1.3M``, ...).
    dim: width of every token (spike, latent, query) and of the unit/session embeddings.
    depth: number of self-attention + feed-forward blocks over the latents.
    dim_head: width of each attention head; rotary time uses half of it.
    num_latents_per_step: K learned latents, repeated at each ``latent_step`` of the window
        (a 1 s window and 1/8 s steps give ``8 K`` latent tokens).
    latent_step: spacing of the latent grid, in seconds.
    cross_heads: heads of the encoder (spikes -> latents) and decoder (latents -> queries).
    self_heads: heads of the latent self-attention.
    ffn_dropout, lin_dropout, atn_dropout: dropout in the feed-forward blocks, after each
        processing block, and on the attention weights.
    emb_init_scale: std of the initial embeddings.
    t_min, t_max: shortest and longest rotary period, in seconds (log-spaced between).
    readouts: the names of the heads (registered readouts, :mod:`poyo.readouts`); none for a
        model of spikes alone (masked_modelling=True, no behaviour to decode).
    window_length: the window (s) the model was trained on, if known; running it on other
        windows warns (the latent grid and the rotary phases it learned assume it).
    masked_modelling: add what self-supervised masked modelling needs (MtM,
        :mod:`poyo.model.masking`): a prompt embedding per masking scheme (added to the
        latents and queries), a query per time bin that reads the spikes near it and the
        latents, and a per-unit readout of its log spike count from the unit's embedding.
    count_kernels: with ``masked_modelling``, widths (s, Gaussian sd) over which the visible
        spikes' counts are also smoothed and read *linearly* into each bin's state (the
        binned-count input of NDT and MtM): attention averages over spikes and so loses how
        many there were. Empty: none (checkpoints saved before it existed).
    count_read_drop: in training, the fraction of masked batches whose count state goes
        without that linear read, so the latents still learn to carry the counts: with the
        read always on (0), an MtM backbone fine-tuned on behaviour did no better than one
        trained from scratch (``benchmarks/README.md``).
    latent_counts: widths (s, Gaussian sd) over which each latent also reads the window's
        spike counts *linearly*: the units' normalised embeddings, summed over the spikes near
        the latent's time with each width's weights (counts per latent step, over sqrt(units)),
        then projected and added to the latent before it attends to the spikes. Attention
        averages over the spikes it reads, so on its own a latent cannot tell how many fell
        near it: on real recordings with few units or minutes this read is what binned-count
        decoders (a GRU) have and POYO lacked (``benchmarks/README.md``). Empty (the published
        POYO, and checkpoints saved before it existed): none.
    latent_presence: with ``latent_counts``, that read also gets the window's units themselves
        (their normalised embeddings summed, over sqrt(units)), so a unit that is there and
        silent reads differently from one that is not there. Without it both add nothing, and a
        model trained with unit dropout learns to discount silence, which is what a sharply tuned
        population (head-direction cells) says most with: on simulated head direction its
        still-period errors were biased by up to 8 degrees (``benchmarks/README.md``). False
        (checkpoints saved before it existed): off.
    presence_scale: what ``latent_presence``'s sum is divided by: ``"mean"``, the number of
        units (the mean of their embeddings, the same size whatever the population's), or
        ``"sqrt"``, its square root, as the spike counts are (checkpoints saved before it
        existed). With ``"sqrt"`` the sum grows with the population, so it may dwarf a sparse
        session's counts (the reason ``"mean"`` was tried; not measured): the synthetic quick
        start's sparsest session lost 0.03 R² to the presence read, about half of which
        ``"mean"`` recovers (``benchmarks/README.md``).
    time_prior: height (nats) of a learned relative-time bump every attention starts with
        (:mod:`poyo.model.layers`), so that attention is local in time from the first step;
        0 (the published POYO, and checkpoints saved before it existed): none.
    rotary_omega: the exact rotary frequencies (rad/s, one per rotated pair) when they must be
        kept as given: a torch_brain checkpoint's float32 values, for outputs equal to its
        own. None (our models): computed from ``t_min``/``t_max`` in float64.
    """

    name: str = "poyo"
    dim: int = 64
    depth: int = 6
    dim_head: int = 64
    num_latents_per_step: int = 16
    latent_step: float = 0.125
    cross_heads: int = 2
    self_heads: int = 8
    ffn_dropout: float = 0.2
    lin_dropout: float = 0.4
    atn_dropout: float = 0.2
    emb_init_scale: float = 0.02
    t_min: float = 1e-4
    t_max: float = 2.0627
    readouts: Sequence[str] = ("cursor_velocity_2d",)
    window_length: float | None = None
    rotary_omega: Sequence[float] | None = None
    masked_modelling: bool = False
    time_prior: float = 0.0
    count_kernels: Sequence[float] = (0.02, 0.08, 0.24)
    count_read_drop: float = 0.5
    latent_counts: Sequence[float] = ()
    latent_presence: bool = False
    presence_scale: str = "sqrt"

    def __post_init__(self):
        for name in ("dim", "depth", "num_latents_per_step", "cross_heads", "self_heads", "dim_head"):
            value, least = getattr(self, name), 0 if name == "depth" else 1
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
                raise ValueError(
                    f"{name} must be a {'non-negative' if least == 0 else 'positive'} integer, got {value!r}"
                )
        for name in ("ffn_dropout", "lin_dropout", "atn_dropout", "count_read_drop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.latent_step > 0:
            raise ValueError(f"latent_step must be > 0, got {self.latent_step}")
        if not 0 < self.t_min < self.t_max:
            raise ValueError(f"need 0 < t_min < t_max, got {self.t_min}, {self.t_max}")
        readouts = (self.readouts,) if isinstance(self.readouts, str) else tuple(self.readouts)
        if len(set(readouts)) != len(readouts) or not (readouts or self.masked_modelling):
            raise ValueError(
                f"readouts must be a list of distinct names, empty only with masked_modelling=True "
                f"(a model of spikes alone), got {list(readouts)}"
            )
        if not isinstance(self.latent_presence, bool):
            raise ValueError(f"latent_presence must be true or false, got {self.latent_presence!r}")
        if self.latent_presence and not self.latent_counts:
            raise ValueError(
                "latent_presence=true adds to the latents' count read, which latent_counts=[] turns off: "
                "give latent_counts widths (s), or set latent_presence=false too"
            )
        if self.presence_scale not in ("mean", "sqrt"):
            raise ValueError(f"presence_scale must be 'mean' or 'sqrt', got {self.presence_scale!r}")
        if not (isinstance(self.time_prior, (int, float)) and 0.0 <= self.time_prior < 100.0):
            raise ValueError(f"time_prior must be a number of nats in [0, 100), got {self.time_prior!r}")
        for name in (
            "time_prior",
            "latent_step",
            "t_min",
            "t_max",
            "ffn_dropout",
            "lin_dropout",
            "atn_dropout",
            "count_read_drop",
            "emb_init_scale",
        ):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "readouts", tuple(str(r) for r in readouts))
        for name in ("count_kernels", "latent_counts"):
            given = getattr(self, name)
            widths = (given,) if _real(given) else tuple(given)
            if not all(_real(k) and 0 < k < 100 for k in widths) or len(set(widths)) != len(widths):
                raise ValueError(f"{name} must be distinct widths in (0, 100) s, got {given!r}")
            object.__setattr__(self, name, tuple(float(k) for k in widths))
        if self.window_length is not None:
            if not self.window_length > 0:
                raise ValueError(f"window_length must be > 0 s, got {self.window_length}")
            object.__setattr__(self, "window_length", float(self.window_length))
        if self.rotary_omega is not None:
            omega = tuple(float(w) for w in self.rotary_omega)
            if len(omega) != self.dim_head // 4 or not all(w > 0 for w in omega):
                raise ValueError(
                    f"rotary_omega must hold {self.dim_head // 4} positive frequencies (dim_head // 4), got {len(omega)}"
                )
            object.__setattr__(self, "rotary_omega", omega)

    def to_dict(self) -> dict:
        """Plain values (what checkpoints store; loads with ``torch.load(weights_only=True)``)."""
        out = {**asdict(self), "readouts": list(self.readouts), "count_kernels": list(self.count_kernels)}
        out["latent_counts"] = list(self.latent_counts)
        out["rotary_omega"] = None if self.rotary_omega is None else list(self.rotary_omega)
        return out

    @classmethod
    def from_name(cls, name: str) -> POYOConfig:
        """A preset shipped with poyo: ``poyo_mini``, ``poyo_1.3M``, ``poyo_11.8M`` (``poyo/configs/model``)."""
        from poyo.configs import preset

        return cls.from_dict(preset("model", name), source=f"model preset '{name}'")

    @classmethod
    def from_yaml(cls, path) -> POYOConfig:
        """A model YAML file (a ``_target_`` key, if any, must name this class)."""
        import yaml

        settings = yaml.safe_load(open(path))
        target = settings.pop("_target_", None)
        if target not in (
            None,
            f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}",
            f"{cls.__module__}.{cls.__name__}",
        ):
            raise ValueError(f"{path}: _target_ {target!r} is not {cls.__name__}")
        return cls.from_dict(settings, source=str(path))

    @classmethod
    def from_dict(cls, settings: Mapping, *, source: str = "settings") -> POYOConfig:
        """The config from stored settings; names this poyo does not know are refused, naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(
                f"{source}: model settings {unknown} are unknown to this poyo's POYO "
                "(a checkpoint of another model, or of a newer poyo?)"
            )
        return cls(**dict(settings))

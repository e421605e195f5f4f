"""``poyo.Decoder``: POYO as an estimator over arrays, for notebooks.

    dec = poyo.Decoder(model="poyo_mini", max_steps=1000, seed=0)
    dec.fit([session_a, session_b])                  # pretraining on one or many sessions
    dec.score(session_a)                             # {"r2": mean, "r2_per_dim": [...]}
    dec.adapt(new_session)                           # unit identification on a new recording
    y = dec.predict(new_session)                     # (n, dims) at its behaviour timestamps
    dec.save("model.pt"); dec = poyo.Decoder.load("model.pt")

A session is a dict (or :class:`Session`) of arrays: ``spike_times`` (seconds) with
``unit_ids`` (one per spike), or a list of per-unit time arrays (``unit_ids`` their names),
or ``{unit: times}``; ``behaviour`` as ``(timestamps, values)`` or ``{"GROUP.FIELD":
(timestamps, values)}``; optionally ``session_id``, and ``train``/``valid``/``test``
intervals (``(n, 2)`` start/end seconds). pynapple objects work where arrays do: a ``TsGroup``
as ``spike_times``, a ``Tsd``/``TsdFrame`` as ``behaviour``.

Nothing here trains or evaluates on its own: ``fit`` and ``adapt`` write the sessions as
session files (:mod:`poyo.pipelines.arrays`), build a :class:`poyo.training.config.RunConfig`
(the ``auto`` dataset recipe, the model preset, the Decoder's arguments) and call
:func:`poyo.training.run.train`, the function behind ``poyo train``; ``predict`` stitches
overlapping windows exactly as its evaluation does. With ``workdir`` every run folder
(checkpoints, metrics, test report) stays there; without, a temporary folder per run is removed.

A session passed without ``session_id`` to ``predict``/``score`` whose unit ids are exactly
those of one fitted session is that session (two parts of one recording need no ids).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np

DEFAULT_KEY = "behaviour.values"  # where a bare (timestamps, values) behaviour is stored
BRAINSET = "decoder"  # the folder below workdir/data that holds the sessions


@dataclass
class Session:
    """One recording as arrays (see the module docstring for what each field accepts)."""

    spike_times: object
    unit_ids: object = None
    behaviour: object = None
    session_id: str | None = None
    train: object = None
    valid: object = None
    test: object = None


def _is_pynapple_series(x) -> bool:
    return hasattr(x, "t") and hasattr(x, "values") and not isinstance(x, (np.ndarray, tuple, list, Mapping))


def _times(name: str, t) -> np.ndarray:
    try:
        return np.asarray(t, np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{name}.spike_times: spike times must be numbers (seconds)") from None


def _unit_names(name: str, units) -> np.ndarray:
    """Unit ids as strings; None is refused (it would become the unit 'None')."""
    units = np.asarray(units, dtype=object).ravel()
    if any(u is None for u in units):
        raise ValueError(f"{name}.unit_ids: None is not a unit id")
    return np.array([str(u) for u in units])


def _trains(name: str, spike_times, unit_ids) -> tuple[list[np.ndarray], list[str]]:
    """Per-unit sorted spike-time arrays and their names; errors name the argument at fault."""
    if hasattr(spike_times, "keys") and callable(spike_times.keys):  # {unit: times} or a pynapple TsGroup
        if unit_ids is not None:
            raise ValueError(f"{name}.unit_ids: leave it out when spike_times maps units to their times")
        keys = list(spike_times.keys())
        trains = [_times(name, getattr(spike_times[k], "t", spike_times[k])) for k in keys]
        names = [str(k) for k in keys]
    elif (
        isinstance(spike_times, (list, tuple))
        and spike_times
        and all(np.ndim(t) == 1 for t in spike_times)
        and not np.isscalar(spike_times[0])
    ):
        trains = [_times(name, t) for t in spike_times]
        names = _unit_names(name, unit_ids).tolist() if unit_ids is not None else [str(i) for i in range(len(trains))]
        if len(names) != len(trains):
            raise ValueError(f"{name}.unit_ids: {len(names)} names for {len(trains)} per-unit spike trains")
    else:
        times = _times(name, spike_times)
        if unit_ids is None:
            raise ValueError(f"{name}.unit_ids: needed with a flat spike_times array (one unit id per spike)")
        units = _unit_names(name, unit_ids)
        if len(units) != len(times):
            raise ValueError(
                f"{name}.unit_ids: {len(units)} entries but spike_times has {len(times)} spikes; give one unit id per spike"
            )
        keys, index = np.unique(units, return_inverse=True)
        trains = [times[index == k] for k in range(len(keys))]
        names = [str(k) for k in keys]
    if not trains or sum(len(t) for t in trains) == 0:
        raise ValueError(f"{name}.spike_times: no spikes")
    for u, t in zip(names, trains):
        bad = ~np.isfinite(t)
        if bad.any():
            raise ValueError(f"{name}.spike_times: unit '{u}' has {int(bad.sum())} NaN or infinite spike times")
        back = np.flatnonzero(np.diff(t) < 0)
        if back.size:
            i = int(back[0])
            raise ValueError(
                f"{name}.spike_times: unit '{u}' times are not sorted (t[{i}]={t[i]:.6f} > t[{i + 1}]={t[i + 1]:.6f}); sort each unit's spikes"
            )
    return trains, names


def _within_one_turn(v: np.ndarray) -> bool:
    """Values that could be an angle: radians within [-pi, 2 pi] spanning more than a quarter turn."""
    lo, hi = float(np.min(v)), float(np.max(v))
    return -np.pi - 1e-6 <= lo and hi <= 2 * np.pi + 1e-6 and hi - lo > np.pi / 2


def _locations(spike_times) -> dict[str, str] | None:
    """``{unit: region}`` from a pynapple ``TsGroup``'s ``location`` metadata (newer pynapple:
    ``.metadata``; older: ``.get_info``), or None: the units' brain regions for masked modelling."""
    for read in (lambda g: g.metadata["location"], lambda g: g.get_info("location")):
        try:
            column = read(spike_times)
            return {str(k): str(v) for k, v in zip(column.index, column.values)}
        except Exception:  # not a TsGroup, or no location column: no regions
            continue
    return None


def _behaviour(name: str, behaviour, key: str | None) -> tuple[str, np.ndarray, np.ndarray]:
    """(key, timestamps, values (n, d)) of one behaviour series."""
    if isinstance(behaviour, Mapping):
        if len(behaviour) != 1:
            raise ValueError(f"{name}.behaviour: one series per session, got {len(behaviour)}: {list(behaviour)}")
        ((key, behaviour),) = behaviour.items()
    if _is_pynapple_series(behaviour):
        behaviour = (behaviour.t, behaviour.values)
    if not (isinstance(behaviour, (tuple, list)) and len(behaviour) == 2):
        raise ValueError(
            f"{name}.behaviour: expected (timestamps, values) or a pynapple Tsd/TsdFrame; values without timestamps "
            "cannot be placed against the spikes"
        )
    t = np.asarray(behaviour[0], np.float64).ravel()
    raw = np.asarray(behaviour[1])
    if np.iscomplexobj(raw):
        raise ValueError(
            f"{name}.behaviour: complex values; pass real ones (e.g. np.abs, or real and imaginary parts as two columns)"
        )
    if raw.ndim > 2:
        raise ValueError(
            f"{name}.behaviour: values of shape {raw.shape}; expected (n,) or (n, dims), one row per timestamp"
        )
    try:
        v = raw.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}.behaviour: values must be numbers, got {raw.dtype}") from None
    v = v.reshape(len(v), -1) if v.ndim else v.reshape(1, 1)
    if len(v) != len(t):
        raise ValueError(f"{name}.behaviour: {len(t)} timestamps but {len(v)} values; their lengths must match")
    if len(t) < 2:
        raise ValueError(f"{name}.behaviour: fewer than 2 samples")
    for what, x in (("timestamps", t), ("values", v)):
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(1)
        if bad.any():
            raise ValueError(
                f"{name}.behaviour: {int(bad.sum())} NaN or infinite {what} (first at index {int(np.flatnonzero(bad)[0])}); "
                "drop those samples first"
            )
    back = np.flatnonzero(np.diff(t) <= 0)
    if back.size:
        i = int(back[0])
        raise ValueError(
            f"{name}.behaviour: timestamps must increase strictly; t[{i}]={t[i]:.6f} >= t[{i + 1}]={t[i + 1]:.6f}"
        )
    return str(key or DEFAULT_KEY), t, v  # the importer checks the key (poyo.pipelines.arrays._field_key)


def _intervals(name: str, iv) -> np.ndarray:
    try:
        a = np.asarray(iv, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (start, end) rows of numbers (seconds)") from None
    a = a.reshape(1, 2) if a.shape == (2,) else a
    if a.ndim != 2 or a.shape[1] != 2 or len(a) == 0:
        raise ValueError(f"{name}: expected (n, 2) start/end rows, got shape {a.shape}")
    if not (np.isfinite(a).all() and (a[:, 1] > a[:, 0]).all() and (a[1:, 0] >= a[:-1, 1]).all()):
        raise ValueError(
            f"{name}: expected sorted, non-overlapping (start, end) rows with end > start, got {a.tolist()[:3]}"
        )
    return a


def as_session(obj, name: str = "session") -> Session:
    """A :class:`Session` from a dict or a Session (unknown keys name themselves in the error)."""
    if isinstance(obj, Session):
        return obj
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"{name}: expected a dict of arrays (spike_times, unit_ids, behaviour, ...), got {type(obj).__name__}"
        )
    known = {f.name for f in fields(Session)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ValueError(f"{name}: unknown keys {unknown}; a session takes {sorted(known)}")
    if "spike_times" not in obj:
        raise ValueError(f"{name}: needs spike_times")
    return Session(**obj)


def session_id_of(trains: Sequence[np.ndarray], names: Sequence[str]) -> str:
    """A stable id from the spikes alone: the same recording gets the same id, in any later call."""
    h = hashlib.sha1()
    for u, t in sorted(zip(names, trains), key=lambda p: p[0]):
        h.update(u.encode() + b"\0" + np.ascontiguousarray(t, np.float64).tobytes())
    return "s" + h.hexdigest()[:10]


class Decoder:
    """POYO as an estimator: ``fit``, ``predict``, ``score``, ``adapt``, ``save``/``load``.

    Args:
        model: a model preset (``poyo_mini``, ``poyo_1.3M``, ``poyo_11.8M``) or a :class:`POYOConfig`.
        max_steps: training steps of ``fit`` (None: ``poyo train dataset=<folder>``'s default,
            70 epochs but at least 1,000 steps); ``adapt`` takes its own.
        batch_size: windows per step (the global batch); ``"auto"``: 32 s of windows (21 of the
            2 s windows, half of them cut to 1 s, a model learns from scratch; 32 when adapting a
            model trained on 1 s).
        device: ``"auto"`` (a GPU when there is one), ``"cpu"`` or ``"gpu"``.
        precision: ``"auto"`` (bf16 where the hardware computes it), ``"32-true"`` or ``"bf16-mixed"``.
        seed: seeds every random choice of a run (model init, windows, augmentation).
        workdir: where session files and run folders go and stay. None (default): a temporary
            folder per run, removed when the run ends (the model is kept in memory; ``save`` it).
        num_workers: DataLoader worker processes for training (0: load in this process).
        verbose: True prints what ``poyo train`` prints (tables, progress of every stage);
            False one progress bar per run and its scores (the rest goes to the run's ``run.log``).
        settings: any further run settings by dotted key (:class:`poyo.training.config.RunConfig`),
            e.g. ``{"optim.base_lr": 1e-4, "trainer.precision": "32-true"}``.
    """

    def __init__(
        self,
        model="poyo_mini",
        *,
        max_steps: int | None = None,
        batch_size: int | str = "auto",
        device: str = "auto",
        precision: str = "auto",
        seed: int = 0,
        workdir=None,
        num_workers: int = 2,
        verbose: bool = True,
        settings: Mapping | None = None,
    ):
        from poyo.configs import names
        from poyo.model import POYOConfig

        if isinstance(model, POYOConfig):
            self.model_config = model
        elif isinstance(model, str) and model in names("model"):
            self.model_config = POYOConfig.from_name(model)
        else:
            raise ValueError(f"model: no preset {model!r}; choose one of {names('model')} or pass a POYOConfig")
        if max_steps is not None and not (
            isinstance(max_steps, int) and not isinstance(max_steps, bool) and max_steps >= 1
        ):
            raise ValueError(f"max_steps: a positive integer or None, got {max_steps!r}")
        if device not in ("auto", "cpu", "gpu", "cuda"):
            raise ValueError(f"device: auto, cpu or gpu, got {device!r}")
        if settings is not None and not isinstance(settings, Mapping):
            raise TypeError(
                f"settings: a dict of dotted keys, e.g. {{'optim.base_lr': 1e-4}}, got {type(settings).__name__}"
            )
        self.model_name = self.model_config.name
        # checked with every other setting by RunConfig, just below (not coerced: "abc" or 1e20 is refused)
        self.max_steps, self.batch_size, self.seed = max_steps, batch_size, seed
        self.device, self.precision, self.num_workers = device, precision, num_workers
        self.verbose, self.settings = bool(verbose), dict(settings or {})
        self.workdir = Path(workdir) if workdir is not None else None
        self._checked = self._config(Path("."), ["check/settings"])  # bad settings fail now, not after writing sessions
        self.model_ = None  # the trained POYO (poyo.model.POYO), after fit / adapt / load
        self.runs_: list[Path] = []  # run folders of fit and adapt, oldest first (kept only with a workdir)
        self.report_: dict | None = None  # the last run's test report: POYO beside the linear decoders

    @property
    def window_length(self) -> float:
        """Seconds of spikes per window: the fitted model's, else what ``fit`` will train on."""
        from poyo.training.config import STANDARD_WINDOW

        if self.model_ is not None:  # a model runs on the window it learned (files that do not say: 1 s)
            return self.model_.config.window_length or STANDARD_WINDOW
        return self._checked.resolved().window_length

    # --- sessions -> files -------------------------------------------------------------
    def _known_sessions(self) -> dict[str, set[str]]:
        """The fitted model's sessions of this decoder and their unit names (without the session prefix)."""
        out: dict[str, set[str]] = {}
        if self.model_ is None:
            return out
        for sid in self.model_.session_emb.ids:
            out[sid] = set()
        for u in self.model_.unit_emb.ids:  # "<brainset>/<session>/<unit>"; unit names may hold "/" too
            sid = "/".join(u.split("/", 2)[:2])
            if sid in out:
                out[sid].add(u[len(sid) + 1 :])
        return out

    def _session_id(self, s: Session, name: str, trains, names, *, match: bool) -> str:
        """``session_id`` if given; else (``match``) the one fitted session with exactly these unit
        ids; else an id hashed from the spikes (a new session)."""
        if s.session_id is not None:
            return str(s.session_id)
        if match:
            units = set(names)
            hits = [sid for sid, known in self._known_sessions().items() if known == units]
            if len(hits) == 1:
                print(
                    f"{name}: no session_id; its {len(units)} unit ids are those of the fitted session "
                    f"'{hits[0]}', so it is taken as that session"
                )
                return hits[0].split("/", 1)[1]
            if len(hits) > 1:
                raise ValueError(
                    f"{name}: no session_id, and its {len(units)} unit ids match {len(hits)} fitted sessions "
                    f"({[h.split('/', 1)[1] for h in hits]}); pass session_id= one of them (and give session ids when fitting)"
                )
        return session_id_of(trains, names)

    def _write(
        self, session, name: str, root: Path, *, model=None, timestamps=None, match: bool = False, taken=None
    ) -> tuple[str, list[str]]:
        """Write one session below ``root/decoder``, its behaviour under the key ``model`` decodes
        (if given); returns its global id and global unit ids. ``match``: a session without
        ``session_id`` may be a fitted one (:meth:`_session_id`); ``taken``: the ids already written
        by this call (``{id: name}``), which this session must not reuse."""
        from temporaldata import Interval

        from poyo.pipelines.arrays import ArrayContentError, from_spike_times, write_session
        from poyo.pipelines.common.session import clean_id, import_summary

        s = as_session(session, name)
        trains, names = _trains(name, s.spike_times, s.unit_ids)
        if timestamps is not None:  # prediction at given times: placeholder targets there
            t = np.asarray(timestamps, np.float64).ravel()
            key, t, v = _behaviour(name, (t, np.zeros((len(t), model.readout_configs[0].spec.dim))), None)
        else:
            if s.behaviour is None:
                raise ValueError(f"{name}.behaviour: needed here (or give timestamps= to predict at)")
            key, t, v = _behaviour(name, s.behaviour, None)
            if key == DEFAULT_KEY and v.shape[1] == 1 and model is None and _within_one_turn(v):
                print(
                    f"{name}.behaviour: one unnamed series within one turn; if it is an angle, pass it named like one, "
                    "e.g. behaviour={'head.dir': ...}, and it is decoded through its cos and sin"
                )
        if model is not None:  # the series the model decodes
            key = model.readout_configs[0].key
        window = self.window_length
        if t[-1] - t[0] < window:
            raise ValueError(
                f"{name}: the behaviour spans {t[-1] - t[0]:.3f} s, shorter than one {window:g} s window; POYO needs at least one window"
            )
        sid = self._session_id(s, name, trains, names, match=match)
        if taken is not None:
            if sid in taken:
                raise ValueError(
                    f"{taken[sid]} and {name}: both are session '{sid}' (the same session_id, or the same spikes); "
                    "give each recording its own session_id"
                )
            taken[sid] = name
        try:
            regions = _locations(s.spike_times)
            data = from_spike_times(
                trains, names, {key: (t, v)}, brainset=BRAINSET, session_id=sid, brain_regions=regions
            )
        except ArrayContentError as e:
            raise ValueError(f"{name}: {e}") from None
        given = sum(len(x) for x in trains)
        cut = int(data.session.spikes_outside_behaviour)
        if cut > given / 2:
            raise ValueError(
                f"{name}: {cut} of its {given} spikes fall outside the behaviour's time span [{t[0]:.3f}, {t[-1]:.3f}] s; "
                "are the spike times and the behaviour timestamps in the same unit (seconds) and on the same clock?"
            )
        if cut or int(data.session.units_dropped):
            print(
                f"{name}: "
                + "; ".join(line.strip() for line in import_summary(data, [], root) if "train with" not in line)
            )
        given = {k: getattr(s, k) for k in ("train", "valid", "test") if getattr(s, k) is not None}
        if given:
            if not {"train", "valid"} <= set(given):
                raise ValueError(
                    f"{name}: give train and valid intervals together (test is optional), got {sorted(given)}"
                )
            given.setdefault("test", given["valid"])
            for k, iv in given.items():
                a = _intervals(f"{name}.{k}", iv)
                setattr(data, f"{k}_domain", Interval(start=a[:, 0], end=a[:, 1]))
        write_session(data, root, overwrite=True)
        return f"{BRAINSET}/{data.session.id}", [f"{BRAINSET}/{data.session.id}/{clean_id(u)}" for u in data.units.id]

    # --- runs ------------------------------------------------------------------------------
    def _config(self, data_root: Path, sessions: Sequence[str], **run):
        """The :class:`RunConfig` of a run on ``sessions`` below ``data_root`` (``run``: more fields)."""
        from poyo.training.config import RunConfig, TrainerConfig, dataset_config

        accelerator = {"auto": "auto", "cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}[self.device]
        trainer = run.pop("trainer", {})
        cfg = RunConfig(
            dataset=dataset_config(BRAINSET),
            model=self.model_config,
            data_root=str(data_root),
            sessions=list(sessions),
            seed=self.seed,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            trainer=TrainerConfig(accelerator=accelerator, precision=self.precision, **trainer),
            **run,
        )
        return cfg.with_changes(**self.settings) if self.settings else cfg

    def _workspace(self) -> Path:
        """The folder a run works in: ``workdir``, or a new temporary one the run removes."""
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            return self.workdir
        return Path(tempfile.mkdtemp(prefix="poyo-decoder-"))

    def _run(self, sessions, *, what: str, max_steps=None, train_seconds=None, finetune=None) -> None:
        """Write ``sessions`` and train on them (``finetune``: adapt the current model), as ``poyo train`` does."""
        work = self._workspace()
        try:
            if finetune is not None:
                start = work / "runs" / f"{len(self.runs_):02d}-start.pt"
                self.save(start)
                finetune = {**finetune, "checkpoint": str(start)}
            model = self.model_ if finetune is not None else None
            ids, taken = [], {}
            for i, x in enumerate(sessions):
                ids.append(self._write(x, f"sessions[{i}]", work / "data", model=model, taken=taken)[0])
            self._train(work, ids, what=what, max_steps=max_steps, train_seconds=train_seconds, finetune=finetune)
        finally:
            if self.workdir is None:
                shutil.rmtree(work, ignore_errors=True)

    def _train(self, work: Path, ids, *, what, max_steps, train_seconds, finetune) -> None:
        import contextlib
        import warnings

        import lightning as L

        from poyo.data import Dataset, RandomFixedWindowSampler
        from poyo.model import load_pretrained
        from poyo.training.config import FinetuneConfig
        from poyo.training.guards import RunLock
        from poyo.training.loggers import quiet_libraries
        from poyo.training.run import planned_steps, train

        quiet_libraries()
        steps = max_steps if max_steps is not None else self.max_steps
        trainer = {"max_steps": steps} if steps is not None else {}
        run = dict(train_seconds=train_seconds)
        if finetune is not None:
            run["finetune"] = FinetuneConfig(**finetune)
        trained = {"window_length": self.window_length} if finetune is not None else None  # adapted: its own window
        cfg = self._config(work / "data", ids, trainer=trainer, **run).resolved(trained)
        ds = Dataset(work / "data", sessions=ids, train_seconds=train_seconds, validate=False)
        windows = len(
            RandomFixedWindowSampler(
                ds.sampling_intervals("train"), cfg.window_length, seed=self.seed, half_windows=cfg.half_windows
            )
        )
        ds.close()
        batch = cfg.batch_size
        if windows < 2 * batch:  # a few seconds of data: at least two batches per epoch
            batch = max(1, windows // 2)
            if self.verbose:
                print(f"{windows} training windows: batches of {batch} instead of {cfg.batch_size}")
        # Short recordings make short epochs: validate about 10 times a run, not every few epochs.
        epochs = -(-planned_steps(cfg, windows // batch) // (windows // batch))
        every = max(cfg.trainer.check_val_every_n_epoch, -(-epochs // 10))
        cfg = cfg.with_changes(batch_size=batch, **{"trainer.check_val_every_n_epoch": every})
        run_dir = work / "runs" / f"{len(self.runs_):02d}"
        run_dir.mkdir(parents=True, exist_ok=True)
        L.seed_everything(cfg.seed, workers=False, verbose=False)
        with contextlib.ExitStack() as quiet, RunLock(run_dir):
            if not self.verbose:  # one progress bar (stderr) and the scores; the rest into run.log
                log = quiet.enter_context(open(run_dir / "run.log", "w"))
                quiet.enter_context(contextlib.redirect_stdout(log))
                quiet.enter_context(warnings.catch_warnings())
                warnings.showwarning = lambda m, c, f, n, file=None, line=None: log.write(f"warning: {m}\n")
            out = train(cfg, run_dir, progress=self.verbose, describe=what)
        self.report_ = out["report"]
        self.model_ = load_pretrained(run_dir / "checkpoints" / "model.pt")
        if self.workdir is not None:
            self.runs_.append(run_dir)
        if self.verbose and self.workdir is None:
            print("(that run folder was temporary and is removed now; Decoder(workdir=...) keeps run folders)")
        if not self.verbose and self.report_:
            r = self.report_
            print(
                f"{what}: test R2 {r['poyo_mean_r2']:.3f} (linear {r['linear_mean_r2']:.3f}, "
                f"causal linear {r['causal_mean_r2']:.3f}) over {len(ids)} session(s)"
            )

    def fit(self, sessions, *, max_steps: int | None = None) -> Decoder:
        """Train a new model on one session or a list of them (pretraining); returns self.

        Each session is split into train/valid/test (its own intervals, else 10 time blocks
        dealt 8/1/1); the weights are chosen on valid and reported on test beside the linear
        decoders, as ``poyo train`` does."""
        sessions = [sessions] if isinstance(sessions, (Mapping, Session)) else list(sessions)
        if not sessions:
            raise ValueError("sessions: empty list")
        # a fresh model: nothing carries over from an earlier fit (the old one stays until this one is trained)
        self._run(sessions, what="fit", max_steps=max_steps)
        return self

    def adapt(
        self,
        sessions,
        *,
        mode: str = "unit_identification",
        max_steps: int | None = 300,
        init: str = "statistics",
        train_seconds: float | None = None,
    ) -> Decoder:
        """Bring new sessions (new units) into the fitted or loaded model; returns self.

        ``mode``: ``unit_identification`` (only the new unit and session embeddings learn),
        ``full`` (everything learns) or ``gradual`` (embeddings first, then everything).
        ``init``: new embeddings start from their firing statistics or at random.
        The model keeps its earlier sessions (their rows do not change in unit identification).
        """
        from poyo.training.finetune import MODES

        self._check_fitted("adapt")
        if mode not in MODES[1:]:  # "none" is pretraining, which is fit()
            raise ValueError(f"mode: one of {MODES[1:]}, got {mode!r}")
        sessions = [sessions] if isinstance(sessions, (Mapping, Session)) else list(sessions)
        if not sessions:
            raise ValueError("sessions: empty list")
        ft = {"mode": mode, "subset": False, "init": init}
        if mode == "gradual":
            ft["unfreeze_epoch"] = 2
        self._run(sessions, what=f"adapt ({mode})", max_steps=max_steps, train_seconds=train_seconds, finetune=ft)
        return self

    # --- prediction ----------------------------------------------------------------------
    def predict(self, session, timestamps=None, *, intervals=None) -> np.ndarray:
        """Predictions ``(n, dims)`` in the behaviour's units, at the session's behaviour
        timestamps (or at ``timestamps``), stitched from windows every ``eval_step`` s over
        ``intervals`` (default: the whole session) exactly as ``train.py`` evaluates. Samples
        no window covers (inside a stretch shorter than one window) are NaN."""
        self._check_fitted("predict")
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="poyo-predict-", dir=self.workdir))
        try:
            return self._predict(session, timestamps, intervals, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _predict(self, session, timestamps, intervals, root: Path) -> np.ndarray:
        import torch

        from poyo.data import Dataset, DistributedStitchingSampler
        from poyo.data import intervals as ivs
        from poyo.training.layout import choose_layout, first_batch
        from poyo.training.module import collate
        from poyo.training.precision import autocast, resolve_precision
        from poyo.training.stitch import stitch_predictions, to_device

        model, readout = self.model_, self.model_.readout_configs[0]
        sid, units = self._write(session, "session", root, model=model, timestamps=timestamps, match=True)
        unknown = [u for u in units if u not in model.unit_emb]
        if sid not in model.session_emb or unknown:
            raise KeyError(
                f"session: '{sid}' is not known to this decoder ({len(unknown)} of its {len(units)} units are new); "
                "adapt(session) first"
            )
        cfg = self._config(root, [sid]).resolved({"window_length": model.config.window_length})
        ds = Dataset(root, behaviour=[readout.key], validate=True, seed=cfg.seed)
        ds.transform = model.tokenizer(model.readout_configs)
        domain = ds.sessions[sid].domain
        where = {sid: ivs.intersect(_intervals("intervals", intervals), domain) if intervals is not None else domain}
        if not any(e - b >= cfg.window_length - 1e-9 for b, e in where[sid]):
            span = f"[{domain[0][0]:.3f}, {domain[-1][1]:.3f}] s"
            ds.close()
            raise ValueError(
                f"intervals: no stretch of at least one {cfg.window_length:g} s window lies inside the session's span {span}"
            )
        sampler = DistributedStitchingSampler(where, cfg.window_length, step=cfg.eval_step, drop_short=True)
        gpu = self.device in ("gpu", "cuda") or (self.device == "auto" and torch.cuda.is_available())
        device = "cuda" if gpu else "cpu"
        precision = resolve_precision(str(cfg.trainer.precision), device)
        batch_size = cfg.eval_batch_size or cfg.batch_size
        layout, _ = choose_layout(  # layout=auto on a GPU times a forward pass of the first batch in both layouts
            cfg.layout, cfg.attention, torch.device(device), model,
            lambda: first_batch(ds, sampler, batch_size, lambda layout: partial(collate, layout=layout)),
            lambda: autocast(device, precision), train=False,
        )  # fmt: skip
        loader = torch.utils.data.DataLoader(
            ds, sampler=sampler, batch_size=batch_size, collate_fn=lambda b: collate(b, layout)
        )
        model.to(device)
        with autocast(device, precision):
            st = stitch_predictions(model, (to_device(b, device) for b in loader)).stitched()
        n = len(ds.behaviour(sid, readout.key).timestamps)
        ds.close()
        out = np.full((n, readout.spec.dim), np.nan)
        got = st.get((sid, readout.name))
        if got is not None:
            out[got["sample_index"]] = readout.decode(got["pred"])
        return out

    def score(self, session, *, intervals=None) -> dict:
        """R² of :meth:`predict` against the session's behaviour, over the samples inside
        ``intervals`` (default: all): ``{"r2": mean over dims, "r2_per_dim": [...]}`` (angles:
        R² of their (cos, sin) as vectors)."""
        from poyo.training.stitch import circular_r2, r2_score

        self._check_fitted("score")
        s = as_session(session, "session")
        if s.behaviour is None:
            raise ValueError("session.behaviour: needed to score against")
        _, _, y = _behaviour("session", s.behaviour, None)
        pred = self.predict(s, intervals=intervals)
        ok = np.isfinite(pred).all(1)
        if ok.sum() < 2:
            raise ValueError("session: fewer than 2 samples could be predicted (is it shorter than one window?)")
        readout = self.model_.readout_configs[0]
        if readout.spec.kind == "circular":
            enc = lambda x: readout.encode(x)  # noqa: E731
            d = readout.spec.dim
            per = [circular_r2(enc(pred[ok])[:, [i, d + i]], enc(y[ok])[:, [i, d + i]], 1) for i in range(d)]
        else:
            per = [r2_score(pred[ok, i], y[ok, i]) for i in range(y.shape[1])]
        return {"r2": float(np.mean(per)), "r2_per_dim": [float(x) for x in per]}

    # --- files -----------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the model as a ``model.pt`` file (``poyo.load_pretrained`` and ``train.py`` read it)."""
        from poyo.model import save_pretrained

        self._check_fitted("save")
        if not str(path).strip() or Path(path).is_dir():
            raise ValueError(f"save: {str(path)!r} is not a file path (e.g. 'model.pt')")
        return save_pretrained(
            self.model_, path, metadata={"written_by": "poyo.Decoder", "runs": [str(r) for r in self.runs_]}
        )

    @classmethod
    def load(cls, path, **settings) -> Decoder:
        """A decoder around a saved model (``model.pt`` or a ``train.py`` checkpoint); ``settings``
        are :class:`Decoder`'s arguments for later ``adapt`` runs."""
        from poyo.model import load_pretrained

        model = load_pretrained(path)
        if not model.readout_configs:
            raise ValueError(f"{path}: the model carries no readout configs; it cannot decode arrays")
        # adapting starts from the file's weights; the config name only matters to a later fit
        dec = cls(**{"model": model.config, **settings})
        dec.model_ = model
        return dec

    def _check_fitted(self, what: str) -> None:
        if self.model_ is None:
            raise RuntimeError(f"{what}: this Decoder has no model yet; call fit(sessions) or Decoder.load(path) first")

    def __repr__(self) -> str:
        state = "fitted" if self.model_ is not None else "not fitted"
        return f"Decoder(model={self.model_name!r}, {state}, workdir={str(self.workdir)!r})"

"""A dataset over a folder of session files, indexed by :class:`WindowIndex`.

h5py handles are not fork-safe and do not pickle, so they are never shared between
processes: each process (the main one and every DataLoader worker, whether forked
or spawned) opens its own on first use, and handles inherited through ``fork``
are dropped unused.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from poyo.data import intervals as ivs
from poyo.data.session import SPLITS, CachedFile, Session, SessionFormatError, open_file
from poyo.data.window import Series, Window, WindowIndex

Transform = Callable[[Window, np.random.Generator], Window]


def find_session_files(root) -> list[Path]:
    """All ``*.h5`` files below ``root`` (a folder or a list of folders), sorted, so every
    process sees the same order."""
    roots = [Path(r) for r in ([root] if isinstance(root, (str, os.PathLike)) else root)]
    if not roots:
        raise ValueError("no dataset folder given")
    files = []
    for r in roots:
        if not r.is_dir():
            raise FileNotFoundError(f"dataset folder {r} does not exist")
        found = sorted(p for p in r.rglob("*.h5") if p.is_file())
        if not found:
            raise FileNotFoundError(f"no session files (*.h5) found below {r}")
        files += found
    return files


def select_sessions(available: Sequence[str], wanted: Iterable[str]) -> list[str]:
    """The ids in ``available`` named by ``wanted``: exact ids or glob patterns
    (``"perich_miller_population_2018/c_*"``), in the order of ``available``.
    Every entry must match something, so a typo fails instead of silently training on less."""
    wanted = [str(w) for w in wanted]
    if not wanted:
        raise ValueError("the session selection is empty")
    keep, unmatched = set(), []
    for w in wanted:
        hits = [a for a in available if a == w or fnmatchcase(a, w)]
        if not hits:
            unmatched.append(w)
        keep.update(hits)
    if unmatched:
        shown = list(available)[:10]
        raise KeyError(f"no session matches {unmatched}; available ({len(available)}): {shown}{' ...' if len(available) > 10 else ''}")
    return [a for a in available if a in keep]


class Dataset:
    """Windows of many sessions, read lazily from ``root/**/*.h5``.

    Args:
        root: folder holding session files (``<brainset>/<session>.h5``), or a list of them.
        behaviour: behaviour fields read into each window, e.g. ``["cursor.vel"]``, or a
            function of the session id returning them (mixed brainsets).
        intervals: interval sets carried into each window (weights, evaluation masks), or
            a function of the session id returning them.
        sessions: keep only these global session ids (``"<brainset>/<session>"``) or glob
            patterns (``"<brainset>/c_*"``).
        train_seconds: keep only the earliest ``train_seconds`` of each session's train
            split (few-shot experiments: how much data a new session needs).
        transform: ``f(window, rng) -> window``, applied after reading.
        seed: base seed; each window's generator is derived from it and the index's seed.
        optional_behaviour: sessions may lack the behaviour fields (self-supervised
            objectives): their windows then carry none instead of raising.
        validate: read every spike array once at start-up to check it (sorted, finite,
            inside the domain, valid unit indices). Cheap next to training; turn off
            only for datasets already checked.
        max_open_files: per-process cap on open files (least recently used are closed).
        progress: show a progress bar while sessions are opened and checked.
    """

    def __init__(
        self,
        root,
        *,
        behaviour: Sequence[str] = (),
        intervals: Sequence[str] = (),
        sessions: Iterable[str] | None = None,
        train_seconds: float | None = None,
        transform: Transform | None = None,
        seed: int = 0,
        validate: bool = True,
        max_open_files: int = 64,
        progress: bool = False,
        optional_behaviour: bool = False,
    ):
        if max_open_files < 1:
            raise ValueError(f"max_open_files must be >= 1, got {max_open_files}")
        self.root = Path(root) if isinstance(root, (str, os.PathLike)) else [Path(r) for r in root]
        self.transform = transform
        self.seed = int(seed)
        self.max_open_files = int(max_open_files)
        files = find_session_files(self.root)
        self.sessions: dict[str, Session] = {}
        for path in tqdm(files, desc="reading sessions", disable=not progress, unit="file"):
            # every file is opened before the selection below, so a session left out may lack behaviour
            s = Session(path, behaviour=behaviour, intervals=intervals, brainset=None, optional_behaviour=True)
            if s.id in self.sessions:
                raise SessionFormatError(path, f"session id '{s.id}' is also used by {self.sessions[s.id].path}", field="session.id")
            self.sessions[s.id] = s
        if sessions is not None:
            try:
                kept = select_sessions(list(self.sessions), sessions)
            except KeyError as e:
                raise KeyError(f"below {self.root}: {e.args[0]}") from None
            self.sessions = {w: self.sessions[w] for w in kept}
        if not optional_behaviour:
            for s in self.sessions.values():
                s.require_behaviour()
        if train_seconds is not None:
            if not train_seconds > 0:
                raise ValueError(f"train_seconds must be > 0, got {train_seconds}")
            for s in self.sessions.values():
                if s.splits["train"] is not None:
                    s.splits["train"] = ivs.first_seconds(s.splits["train"], float(train_seconds))
        if validate:  # full array checks, only for the sessions kept
            for s in tqdm(self.sessions.values(), desc="checking sessions", disable=not progress, unit="file"):
                s.validate()
        asked = {k for s in self.sessions.values() for k in s.interval_keys}
        for key in sorted(asked):  # most likely a typo; windows get an empty set for it
            if all(s.intervals.get(key) is None for s in self.sessions.values()):
                warnings.warn(f"{self.root}: none of the {len(self.sessions)} sessions has the interval set '{key}'", stacklevel=2)
        self._handles: OrderedDict[str, CachedFile] = OrderedDict()
        self._pid = os.getpid()

    # -- description ------------------------------------------------------------------
    @property
    def session_ids(self) -> list[str]:
        return list(self.sessions)

    @property
    def unit_ids(self) -> list[str]:
        """Every unit of every session, in session order then file order."""
        return [u for s in self.sessions.values() for u in s.unit_ids.tolist()]

    @property
    def subject_ids(self) -> list[str]:
        return sorted({s.subject_id for s in self.sessions.values() if s.subject_id})

    def sampling_intervals(self, split: str | None = None) -> dict[str, np.ndarray]:
        """Per session, where windows may be drawn: the split's domain, or the whole domain."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        return {sid: self._intervals(s, split) for sid, s in self.sessions.items()}

    @staticmethod
    def _intervals(s: Session, split: str | None) -> np.ndarray:
        if split is None:
            return s.domain
        iv = s.splits[split]
        if iv is None:
            raise SessionFormatError(s.path, "missing; cannot draw windows for this split", session=s.local_id, field=f"{split}_domain")
        if ivs.total_length(iv) <= 0:
            raise SessionFormatError(s.path, "is empty", session=s.local_id, field=f"{split}_domain")
        return iv

    # -- reading ----------------------------------------------------------------------
    def _file(self, session: Session) -> CachedFile:
        if os.getpid() != self._pid:  # forked: the parent's handles are not ours to use
            self._handles = OrderedDict()
            self._pid = os.getpid()
        key = str(session.path)
        f = self._handles.get(key)
        if f is None:
            f = CachedFile(open_file(session.path))
            self._handles[key] = f
            while len(self._handles) > self.max_open_files:
                _, old = self._handles.popitem(last=False)
                old.close()
        else:
            self._handles.move_to_end(key)
        return f

    def read(self, index: WindowIndex) -> Window:
        """The raw window, before transforms."""
        session = self.sessions.get(index.session)
        if session is None:
            raise KeyError(f"unknown session '{index.session}'; this dataset has {len(self.sessions)} sessions")
        if not index.end > index.start:
            raise ValueError(f"window end must be after start, got [{index.start}, {index.end})")
        return session.read(self._file(session), index.start, index.end)

    def behaviour(self, session_id: str, key: str, split: str | None = None) -> Series:
        """A session's behaviour series ``key`` inside a split (or the whole domain), absolute times."""
        session = self.sessions.get(session_id)
        if session is None:
            raise KeyError(f"unknown session '{session_id}'; this dataset has {len(self.sessions)} sessions")
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        iv = self._intervals(session, split)
        f = self._file(session)
        parts = [session.read_behaviour(f, key, float(a), float(b)) for a, b in iv]
        return Series(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("timestamps", "values", "sample_index")))

    def rng(self, index: WindowIndex) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(index.seed) & 0xFFFFFFFFFFFFFFFF])

    def __getitem__(self, index: WindowIndex):
        if not isinstance(index, tuple) or len(index) < 3:
            raise TypeError(f"index a Dataset with a WindowIndex(session, start, end), got {index!r}")
        index = WindowIndex(*index)
        window = self.read(index)
        if self.transform is not None:
            window = self.transform(window, self.rng(index))
        return window

    def open_files(self) -> list[str]:
        """Paths this process holds open (for tests and diagnostics)."""
        return list(self._handles) if os.getpid() == self._pid else []

    def close(self) -> None:
        if os.getpid() == self._pid:
            for f in self._handles.values():
                f.close()
        self._handles = OrderedDict()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()  # handles never travel to another process
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker its own numpy and random streams.

    Transforms draw from per-sample generators (see :meth:`Dataset.rng`); this guards
    any other code that touches the global generators.
    """
    import random

    import torch

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def init_worker(worker_id: int) -> None:
    """The ``worker_init_fn`` of poyo's loaders: :func:`seed_worker`, and batches sent to the main
    process by shared-memory file name instead of file descriptor.

    Why: with descriptors (PyTorch's default on Linux) the main process fetches each tensor's
    descriptor from the worker over a new socket connection. A collated batch holds about 20
    tensors: on 2 cores 6.4 ms a batch, against 2.4 ms by name (benchmarks/data_loading.py).
    PyTorch's shared-memory manager removes segments a crashed process leaves. Only the worker's
    setting changes (the sender picks how a tensor travels); the main process keeps its own.
    """
    import torch.multiprocessing as tmp

    seed_worker(worker_id)
    if "file_system" in tmp.get_all_sharing_strategies():
        tmp.set_sharing_strategy("file_system")

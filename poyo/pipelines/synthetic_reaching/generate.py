"""Synthetic multi-animal primate reaching sessions, written in the temporaldata format.

What is simulated, and why it matters for decoding:

* Behaviour: centre-out sessions (8 targets at 8 cm; hold, instructed delay, reach,
  target hold, return) and random-target sessions (chains of reaches to random
  targets), with minimum-jerk movements, curved paths, tremor, per-animal reaction
  times and speeds, and ~8% failed trials. Cursor position/velocity/acceleration are
  sampled at 100 Hz.
* Shared latent dynamics: one low-dimensional state drives every population: velocity,
  speed, position, a preparatory target signal during the delay, a rotational
  transient after movement onset, and a slow shared gain. Different sessions and
  animals read it out through their own neurons, which is what makes pretraining
  across sessions useful.
* Neurons: each session has its own population (tens to hundreds of units) with
  log-normal baseline rates, cosine velocity tuning with random preferred directions
  and depths, mixed selectivity, untuned units, lead times of 0-150 ms, slow drift of
  excitability, Poisson spiking with a 2 ms absolute refractory period.
* Brain regions (``regions > 1``): units are spread over regions named like motor areas.
  Besides the behaviour state, a slow "communication" state is shared by all regions and
  each region has private dynamics of its own, so a region is partly predictable from
  the others (inter-region) and better from its own units (intra-region). Units carry
  ``units.brain_region``.
* Unlabelled sessions (``unlabelled_every``): spikes only, no cursor, trials or phases,
  like most real recordings (what self-supervised pretraining learns from).
* Splits: valid trials split 70/10/20 (train/valid/test) with a fixed seed; the train
  domain excludes valid and test trials plus a guard gap around them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

GENERATOR_VERSION = "1"
BRAINSET_ID = "synthetic_reaching"
REGION_NAMES = ("M1", "PMd", "S1", "PMv", "SMA", "PPC")
LATENT_NAMES = ("vx", "vy", "speed", "x", "y", "prep_cos", "prep_sin", "rot_a", "rot_b", "gain")


@dataclass(frozen=True)
class SyntheticConfig:
    num_animals: int = 3
    sessions_per_animal: int = 3
    duration_s: float = 240.0
    min_units: int = 40
    max_units: int = 160
    random_target_every: int = 3  # every 3rd session of an animal is random-target
    sampling_rate: float = 100.0
    refractory_s: float = 0.002
    split_gap_s: float = 0.5
    seed: int = 0
    regions: int = 1  # brain regions per session (> 1: shared and private latent dynamics, units.brain_region)
    unlabelled_every: int = 0  # every k-th session of an animal has no behaviour at all (0: none)

    def validate(self) -> None:
        checks = {
            "num_animals": self.num_animals >= 1,
            "sessions_per_animal": self.sessions_per_animal >= 1,
            "duration_s": self.duration_s >= 30.0,
            "min_units": 1 <= self.min_units <= self.max_units,
            "random_target_every": self.random_target_every >= 0,
            "sampling_rate": self.sampling_rate >= 20.0,
            "refractory_s": 0 <= self.refractory_s < 0.05,
            "split_gap_s": self.split_gap_s >= 0,
            "regions": 1 <= self.regions <= len(REGION_NAMES),
            "unlabelled_every": self.unlabelled_every >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"invalid synthetic dataset settings: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)} (durations need >= 30 s)"
            )


def _min_jerk(tau: np.ndarray) -> np.ndarray:
    return 10 * tau**3 - 15 * tau**4 + 6 * tau**5


@dataclass
class _Animal:
    name: str
    reaction_s: float
    reach_s: float
    speed_scale: float
    rate_scale: float


def _animal(cfg: SyntheticConfig, a: int) -> _Animal:
    rng = np.random.default_rng([cfg.seed, 1000 + a])
    return _Animal(
        name=f"monkey_{chr(ord('a') + a % 26)}{'' if a < 26 else a // 26}",
        reaction_s=rng.uniform(0.18, 0.3),
        reach_s=rng.uniform(0.45, 0.65),
        speed_scale=rng.uniform(0.85, 1.15),
        rate_scale=rng.uniform(0.8, 1.25),
    )


class _Trace:
    """Cursor path built from holds and minimum-jerk moves, plus the latent events."""

    def __init__(self, n: int, fs: float):
        self.fs, self.pos = fs, np.zeros((n, 2))
        self.prep = np.zeros((n, 2))
        self.rot = np.zeros((n, 2))
        self.t = np.arange(n) / fs

    def _idx(self, t: float) -> int:
        return int(np.clip(round(t * self.fs), 0, len(self.t)))

    def hold(self, t0: float, t1: float, p: np.ndarray) -> None:
        self.pos[self._idx(t0) : self._idx(t1)] = p

    def move(self, t0: float, t1: float, p0, p1, bend: float) -> None:
        i0, i1 = self._idx(t0), self._idx(t1)
        tau = (self.t[i0:i1] - t0) / (t1 - t0)
        s = _min_jerk(tau)[:, None]
        d = np.asarray(p1) - np.asarray(p0)
        normal = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
        self.pos[i0:i1] = p0 + s * d + bend * np.sin(np.pi * tau)[:, None] * normal

    def prepare(self, t_on: float, t_move: float, direction: float) -> None:
        """Preparatory activity: ramps up after target onset, decays after movement onset."""
        i0, i1 = self._idx(t_on), self._idx(t_move + 0.4)
        tt = self.t[i0:i1]
        ramp = np.where(tt < t_move, 1 - np.exp(-(tt - t_on) / 0.15), np.exp(-(tt - t_move) / 0.1))
        self.prep[i0:i1] += ramp[:, None] * [np.cos(direction), np.sin(direction)]

    def rotate(self, t_move: float, direction: float) -> None:
        """A rotational transient after movement onset whose phase depends on the reach."""
        i0, i1 = self._idx(t_move), self._idx(t_move + 1.0)
        tt = self.t[i0:i1] - t_move
        env = np.exp(-tt / 0.25) * (1 - np.exp(-tt / 0.05))
        ph = 2 * np.pi * 1.5 * tt + direction
        self.rot[i0:i1] += env[:, None] * np.stack([np.cos(ph), np.sin(ph)], 1)


def _center_out(trace: _Trace, animal: _Animal, rng: np.random.Generator, T: float):
    trials, t = [], 0.2
    while True:
        hold = rng.uniform(0.5, 1.0)
        delay = rng.uniform(0.3, 0.6)  # target shown this long before the go cue
        rt = max(0.1, rng.normal(animal.reaction_s, 0.04))
        dur = max(0.3, rng.normal(animal.reach_s, 0.07)) / animal.speed_scale
        target_hold = rng.uniform(0.2, 0.4)
        ret = dur * rng.uniform(1.1, 1.5)
        go, onset = t + hold, t + hold + rt
        reach_end = onset + dur + target_hold
        end = reach_end + ret + 0.1
        if end > T - 0.2:
            break
        k = int(rng.integers(8))
        theta = k * np.pi / 4
        valid = rng.random() > 0.08
        amp = 8.0 if valid else 8.0 * rng.uniform(0.2, 0.6)
        aim = theta if valid else theta + rng.normal(0, 0.6)
        tgt = amp * np.array([np.cos(aim), np.sin(aim)])
        centre = np.zeros(2)
        trace.hold(t, onset, centre)
        trace.prepare(go - delay, onset, theta)
        trace.move(onset, onset + dur, centre, tgt, rng.normal(0, 0.6))
        trace.rotate(onset, theta)
        trace.hold(onset + dur, reach_end, tgt)
        trace.move(reach_end, reach_end + ret, tgt, centre, rng.normal(0, 0.4))
        trace.rotate(reach_end, theta + np.pi)
        trace.hold(reach_end + ret, end + rng.uniform(0.1, 0.3), centre)
        trials.append(
            dict(
                start=t,
                end=end,
                go=go,
                onset=onset,
                reach_end=reach_end,
                target_id=k,
                tx=8 * np.cos(theta),
                ty=8 * np.sin(theta),
                valid=valid,
            )
        )
        t = end + rng.uniform(0.1, 0.3)
    return trials


def _random_target(trace: _Trace, animal: _Animal, rng: np.random.Generator, T: float, reaches_per_trial: int = 4):
    trials, t, p = [], 0.2, np.zeros(2)
    while True:
        start, first_hold_end = t, t + rng.uniform(0.3, 0.6)
        steps, tt, pp = [], first_hold_end, p
        for _ in range(reaches_per_trial):
            while True:
                q = rng.uniform(-10, 10, size=2)
                if np.linalg.norm(q) <= 10 and np.linalg.norm(q - pp) >= 3:
                    break
            dist = np.linalg.norm(q - pp)
            rt = max(0.1, rng.normal(animal.reaction_s, 0.04))
            dur = animal.reach_s * (0.6 + 0.05 * dist) / animal.speed_scale
            steps.append((tt, tt + rt, dur, pp, q))
            tt = tt + rt + dur + rng.uniform(0.1, 0.4)
            pp = q
        end = tt
        if end > T - 0.2:
            break
        trace.hold(start, first_hold_end, p)
        for cue, onset, dur, a, b in steps:
            direction = float(np.arctan2(*(b - a)[::-1]))
            trace.hold(cue, onset, a)
            trace.prepare(cue - 0.2, onset, direction)
            trace.move(onset, onset + dur, a, b, rng.normal(0, 0.5))
            trace.rotate(onset, direction)
            trace.hold(onset + dur, end + 0.3, b)
        valid = rng.random() > 0.05
        trials.append(
            dict(
                start=start,
                end=end,
                go=steps[0][0],
                onset=steps[0][1],
                reach_end=end,
                target_id=-1,
                tx=pp[0],
                ty=pp[1],
                valid=valid,
                first_hold_end=first_hold_end,
            )
        )
        t, p = end + rng.uniform(0.1, 0.3), pp
    trace.hold(t, T, p)
    return trials


def _smooth_noise(rng, n: int, fs: float, tau_s: float, sd: float, dims: int = 1, order: int = 1) -> np.ndarray:
    """Low-pass filtered Gaussian noise with time constant ``tau_s`` and sd ``sd``.

    ``order=1`` is an Ornstein-Uhlenbeck process (rough, fine for slow gains);
    ``order=2`` cascades two stages so that its derivative is smooth too (tremor).
    """
    a = np.exp(-1 / (fs * tau_s))
    x = rng.normal(size=(n, dims))
    for _ in range(order):
        y = np.empty_like(x)
        y[0] = x[0]
        for i in range(1, n):  # n ~ 1e4-1e5; cheap enough
            y[i] = a * y[i - 1] + np.sqrt(1 - a**2) * x[i]
        x = y
    return sd * x / max(float(x.std()), 1e-12)


def _spikes(rng, rates: np.ndarray, fs: float, refractory: float) -> tuple[np.ndarray, np.ndarray]:
    """Poisson spikes from per-bin rates (bins of 1/fs s), with an absolute refractory period.

    A spike is removed when the previous *generated* spike of its unit is closer than
    ``refractory``; kept spikes are then always at least that far apart.
    """
    counts = rng.poisson(rates / fs)
    b, u = np.nonzero(counts)
    c = counts[b, u]
    b, u = np.repeat(b, c), np.repeat(u, c)
    t = (b + rng.random(len(b))) / fs
    order = np.lexsort((t, u))
    t, u = t[order], u[order]
    gap = np.diff(t, prepend=-np.inf)
    same = np.concatenate([[False], u[1:] == u[:-1]])
    keep = ~(same & (gap < refractory))
    t, u = t[keep], u[keep]
    order = np.argsort(t, kind="stable")
    return t[order], u[order]


def simulate_session(cfg: SyntheticConfig, animal_index: int, session_index: int):
    """Build one session as a ``temporaldata.Data`` object (not yet written)."""
    from temporaldata import ArrayDict, Data, Interval, IrregularTimeSeries, RegularTimeSeries

    cfg.validate()
    animal = _animal(cfg, animal_index)
    rng = np.random.default_rng([cfg.seed, animal_index, session_index])
    fs, T = cfg.sampling_rate, float(cfg.duration_s)
    n = int(round(T * fs))
    random_target = (
        cfg.random_target_every > 0 and session_index % cfg.random_target_every == cfg.random_target_every - 1
    )
    task = "random_target_reaching" if random_target else "center_out_reaching"

    trace = _Trace(n, fs)
    trials = (_random_target if random_target else _center_out)(trace, animal, rng, T)
    pos = trace.pos + _smooth_noise(rng, n, fs, 0.04, 0.03, dims=2, order=2)  # tremor
    vel = np.gradient(pos, 1 / fs, axis=0)
    acc = np.gradient(vel, 1 / fs, axis=0)

    # Shared latent state (same definition for every session and animal).
    speed = np.linalg.norm(vel, axis=1, keepdims=True)
    gain = _smooth_noise(rng, n, fs, 20.0, 0.3)
    z = np.concatenate([vel / 30.0, speed / 30.0, pos / 8.0, trace.prep, trace.rot, gain], axis=1)

    # This session's population reading out the latent state.
    U = int(rng.integers(cfg.min_units, cfg.max_units + 1))
    base = np.clip(rng.lognormal(np.log(6.0), 0.7, U) * animal.rate_scale, 0.5, 50.0)
    pd_ = rng.uniform(0, 2 * np.pi, U)
    depth = rng.uniform(0.3, 1.2, U)
    W = np.empty((U, len(LATENT_NAMES)))
    W[:, 0], W[:, 1] = depth * np.cos(pd_), depth * np.sin(pd_)
    W[:, 2] = rng.normal(0.3, 0.3, U)
    W[:, 3:5] = rng.normal(0, 0.3, (U, 2))
    W[:, 5:7] = rng.normal(0, 0.5, (U, 2))
    W[:, 7:9] = rng.normal(0, 0.5, (U, 2))
    W[:, 9] = rng.normal(0.5, 0.2, U)
    untuned = rng.random(U) < 0.15
    W[untuned, :9] *= 0.1
    lag = rng.integers(0, int(0.15 * fs) + 1, U)  # neurons lead movement by 0-150 ms
    zpad = np.concatenate([z, np.repeat(z[-1:], lag.max() + 1, 0)])
    drift = rng.uniform(0, 0.3, U) * np.sin(
        2 * np.pi * np.arange(n)[:, None] / fs / rng.uniform(60, 300, U) + rng.uniform(0, 2 * np.pi, U)
    )
    log_rate = np.log(base) + drift
    for k in np.unique(lag):  # a few distinct lags: one matrix product each
        cols = np.flatnonzero(lag == k)
        log_rate[:, cols] += zpad[k : k + n] @ W[cols].T
    region = _add_regions(cfg, animal_index, session_index, log_rate, fs)
    rates = np.exp(np.minimum(log_rate, np.log(200.0)))
    spike_t, spike_u = _spikes(rng, rates, fs, cfg.refractory_s)

    # Trials, phases, splits.
    tr = {
        k: np.array([d[k] for d in trials])
        for k in ("start", "end", "go", "onset", "reach_end", "target_id", "tx", "ty", "valid")
    }
    valid = tr["valid"].astype(bool)
    trials_iv = Interval(
        start=tr["start"],
        end=tr["end"],
        go_cue_time=tr["go"],
        move_onset_time=tr["onset"],
        target_id=tr["target_id"].astype(np.int64),
        target_x=tr["tx"],
        target_y=tr["ty"],
        is_valid=valid,
        timekeys=["start", "end", "go_cue_time", "move_onset_time"],
    )
    phases = {}
    if random_target:
        fh = np.array([d["first_hold_end"] for d in trials])
        phases["hold_period"] = Interval(tr["start"][valid], fh[valid])
        phases["random_period"] = Interval(fh[valid], tr["end"][valid])
    else:
        phases["hold_period"] = Interval(tr["start"][valid], tr["go"][valid])
        phases["reach_period"] = Interval(tr["go"][valid], tr["reach_end"][valid])
        phases["return_period"] = Interval(tr["reach_end"][valid], tr["end"][valid])
    if (~valid).any():
        phases["invalid"] = Interval(tr["start"][~valid], tr["end"][~valid])

    idx = rng.permutation(np.flatnonzero(valid))
    n_valid, n_test = int(round(0.1 * len(idx))), int(round(0.2 * len(idx)))
    va, te = np.sort(idx[:n_valid]), np.sort(idx[n_valid : n_valid + n_test])
    domain = Interval(0.0, T)
    valid_domain = Interval(tr["start"][va], tr["end"][va])
    test_domain = Interval(tr["start"][te], tr["end"][te])
    held_out = np.sort(np.concatenate([va, te]))
    guard = Interval(
        np.maximum(tr["start"][held_out] - cfg.split_gap_s, 0.0), np.minimum(tr["end"][held_out] + cfg.split_gap_s, T)
    )
    guard = Interval(*_merge(guard.start, guard.end))
    train_domain = domain.difference(guard)

    labelled = not (cfg.unlabelled_every > 0 and (session_index + 1) % cfg.unlabelled_every == 0)
    date = dt.date(2026, 1, 5) + dt.timedelta(days=40 * animal_index + 3 * session_index)
    session_id = f"{animal.name}_{date:%Y%m%d}_{task}"
    channel = rng.choice(96, size=U, replace=True)
    unit_names = np.array([f"ch{c:02d}/unit_{i:03d}" for i, c in enumerate(channel)])
    units = dict(
        id=unit_names, baseline_rate=base, preferred_direction=pd_, tuning_depth=depth, lead_s=lag / fs, untuned=untuned
    )
    if region is not None:
        units["brain_region"] = region
    behaviour = dict(
        cursor=RegularTimeSeries(
            pos=pos.astype(np.float32),
            vel=vel.astype(np.float32),
            acc=acc.astype(np.float32),
            sampling_rate=fs,
            domain_start=0.0,
        ),
        trials=trials_iv,
        movement_phases=Data(**phases, domain="auto"),
    )
    return Data(
        brainset=Data(
            id=BRAINSET_ID,
            origin_version=GENERATOR_VERSION,
            derived_version=GENERATOR_VERSION,
            source="poyo synthetic generator",
            description="Synthetic multi-animal primate reaching (centre-out and random-target).",
        ),
        subject=Data(id=animal.name, species="MACACA_MULATTA"),
        session=Data(id=session_id, task=task, recording_date=str(date)),
        device=Data(id=f"{animal.name}_array", recording_tech="UTAH_ARRAY_SPIKES"),
        units=ArrayDict(**units),
        spikes=IrregularTimeSeries(timestamps=spike_t, unit_index=spike_u.astype(np.int64), domain=Interval(0.0, T)),
        **(behaviour if labelled else {}),
        train_domain=train_domain,
        valid_domain=valid_domain,
        test_domain=test_domain,
        domain=domain,
    )


def _add_regions(cfg: SyntheticConfig, animal_index: int, session_index: int, log_rate: np.ndarray, fs: float):
    """Spread the units over ``cfg.regions`` regions and add a shared communication state and
    each region's private state to their log rates (in place). Returns the units' region
    names, or None for one region. Draws from its own generator, so ``regions=1`` sessions
    are exactly those of earlier versions."""
    if cfg.regions == 1:
        return None
    rng = np.random.default_rng([cfg.seed, animal_index, session_index, 7])
    n, U = log_rate.shape
    region = rng.permutation(np.arange(U) % cfg.regions)  # about equal sizes
    shared = _smooth_noise(rng, n, fs, 0.15, 1.0, dims=3, order=2)
    log_rate += shared @ rng.normal(0, 0.45, (3, U))
    for r in range(cfg.regions):
        cols = np.flatnonzero(region == r)
        private = _smooth_noise(rng, n, fs, 0.1, 1.0, dims=3, order=2)
        log_rate[:, cols] += private @ rng.normal(0, 0.45, (3, len(cols)))
    return np.array([REGION_NAMES[r] for r in region])


def session_arrays(animal: int = 0, session: int = 0, cfg: SyntheticConfig = SyntheticConfig()) -> dict:
    """One simulated session as plain arrays, the way a notebook holds a recording (what
    ``poyo.Decoder`` takes): ``spike_times`` (s) and ``unit_ids`` (one per spike), ``behaviour``
    ``{"cursor.vel": (timestamps, values (n, 2))}``, ``session_id`` and ``subject``."""
    data = simulate_session(cfg, animal, session)
    ids = np.asarray(data.units.id).astype(str)
    t = np.arange(len(data.cursor.vel)) / data.cursor.sampling_rate + data.cursor.domain.start[0]
    return {
        "spike_times": np.asarray(data.spikes.timestamps, np.float64),
        "unit_ids": ids[np.asarray(data.spikes.unit_index)],
        "behaviour": {"cursor.vel": (t, np.asarray(data.cursor.vel, np.float64))},
        "session_id": str(data.session.id),
    }


def _merge(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge overlapping sorted intervals."""
    s, e = [], []
    for a, b in zip(start, end):
        if s and a <= e[-1]:
            e[-1] = max(e[-1], b)
        else:
            s.append(a)
            e.append(b)
    return np.array(s, dtype=np.float64), np.array(e, dtype=np.float64)


def write_session(data, path: Path) -> None:
    """Write atomically: a crash never leaves a half-written session under its real name."""
    path = Path(path)
    tmp = path.with_suffix(".h5.partial")
    with h5py.File(tmp, "w") as f:
        data.to_hdf5(f)
    tmp.replace(path)


def generate(out_dir, cfg: SyntheticConfig = SyntheticConfig(), progress: bool = True) -> list[Path]:
    """Write every session of ``cfg`` to ``out_dir/<session_id>.h5`` plus ``manifest.json``."""
    from tqdm.auto import tqdm

    cfg.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(a, s) for a in range(cfg.num_animals) for s in range(cfg.sessions_per_animal)]
    paths = []
    for a, s in tqdm(jobs, desc="generating synthetic sessions", unit="session", disable=not progress):
        data = simulate_session(cfg, a, s)
        path = out_dir / f"{data.session.id}.h5"
        write_session(data, path)
        paths.append(path)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "files": [p.name for p in paths],
        "sha1": {p.name: _sha1(p) for p in paths},  # a user's file under a generated name is not ours
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return paths


def is_current(out_dir, cfg: SyntheticConfig) -> bool:
    """True if ``out_dir`` holds a complete set generated with exactly these settings."""
    out_dir = Path(out_dir)
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        manifest.get("generator_version") == GENERATOR_VERSION
        and manifest.get("config") == asdict(cfg)
        and all((out_dir / name).is_file() for name in manifest.get("files", []))
    )


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


MARK = ".poyo-generator"  # written first into a folder the generator builds: its files are its own


def foreign_files(out_dir) -> list[Path]:
    """Files in ``out_dir`` that no earlier ``generate`` wrote: not in its manifest, or in it
    but changed since (a user's file saved under a generated name)."""
    out_dir = Path(out_dir)
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text())
        listed = set(manifest.get("files", [])) | {"manifest.json", MARK}
        sums = manifest.get("sha1") or {}
    except (OSError, ValueError):
        listed, sums = set(), {}
    out = []
    for p in out_dir.rglob("*"):
        name = p.relative_to(out_dir).as_posix()
        if p.is_file() and (name not in listed or (name in sums and _sha1(p) != sums[name])):
            out.append(p)
    return sorted(out)


def _clear(folder: Path, *, ours) -> None:
    """Remove ``folder`` (a sibling the generator uses) only if ``ours(folder)``; else raise, naming it."""
    if not folder.exists():
        return
    if not ours(folder):
        raise FileExistsError(
            f"{folder} is in the way of the synthetic set's rebuild, and the generator did not write it; "
            "move it elsewhere (nothing was deleted)"
        )
    shutil.rmtree(folder)


def ensure(out_dir, cfg: SyntheticConfig = SyntheticConfig(), progress: bool = True) -> Path:
    """Generate the set into ``out_dir`` unless an identical one is already there.

    A set generated with other settings is rebuilt in a sibling folder and swapped in, so an
    interrupted run never leaves a mix of old and new sessions. A folder holding anything
    the generator did not write (the user's own files) is never replaced: that raises.
    """
    out_dir = Path(out_dir)
    if is_current(out_dir, cfg):
        return out_dir
    if out_dir.exists():
        foreign = foreign_files(out_dir)
        if foreign:
            shown = ", ".join(str(p.relative_to(out_dir)) for p in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise FileExistsError(
                f"{out_dir} should hold the synthetic set generated with the current settings, but it holds {len(foreign)} file(s) "
                f"the generator did not write ({shown}); they would be deleted with the old set. Move them elsewhere, or point "
                "data_root (or dataset.name) at another folder."
            )
        if progress:
            print(f"{out_dir}: generated with other settings; generating it again")
    staging = out_dir.with_name(out_dir.name + ".building")
    old = out_dir.with_name(out_dir.name + ".old")
    # an interrupted build (the mark is written first) or an earlier swap's leftover: only ours go
    _clear(staging, ours=lambda d: (d / MARK).is_file())
    _clear(old, ours=lambda d: (d / "manifest.json").is_file() and not foreign_files(d))
    staging.mkdir(parents=True)
    (staging / MARK).write_text("written by poyo.pipelines.synthetic_reaching\n")
    generate(staging, cfg, progress=progress)
    if out_dir.exists():
        out_dir.rename(old)
        staging.rename(out_dir)
        shutil.rmtree(old)
    else:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out_dir)
    return out_dir

"""Head direction: POYO's angular error beside the linear and GRU decoders on a small population.

    python benchmarks/head_direction.py                      # about 8 min on 2 CPU cores
    python benchmarks/head_direction.py --units 30 --minutes 15 --extra trainer.max_steps=600

A mouse-like head-direction recording is simulated and imported as a user would
(``poyo.pipelines.arrays.from_spike_times`` with ``head.dir`` in radians, then ``python
train.py dataset=<folder>`` with no config: the angle is found and decoded through its cos
and sin). The head turns as a random walk whose angular velocity is an Ornstein-Uhlenbeck
process (sd ``--turn-sd`` degrees/s, 0.5 s time constant), interrupted by still periods
(``--still`` of the time, in bouts of 1-10 s) where the head barely moves, as a resting
animal's does. Each unit is a head-direction cell: von Mises tuning around a preferred
direction (concentration 1.5-5, peak 10-40 Hz, baseline 0.2-1.5 Hz), Poisson spikes; a share
of them (``1 - --tuned``) fire at a steady rate instead, as the untuned cells a probe also records.
Behaviour is sampled at 50 Hz.

Prints the test table (circular R², mean angular error in degrees of POYO, the window-matched
and causal linear decoders, and the GRU decoders fitted on the same splits), then each one's
mean angular error by how fast the head turns (POYO's from the run's own stitched predictions):
a decoder can lead while the head turns and lag while it is still, which a single mean hides.
Writes ``results.json`` to ``--out``. ``--turn-sd``, ``--kappa`` and ``--peak`` simulate other
animals (faster turns, sharper tuning), each under a folder name of its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# the simulated animal by default (each also a command-line option; a recording simulated
# otherwise is written under a folder name that says how)
TURN_SD = 90.0  # deg/s, sd of the angular velocity while moving
STILL = 0.3  # share of the time in still bouts
KAPPA = (1.5, 5.0)  # range of the tuned units' von Mises concentrations
PEAK = (10.0, 40.0)  # range of the tuned units' peak rates (Hz)


def simulate(
    units: int,
    minutes: float,
    turn_sd: float,
    still: float,
    seed: int,
    tuned: float = 1.0,
    kappa: tuple[float, float] = KAPPA,
    peak: tuple[float, float] = PEAK,
):
    """(per-unit spike times, behaviour timestamps, head direction in radians in [0, 2 pi)).

    ``kappa`` and ``peak``: the ranges the units' von Mises concentrations and peak rates (Hz) are
    drawn from (uniformly)."""
    rng = np.random.default_rng(seed)
    dt, fs = 0.001, 50
    n = int(minutes * 60 / dt)
    moving = np.ones(n, bool)
    i = int(rng.uniform(5, 20) / dt)
    while i < n:  # alternate moving and still bouts; still bouts take about `still` of the time
        length = int(rng.uniform(1, 10) / dt)
        moving[i : i + length] = False
        i += length + int(length * (1 - still) / max(still, 1e-3) * rng.uniform(0.5, 1.5))
    tau, sd = 0.5, np.radians(turn_sd)
    noise = rng.normal(size=n) * sd * np.sqrt(2 * dt / tau)
    omega = np.empty(n)
    w = 0.0
    for k in range(n):  # OU angular velocity, slowed almost to a stop in still bouts
        w += -w * dt / tau + noise[k]
        omega[k] = w if moving[k] else 0.03 * w
    theta = np.cumsum(omega) * dt + rng.uniform(0, 2 * np.pi)
    pref = rng.uniform(0, 2 * np.pi, units)
    kappa, peak, base = rng.uniform(*kappa, units), rng.uniform(*peak, units), rng.uniform(0.2, 1.5, units)
    kappa[rng.permutation(units)[: units - round(tuned * units)]] = 0.0  # untuned units fire at a steady rate
    trains = []
    t = np.arange(n) * dt
    for u in range(units):
        rate = base[u] + peak[u] * np.exp(kappa[u] * (np.cos(theta - pref[u]) - 1))
        trains.append(t[rng.random(n) < rate * dt] + rng.uniform(0, dt))
    step = int(1 / (fs * dt))
    return trains, t[::step], np.mod(theta[::step], 2 * np.pi)


SPEED_BANDS = (0.0, 10.0, 45.0, 90.0, 180.0, np.inf)  # deg/s; below 10: the head is still


def poyo_test_predictions(run_dir: Path):
    """(times, decoded [cos, sin], true [cos, sin], the run's settled config, its readout) of a
    finished run's test samples, stitched as the run scored them (its final weights and stitching centre)."""
    import torch
    import yaml

    from poyo.model import load_pretrained
    from poyo.training.config import RunConfig
    from poyo.training.run import make_datamodule, prepare_data
    from poyo.training.stitch import stitch_predictions

    model = load_pretrained(run_dir / "checkpoints" / "model.pt")
    saved = yaml.safe_load((run_dir / "hparams.yaml").read_text())["config"]
    cfg = RunConfig.from_dict(saved).with_changes(num_workers=0).resolved({"window_length": model.config.window_length})
    dm = make_datamodule(cfg, prepare_data(cfg), model.readout_configs, progress=False)
    dm.attach(model)
    centre = json.loads((run_dir / "test_results.json").read_text()).get("stitch_centre", 0.5)
    with torch.no_grad():
        stitched = stitch_predictions(model, dm.eval_dataloader("test"))
    readout = model.readout_configs[0]
    ((_, s),) = stitched.stitched({readout.name: centre} if isinstance(centre, float) else centre).items()
    keep = s["eval"].astype(bool)
    return s["time"][keep], s["pred"][keep], s["target"][keep], cfg, readout


def errors_by_speed(
    times: np.ndarray, target: np.ndarray, preds: dict[str, tuple[np.ndarray, np.ndarray]]
) -> list[dict]:
    """Mean angular error (degrees) of each decoder in bands of the head's turning speed.

    ``preds``: name -> (times, [cos, sin]) of that decoder's test samples, matched to ``times``
    (every one must be there). The speed is the true angle's gradient over ``times``."""
    true = np.arctan2(target[:, 1], target[:, 0])
    speed = np.degrees(np.abs(np.gradient(np.unwrap(true), times)))
    errors = {}
    for name, (t, pred) in preds.items():
        order = np.argsort(t, kind="stable")
        at = order[np.clip(np.searchsorted(t[order], times), 0, len(t) - 1)]
        if not np.allclose(t[at], times, atol=1e-6):
            raise ValueError(f"{name}'s test samples are not POYO's: cannot compare them sample by sample")
        p = pred[at]
        diff = np.arctan2(p[:, 1], p[:, 0]) - true
        errors[name] = np.degrees(np.abs(np.angle(np.exp(1j * diff))))
    rows = []
    for lo, hi in zip(SPEED_BANDS[:-1], SPEED_BANDS[1:]):
        m = (speed >= lo) & (speed < hi)
        if m.any():
            rows.append(
                {
                    "from": lo,
                    "to": hi if np.isfinite(hi) else None,
                    "share": float(m.mean()),
                    **{k: float(e[m].mean()) for k, e in errors.items()},
                }
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "head_direction")
    p.add_argument("--units", type=int, default=15)
    p.add_argument("--minutes", type=float, default=9.0)
    p.add_argument("--turn-sd", type=float, default=TURN_SD, help="sd of the angular velocity while moving (deg/s)")
    p.add_argument("--still", type=float, default=STILL, help="fraction of the time in still bouts")
    p.add_argument("--tuned", type=float, default=0.6, help="share of the units that are head-direction cells")
    for name, default, what in (("--kappa", KAPPA, "von Mises concentrations (higher: sharper tuning)"),
                                 ("--peak", PEAK, "peak rates (Hz)")):  # fmt: skip
        p.add_argument(name, type=float, nargs=2, default=list(default), metavar=("LOW", "HIGH"),
                       help=f"range of the tuned units' {what}")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="the simulated recording")
    p.add_argument("--model", default="poyo_mini")
    p.add_argument("--extra", nargs="*", default=[], help="more train.py overrides")
    p.add_argument("--no-gru", action="store_true")
    a = p.parse_args()
    from poyo.pipelines.arrays import from_spike_times, write_session

    brainset = f"hd_sim_{a.units}u_{a.tuned:g}t_{a.minutes:g}min_s{a.seed}"
    for name, value, default in (("turn", [a.turn_sd], [TURN_SD]), ("still", [a.still], [STILL]),
                                 ("kappa", a.kappa, list(KAPPA)), ("peak", a.peak, list(PEAK))):  # fmt: skip
        if list(value) != default:  # a recording simulated otherwise gets a folder of its own
            brainset += f"_{name}" + "-".join(f"{v:g}" for v in value)
    data_root = a.out / "data"
    if not (data_root / brainset).is_dir():
        trains, bt, hd = simulate(
            a.units, a.minutes, a.turn_sd, a.still, a.seed, a.tuned, tuple(a.kappa), tuple(a.peak)
        )
        data = from_spike_times(
            trains, [f"hd{u}" for u in range(a.units)], {"head.dir": (bt, hd)}, brainset=brainset, session_id="mouse"
        )
        write_session(data, data_root)
    run_dir = a.out / "runs" / f"{brainset}_{a.model}"
    cmd = [sys.executable, str(ROOT / "train.py"), f"dataset={brainset}", f"model={a.model}", f"data_root={data_root}",
           f"hydra.run.dir={run_dir}", *a.extra]  # fmt: skip
    print(" ".join(cmd), flush=True)
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "stdout.txt").write_text(out.stdout + "\n" + out.stderr)
    if out.returncode != 0:
        sys.exit(f"train.py failed:\n{out.stderr[-3000:]}")
    test = json.loads((run_dir / "test_results.json").read_text())
    result = {
        "brainset": brainset,
        "wall_s": round(time.time() - t0, 1),
        **{k: v for k, v in test.items() if k != "sessions"},
    }
    from poyo.data import Dataset
    from poyo.training.run import linear_baseline

    times, pred, target, cfg, readout = poyo_test_predictions(run_dir)
    ds = Dataset(data_root / brainset, behaviour=[readout.key], validate=False)
    sid = ds.session_ids[0]
    linear = linear_baseline(cfg).evaluate(ds, readout)["window"][sid]  # as train.py fitted it
    others = {"linear (window)": (linear["time"], linear["pred"])}
    if not a.no_gru:
        from poyo.training.gru import GRUBaseline

        res = GRUBaseline(verbose=True).evaluate(ds, readout)
        for variant, key in (("window", "gru"), ("causal", "gru_causal")):
            result[f"{key}_mean_r2"] = res[variant][sid]["r2"]
            result[f"{key}_mean_err_deg"] = res[variant][sid]["angle_error_deg"]
        others["GRU (bidirectional)"] = (res["window"][sid]["time"], res["window"][sid]["pred"])
    result["error_by_speed"] = errors_by_speed(times, target, {"POYO": (times, pred), **others})
    print(f"\n{brainset}: circular R² / mean angular error (degrees), test split")
    for name, key in (("POYO", "poyo"), ("linear (window)", "linear"), ("causal (Wiener)", "causal"),
                      ("GRU (bidirectional)", "gru"), ("GRU (causal)", "gru_causal")):  # fmt: skip
        if f"{key}_mean_r2" in result:
            print(f"  {name:20s} {result[f'{key}_mean_r2']:.3f} / {result[f'{key}_mean_err_deg']:.1f}°")
    names = [k for k in result["error_by_speed"][0] if k not in ("from", "to", "share")]
    print("\nmean angular error (degrees) by the head's turning speed, test split")
    print(f"  {'deg/s':>9} {'share':>6} " + " ".join(f"{n:>19}" for n in names))
    for row in result["error_by_speed"]:
        band = f"{row['from']:g}-{row['to']:g}" if row["to"] is not None else f">{row['from']:g}"
        print(f"  {band:>9} {row['share']:6.1%} " + " ".join(f"{row[n]:19.2f}" for n in names))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"\nresults: {a.out / 'results.json'} (train.py output: {run_dir / 'stdout.txt'})")


if __name__ == "__main__":
    main()

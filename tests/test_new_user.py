"""A new user's first recordings, end to end, as the README's "Your own recording" section tells it:
NWB files (hand velocity; a head-direction angle; velocity with a gap in the tracking) are
imported with `python -m poyo.pipelines.nwb`, and `python train.py dataset=<folder>` trains on
each with no YAML written. Every spike and sample either reaches the session file or is
counted in the import summary; the table, the plot and the readout line say what was decoded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests import raw_fixtures as fx

pytest.importorskip("pynwb")
ROOT = Path(__file__).resolve().parents[1]
FS = 50.0


def tuned_trains(t: np.ndarray, drive: np.ndarray, rng, n_units: int = 16) -> list[np.ndarray]:
    """Poisson spikes whose rate follows ``drive`` (samples x features) through random tuning."""
    weights = rng.normal(size=(n_units, drive.shape[1]))
    rate = 6.0 * np.exp(np.clip(drive @ weights.T, -3, 2))
    trains = []
    for u in range(n_units):
        n = rng.poisson(rate[:, u] / FS)
        trains.append(np.sort(np.repeat(t, n) + rng.uniform(0, 1 / FS, n.sum())))
    return trains


def recordings(raw: Path) -> dict[str, dict]:
    """Three NWB files and what each holds (spike count, samples, spikes the import must cut)."""
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(0.0, 150.0, 1 / FS) + 2.0
    vel = (
        np.stack([np.sin(2 * np.pi * 0.23 * t) + 0.5 * np.sin(2 * np.pi * 0.61 * t), np.cos(2 * np.pi * 0.17 * t)], 1)
        * 0.06
    )  # m/s
    angle = np.angle(np.exp(1j * np.cumsum(rng.normal(0, 0.08, len(t)))))  # wrapped radians
    out = {}

    trains = tuned_trains(t, vel / 0.06, rng)
    trains[0] = np.concatenate([[0.5, 1.0, 1.5], trains[0], [153.0, 155.0]])  # 3 before, 2 after the tracking
    out["lab_vel"] = dict(file=fx.nwb_file(raw / "vel.nwb", trains=trains, electrodes=False, series=[("Velocity", "hand_vel", t, vel)]),
                          arg="hand.vel=Velocity/hand_vel", spikes=sum(map(len, trains)), samples=len(t), before=3, after=2, gaps=0)  # fmt: skip

    trains = tuned_trains(t, np.stack([np.cos(angle), np.sin(angle)], 1) * 1.5, rng)
    out["lab_hd"] = dict(file=fx.nwb_file(raw / "hd.nwb", trains=trains, electrodes=False, series=[(None, "head_dir", t, angle)]),
                         arg="head.dir=head_dir", spikes=sum(map(len, trains)), samples=len(t), before=0, after=0, gaps=0)  # fmt: skip

    keep = (t < 60.0) | (t >= 80.0)  # the tracking was lost for 20 s
    trains = tuned_trains(t, vel / 0.06, rng)
    in_gap = sum(int(((tr >= 60.0) & (tr < 80.0)).sum()) for tr in trains)
    out["lab_gap"] = dict(file=fx.nwb_file(raw / "gap.nwb", trains=trains, electrodes=False, series=[("Velocity", "hand_vel", t[keep], vel[keep])]),
                          arg="hand.vel=Velocity/hand_vel", spikes=sum(map(len, trains)), samples=int(keep.sum()), before=0, after=0, gaps=in_gap)  # fmt: skip
    return out


def run(cmd: list[str], cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_a_new_users_recordings_import_and_train_without_a_config(tmp_path):
    proc = tmp_path / "data" / "processed"
    for brainset, rec in recordings(tmp_path / "raw").items():
        # 1. import, with the README's command
        out = run(
            [
                "-m",
                "poyo.pipelines.nwb",
                str(rec["file"]),
                "-b",
                rec["arg"],
                "--brainset",
                brainset,
                "--processed-dir",
                str(proc),
            ],
            tmp_path,
        )
        session = proc / brainset / f"{rec['file'].stem}.h5"
        with h5py.File(session) as f:
            kept = len(f["spikes"]["timestamps"])
            group, field = rec["arg"].split("=")[0].split(".")
            samples = len(f[group][field])
        cut = rec["before"] + rec["after"] + rec["gaps"]
        assert kept + cut == rec["spikes"] and samples == rec["samples"]  # nothing lost that is not counted
        assert f"16 units, {kept} spikes" in out.stdout
        if cut:
            where = f"{rec['before']} before it, {rec['after']} after it" + (
                f", {rec['gaps']} in its 1 gap" if rec["gaps"] else ""
            )
            assert f"cut {cut} spikes outside the behaviour's time span ({where})" in out.stdout, out.stdout
        else:
            assert "cut " not in out.stdout
        assert f"train with: poyo train dataset={brainset} data_root={proc}" in out.stdout

        # 2. train, with no YAML written
        run_dir = tmp_path / f"run_{brainset}"
        out = run(["-u", str(ROOT / "train.py"), f"dataset={brainset}", f"data_root={proc}", f"hydra.run.dir={run_dir}", "num_workers=0",
                   "batch_size=16", "trainer.min_steps=0", "trainer.max_steps=40", "trainer.check_val_every_n_epoch=1"], tmp_path)  # fmt: skip
        if brainset == "lab_hd":
            assert (
                "readout head_dir_angle: decoding 'head.dir' as 1 angle(s) in radians, through their cos and sin"
                in out.stdout
            )
            assert re.search(r"POYO R2 +linear R2 +causal R2 +POYO err +linear err +causal err", out.stdout)
        else:
            assert (
                "readout hand_velocity_2d: decoding 'hand.vel' (2 dims), normalised by the training split's mean and std"
                in out.stdout
            )
        assert f"1 sessions, 1 subjects, 16 units in {proc / brainset}" in out.stdout
        row = [line for line in out.stdout.splitlines() if line.startswith(f"{brainset}/{rec['file'].stem} ")][
            -1
        ]  # the results table's
        assert len(re.findall(r"-?\d+\.\d{3}", row)) == (
            6 if brainset == "lab_hd" else 3
        )  # POYO and both baselines scored
        result = json.loads((run_dir / "test_results.json").read_text())
        assert [r["session"] for r in result["sessions"]] == [f"{brainset}/{rec['file'].stem}"] and np.isfinite(
            result["linear_mean_r2"]
        )
        assert (run_dir / "test_predictions.png").stat().st_size > 10_000
        assert f"plot: {run_dir / 'test_predictions.png'}" in out.stdout
        # the only warning a user sees here is one about them: 15 s of validation is too short to choose on
        warnings = [line for line in (out.stdout + out.stderr).splitlines() if "warn" in line.lower()]
        assert warnings and all(w.startswith("warning: the validation split holds only") for w in warnings), warnings

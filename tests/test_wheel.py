"""poyo works as a library after a plain (non-editable) install: a wheel built from this tree,
installed into its own folder, used from a folder outside the repository with nothing of the
clone on the path. The presets ship inside the package; the ``poyo`` command trains and
imports; the README's Decoder example runs (fewer steps)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import raw_fixtures as fx

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "data", "outputs", "build", "dist", "__pycache__", ".pytest_cache", "multirun"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(environment, folder outside the repository) with the wheel installed without -e."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=lambda d, names: [n for n in names if n in SKIP or n.endswith(".egg-info")])
    wheels = tmp / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)], check=True, timeout=300
    )
    (wheel,) = wheels.glob("poyo_decoder-*.whl")
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    shutil.rmtree(src)  # nothing of the source tree is left to fall back on
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    env.pop("POYO_DATA_DIR", None)
    away = tmp / "elsewhere"
    away.mkdir()
    return env, away, site


def run(installed, *cmd: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env, away, site = installed
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, cwd=away, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def poyo(installed, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    site = installed[2]
    return run(installed, sys.executable, str(site / "bin" / "poyo"), *args, timeout=timeout)


@pytest.mark.slow
def test_the_installed_package_is_the_wheel_and_ships_its_presets(installed):
    site = installed[2]
    out = run(
        installed,
        sys.executable,
        "-c",
        "import poyo, poyo.configs as c; print(poyo.__file__); print(c.names('model')); print(dir(poyo))",
    )
    where, models, names = out.stdout.splitlines()
    assert where.startswith(str(site)), where  # not the clone
    assert eval(models) == ["poyo_1.3M", "poyo_11.8M", "poyo_mini"]
    assert "Decoder" in names and "load_pretrained" in names and "PackageNotFoundError" not in names
    help_text = poyo(installed, "--help").stdout
    assert all(f"\n  {c} " in help_text for c in ("train", "evaluate", "import"))


@pytest.mark.slow
def test_poyo_train_and_poyo_import_nwb_run_from_any_folder(installed):
    env, away, site = installed
    out = poyo(
        installed,
        "train",
        "dataset.generate.num_animals=1",
        "dataset.generate.sessions_per_animal=1",
        "dataset.generate.duration_s=60",
        "dataset.generate.min_units=10",
        "dataset.generate.max_units=12",
        "trainer.max_steps=4",
        "num_workers=0",
        "batch_size=8",
        "optim.base_lr=2e-5",
        "model.dim=32",
        "hydra.run.dir=run",
    )
    assert "adamw peak lr 0.00016 (= 2e-05 x global batch 8)" in out.stdout, out.stdout[-2000:]
    assert (away / "run" / "checkpoints" / "model.pt").is_file() and (away / "data" / "processed").is_dir()
    import torch

    saved = torch.load(away / "run" / "checkpoints" / "model.pt", weights_only=True)
    assert saved["model"]["dim"] == 32
    rng = np.random.default_rng(0)
    t = np.arange(0, 30, 0.01)
    fx.nwb_file(away / "rec.nwb", trains=fx.spike_trains(4, 0, 30, rng), electrodes=False,
                series=[("Velocity", "hand_vel", t, rng.normal(size=(len(t), 2)))])  # fmt: skip
    out = poyo(installed, "import", "nwb", "rec.nwb", "-b", "hand.vel=Velocity/hand_vel", "--brainset", "lab")
    assert (away / "data" / "processed" / "lab" / "rec.h5").is_file(), out.stdout
    bad = subprocess.run([sys.executable, str(site / "bin" / "poyo"), "train", "batch_size=0"], capture_output=True,
                         text=True, cwd=away, env=env, timeout=200)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: setting batch_size=0")


@pytest.mark.slow
def test_the_readme_decoder_example_runs_from_the_wheel(installed):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## From Python: `poyo.Decoder`", 1)[1], re.S).group(1)
    assert "max_steps=1000" in code
    code = code.replace("max_steps=1000", "max_steps=3").replace("dec.adapt(new)", "dec.adapt(new, max_steps=2)")
    code = code.replace("session_arrays(animal=a)", "session_arrays(animal=a, cfg=SHORT)").replace(
        "session_arrays(animal=3)", "session_arrays(animal=3, cfg=SHORT)"
    )
    setup = (
        "from poyo.pipelines.synthetic_reaching import SyntheticConfig\n"
        "SHORT = SyntheticConfig(duration_s=80.0, min_units=10, max_units=12)\n"
    )
    env, away, site = installed
    script = away / "example.py"
    script.write_text(setup + code.replace("240]]", "80]]"))
    out = run(installed, sys.executable, str(script), timeout=600)
    assert "'r2'" in out.stdout, out.stdout[-2000:]
    assert not [p for p in away.iterdir() if p.name.startswith("poyo-")]

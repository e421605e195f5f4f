"""``python train.py`` works from a clean folder: generates data, checks it, builds the model,
streams tokenized windows and runs the model on them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_train_py_prepares_and_streams(tmp_path, layout):
    cmd = [
        sys.executable, str(ROOT / "train.py"),
        f"data_root={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'out'}", f"layout={layout}",
        "dataset.generate.num_animals=1", "dataset.generate.sessions_per_animal=2", "dataset.generate.duration_s=40",
        "dataset.generate.min_units=10", "dataset.generate.max_units=20", "num_workers=1", "batch_size=8",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 sessions, 1 subjects" in out.stdout
    assert "synthetic_reaching/monkey_a_20260105_center_out_reaching" in out.stdout
    assert "training windows" in out.stdout and "windows/s" in out.stdout
    assert "model poyo_1.3M: 1,254,018 parameters" in out.stdout
    loss = float(out.stdout.split("untrained model on 2 batches: loss ")[1].split(",")[0])
    assert 0.05 < loss < 20  # normalised targets, untrained model: order 1
    assert len(list((tmp_path / "data" / "synthetic_reaching").glob("*.h5"))) == 2


def test_train_py_reports_bad_layout(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "layout=diagonal", f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode != 0 and "layout must be 'packed' or 'padded'" in out.stderr

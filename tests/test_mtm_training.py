"""train.py with objective=mtm|both: runs on multi-region sessions of which some have no
behaviour, in both layouts; scores every task beside the baselines; the pretrained model then
fine-tunes on behaviour; bad settings are refused."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from poyo.model import load_pretrained
from poyo.training.config import SettingError, compose

ROOT = Path(__file__).resolve().parents[1]
DATA = [
    "dataset=synthetic_regions", "dataset.generate.num_animals=1", "dataset.generate.sessions_per_animal=2",
    "dataset.generate.duration_s=60", "dataset.generate.min_units=12", "dataset.generate.max_units=18",
    "num_workers=0", "batch_size=8", "trainer.max_steps=6", "trainer.check_val_every_n_epoch=100",
]  # fmt: skip


def train(tmp_path, name, *overrides):
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"data_root={tmp_path / 'data'}", *DATA, *overrides,
         f"hydra.run.dir={tmp_path / name}"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def mtm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtm")
    return tmp, train(tmp, "mtm", "objective=mtm", "layout=padded")


def test_mtm_run_scores_every_task_beside_both_baselines(mtm_run):
    tmp, out = mtm_run
    results = json.loads((tmp / "mtm" / "mtm_results.json").read_text())
    assert len(results["summary"]) == 2  # both sessions, the one without behaviour too
    for per in results["summary"].values():
        assert set(per) == {"co-bps", "forward bps", "intra-region bps", "inter-region bps"}
        for v in per.values():
            assert {"model", "model_fitted", "glm", "mean_rate", "spikes"} <= set(v) and v["spikes"] > 0
            assert all(math.isfinite(v[m]) for m in ("model", "model_fitted", "glm", "mean_rate"))
    for tasks in results["tasks"].values():
        assert {"inter:M1", "inter:PMd", "inter:S1", "intra:M1", "co_smoothing", "forward"} <= set(tasks)
    assert "Masked modelling on the test split" in out.stdout and "mean over sessions" in out.stdout
    assert not (tmp / "mtm" / "test_results.json").exists()  # no behaviour readout was trained
    model = load_pretrained(tmp / "mtm" / "checkpoints" / "model.pt")
    assert model.config.masked_modelling and model.count_head is not None


def test_an_mtm_model_fine_tunes_on_behaviour(mtm_run):
    tmp, _ = mtm_run
    sessions = json.loads((tmp / "mtm" / "mtm_results.json").read_text())["summary"]
    labelled = sorted(sessions)[0]  # session 0 of the animal has behaviour (unlabelled_every=2)
    out = train(tmp, "ft", "finetune=full", f"finetune.checkpoint={tmp / 'mtm' / 'checkpoints' / 'model.pt'}",
                f"sessions=[{labelled}]")  # fmt: skip
    report = json.loads((tmp / "ft" / "test_results.json").read_text())
    assert [s["session"] for s in report["sessions"]] == [labelled] and "fine-tuning (full)" in out.stdout


def test_both_objectives_together_packed(tmp_path):
    out = train(tmp_path, "both", "objective=both", "layout=packed", "mtm.report_sessions=1")
    report = json.loads((tmp_path / "both" / "test_results.json").read_text())
    assert len(report["sessions"]) == 1  # R² only where there is behaviour
    assert len(json.loads((tmp_path / "both" / "mtm_results.json").read_text())["summary"]) == 1
    assert "scoring masked modelling on 1 of the 2 sessions (mtm.report_sessions)" in out.stdout


def test_objective_and_mask_settings_are_checked():
    with pytest.raises(SettingError, match="setting objective='masked'"):
        compose("objective=masked")
    with pytest.raises(SettingError, match="mtm.neuron_ratio"):
        compose("objective=both", "mtm.neuron_ratio=1.5")
    assert compose("objective=both").mtm.masking("both").schemes == {
        "neuron": 3.0,
        "causal": 1.0,
        "intra_region": 1.0,
        "inter_region": 1.0,
        "decode": 1.0,
    }

"""``python train.py`` works from a clean folder: generates data, trains, evaluates against the
linear baselines, writes checkpoints that load without pickle, and evaluates a checkpoint."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "dataset.generate.num_animals=1", "dataset.generate.sessions_per_animal=2", "dataset.generate.duration_s=60",
    "dataset.generate.min_units=10", "dataset.generate.max_units=20", "num_workers=0", "batch_size=16",
    "trainer.max_steps=12", "trainer.check_val_every_n_epoch=1", "trainer.checkpoint_every_n_steps=5",
]  # fmt: skip


def run(tmp_path, *args, timeout=400):
    cmd = [sys.executable, str(ROOT / "train.py"), f"data_root={tmp_path / 'data'}", *SMALL, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_train_py_trains_evaluates_and_saves(tmp_path, layout):
    out = run(tmp_path, f"hydra.run.dir={tmp_path / 'run'}", f"layout={layout}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 sessions, 1 subjects" in out.stdout and "model poyo_mini" in out.stdout
    assert (
        "POYO R2" in out.stdout
        and "linear R2" in out.stdout
        and "causal R2" in out.stdout
        and "mean over sessions" in out.stdout
    )
    run_dir = tmp_path / "run"
    rows = list(csv.DictReader(open(run_dir / "test_results.csv")))
    assert len(rows) == 2 and all(
        -5 < float(r["poyo_r2"]) <= 1 and 0 < float(r["linear_r2"]) <= 1 and 0 < float(r["causal_r2"]) <= 1
        for r in rows
    )
    assert (run_dir / "test_predictions.png").stat().st_size > 10_000
    assert (run_dir / "metrics.csv").exists()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)  # no pickle needed
    assert ckpt["global_step"] == 12
    assert all(isinstance(i, str) for i in ckpt["state_dict"]["model.unit_emb.vocab"])
    assert ckpt["hyper_parameters"]["model"]["dim"] == 64
    assert not list((run_dir / "checkpoints").glob(".*tmp"))  # atomic writes leave no temporaries

    summary = json.loads((run_dir / "test_results.json").read_text())
    # 2 sessions of 60 s hold 12 s of validation: too little to choose by, the final weights are tested
    assert summary["checkpoint"].startswith("final weights, step 12 (validation holds")
    assert "too little to choose by" in out.stdout
    # model.pt holds the weights the test table was computed with
    ev = run(
        tmp_path,
        f"hydra.run.dir={tmp_path / 'eval'}",
        "mode=evaluate",
        f"checkpoint={run_dir / 'checkpoints' / 'model.pt'}",
        f"layout={layout}",
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    same = json.loads((tmp_path / "eval" / "test_results.json").read_text())["poyo_mean_r2"]
    assert abs(same - summary["poyo_mean_r2"]) < 1e-6


def test_train_py_reports_bad_settings(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "layout=diagonal", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert (
        out.returncode != 0
        and "error: setting layout='diagonal': must be one of ['auto', 'packed', 'padded']" in out.stderr
        and "Traceback" not in out.stderr
    )
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "mode=evaluate", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode != 0 and "mode=evaluate needs checkpoint=PATH" in out.stderr


def test_train_and_evaluate_are_functions_tests_can_call(tmp_path, monkeypatch):
    """train.py only wires the command line to poyo.training.run: the same run, in process
    (training and testing with freed memory kept, as trainer.keep_freed_memory says)."""
    from poyo.training import run
    from poyo.training.config import compose
    from poyo.training.run import evaluate, train
    from poyo.training.stitch import CENTRES

    kept = []
    real = run.freed_memory_kept

    def recording(enabled):
        kept.append(enabled)
        return real(enabled)

    monkeypatch.setattr(run, "freed_memory_kept", recording)
    cfg = compose(f"data_root={tmp_path / 'data'}", *SMALL)
    model_pt = tmp_path / "run" / "checkpoints" / "model.pt"
    cfg_eval = compose(f"data_root={tmp_path / 'data'}", *SMALL, "mode=evaluate", f"checkpoint={model_pt}")
    train(cfg, tmp_path / "run")
    assert kept == [True]
    trained = json.loads((tmp_path / "run" / "test_results.json").read_text())
    saved = torch.load(model_pt, weights_only=True)
    assert len(trained["sessions"]) == 2 and saved["model"]["name"] == "poyo_mini"
    # the stitching centre chosen on validation is the one tested with, and travels with the weights
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert trained["stitch_centre"] in CENTRES
    assert saved["stitch_centres"] == last["stitch_centres"] == {"cursor_velocity_2d": trained["stitch_centre"]}
    evaluate(cfg_eval, tmp_path / "eval")
    again = json.loads((tmp_path / "eval" / "test_results.json").read_text())
    assert abs(again["poyo_mean_r2"] - trained["poyo_mean_r2"]) < 1e-6


def test_the_poyo_command_lists_its_commands_and_refuses_what_it_cannot_run(capsys):
    from poyo.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {c} " in out for c in ("train", "evaluate", "import")) and "poyo train dataset=<folder>" in out
    assert main([]) == 2  # no command: the usage, and a failing status
    assert main(["evaluate", "dataset=lab"]) == 2
    assert "poyo evaluate needs checkpoint=PATH" in capsys.readouterr().err
    assert main(["import", "matlab"]) == 2 and "poyo import nwb|arrays" in capsys.readouterr().err
    assert main(["import", "--help"]) == 0
    assert main(["fit"]) == 2 and "unknown command 'fit'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the pipeline's own parser: --help lists its arguments, under its poyo name
        main(["import", "arrays", "--help"])
    assert "usage: poyo import arrays" in capsys.readouterr().out

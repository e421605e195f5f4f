"""``window_length=auto``, ``half_windows=auto`` and ``batch_size=auto``: a model trained from
scratch on a lab's own recording reads 2 s windows, half of them cut to 1 s, in batches of 21
(about the same spikes per step as 32 of 1 s); presets and masked modelling keep whole 1 s
windows; a model fine-tuned, evaluated or resumed keeps the window (and a resumed run the share
and batch) it was trained with. Settled once, in ``RunConfig.resolved``."""

from dataclasses import replace

import pytest

from poyo.model import POYO, POYOConfig, save_pretrained
from poyo.training.config import SettingError, compose
from poyo.training.guards import plan_differences
from poyo.training.run import linear_baseline, resolve


def settled(cfg, trained=None):
    r = cfg.resolved(trained)
    return r.window_length, r.batch_size


def halves(cfg, trained=None):
    return cfg.resolved(trained).half_windows


def test_a_run_from_scratch_takes_the_recipes_window_and_the_batch_that_keeps_a_steps_spikes():
    # a lab's own recording (the auto recipe): 2 s windows, half of them cut to 1 s (1.5 s on average: 21)
    assert settled(compose("dataset=lab")) == (2.0, 21) and halves(compose("dataset=lab")) == 0.5
    assert halves(compose()) == 0.0  # the quick start's preset: whole 1 s windows
    assert settled(compose()) == (1.0, 32)  # the quick start's preset
    assert settled(compose("dataset=lab", "objective=mtm")) == (1.0, 32)  # masked modelling: tuned on 1 s
    assert settled(compose("dataset=lab", "objective=both")) == (1.0, 32)
    assert halves(compose("dataset=lab", "objective=both")) == 0.0
    # another window than the recipe's: whole windows (the recipe's share was measured on its own window)
    assert settled(compose("dataset=lab", "window_length=4")) == (4.0, 8)
    assert settled(compose("dataset=lab", "window_length=1.5")) == (1.5, 21)
    assert halves(compose("dataset=lab", "window_length=1")) == 0.0
    assert halves(compose("dataset=lab", "window_length=2")) == 0.5  # the recipe's, written out
    assert settled(compose("dataset=lab", "batch_size=8")) == (2.0, 8)
    assert settled(compose("dataset=lab", "window_length=1", "batch_size=64")) == (1.0, 64)
    # a share given is kept: whole windows (16), or half of 1 s windows cut to 0.5 s (0.75 s on average: 43)
    assert settled(compose("dataset=lab", "half_windows=0")) == (2.0, 16)
    assert settled(compose("half_windows=0.5")) == (1.0, 43)
    assert halves(compose("dataset=lab", "dataset.half_windows=0.25")) == 0.25
    cfg = compose("dataset=lab").resolved()
    assert cfg.resolved() is cfg and cfg.is_resolved and not compose().is_resolved
    assert (
        compose().resolved().to_dict()
        == replace(compose(), window_length=1.0, half_windows=0.0, batch_size=32, eval_step=0.25).to_dict()
    )


def test_a_continued_model_keeps_its_window_and_a_resumed_run_its_batch():
    ft = compose("dataset=lab", "finetune=unit_identification", "finetune.checkpoint=pre.pt")
    # a fine-tuned model reads whole windows of the length it learned (the recipe's halves are for training anew)
    assert settled(ft, {"window_length": 2.0}) == (2.0, 16) and halves(ft, {"window_length": 2.0}) == 0.0
    assert settled(ft, {"window_length": 1.0}) == (1.0, 32)
    assert settled(ft, {"window_length": None}) == (1.0, 32)  # a file that does not say: POYO's 1 s
    ev = compose("dataset=lab", "mode=evaluate", "checkpoint=m.pt")
    assert settled(ev, {"window_length": None}) == (1.0, 32) and halves(ev, {"window_length": None}) == 0.0
    # a run resumed from before window_length=auto: its 1 s and 32, not the recipe's 2 s and 16
    assert settled(compose("dataset=lab"), {"window_length": 1.0, "batch_size": 32}) == (1.0, 32)
    assert settled(compose("dataset=lab", "batch_size=12"), {"window_length": 1.0, "batch_size": 32}) == (1.0, 12)
    # a run resumed from before half windows: whole ones, as it trained; one with a share keeps it
    assert halves(compose("dataset=lab"), {"window_length": 2.0, "batch_size": 16}) == 0.0
    assert halves(compose("dataset=lab"), {"window_length": 2.0, "half_windows": 0.5, "batch_size": 21}) == 0.5


def test_a_setting_that_does_not_fit_the_settled_window_is_refused_naming_it():
    for bad, what in (
        ("window_length=abc", "must be auto or a positive number of seconds"),
        ("window_length=0", "must be auto or a positive number of seconds"),
        ("batch_size=0", "must be auto or a positive integer"),
        ("batch_size=big", "must be auto or a positive integer"),
        ("dataset.window_length=-2", "dataset.window_length"),
        ("half_windows=1", r"half_windows=1\.0: must be auto or a share in \[0, 1\)"),
        ("half_windows=-0.1", "half_windows"),
        ("half_windows=half", "half_windows"),
        ("dataset.half_windows=1", r"dataset\.half_windows=1\.0: must be a share in \[0, 1\)"),
    ):
        with pytest.raises(SettingError, match=what):
            compose("dataset=lab", bad)
    cfg = compose("eval_step=1.5")  # fine until the window is settled: 1 s for the quick start's preset
    with pytest.raises(
        SettingError, match=r"eval_step=1\.5: must be auto or a number of seconds in \[0\.01, window_length=1"
    ):
        cfg.resolved()
    assert compose("dataset=lab", "eval_step=1.5").resolved().eval_step == 1.5  # 2 s windows hold it


def test_resolve_reads_the_window_from_the_model_being_fine_tuned_or_evaluated(tmp_path):
    for window in (1.0, 2.0):
        config = replace(POYOConfig.from_name("poyo_mini"), window_length=window)
        path = save_pretrained(POYO(config, unit_ids=["a/u"], session_ids=["a"]), tmp_path / f"{window:g}.pt")
        ft = compose("dataset=lab", "finetune=unit_identification", f"finetune.checkpoint={path}")
        assert (resolve(ft).window_length, resolve(ft).batch_size) == (window, round(32 / window))
        assert resolve(ft).half_windows == 0.0
        ev = compose("dataset=lab", "mode=evaluate", f"checkpoint={path}")
        assert resolve(ev).window_length == window
    missing = compose("dataset=lab", "finetune=full", f"finetune.checkpoint={tmp_path / 'none.pt'}")
    with pytest.raises(FileNotFoundError, match=r"finetune\.checkpoint=.*none\.pt: no such file"):
        resolve(missing)


def test_a_resumed_half_window_run_settles_as_it_started_and_so_passes_the_resume_guard():
    """run.resolve reads the share from the resumed checkpoint's config: a run started from scratch
    with the recipe's half windows resumes with them (no plan difference), and one started before
    half windows resumes on whole windows."""
    started = compose("dataset=lab").resolved()
    assert (started.half_windows, started.batch_size) == (0.5, 21)
    resumed = resolve(compose("dataset=lab"), {"config": started.to_dict()})
    assert (resumed.window_length, resumed.half_windows, resumed.batch_size) == (2.0, 0.5, 21)
    assert plan_differences(started.to_dict(), resumed.to_dict()) == []
    before = {k: v for k, v in started.to_dict().items() if k != "half_windows"}
    before.update(batch_size=16)
    again = resolve(compose("dataset=lab"), {"config": before})
    assert (again.half_windows, again.batch_size) == (0.0, 16)
    assert plan_differences(before, again.to_dict()) == []


def test_an_old_runs_settings_resume_without_a_plan_difference():
    now = compose("dataset=lab").resolved({"window_length": 1.0, "batch_size": 32}).to_dict()
    old = ("window_length", "half_windows")  # recipe keys added since
    saved = {**now, "dataset": {k: v for k, v in now["dataset"].items() if k not in old}}
    assert plan_differences(saved, now) == []
    del saved["half_windows"]  # a run from before half windows trained on whole ones, as now
    assert plan_differences(saved, now) == []
    assert [d.split(":")[0] for d in plan_differences({**now, "half_windows": 0.5}, now)] == ["half_windows"]
    changed = {**saved, "dataset": {**saved["dataset"], "spike_jitter": 0.0}}
    assert [d.split(":")[0] for d in plan_differences(changed, now)] == [
        "dataset.spike_jitter"
    ]  # other recipe keys still count, each by name


def test_the_linear_decoder_spans_at_most_one_second_of_a_longer_window():
    assert linear_baseline(compose("dataset=lab").resolved()).context_s == 1.0
    assert linear_baseline(compose("dataset=lab", "window_length=0.5").resolved()).context_s == 0.5


def test_eval_step_auto_is_a_quarter_of_the_window_and_a_number_is_kept():
    assert compose().resolved().eval_step == 0.25  # the quick start's 1 s windows: as before
    assert compose("dataset=lab").resolved().eval_step == 0.5  # a lab's own recording: 2 s windows
    assert compose("dataset=lab", "window_length=1").resolved().eval_step == 0.25
    assert compose("dataset=lab", "eval_step=0.25").resolved().eval_step == 0.25
    with pytest.raises(SettingError, match=r"eval_step=0\.0: must be auto or a number of seconds"):
        compose("eval_step=0")

"""Files written by poyo 0.1 (format 1, before the typed configs) still load and predict the same.

``tests/fixtures/format_v1/`` holds a ``model.pt`` and a ``last.ckpt`` that ``train.py`` wrote
(a tiny model: dim 16, one layer, 6 steps on one synthetic session) and ``expected.pt``: that
code's predictions for the probe window built below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from poyo import load_pretrained
from poyo.data import Series, Window, collate_packed

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "format_v1"


def probe(model) -> dict:
    """A deterministic window over the model's first session and its units."""
    session = model.session_emb.ids[0]
    units = np.array([u for u in model.unit_emb.ids if u.startswith(session + "/")])
    rng = np.random.default_rng(0)
    n = 300
    t = np.arange(0.005, 1.0, 0.01)
    window = Window(
        session_id=session,
        start=10.0,
        end=11.0,
        unit_ids=units,
        spike_times=np.sort(rng.uniform(0, 1, n)),
        spike_units=rng.integers(0, len(units), n),
        behaviour={"cursor.vel": Series(t, np.zeros((len(t), 2), np.float32), np.arange(len(t)))},
        intervals={
            f"movement_phases.{k}": np.array([[0.2, 0.6]])
            for k in ("hold_period", "reach_period", "return_period", "random_period", "invalid")
        },
    )
    return collate_packed([model.tokenizer()(window)])


def predictions(path) -> torch.Tensor:
    model = load_pretrained(path).eval()
    with torch.no_grad():
        return model(probe(model))["cursor_velocity_2d"]


def test_format_1_files_load_and_predict_as_before():
    expected = torch.load(FIXTURES / "expected.pt", weights_only=True)
    for name in ("model.pt", "last.ckpt"):
        got = predictions(FIXTURES / name)
        torch.testing.assert_close(got, expected[name], rtol=1e-5, atol=1e-6)

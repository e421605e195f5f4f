"""The clone's entry point: ``python train.py [key=value ...]`` is ``poyo train [key=value ...]``
(after ``pip install``, the ``poyo`` command works from any folder).

``mode=train`` (default): prepare the data (the synthetic set is generated when missing),
train POYO, then test the weights chosen on validation on the test split (overlapping
windows stitched), print per-session R² beside the linear baselines, and write the run folder:
``checkpoints/`` (``last.ckpt``, ``best.ckpt``, ``model.pt`` the tested weights),
``metrics.csv``, ``test_results.csv`` and ``test_predictions.png``.
``mode=evaluate checkpoint=PATH``: the same test for a saved model (``poyo evaluate``).
Every setting: ``poyo/training/config.py`` (:class:`RunConfig`); presets: ``poyo/configs``.
"""

import sys

from poyo.cli import run_hydra

if __name__ == "__main__":
    run_hydra(sys.argv[1:], program="train.py")

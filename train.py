"""The one entry point: ``python train.py [overrides]``.

``mode=train`` (default): prepare the data (the synthetic set is generated when missing),
pretrain POYO with Lightning, then evaluate the weights chosen on validation on the test
split by stitching overlapping windows, print per-session R² beside the linear baselines
(window-matched and causal), and write into the run folder: ``checkpoints/`` (``last.ckpt``
every few steps, ``best.ckpt`` by validation R², ``model.pt`` the tested weights),
``metrics.csv``, ``test_results.csv`` and ``test_predictions.png``.

``dataset=<folder>``: any brainset folder below ``data_root`` without a config of its own
(``configs/dataset/auto.yaml``: readout and normalisation from the data).

``mode=evaluate checkpoint=PATH``: the same test evaluation for a saved checkpoint.
``finetune=unit_identification|full|gradual finetune.checkpoint=PATH``: adapt a pretrained
model to the sessions of ``dataset`` (optionally ``sessions=[...]`` and ``train_seconds=N``):
new unit and session ids join the vocabularies, then only the embeddings (unit
identification), everything (full), or embeddings first then everything (gradual) learn.
``resume=true``: continue the latest run from its last checkpoint (same data order,
learning-rate schedule and optimiser state).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from poyo.training.guards import RunLock, check_settings
from poyo.training.loggers import check_logger, quiet_libraries
from poyo.training.run import evaluate, train

CONFIGS = Path(__file__).resolve().parent / "configs"
# errors that describe a problem with the settings or the data, printed without a traceback
USER_ERRORS = (
    ValueError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    FloatingPointError,
    OSError,
    ModuleNotFoundError,
)


def register_brainset_folders(argv: list[str]) -> None:
    """``dataset=NAME`` without ``configs/dataset/NAME.yaml`` names a brainset folder below
    ``data_root``: it gets ``configs/dataset/auto.yaml`` with ``name: NAME`` (readout from
    the sessions' behaviour, normalisation from the training split)."""
    for arg in argv:
        key, eq, value = arg.partition("=")
        if key.lstrip("+~") == "dataset" and eq and value and not (CONFIGS / "dataset" / f"{value}.yaml").exists():
            node = OmegaConf.load(CONFIGS / "dataset" / "auto.yaml")
            node.name = value
            ConfigStore.instance().store(group="dataset", name=value, node=node)


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    try:
        check_settings(cfg)
        check_logger(cfg.logger)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        L.seed_everything(cfg.seed, workers=False, verbose=False)
        with RunLock(run_dir):
            (train if cfg.mode == "train" else evaluate)(cfg, run_dir)
    except USER_ERRORS as e:  # a message for the user, not a traceback (POYO_DEBUG=1 shows it)
        if os.environ.get("POYO_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    register_brainset_folders(sys.argv[1:])
    main()

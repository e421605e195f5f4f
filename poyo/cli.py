"""The ``poyo`` command (installed with the package; ``train.py`` in a clone calls the same).

    poyo train [key=value ...]                 train (the embedded synthetic set by default)
    poyo evaluate checkpoint=PATH [key=value]  test a saved model on a dataset's test split
    poyo import nwb|arrays ...                 convert recordings into session files
    poyo --help                                this list; poyo <command> --help for one

Settings are Hydra overrides of the package's presets, typed and checked by
:class:`poyo.training.config.RunConfig` before any data is read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

USAGE = """usage: poyo <command> [arguments]

commands:
  train      train POYO (default: the embedded synthetic set, a few minutes on a laptop CPU)
  evaluate   test a saved checkpoint or model.pt on a dataset's test split
  import     convert recordings into session files: `poyo import nwb ...` or `poyo import arrays ...`

examples:
  poyo train
  poyo train dataset=<folder> data_root=data/processed      (a brainset folder: readout from the data)
  poyo train model=poyo_1.3M optim=lamb trainer.max_steps=20000 batch_size=128
  poyo train finetune=unit_identification finetune.checkpoint=model.pt dataset=<folder>
  poyo evaluate checkpoint=outputs/<date>/<time>/checkpoints/model.pt dataset=<folder>
  poyo import nwb recordings/*.nwb --brainset mylab --processed-dir data/processed
  poyo train --cfg job                                       (print every setting, resolved)

every setting, its type, default and meaning: poyo/training/config.py (RunConfig)
"""

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


def run_hydra(args: Sequence[str], *, program: str = "poyo train") -> None:
    """Compose the presets with ``args`` (Hydra overrides), build the :class:`RunConfig` and run
    it in its own folder (``hydra.run.dir``, default ``outputs/<date>/<time>``)."""
    import hydra

    from poyo.configs import CONFIG_DIR
    from poyo.training.config import register

    register(args)

    @hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
    def main(hydra_cfg) -> None:
        import lightning as L
        from hydra.core.hydra_config import HydraConfig

        from poyo.training.config import from_hydra
        from poyo.training.guards import RunLock, find_resume
        from poyo.training.loggers import check_logger, quiet_libraries, run_log
        from poyo.training.run import evaluate, train

        quiet_libraries()
        sys.argv = saved  # as the process was started: Lightning relaunches DDP workers from it
        log = None
        try:
            cfg = from_hydra(hydra_cfg)
            check_logger({"name": cfg.logger.name})
            run_dir = HydraConfig.get().runtime.output_dir
            if cfg.mode == "train" and not any(a.startswith("hydra.run.dir=") for a in args):
                resumed = find_resume(cfg.resume, Path(run_dir))
                if resumed is not None and resumed.parent.name == "checkpoints":  # continue in the run's own folder
                    run_dir = resumed.parent.parent
                    print(f"resuming {resumed} in its run folder {run_dir} (metrics.csv continues there)")
            L.seed_everything(cfg.seed, workers=False, verbose=False)
            with RunLock(run_dir), run_log(Path(run_dir) / "run.log") as log:
                (train if cfg.mode == "train" else evaluate)(cfg, run_dir)
        except USER_ERRORS as e:  # a message for the user, not a traceback (POYO_DEBUG=1 shows it)
            if os.environ.get("POYO_DEBUG"):
                raise
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            print(f"error: {msg}", file=sys.stderr)
            if log is not None:  # the run's own log says how it ended too
                with open(log.name, "a", encoding="utf-8") as f:
                    f.write(f"error: {msg}\n")
            sys.exit(1)

    saved = list(sys.argv)
    sys.argv = [program, *args]  # what Hydra parses: the overrides alone
    try:
        main()
    finally:
        sys.argv = saved


def import_main(args: Sequence[str]) -> int:
    """``poyo import nwb|arrays ...``: the pipelines' own command lines."""
    kinds = {"nwb": "poyo.pipelines.nwb", "arrays": "poyo.pipelines.arrays"}
    if not args or args[0] in ("-h", "--help") or args[0] not in kinds:
        print(
            "usage: poyo import nwb|arrays [arguments]\n"
            "  nwb     NWB files (spikes in the units table, behaviour from the processing modules)\n"
            "  arrays  .npz / .mat arrays of spike times or binned counts, with behaviour\n"
            "  poyo import nwb --help (or arrays --help) lists the arguments",
            file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout,
        )
        return 0 if args and args[0] in ("-h", "--help") else 2
    import importlib

    return int(importlib.import_module(kinds[args[0]]).main(list(args[1:]), prog=f"poyo import {args[0]}") or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``poyo`` console command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "--version":
        import poyo

        print(poyo.__version__)
        return 0
    if command == "train":
        run_hydra(rest)
        return 0
    if command == "evaluate":
        if not any(a.startswith("checkpoint=") for a in rest) and not any(a in ("-h", "--help") for a in rest):
            print("error: poyo evaluate needs checkpoint=PATH (a .ckpt or model.pt)", file=sys.stderr)
            return 2
        run_hydra(["mode=evaluate", *rest], program="poyo evaluate")
        return 0
    if command == "import":
        return import_main(rest)
    print(f"error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

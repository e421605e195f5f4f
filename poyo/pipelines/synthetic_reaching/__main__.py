"""python -m poyo.pipelines.synthetic_reaching --processed-dir DIR [options]"""

import argparse
from dataclasses import fields
from pathlib import Path

from poyo.pipelines.synthetic_reaching.generate import BRAINSET_ID, SyntheticConfig, generate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic reaching brainset.")
    parser.add_argument(
        "--processed-dir",
        type=Path,
        default=Path("data/processed"),
        help="sessions go to PROCESSED_DIR/synthetic_reaching/",
    )
    for f in fields(SyntheticConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    cfg = SyntheticConfig(**{f.name: getattr(args, f.name) for f in fields(SyntheticConfig)})
    paths = generate(args.processed_dir / BRAINSET_ID, cfg)
    print(f"wrote {len(paths)} sessions to {args.processed_dir / BRAINSET_ID}")


if __name__ == "__main__":
    main()

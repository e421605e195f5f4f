import sys

from brainsets_pipelines.arrays import main

if __name__ == "__main__":
    sys.exit(main())

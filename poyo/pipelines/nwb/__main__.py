import sys

from poyo.pipelines.nwb import main

if __name__ == "__main__":
    sys.exit(main())

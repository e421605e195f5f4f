import sys

from poyo.pipelines.arrays import main

if __name__ == "__main__":
    sys.exit(main())

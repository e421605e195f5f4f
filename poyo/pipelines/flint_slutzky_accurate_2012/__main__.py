import sys

from poyo.pipelines import flint_slutzky_accurate_2012 as pipeline
from poyo.pipelines.common.runner import run

if __name__ == "__main__":
    sys.exit(run(pipeline))

import sys

from poyo.pipelines import odoherty_sabes_nonhuman_2017 as pipeline
from poyo.pipelines.common.runner import run

if __name__ == "__main__":
    sys.exit(run(pipeline))

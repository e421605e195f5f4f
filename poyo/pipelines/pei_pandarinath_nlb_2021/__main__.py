import sys

from poyo.pipelines import pei_pandarinath_nlb_2021 as pipeline
from poyo.pipelines.common.runner import run

if __name__ == "__main__":
    sys.exit(run(pipeline))

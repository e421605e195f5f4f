import sys

from brainsets_pipelines import pei_pandarinath_nlb_2021 as pipeline
from brainsets_pipelines.common.runner import run

if __name__ == "__main__":
    sys.exit(run(pipeline))

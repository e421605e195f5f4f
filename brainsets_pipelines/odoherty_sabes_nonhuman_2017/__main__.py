import sys

from brainsets_pipelines import odoherty_sabes_nonhuman_2017 as pipeline
from brainsets_pipelines.common.runner import run

if __name__ == "__main__":
    sys.exit(run(pipeline))

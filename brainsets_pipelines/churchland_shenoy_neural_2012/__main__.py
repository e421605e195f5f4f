import sys

from brainsets_pipelines import churchland_shenoy_neural_2012 as pipeline
from brainsets_pipelines.common.runner import run

if __name__ == "__main__":
    sys.exit(run(pipeline))

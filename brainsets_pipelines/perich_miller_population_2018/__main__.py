import sys

from brainsets_pipelines import perich_miller_population_2018 as pipeline
from brainsets_pipelines.common.runner import run

if __name__ == "__main__":
    sys.exit(run(pipeline))

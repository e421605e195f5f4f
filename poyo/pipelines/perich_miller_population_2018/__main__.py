import sys

from poyo.pipelines import perich_miller_population_2018 as pipeline
from poyo.pipelines.common.runner import run

if __name__ == "__main__":
    sys.exit(run(pipeline))

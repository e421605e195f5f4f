# /// brainset-pipeline
# python-version = "3.11"
# dependencies = ["poyo[dev]"]
# ///
"""Entry for ``brainsets prepare perich_miller_population_2018 --local <this folder> --use-active-env``."""

from brainsets_pipelines.common.runner import brainsets_pipeline

Pipeline = brainsets_pipeline("brainsets_pipelines.perich_miller_population_2018")

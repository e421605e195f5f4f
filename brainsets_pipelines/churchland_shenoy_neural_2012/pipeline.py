# /// brainset-pipeline
# python-version = "3.11"
# dependencies = ["poyo[dev]"]
# ///
"""Entry for ``brainsets prepare churchland_shenoy_neural_2012 --local <this folder> --use-active-env``."""

from brainsets_pipelines.common.runner import brainsets_pipeline

Pipeline = brainsets_pipeline("brainsets_pipelines.churchland_shenoy_neural_2012")

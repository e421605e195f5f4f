# /// brainset-pipeline
# python-version = "3.11"
# dependencies = ["poyo[dev]"]
# ///
"""Entry for ``brainsets prepare odoherty_sabes_nonhuman_2017 --local <this folder> --use-active-env``."""

from brainsets_pipelines.common.runner import brainsets_pipeline

Pipeline = brainsets_pipeline("brainsets_pipelines.odoherty_sabes_nonhuman_2017")

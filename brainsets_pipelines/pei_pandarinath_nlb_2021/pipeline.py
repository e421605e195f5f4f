# /// brainset-pipeline
# python-version = "3.11"
# dependencies = ["poyo[dev]"]
# ///
"""Entry for ``brainsets prepare pei_pandarinath_nlb_2021 --local <this folder> --use-active-env``."""

from brainsets_pipelines.common.runner import brainsets_pipeline

Pipeline = brainsets_pipeline("brainsets_pipelines.pei_pandarinath_nlb_2021")

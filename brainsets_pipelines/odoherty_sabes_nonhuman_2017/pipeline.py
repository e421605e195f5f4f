# /// brainset-pipeline
# python-version = "3.11"
# dependencies = ["poyo-decoder[dev]"]
# ///
"""Entry for ``brainsets prepare odoherty_sabes_nonhuman_2017 --local brainsets_pipelines/odoherty_sabes_nonhuman_2017 --use-active-env``.

The pipeline itself is ``poyo.pipelines.odoherty_sabes_nonhuman_2017`` (also ``python -m poyo.pipelines.odoherty_sabes_nonhuman_2017``);
this folder holds only what the brainsets command line looks for.
"""

from poyo.pipelines.common.runner import brainsets_pipeline

Pipeline = brainsets_pipeline("poyo.pipelines.odoherty_sabes_nonhuman_2017")

# /// brainset-pipeline
# python-version = "3.11"
# dependencies = ["poyo-decoder[dev]"]
# ///
"""Entry for ``brainsets prepare pei_pandarinath_nlb_2021 --local brainsets_pipelines/pei_pandarinath_nlb_2021 --use-active-env``.

The pipeline itself is ``poyo.pipelines.pei_pandarinath_nlb_2021`` (also ``python -m poyo.pipelines.pei_pandarinath_nlb_2021``);
this folder holds only what the brainsets command line looks for.
"""

from poyo.pipelines.common.runner import brainsets_pipeline

Pipeline = brainsets_pipeline("poyo.pipelines.pei_pandarinath_nlb_2021")

# /// brainset-pipeline
# python-version = "3.11"
# dependencies = ["poyo-decoder[dev]"]
# ///
"""Entry for ``brainsets prepare perich_miller_population_2018 --local brainsets_pipelines/perich_miller_population_2018 --use-active-env``.

The pipeline itself is ``poyo.pipelines.perich_miller_population_2018`` (also ``python -m poyo.pipelines.perich_miller_population_2018``);
this folder holds only what the brainsets command line looks for.
"""

from poyo.pipelines.common.runner import brainsets_pipeline

Pipeline = brainsets_pipeline("poyo.pipelines.perich_miller_population_2018")

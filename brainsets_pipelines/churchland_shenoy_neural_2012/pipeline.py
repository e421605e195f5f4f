# /// brainset-pipeline
# python-version = "3.11"
# dependencies = ["poyo-decoder[dev]"]
# ///
"""Entry for ``brainsets prepare churchland_shenoy_neural_2012 --local brainsets_pipelines/churchland_shenoy_neural_2012 --use-active-env``.

The pipeline itself is ``poyo.pipelines.churchland_shenoy_neural_2012`` (also ``python -m poyo.pipelines.churchland_shenoy_neural_2012``);
this folder holds only what the brainsets command line looks for.
"""

from poyo.pipelines.common.runner import brainsets_pipeline

Pipeline = brainsets_pipeline("poyo.pipelines.churchland_shenoy_neural_2012")

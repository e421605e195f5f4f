# /// brainset-pipeline
# python-version = "3.11"
# dependencies = ["poyo-decoder[dev]"]
# ///
"""Entry for ``brainsets prepare flint_slutzky_accurate_2012 --local brainsets_pipelines/flint_slutzky_accurate_2012 --use-active-env``.

The pipeline itself is ``poyo.pipelines.flint_slutzky_accurate_2012`` (also ``python -m poyo.pipelines.flint_slutzky_accurate_2012``);
this folder holds only what the brainsets command line looks for.
"""

from poyo.pipelines.common.runner import brainsets_pipeline

Pipeline = brainsets_pipeline("poyo.pipelines.flint_slutzky_accurate_2012")

"""Project pipelines.

``demo_cohort`` writes the simulated demo cohort (``make demo`` runs it once); ``train`` is the
whole training chain (``__default__``). Stages of ``train`` land in order as they are built:
``data_engineering`` -> ``gene_vae`` -> ``contrastive`` -> ``evaluation`` -> ``reporting``.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from tpir_kedro.pipelines import data_engineering, demo_cohort, gene_vae


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {
        "demo_cohort": demo_cohort.create_pipeline(),
        "data_engineering": data_engineering.create_pipeline(),
        "gene_vae": gene_vae.create_pipeline(),
    }
    pipelines["train"] = pipelines["data_engineering"] + pipelines["gene_vae"]
    pipelines["__default__"] = pipelines["train"]
    return pipelines

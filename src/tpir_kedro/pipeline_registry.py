"""Project pipelines.

``demo_cohort`` writes the simulated demo cohort (``make demo`` runs it once); ``train`` is the
whole training chain (``__default__``): ``data_engineering`` -> ``gene_vae`` -> ``contrastive`` ->
``evaluation`` -> ``reporting``. ``predict`` applies a trained model to a new slide.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from tpir_kedro.pipelines import (
    contrastive,
    data_engineering,
    demo_cohort,
    evaluation,
    gene_vae,
    predict,
    reporting,
)

TRAIN_STAGES = ("data_engineering", "gene_vae", "contrastive", "evaluation", "reporting")


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {
        "demo_cohort": demo_cohort.create_pipeline(),
        "data_engineering": data_engineering.create_pipeline(),
        "gene_vae": gene_vae.create_pipeline(),
        "contrastive": contrastive.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
        "reporting": reporting.create_pipeline(),
        "predict": predict.create_pipeline(),
    }
    pipelines["train"] = sum((pipelines[p] for p in TRAIN_STAGES), Pipeline([]))
    pipelines["__default__"] = pipelines["train"]
    return pipelines

"""Project pipelines.

``demo_cohort`` writes the simulated demo cohort (``make demo`` runs it once); ``train`` is the
whole training chain (``__default__``): ``data_engineering`` -> ``gene_vae`` -> ``contrastive`` ->
``evaluation`` -> ``reporting``. ``predict`` applies a trained model to a new slide.

Image training is a grid of namespaced cells declared by the run's parameters
(:mod:`tpir_kedro.evaluation.grid`, :mod:`tpir_kedro.grid_hooks`): ``kedro run --namespaces=<cell>`` runs one.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from tpir_kedro.grid_hooks import current_grid
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
        "contrastive": contrastive.create_pipeline(current_grid()),
        "evaluation": evaluation.create_pipeline(),
        "reporting": reporting.create_pipeline(),
        "predict": predict.create_pipeline(),
    }
    pipelines["train"] = sum((pipelines[p] for p in TRAIN_STAGES), Pipeline([]))
    pipelines["__default__"] = pipelines["train"]
    return pipelines

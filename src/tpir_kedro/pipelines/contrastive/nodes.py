"""Nodes of the ``contrastive`` pipeline: image encoders per variant, fold and seed.

Fold models exist to be evaluated: what leaves this pipeline are their frozen features (and
joint-space embeddings); their weights stay in the resumable checkpoint folder. The all-patient
models are what users keep (packaged with a model card by the evaluation pipeline).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.evaluation.folds import ALL_PATIENTS
from tpir_kedro.imaging.patch_store import PatchStore
from tpir_kedro.models.training_config import TrainingConfig
from tpir_kedro.models.variants import VariantSpec, parse_variants
from tpir_kedro.pipelines.contrastive.fold_inputs import FoldInputs, build_fold_inputs, check_patch_store

if TYPE_CHECKING:
    from tpir_kedro.models.training import TrainedImageModel, TrainingData

# torch and Lightning are imported where a node trains or embeds, not with the pipeline: `kedro viz`,
# `kedro jupyter` and `kedro registry` only need the pipeline's shape.

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "step", "train_loss_step", "train_loss_epoch", "variant", "fold", "seed"]


@dataclass
class FoldEmbeddings:
    """A frozen fold model's outputs. ``features``: (n_train + n_test, d) backbone features, training
    spots first then held-out spots (FoldInputs order); ``image_joint``: (n_test, e) held-out image
    embeddings in the joint space and ``gene_joint``: (n_train, e) training spots' gene-side
    embeddings (contrastive variants only, else None)."""

    variant: str
    fold: str
    seed: int
    features: np.ndarray
    image_joint: np.ndarray | None
    gene_joint: np.ndarray | None
    train_seconds: float
    fingerprint: str


def contrastive_training_inputs(
    cohort: AnnData, patient_folds: pd.DataFrame, fold_genes: dict, gene_encoders: dict, patch_store: PatchStore, evaluation: dict
) -> dict[str, FoldInputs]:
    """Every evaluated fold's inputs, plus ``all`` (every patient) for the final models."""
    check_patch_store(cohort, patch_store)
    folds = list(pd.unique(patient_folds["fold"]))
    if evaluation.get("final_models", True):
        folds.append(ALL_PATIENTS)
    inputs = {}
    for fold in folds:
        inputs[fold] = build_fold_inputs(cohort, patch_store, patient_folds, fold_genes, gene_encoders, fold, int(evaluation["n_top_genes"]))
        f = inputs[fold]
        logger.info("fold %s: %d training spots with a patch (%d labelled), %d held-out spots", fold, len(f.train_obs), int((f.train_label_codes >= 0).sum()), len(f.test_obs))
    return inputs


def _training_data(variant: VariantSpec, inputs: FoldInputs, store: PatchStore) -> TrainingData:
    from tpir_kedro.models.patch_data import reopenable_memmap
    from tpir_kedro.models.training import TrainingData

    genes = z = None
    if variant.objective == "contrastive":
        if variant.gene_input == "log_hvg":
            genes = inputs.log_hvg
        elif variant.gene_input in inputs.embeddings:
            genes = inputs.embeddings[variant.gene_input]
        else:
            raise ValueError(
                f"variant {variant.name!r} needs the {variant.gene_input} gene encoder of fold {inputs.fold}, which was not "
                f"trained (have {sorted(inputs.embeddings)}; scANVI needs labelled training spots)"
            )
        z = genes if variant.gene_input != "log_hvg" else None
    probs = inputs.class_probs if variant.use_class_probs else None
    return TrainingData(
        patches=reopenable_memmap(store.patches), rows=inputs.train_rows,  # ddp_spawn sends a path, not the pixels
        genes=genes, z=z, labels=inputs.train_label_codes,
        probs=probs, patients=inputs.train_patient_codes, n_classes=len(TISSUE_CLASSES),
    )


def _embed(trained: TrainedImageModel, inputs: FoldInputs, store: PatchStore, config: TrainingConfig, seed: int) -> FoldEmbeddings:
    from tpir_kedro.models.inference import embed_patches, project

    rows = np.concatenate([inputs.train_rows, inputs.test_rows])
    module = trained.module
    contrastive = module is not None and hasattr(module, "image_head")
    features, _ = embed_patches(trained.encoder, store.patches, rows, batch_size=config.eval_batch_size)
    image_joint = gene_joint = None
    if contrastive and len(inputs.test_rows):
        # The held-out patches' features are already computed: project them, not the pixels again.
        image_joint = project(module.image_head, features[len(inputs.train_rows):])
        genes = inputs.log_hvg if trained.variant.gene_input == "log_hvg" else inputs.embeddings[trained.variant.gene_input]
        gene_joint = project(module.gene_head, genes)
    return FoldEmbeddings(trained.variant.name, inputs.fold, seed, features, image_joint, gene_joint, trained.seconds, trained.fingerprint)


def _trainable(specs: list[VariantSpec], inputs: FoldInputs) -> list[VariantSpec]:
    """Variants that need labels are skipped (logged) where no training spot with a patch has one --
    e.g. the real HER2ST sections with full-resolution images, none of which is labelled."""
    if (inputs.train_label_codes >= 0).any():
        return specs
    for variant in specs:
        if variant.needs_labels:
            logger.warning("variant %s skipped in fold %s: it needs tissue labels and no training spot with a patch has one", variant.name, inputs.fold)
    return [v for v in specs if not v.needs_labels]


def _train(variant: VariantSpec, inputs: FoldInputs, store: PatchStore, root: Path, config: TrainingConfig, seed: int) -> TrainedImageModel:
    from tpir_kedro.models.training import train_image_model

    start = time.perf_counter()
    trained = train_image_model(variant, config, _training_data(variant, inputs, store), seed, root / variant.name / inputs.fold)
    state = "reused" if trained.reused else ("resumed" if trained.resumed else ("trained" if variant.trains else "untrained baseline"))
    logger.info("variant %s, fold %s, seed %d: %s in %.1f s", variant.name, inputs.fold, seed, state, time.perf_counter() - start)
    return trained


def _history_rows(trained: TrainedImageModel, fold: str, seed: int) -> pd.DataFrame:
    if trained.history.empty:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    return trained.history.assign(variant=trained.variant.name, fold=fold, seed=seed)


def fold_image_embeddings(
    contrastive_inputs: dict[str, FoldInputs], patch_store: PatchStore, checkpoint_root: Path, contrastive: dict, variants: dict, evaluation: dict
) -> tuple[dict[str, FoldEmbeddings], pd.DataFrame]:
    """Train every variant on every evaluated fold and seed; return frozen features and the losses."""
    config = TrainingConfig.from_dict(contrastive)
    specs = parse_variants(variants, evaluation.get("variants"))
    out, history = {}, []
    for fold, inputs in contrastive_inputs.items():
        if fold == ALL_PATIENTS:
            continue
        for seed in evaluation.get("seeds", [0]):
            for variant in _trainable(specs, inputs):
                trained = _train(variant, inputs, patch_store, Path(checkpoint_root), config, int(seed))
                out[f"{variant.name}/{fold}/{seed}"] = _embed(trained, inputs, patch_store, config, int(seed))
                history.append(_history_rows(trained, fold, int(seed)))
    # A header even when nothing trained (only imagenet/random): a column-less CSV does not read back.
    return out, pd.concat(history, ignore_index=True) if history else pd.DataFrame(columns=HISTORY_COLUMNS)


def final_image_models(
    contrastive_inputs: dict[str, FoldInputs], patch_store: PatchStore, checkpoint_root: Path, contrastive: dict, variants: dict, evaluation: dict
) -> dict[str, dict]:
    """Each variant trained on every patient (first seed): the models users keep, with their
    training patients' features for the final probe."""
    if ALL_PATIENTS not in contrastive_inputs:
        logger.info("evaluation.final_models is false: no all-patient models")
        return {}
    from tpir_kedro.models.inference import embed_patches

    config = TrainingConfig.from_dict(contrastive)
    inputs = contrastive_inputs[ALL_PATIENTS]
    seed = int(evaluation.get("seeds", [0])[0])
    models = {}
    for variant in _trainable(parse_variants(variants, evaluation.get("variants")), inputs):
        trained = _train(variant, inputs, patch_store, Path(checkpoint_root), config, seed)
        features, _ = embed_patches(trained.encoder, patch_store.patches, inputs.train_rows, batch_size=config.eval_batch_size)
        models[variant.name] = {"trained": trained, "features": features, "config": config, "seed": seed}
    return models

"""Nodes of the ``contrastive`` pipeline: image encoders per variant, fold and seed.

Fold models exist to be evaluated: what leaves this pipeline are their representations (and
joint-space embeddings); their weights stay in the resumable checkpoint folder. The all-patient
models are what users keep (packaged with a model card by the evaluation pipeline).

Representation spaces: :mod:`~tpir_kedro.evaluation.fold_embeddings`. In the frozen regime the backbone's features of every patch under several views are computed once per
seed and cached under the checkpoint folder (``feature_views/``), shared by every fold and variant.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.evaluation.fold_embeddings import ADAPTER, BACKBONE, FoldEmbeddings
from tpir_kedro.evaluation.fold_inputs import FoldInputs, build_fold_inputs, check_patch_store
from tpir_kedro.evaluation.folds import ALL_PATIENTS
from tpir_kedro.imaging.patch_store import PatchStore
from tpir_kedro.models.image_runs import ImageRuns, check_evaluation_parameters
from tpir_kedro.models.training_config import TrainingConfig
from tpir_kedro.models.variants import VariantSpec, parse_variants

if TYPE_CHECKING:
    from tpir_kedro.models.training import TrainedImageModel, TrainingData

# torch and Lightning are imported where a node trains or embeds, not with the pipeline: `kedro viz`,
# `kedro jupyter` and `kedro registry` only need the pipeline's shape.

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "step", "train_loss_step", "train_loss_epoch", "variant", "fold", "seed"]


def contrastive_training_inputs(
    cohort: AnnData,
    patient_folds: pd.DataFrame,
    fold_genes: dict,
    gene_encoders: dict,
    patch_store: PatchStore,
    evaluation: dict,
    image_runs: dict,
) -> dict[str, FoldInputs]:
    """Every evaluated fold's inputs, plus ``all`` (every patient) for the final models."""
    check_evaluation_parameters(evaluation)
    check_patch_store(cohort, patch_store)
    folds = list(pd.unique(patient_folds["fold"]))
    if ImageRuns.from_dict(image_runs).final_models:
        folds.append(ALL_PATIENTS)
    inputs = {}
    for fold in folds:
        inputs[fold] = build_fold_inputs(
            cohort,
            patch_store,
            patient_folds,
            fold_genes,
            gene_encoders,
            fold,
            int(evaluation["n_top_genes"]),
        )
        f = inputs[fold]
        logger.info(
            "fold %s: %d training spots with a patch (%d labelled), %d held-out spots",
            fold,
            len(f.train_obs),
            int((f.train_label_codes >= 0).sum()),
            len(f.test_obs),
        )
    return inputs


def feature_views(
    config: TrainingConfig, store: PatchStore, checkpoint_root: Path, seed: int
) -> np.ndarray | None:
    """The frozen regime's cached (n_store, V, D) backbone features of every patch (None otherwise)."""
    if config.regime != "frozen":
        return None
    from tpir_kedro.models.feature_views import cached_feature_views
    from tpir_kedro.models.image_encoders import build_image_encoder
    from tpir_kedro.models.patch_data import reopenable_memmap

    if config.threads:
        import torch

        torch.set_num_threads(int(config.threads))
    encoder = build_image_encoder(
        config.backbone, config.init, config.weights_path if config.init != "random" else None
    )
    views = cached_feature_views(
        Path(checkpoint_root) / "feature_views",
        encoder,
        store.patches,
        int(config.feature_views),
        dict(config.augment),
        seed,
        batch_size=config.eval_batch_size,
    )
    return reopenable_memmap(views)


def _training_data(
    variant: VariantSpec, inputs: FoldInputs, store: PatchStore, views: np.ndarray | None = None
) -> TrainingData:
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
        # ddp_spawn sends a path, not the pixels
        patches=views if views is not None and variant.trains else reopenable_memmap(store.patches),
        rows=inputs.train_rows,
        genes=genes,
        z=z,
        labels=inputs.train_label_codes,
        probs=probs,
        patients=inputs.train_patient_codes,
        n_classes=len(TISSUE_CLASSES),
    )


def representations(
    trained: TrainedImageModel,
    store: PatchStore,
    rows: np.ndarray,
    config: TrainingConfig,
    views: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Space -> (len(rows), d): the representations of ``rows``' un-augmented patches that the probes
    read. The frozen regime's backbone features are its cached view 0 (the same numbers a backbone
    pass gives), and its backbone is not a space of its own: it is the untouched initialisation.
    """
    from tpir_kedro.models.inference import embed_patches, project

    if views is not None and trained.variant.trains:  # views exist in the frozen regime only
        return {ADAPTER: project(trained.adapter, np.asarray(views[np.asarray(rows), 0]))}
    backbone, _ = embed_patches(trained.encoder, store.patches, rows, batch_size=config.eval_batch_size)
    if trained.adapter is None:
        return {BACKBONE: backbone}
    return {BACKBONE: backbone, ADAPTER: project(trained.adapter, backbone)}


def _embed(
    trained: TrainedImageModel,
    inputs: FoldInputs,
    store: PatchStore,
    config: TrainingConfig,
    seed: int,
    views: np.ndarray | None = None,
) -> FoldEmbeddings:
    from tpir_kedro.models.inference import project

    rows = np.concatenate([inputs.train_rows, inputs.test_rows])
    module = trained.module
    features = representations(trained, store, rows, config, views)
    image_joint = gene_joint = None
    if module is not None and hasattr(module, "image_head") and len(inputs.test_rows):
        # The held-out patches' representations are already computed: project them, not the pixels again.
        image_joint = project(module.image_head, features[ADAPTER][len(inputs.train_rows) :])
        genes = (
            inputs.log_hvg
            if trained.variant.gene_input == "log_hvg"
            else inputs.embeddings[trained.variant.gene_input]
        )
        gene_joint = project(module.gene_head, genes)
    return FoldEmbeddings(
        trained.variant.name,
        inputs.fold,
        seed,
        features,
        image_joint,
        gene_joint,
        trained.seconds,
        trained.fingerprint,
        trained.steps,
    )


def _trainable(specs: list[VariantSpec], inputs: FoldInputs) -> list[VariantSpec]:
    """Variants that need labels are skipped (logged) where no training spot with a patch has one --
    e.g. the real HER2ST sections with full-resolution images, none of which is labelled.
    """
    if (inputs.train_label_codes >= 0).any():
        return specs
    for variant in specs:
        if variant.needs_labels:
            logger.warning(
                "variant %s skipped in fold %s: it needs tissue labels and no training spot with a patch has one",
                variant.name,
                inputs.fold,
            )
    return [v for v in specs if not v.needs_labels]


def _train(
    variant: VariantSpec,
    inputs: FoldInputs,
    store: PatchStore,
    root: Path,
    config: TrainingConfig,
    seed: int,
    views: np.ndarray | None = None,
) -> TrainedImageModel:
    from tpir_kedro.models.training import train_image_model

    start = time.perf_counter()
    trained = train_image_model(
        variant,
        config,
        _training_data(variant, inputs, store, views),
        seed,
        root / variant.name / inputs.fold,
    )
    state = (
        "reused"
        if trained.reused
        else ("resumed" if trained.resumed else ("trained" if variant.trains else "untrained baseline"))
    )
    steps = f", {trained.steps} steps" if variant.trains else ""
    logger.info(
        "variant %s, fold %s, seed %d: %s in %.1f s (%s regime%s)",
        variant.name,
        inputs.fold,
        seed,
        state,
        time.perf_counter() - start,
        config.regime,
        steps,
    )
    return trained


def _history_rows(trained: TrainedImageModel, fold: str, seed: int) -> pd.DataFrame:
    if trained.history.empty:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    return trained.history.assign(variant=trained.variant.name, fold=fold, seed=seed)


def _stack_histories(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The runs' loss rows in one table; untrained baselines add none. A header even when nothing
    trained (only imagenet/random): a column-less CSV does not read back.
    """
    frames = [f for f in frames if not f.empty]  # pandas deprecates concatenating empty frames
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=HISTORY_COLUMNS)


def fold_image_embeddings(
    contrastive_inputs: dict[str, FoldInputs],
    patch_store: PatchStore,
    checkpoint_root: Path,
    contrastive: dict,
    variants: dict,
    image_runs: dict,
) -> tuple[dict[str, FoldEmbeddings], pd.DataFrame]:
    """Train every variant on every evaluated fold and seed; return their representations and losses."""
    config, runs = TrainingConfig.from_dict(contrastive), ImageRuns.from_dict(image_runs)
    specs = parse_variants(variants, runs.variants)
    out, history = {}, []
    folds = {fold: inputs for fold, inputs in contrastive_inputs.items() if fold != ALL_PATIENTS}
    for seed in runs.seeds:
        views = (
            feature_views(config, patch_store, checkpoint_root, int(seed))
            if folds and any(v.trains for v in specs)
            else None
        )
        for fold, inputs in folds.items():
            for variant in _trainable(specs, inputs):
                trained = _train(
                    variant, inputs, patch_store, Path(checkpoint_root), config, int(seed), views
                )
                out[f"{variant.name}/{fold}/{seed}"] = _embed(
                    trained, inputs, patch_store, config, int(seed), views
                )
                history.append(_history_rows(trained, fold, int(seed)))
    return out, _stack_histories(history)


def final_image_models(
    contrastive_inputs: dict[str, FoldInputs],
    patch_store: PatchStore,
    checkpoint_root: Path,
    contrastive: dict,
    variants: dict,
    image_runs: dict,
) -> dict[str, dict]:
    """Each variant trained on every patient (first seed): the models users keep, with their
    training patients' features for the final probe.
    """
    if ALL_PATIENTS not in contrastive_inputs:
        logger.info("image_runs.final_models is false: no all-patient models")
        return {}
    config, runs = TrainingConfig.from_dict(contrastive), ImageRuns.from_dict(image_runs)
    inputs = contrastive_inputs[ALL_PATIENTS]
    seed = runs.seeds[0]
    specs = _trainable(parse_variants(variants, runs.variants), inputs)
    views = (
        feature_views(config, patch_store, checkpoint_root, seed) if any(v.trains for v in specs) else None
    )
    models = {}
    for variant in specs:
        trained = _train(variant, inputs, patch_store, Path(checkpoint_root), config, seed, views)
        spaces = representations(trained, patch_store, inputs.train_rows, config, views)
        space = ADAPTER if ADAPTER in spaces else BACKBONE  # what the packaged model's probe reads
        models[variant.name] = {
            "trained": trained,
            "features": spaces[space],
            "space": space,
            "config": config,
            "seed": seed,
        }
    return models


def training_runs(training_history: pd.DataFrame, final_image_models: dict[str, dict]) -> pd.DataFrame:
    """One row per trained run -- the folds' and the final models' (fold ``all``): optimiser steps,
    epochs and whether the loss levelled off.
    """
    from tpir_kedro.models.training_runs import summarise_training_runs

    finals = [_history_rows(m["trained"], ALL_PATIENTS, int(m["seed"])) for m in final_image_models.values()]
    runs = summarise_training_runs(_stack_histories([training_history, *finals]))
    for run in runs.itertuples():
        if not run.plateaued:
            logger.warning(
                "variant %s, fold %s, seed %s: the loss had not levelled off after %d steps (its last quarter moved it %.0f%% as much as the whole run); raise contrastive.max_steps",
                run.variant,
                run.fold,
                run.seed,
                run.steps,
                100 * float(run.last_quarter_share_of_change),
            )
    return runs

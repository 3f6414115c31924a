"""Nodes of the ``contrastive`` pipeline: the steps of one grid cell -- fold inputs -> image model ->
embeddings -> scores -- and the gatherers that stack every cell's tables (wiring: pipeline.py).

Fold models exist to be evaluated: what leaves a fold cell are the scores read off its
representations; its weights stay in the resumable checkpoint folder. The all-patient (final) models
are what users keep (packaged with a model card by the evaluation pipeline).

Representation spaces: :mod:`~tpir_kedro.evaluation.fold_embeddings`. In the frozen regime the
backbone's features of every patch under several views are computed once per seed and cached under
the checkpoint folder (``feature_views/``), shared by every cell of that seed.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from tpir_kedro.atomic_folder import exclusive_lock
from tpir_kedro.cohort.schema import TISSUE_CLASSES
from tpir_kedro.evaluation.cell_scores import (
    decodability_scores,
    expression_scores,
    majority_scores,
    probe_scores,
)
from tpir_kedro.evaluation.fold_embeddings import ADAPTER, BACKBONE, FoldEmbeddings
from tpir_kedro.evaluation.fold_inputs import FoldInputs, build_fold_inputs, check_patch_store
from tpir_kedro.evaluation.folds import ALL_PATIENTS
from tpir_kedro.evaluation.protocol import EvaluationProtocol
from tpir_kedro.imaging.patch_store import PatchStore
from tpir_kedro.models.training_config import TrainingConfig
from tpir_kedro.models.variants import LOG_HVG, VariantSpec, parse_variants

if TYPE_CHECKING:
    from tpir_kedro.models.training import TrainedImageModel, TrainingData

# torch and Lightning are imported where a node trains or embeds, not with the pipeline: `kedro viz`,
# `kedro jupyter` and `kedro registry` only need the pipeline's shape.

logger = logging.getLogger(__name__)

# A cell's TrainedImageModel, or None for a skipped variant. Kedro reads node functions' type hints
# at run time, and the class lives with torch, which this module does not import: so Any.
ImageModel = Any

HISTORY_COLUMNS = ["epoch", "step", "train_loss_step", "train_loss_epoch", "variant", "fold", "seed"]


def cell_fold_inputs(
    cohort: AnnData,
    patient_folds: pd.DataFrame,
    fold_genes: dict,
    gene_encoders: dict,
    patch_store: PatchStore,
    evaluation: dict,
    *,
    fold: str,
) -> FoldInputs:
    """One fold's training and held-out spots with everything a cell trains and scores on (``all``:
    every patient, for a final model). Each cell builds its own: no cell shares mutable state.
    """
    check_patch_store(cohort, patch_store)
    if fold != ALL_PATIENTS and fold not in set(patient_folds["fold"].astype(str)):
        raise ValueError(
            f"the grid has a cell for fold {fold!r}, but patient_folds has {sorted(set(patient_folds['fold']))}: "
            "it was made with other folds.held_out_patients; run data_engineering with this run's folds"
        )
    inputs = build_fold_inputs(
        cohort,
        patch_store,
        patient_folds,
        fold_genes,
        gene_encoders,
        fold,
        EvaluationProtocol.from_dict(evaluation).n_top_genes,
    )
    logger.info(
        "fold %s: %d training spots with a patch (%d labelled), %d held-out spots",
        fold,
        len(inputs.train_obs),
        int((inputs.train_label_codes >= 0).sum()),
        len(inputs.test_obs),
    )
    return inputs


# Feature caches this process has opened, by (checkpoint folder, seed, patch store, training config).
# Every cell of a seed reads the same cache, and finding it means building the backbone and hashing
# every pixel of the store (seconds per call on a real 224 px store): done once per process, not per cell.
_OPENED_VIEWS: dict[tuple[str, int, str, str], np.ndarray] = {}
_MAX_OPENED_VIEWS = 8  # a few seeds x stores; a long-lived process (tests, notebooks) stays bounded


def feature_views(
    config: TrainingConfig, store: PatchStore, checkpoint_root: Path, seed: int
) -> np.ndarray | None:
    """The frozen regime's cached (n_store, V, D) backbone features of every patch (None otherwise)."""
    if config.regime != "frozen":
        return None
    key = (
        str(Path(checkpoint_root).resolve()),
        int(seed),
        str(Path(store.path).resolve()),
        json.dumps(config.to_dict(), sort_keys=True, default=str),
    )
    if key not in _OPENED_VIEWS:
        if len(_OPENED_VIEWS) >= _MAX_OPENED_VIEWS:
            _OPENED_VIEWS.pop(next(iter(_OPENED_VIEWS)))
        _OPENED_VIEWS[key] = _open_feature_views(config, store, checkpoint_root, seed)
    return _OPENED_VIEWS[key]


def _views_for(
    variant: VariantSpec, config: TrainingConfig, store: PatchStore, checkpoint_root: Path, seed: int
) -> np.ndarray | None:
    """The cached views a variant trains and is embedded on; None for the untrained baselines."""
    return feature_views(config, store, checkpoint_root, seed) if variant.trains else None


def _open_feature_views(
    config: TrainingConfig, store: PatchStore, checkpoint_root: Path, seed: int
) -> np.ndarray:
    import torch

    from tpir_kedro.models.cpu_threads import pin_torch_threads
    from tpir_kedro.models.feature_views import cached_feature_views
    from tpir_kedro.models.image_encoders import build_image_encoder
    from tpir_kedro.models.patch_data import reopenable_memmap

    pin_torch_threads(config.threads)
    # Seeded as a run seeds its initial encoder (train_image_model), so that a random-init backbone
    # is the same in every cell and process -- else each call would draw, and cache, another one.
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        encoder = build_image_encoder(
            config.backbone, config.init, config.weights_path if config.init != "random" else None
        )
    root = Path(checkpoint_root) / "feature_views"
    # Cells of one seed run side by side (ParallelRunner, Dask) and need the same cache: one computes
    # it while the others wait, then read it.
    with exclusive_lock(root / ".lock"):
        views = cached_feature_views(
            root,
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
    """Variants that cannot train in this fold are skipped (logged): those that need labels where no
    training spot with a patch has one -- e.g. the real HER2ST sections with full-resolution images,
    none of which is labelled -- and those that need a gene encoder the fold lacks (gene_vae fits no
    scANVI where the training patients keep no label under ``gene_vae.scanvi_labels``).
    """
    labelled = (inputs.train_label_codes >= 0).any()
    kept = []
    for variant in specs:
        needs = ({variant.gene_input} - {LOG_HVG, None}) | ({"scanvi"} if variant.use_class_probs else set())
        missing = sorted(needs - set(inputs.embeddings))
        if variant.needs_labels and not labelled:
            logger.warning(
                "variant %s skipped in fold %s: it needs tissue labels and no training spot with a patch has one",
                variant.name,
                inputs.fold,
            )
        elif missing:
            logger.warning(
                "variant %s skipped in fold %s: it needs the fold's %s gene encoder, which gene_vae did not fit "
                "(gene_label_transfer's status says why)",
                variant.name,
                inputs.fold,
                " and ".join(missing),
            )
        else:
            kept.append(variant)
    return kept


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


def cell_image_model(
    fold_inputs: FoldInputs,
    patch_store: PatchStore,
    checkpoint_root: Path,
    contrastive: dict,
    variants: dict,
    *,
    variant: str,
    seed: int,
) -> tuple[ImageModel, pd.DataFrame]:
    """One cell's image model (trained, resumed or reused from the run cache under
    ``checkpoint_root/<variant>/<fold>``) and its loss rows; None where the variant is skipped.
    """
    config = TrainingConfig.from_dict(contrastive)
    specs = _trainable(parse_variants(variants, [variant]), fold_inputs)
    if not specs:
        return None, pd.DataFrame(columns=HISTORY_COLUMNS)
    spec = specs[0]
    views = _views_for(spec, config, patch_store, checkpoint_root, seed)
    trained = _train(spec, fold_inputs, patch_store, Path(checkpoint_root), config, seed, views)
    return trained, _history_rows(trained, fold_inputs.fold, seed)


def cell_embeddings(
    trained: ImageModel,
    fold_inputs: FoldInputs,
    patch_store: PatchStore,
    checkpoint_root: Path,
    contrastive: dict,
    *,
    seed: int,
) -> FoldEmbeddings | None:
    """The cell model's representations of its fold's spots (what the probes read) and, for a
    contrastive variant, the joint-space embeddings.
    """
    if trained is None:
        return None
    config = TrainingConfig.from_dict(contrastive)
    views = _views_for(trained.variant, config, patch_store, checkpoint_root, seed)
    return _embed(trained, fold_inputs, patch_store, config, seed, views)


def cell_probe_metrics(
    embeddings: FoldEmbeddings | None, fold_inputs: FoldInputs, evaluation: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    return probe_scores(embeddings, fold_inputs, EvaluationProtocol.from_dict(evaluation))


def cell_expression_prediction(
    embeddings: FoldEmbeddings | None, fold_inputs: FoldInputs, evaluation: dict
) -> pd.DataFrame:
    return expression_scores(embeddings, fold_inputs, EvaluationProtocol.from_dict(evaluation))


def cell_patient_decodability(embeddings: FoldEmbeddings | None, fold_inputs: FoldInputs) -> pd.DataFrame:
    return decodability_scores(embeddings, fold_inputs)


def fold_majority_metrics(fold_inputs: FoldInputs) -> pd.DataFrame:
    return majority_scores(fold_inputs)


def final_image_model(
    trained: ImageModel,
    fold_inputs: FoldInputs,
    patch_store: PatchStore,
    checkpoint_root: Path,
    contrastive: dict,
    *,
    seed: int,
) -> dict | None:
    """A variant trained on every patient (the model users keep), with its training patients'
    features for the final probe; None where the variant is skipped.
    """
    if trained is None:
        return None
    config = TrainingConfig.from_dict(contrastive)
    views = _views_for(trained.variant, config, patch_store, checkpoint_root, seed)
    spaces = representations(trained, patch_store, fold_inputs.train_rows, config, views)
    space = ADAPTER if ADAPTER in spaces else BACKBONE  # what the packaged model's probe reads
    return {
        "trained": trained,
        "features": spaces[space],
        "space": space,
        "config": config,
        "seed": seed,
        "inputs": fold_inputs,
    }


def stacked_tables(*tables: pd.DataFrame) -> pd.DataFrame:
    """The cells' tables of one kind in one (every cell's table has the kind's header, even empty)."""
    if not tables:
        raise ValueError("the grid has no cell: nothing to gather (check image_runs and folds)")
    filled = [t for t in tables if not t.empty]  # pandas deprecates concatenating empty frames
    return pd.concat(filled, ignore_index=True) if filled else tables[0].iloc[0:0]


def final_image_models(*models: dict | None) -> dict[str, dict]:
    """The final cells' models by variant (skipped variants drop out)."""
    return {m["trained"].variant.name: m for m in models if m is not None}


def training_runs(training_history: pd.DataFrame, *final_histories: pd.DataFrame) -> pd.DataFrame:
    """One row per trained run -- the folds' and the final models' (fold ``all``): optimiser steps,
    epochs, whether the loss fell and levelled off, and the run's ``state`` (not learning, still
    learning, plateaued).
    """
    from tpir_kedro.models.training_runs import NOT_LEARNING, STILL_LEARNING, summarise_training_runs

    runs = summarise_training_runs(_stack_histories([training_history, *final_histories]))
    for run in runs.itertuples():
        # A loss that never fell is as likely the loss's settings (targets left near uniform) as the step
        # budget, so this warning names no fix, unlike the one below.
        if run.state == NOT_LEARNING:
            logger.warning(
                "variant %s, fold %s, seed %s: not learning -- the loss did not fall in %d steps (first quarter %.4g, last quarter %.4g: no fall beyond the step-to-step noise); its scores do not measure a trained model",
                run.variant,
                run.fold,
                run.seed,
                run.steps,
                float(run.loss_first_quarter),
                float(run.loss_last_quarter),
            )
        elif run.state == STILL_LEARNING:
            logger.warning(
                "variant %s, fold %s, seed %s: the loss had not levelled off after %d steps (its last quarter moved it %.0f%% as much as the whole run); raise contrastive.max_steps",
                run.variant,
                run.fold,
                run.seed,
                run.steps,
                100 * float(run.last_quarter_share_of_change),
            )
    return runs

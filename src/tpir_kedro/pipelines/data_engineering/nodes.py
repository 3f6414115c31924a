"""Nodes of the ``data_engineering`` pipeline: raw files -> cohort, folds, fold genes, patches."""

from __future__ import annotations

import logging

import pandas as pd
from anndata import AnnData

from tpir_kedro.cohort.her2st import ReadOptions
from tpir_kedro.cohort.schema import is_classified
from tpir_kedro.cohort.settings import (
    BatchEffectSettings,
    CohortSettings,
    GeneSelection,
    PatchSettings,
    SpotQC,
)
from tpir_kedro.cohort.sources import Her2stDirectory
from tpir_kedro.cohort.spot_qc import add_batch_labels, filter_spots
from tpir_kedro.evaluation.folds import (
    ALL_PATIENTS,
    held_out_sections,
    held_out_units,
    patient_folds,
    sections_as_patients,
    train_patients,
)
from tpir_kedro.imaging.tiling import TilingPlan, plan_tiling

logger = logging.getLogger(__name__)


def read_cohort(raw_cohort: Her2stDirectory, cohort: dict) -> AnnData:
    """All (or the configured) sections of the raw source, on the genes they share."""
    settings = CohortSettings.from_dict(cohort)
    options = ReadOptions(
        um_per_px=settings.um_per_px,
        pitch_um=settings.spot_pitch_um,
        max_image_pixels=settings.max_image_pixels,
    )
    return raw_cohort.read(sections=settings.section_selection(), options=options, n_jobs=settings.n_jobs)


def quality_filtered_spots(cohort_raw: AnnData, spot_qc: dict) -> tuple[AnnData, pd.DataFrame]:
    qc = SpotQC.from_dict(spot_qc)
    return filter_spots(cohort_raw, min_counts=qc.min_counts, min_genes=qc.min_genes)


def cohort_with_batch_labels(cohort_qc: AnnData, batch_key: str, folds: dict) -> AnnData:
    """Batch labels on the fold units: a held-out section (``folds.held_out_sections``) is its own patient."""
    sections = held_out_sections(folds)
    if sections:
        logger.warning(
            "sections %s are held out as their own pseudo-patients: the other sections of their patient "
            "stay in training, so these folds measure within-patient generalisation, not the patient-held-out protocol",
            list(sections),
        )
        cohort_qc = cohort_qc.copy()
        cohort_qc.obs = sections_as_patients(cohort_qc.obs, sections)
    return add_batch_labels(cohort_qc, batch_key)


def leave_one_patient_out_folds(cohort: AnnData, folds: dict) -> pd.DataFrame:
    return patient_folds(cohort.obs, held_out_units(folds))


def fold_gene_sets(cohort: AnnData, patient_folds: pd.DataFrame, genes: dict) -> dict[str, list[str]]:
    """Per fold, the genes fitted on that fold's training patients; ``all`` for a final model."""
    from tpir_kedro.cohort.gene_selection import select_genes  # scanpy: only when genes are chosen

    selection = GeneSelection.from_dict(genes)
    folds = {fold: train_patients(patient_folds, fold) for fold in patient_folds["fold"].unique()}
    folds[ALL_PATIENTS] = sorted(cohort.obs["patient"].astype(str).unique())
    return {
        fold: select_genes(
            cohort,
            patients,
            n_top_genes=selection.n_top_genes,
            min_spot_fraction=selection.min_spot_fraction,
            exclude_patterns=selection.exclude_patterns,
            batch_key=selection.batch_key,
        )
        for fold, patients in folds.items()
    }


def patch_tiling_plan(cohort: AnnData, patches: dict) -> TilingPlan:
    """What to tile; the patch-store dataset streams the patches to disk when it saves this."""
    settings = PatchSettings.from_dict(patches)
    return plan_tiling(
        cohort,
        size_um=settings.size_um,
        size_px=settings.size_px,
        max_image_pixels=settings.max_image_pixels,
    )


def raw_batch_effect(cohort: AnnData, batch_effect: dict) -> dict:
    """Silhouette by patient vs by class on PCA of log-normalised counts (the problem's size)."""
    from tpir_kedro.cohort.batch_effect import silhouettes_by_patient_and_class

    settings = BatchEffectSettings.from_dict(batch_effect)
    return silhouettes_by_patient_and_class(cohort, n_top_genes=settings.n_top_genes, n_pcs=settings.n_pcs)


def cohort_summary(cohort: AnnData) -> pd.DataFrame:
    """Spots per patient, section and label, with how many have an image."""
    obs = cohort.obs.assign(classified=is_classified(cohort.obs["label"]))
    table = (
        obs.groupby(["patient", "section", "label"], observed=True)
        .agg(n_spots=("classified", "size"), n_with_image=("has_image", "sum"))
        .reset_index()
    )
    return table.astype({"patient": str, "section": str, "label": str})


def section_reading_report(cohort: AnnData) -> pd.DataFrame:
    """What the reader found and decided for each section (µm/px and its source, labels joined...)."""
    return (
        pd.DataFrame.from_dict(dict(cohort.uns["sections"]), orient="index")
        .rename_axis("section")
        .reset_index()
    )

"""Nodes of the ``data_engineering`` pipeline: raw files -> cohort, folds, fold genes, patches."""

from __future__ import annotations

import logging

import pandas as pd
from anndata import AnnData

from tpir_kedro.cohort.her2st import ReadOptions
from tpir_kedro.cohort.schema import is_classified
from tpir_kedro.cohort.slide_image import DEFAULT_MAX_PIXELS
from tpir_kedro.cohort.sources import LABELLED_SECTIONS, Her2stDirectory
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
    options = ReadOptions(
        um_per_px={str(k): float(v) for k, v in (cohort.get("um_per_px") or {}).items()},
        pitch_um=float(cohort.get("spot_pitch_um", 200.0)),
        max_image_pixels=int(cohort.get("max_image_pixels", DEFAULT_MAX_PIXELS)),
    )
    return raw_cohort.read(
        sections=_section_selection(cohort.get("sections")),
        options=options,
        n_jobs=int(cohort.get("n_jobs", 1)),
    )


def _section_selection(sections):
    """None, a list, ``"labelled"``, or names separated by spaces (``kedro run --params`` splits on commas)."""
    if isinstance(sections, str) and sections != LABELLED_SECTIONS:
        return sections.split()
    return sections


def quality_filtered_spots(cohort_raw: AnnData, spot_qc: dict) -> tuple[AnnData, pd.DataFrame]:
    return filter_spots(
        cohort_raw, min_counts=int(spot_qc["min_counts"]), min_genes=int(spot_qc["min_genes"])
    )


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

    folds = {fold: train_patients(patient_folds, fold) for fold in patient_folds["fold"].unique()}
    folds[ALL_PATIENTS] = sorted(cohort.obs["patient"].astype(str).unique())
    return {
        fold: select_genes(
            cohort,
            patients,
            n_top_genes=int(genes["n_top_genes"]),
            min_spot_fraction=float(genes["min_spot_fraction"]),
            exclude_patterns=genes.get("exclude_patterns") or (),
            batch_key=str(genes.get("batch_key", "patient")),
        )
        for fold, patients in folds.items()
    }


def patch_tiling_plan(cohort: AnnData, patches: dict) -> TilingPlan:
    """What to tile; the patch-store dataset streams the patches to disk when it saves this."""
    return plan_tiling(
        cohort,
        size_um=float(patches["size_um"]),
        size_px=int(patches["size_px"]),
        max_image_pixels=int(patches.get("max_image_pixels", DEFAULT_MAX_PIXELS)),
    )


def raw_batch_effect(cohort: AnnData, batch_effect: dict) -> dict:
    """Silhouette by patient vs by class on PCA of log-normalised counts (the problem's size)."""
    from tpir_kedro.cohort.batch_effect import silhouettes_by_patient_and_class

    return silhouettes_by_patient_and_class(
        cohort, n_top_genes=int(batch_effect["n_top_genes"]), n_pcs=int(batch_effect["n_pcs"])
    )


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

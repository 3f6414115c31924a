"""Nodes of the ``reporting`` pipeline: figures from the other stages' outputs, and one HTML report.

Each node builds one figure (figure code lives in :mod:`tpir_kedro.reporting`); ``html_report``
puts them, the figures other stages made (gene UMAPs, results bars) and the run's provenance into
one self-contained page.
"""

from __future__ import annotations

import logging

import pandas as pd
import plotly.graph_objects as go
from anndata import AnnData

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.settings import CohortSettings
from tpir_kedro.imaging.slide_thumbnail import slide_thumbnail
from tpir_kedro.reporting import (
    cohort_overview,
    confusion_heatmaps,
    results_table,
    slide_labels,
    training_curves,
)
from tpir_kedro.reporting.html_report import ReportFigure, render_html_report
from tpir_kedro.reporting.message_figure import message_figure
from tpir_kedro.reporting.provenance import provenance_html
from tpir_kedro.reporting.settings import ReportingSettings

logger = logging.getLogger(__name__)


def cohort_overview_figure(cohort_summary: pd.DataFrame) -> go.Figure:
    return cohort_overview.cohort_overview_figure(cohort_summary)


def slide_label_figure(cohort: AnnData, reporting: dict, cohort_options: dict) -> go.Figure:
    """``reporting.slide.section`` (default: the first labelled section with an image) over a
    thumbnail of its image; only obs, ``uns["sections"]`` and a downsampled image are touched.
    """
    slide = ReportingSettings.from_dict(reporting).slide
    obs = cohort.obs
    requested = slide.section
    section = str(requested) if requested else slide_labels.default_section(obs)
    available = sorted(obs["section"].astype(str).unique())
    if section is None or section not in available:
        logger.warning("slide figure: section %r is not in the cohort (sections: %s)", section, available)
        return message_figure(
            "Section labels",
            f"Section {section!r} is not in the cohort; sections: {', '.join(available) or 'none'}.",
        )
    spots = obs[obs["section"].astype(str) == section]
    image_path = str((cohort.uns.get("sections") or {}).get(section, {}).get("image_path") or "")
    thumbnail, note = None, ""
    if not bool(spots["has_image"].any()) or not image_path:
        note = "this section has no image: spots only"
    else:
        try:
            max_pixels = CohortSettings.from_dict(cohort_options).max_image_pixels
            thumbnail = slide_thumbnail(
                image_path,
                slide.thumbnail_max_side_px,
                section=section,
                max_pixels=max_pixels,
            )
        except (
            CohortInputError
        ) as exc:  # moved or unreadable since the cohort was read: the spots still say something
            logger.warning("slide figure: no image drawn for section %s: %s", section, exc)
            note = f"image not drawn: {exc}"
    return slide_labels.slide_label_figure(
        spots,
        section,
        thumbnail,
        note=note,
        marker_px=slide.spot_marker_px,
        jpeg_quality=slide.jpeg_quality,
    )


def training_curves_figure(training_history: pd.DataFrame, reporting: dict) -> go.Figure:
    return training_curves.training_curves_figure(
        training_history, columns=ReportingSettings.from_dict(reporting).training_curve_columns
    )


def confusion_matrix_figure(confusion_matrices: pd.DataFrame, reporting: dict) -> go.Figure:
    return confusion_heatmaps.confusion_matrix_figure(
        confusion_matrices, probe=ReportingSettings.from_dict(reporting).confusion_probe
    )


def results_table_figure(results_summary: pd.DataFrame) -> go.Figure:
    return results_table.results_table_figure(results_summary)


def html_report(
    cohort_overview_plot: go.Figure,
    slide_labels_plot: go.Figure,
    gene_umap_by_patient: go.Figure,
    gene_umap_by_label: go.Figure,
    training_curves_plot: go.Figure,
    confusion_matrices_plot: go.Figure,
    results_table_plot: go.Figure,
    results_plot: go.Figure,
    run_info: dict,
    reporting: dict,
) -> str:
    """The report page (HTML text): every figure in reading order, then the provenance."""
    figures = [
        ReportFigure(
            "cohort_overview",
            "Cohort",
            cohort_overview_plot,
            "Spots per patient and section after QC, by pathologist label.",
        ),
        ReportFigure(
            "slide_labels",
            "A section and its labels",
            slide_labels_plot,
            "Spot centres over a thumbnail of the H&E; click a label in the legend to hide it.",
        ),
        ReportFigure(
            "gene_umap_by_patient",
            "Gene embeddings by patient",
            gene_umap_by_patient,
            "Batch correction should mix patients (PCA is uncorrected).",
        ),
        ReportFigure(
            "gene_umap_by_label",
            "Gene embeddings by tissue label",
            gene_umap_by_label,
            "…while keeping tissue classes apart.",
        ),
        ReportFigure("training_curves", "Image-encoder training", training_curves_plot),
        ReportFigure("results_table", "Results table", results_table_plot),
        ReportFigure("results_plot", "Results", results_plot),
        ReportFigure(
            "confusion_matrices",
            "Confusion matrices",
            confusion_matrices_plot,
            "Pooled over held-out patients and seeds; pick a variant and probe in the dropdown.",
        ),
    ]
    title = ReportingSettings.from_dict(reporting).title or "Run report"
    return render_html_report(
        title, figures, provenance_html(run_info), subtitle=f"run {run_info.get('run_id')}"
    )

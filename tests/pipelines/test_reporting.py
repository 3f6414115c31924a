"""The reporting stage on the trained tiny demo: figures in the catalog and one self-contained page."""

from __future__ import annotations

import json
import re

import plotly.graph_objects as go
import pytest
from kedro.framework.session import KedroSession
from plotly.offline import get_plotlyjs

FIGURES = [
    "cohort_overview_plot",
    "slide_labels_plot",
    "training_curves_plot",
    "confusion_matrices_plot",
    "results_table_plot",
]
REPORT_DIVS = [
    "cohort_overview",
    "slide_labels",
    "gene_umap_by_patient",
    "gene_umap_by_label",
    "training_curves",
    "results_table",
    "results_plot",
    "confusion_matrices",
]


@pytest.fixture(scope="module")
def catalog(trained_demo_project):
    return KedroSession.create(project_path=trained_demo_project).load_context().catalog


@pytest.fixture(scope="module")
def report(trained_demo_project) -> str:
    (version,) = sorted((trained_demo_project / "data/08_reporting/report.html").iterdir())
    return (version / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_loads_from_the_catalog_with_traces(catalog, name):
    fig = catalog.load(name)
    assert isinstance(fig, go.Figure) and len(fig.data) > 0


def test_the_slide_figure_draws_labelled_spots_over_the_section_image(catalog):
    fig = catalog.load("slide_labels_plot")
    image, *spots = fig.data
    assert image.type == "image" and image.source.startswith("data:image/jpeg;base64,")
    assert fig.layout.title.text.startswith("Section A1")  # the first labelled section with an image
    assert any(t.name.startswith("invasive cancer") for t in spots)


def test_the_report_is_self_contained_and_shows_every_figure(report):
    assert get_plotlyjs()[:2000] in report  # plotly.js inline...
    assert report.count(get_plotlyjs()[:200]) == 1  # ...once
    assert not re.search(r"<script[^>]*\bsrc=", report)  # and nothing fetched from a CDN
    for key in REPORT_DIVS:
        assert f'id="figure-{key}"' in report, key


def test_the_report_carries_the_run_provenance(trained_demo_project, report):
    # The manifest of the run that wrote the report: the same version (later runs, e.g. predict
    # tests on this project, add newer manifests).
    (version,) = sorted((trained_demo_project / "data/08_reporting/report.html").iterdir())
    manifest = json.loads(
        (
            trained_demo_project / "data/08_reporting/run_manifest.json" / version.name / "run_manifest.json"
        ).read_text()
    )
    assert manifest["run_id"] in report and manifest["git"]["commit"] in report
    assert "reporting" in manifest["wall_seconds"]["stages"]
    provenance = report[report.index("id='provenance'") :]
    for stage in ("data_engineering", "gene_vae", "contrastive", "evaluation"):
        assert f"<th>{stage}</th>" in provenance
    assert "raw_cohort" in provenance and manifest["dataset_versions"]["raw_cohort"] in provenance
    # The resolved parameters, runtime overrides included (the tiny demo's n_top_genes: 50).
    assert (
        "&quot;thumbnail_max_side_px&quot;: 1024" in provenance
        and "&quot;n_top_genes&quot;: 50" in provenance
    )

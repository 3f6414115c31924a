import re

import plotly.graph_objects as go

from tpir_kedro.reporting.html_report import ReportFigure, figure_div_id, render_html_report
from tpir_kedro.reporting.provenance import provenance_html

RUN_INFO = {
    "run_id": "2026-01-01T00.00.00.000Z",
    "git": {"commit": "0123abcd", "uncommitted_changes": False},
    "run_params": {"env": "local", "pipeline_names": ["train"]},
    "parameters": {"reporting": {"title": "<b>not markup</b>"}},
    "input_dataset_versions": {"raw_cohort": "2025-12-31T00.00.00.000Z"},
    "wall_seconds": {"elapsed": 12.34, "stages": {"data_engineering": 2.0, "gene_vae": 10.0}},
    "packages": {"kedro": "1.7.0"},
    "device": {"python": "3.11.7"},
}


def test_the_report_embeds_plotly_once_and_every_figure_in_its_own_div():
    figures = [
        ReportFigure("a", "First", go.Figure(go.Bar(x=[1], y=[2])), "caption <i>"),
        ReportFigure("b c", "Second", go.Figure()),
    ]
    page = render_html_report("Report & co", figures, provenance_html(RUN_INFO))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("<script type='text/javascript'>") == 1 and "Plotly" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched: works offline
    assert figure_div_id("b c") == "figure-b-c"
    for div in ("figure-a", "figure-b-c"):
        assert f'id="{div}"' in page
    assert "Report &amp; co" in page and "caption &lt;i&gt;" in page
    assert page.index("figure-a") < page.index("figure-b-c") < page.index("id='provenance'")


def test_provenance_shows_the_run_the_commit_the_stage_times_and_the_parameters_escaped():
    html = provenance_html(RUN_INFO)
    for text in (
        "2026-01-01T00.00.00.000Z",
        "0123abcd",
        "gene_vae",
        "10.0",
        "12.3",
        "raw_cohort",
        "2025-12-31T00.00.00.000Z",
        "kedro",
        "1.7.0",
    ):
        assert text in html
    assert "&lt;b&gt;not markup&lt;/b&gt;" in html and "<b>not" not in html


def test_provenance_with_only_a_run_id_says_what_was_not_recorded():
    html = provenance_html({"run_id": "r1"})
    assert "r1" in html and "not recorded" in html

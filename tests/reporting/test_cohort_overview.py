import pandas as pd

from tpir_kedro.reporting.cohort_overview import cohort_overview_figure
from tpir_kedro.reporting.label_colours import LABEL_COLOURS


def test_bars_stack_spots_per_patient_and_per_section_by_label():
    summary = pd.DataFrame(
        {
            "patient": ["A", "A", "A", "B"],
            "section": ["A1", "A1", "A2", "B1"],
            "label": ["invasive cancer", "unlabelled", "invasive cancer", "adipose tissue"],
            "n_spots": [3, 2, 4, 5],
            "n_with_image": [3, 2, 0, 5],
        }
    )
    fig = cohort_overview_figure(summary)
    # Schema order, one bar trace per label and panel; the legend lists each label once.
    names = [t.name for t in fig.data]
    assert names == ["invasive cancer"] * 2 + ["adipose tissue"] * 2 + ["unlabelled"] * 2
    assert [t.name for t in fig.data if t.showlegend] == ["invasive cancer", "adipose tissue", "unlabelled"]
    per_patient, per_section = fig.data[0], fig.data[1]
    assert dict(zip(per_patient.x, per_patient.y)) == {"A": 7}
    assert dict(zip(per_section.x, per_section.y)) == {"A1": 3, "A2": 4}
    assert per_patient.marker.color == LABEL_COLOURS["invasive cancer"]
    assert fig.layout.barmode == "stack"

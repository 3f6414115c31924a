"""Nodes of the ``demo_cohort`` pipeline."""

from __future__ import annotations

from tpir_kedro.cohort.demo import DemoCohortConfig, simulate_demo_cohort
from tpir_kedro.cohort.demo.held_out_slide import simulate_held_out_slide
from tpir_kedro.cohort.her2st_layout import Her2stLayout
from tpir_kedro.cohort.slide_folder import SlideFolder


def simulated_her2st_layout(demo_cohort: dict) -> Her2stLayout:
    """The demo cohort's files (HER2ST layout, in memory) from ``parameters_demo_cohort.yml``."""
    return simulate_demo_cohort(DemoCohortConfig.from_dict(demo_cohort))


def simulated_held_out_slide(demo_cohort: dict) -> SlideFolder:
    """A labelled slide of one more simulated patient, outside the cohort: what ``predict`` runs on."""
    return simulate_held_out_slide(DemoCohortConfig.from_dict(demo_cohort))

"""Nodes of the ``demo_cohort`` pipeline."""

from __future__ import annotations

from tpir_kedro.cohort.demo import DemoCohortConfig, simulate_demo_cohort
from tpir_kedro.cohort.her2st_layout import Her2stLayout


def simulated_her2st_layout(demo_cohort: dict) -> Her2stLayout:
    """The demo cohort's files (HER2ST layout, in memory) from ``parameters_demo_cohort.yml``."""
    return simulate_demo_cohort(DemoCohortConfig.from_dict(demo_cohort))

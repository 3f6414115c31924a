"""The embedded demo cohort: a seeded simulator of HER2ST-like sections (data, not a fixture),
plus one held-out slide of an extra patient for ``predict``.
"""

from tpir_kedro.cohort.demo.held_out_slide import simulate_held_out_slide
from tpir_kedro.cohort.demo.simulate import DemoCohortConfig, simulate_demo_cohort

__all__ = ["DemoCohortConfig", "simulate_demo_cohort", "simulate_held_out_slide"]

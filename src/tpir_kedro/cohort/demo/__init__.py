"""The embedded demo cohort: a seeded simulator of HER2ST-like sections (data, not a fixture)."""

from tpir_kedro.cohort.demo.simulate import DemoCohortConfig, simulate_demo_cohort

__all__ = ["DemoCohortConfig", "simulate_demo_cohort"]

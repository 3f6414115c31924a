"""Shared fixtures: the real HER2ST files and a tiny simulated cohort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tpir_kedro.cohort.demo import DemoCohortConfig, simulate_demo_cohort
from tpir_kedro.cohort.demo.expression import ExpressionConfig
from tpir_kedro.cohort.her2st_layout import write_her2st_layout

PROJECT_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def her2st_dir() -> Path:
    path = Path(os.environ.get("TPIR_HER2ST_DIR", PROJECT_ROOT.parent / "shared" / "her2st"))
    if not (path / "ST-cnts").is_dir():
        pytest.skip(f"real HER2ST files not found at {path} (set TPIR_HER2ST_DIR)")
    return path


TINY_DEMO = DemoCohortConfig(
    seed=3,
    n_patients=3,
    sections_per_patient=2,
    grid=(8, 8),
    sections_without_image=1,
    expression=ExpressionConfig(n_genes=120, markers_per_class=10, tumour_program_genes=8),
)


@pytest.fixture(scope="session")
def tiny_demo_config() -> DemoCohortConfig:
    return TINY_DEMO


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def tiny_demo_dir(tmp_path_factory) -> Path:
    """A tiny simulated cohort written in the HER2ST layout (read-only for tests: copy to modify)."""
    root = tmp_path_factory.mktemp("tiny_demo") / "her2st"
    write_her2st_layout(simulate_demo_cohort(TINY_DEMO), root)
    return root

"""Shared fixtures: the real HER2ST files and a tiny simulated cohort."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tpir_kedro.cohort.demo import DemoCohortConfig, simulate_demo_cohort
from tpir_kedro.cohort.demo.expression import ExpressionConfig
from tpir_kedro.cohort.her2st_layout import write_her2st_layout

PROJECT_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
# MLflow tracking (tracking_hooks.py) is off for the suite's many runs: the tests that check it (the
# `make demo` project, the ParallelRunner and Dask runs) switch it on, as a user has it.
os.environ["TPIR_TRACKING"] = "off"
TRACKING_ON = {"TPIR_TRACKING": "on"}


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


# Runtime parameters that shrink `train` to a tiny demo cohort (about a minute on 2 cores).
TINY_TRAIN_PARAMS = {
    "demo_cohort": {
        "n_patients": 3,
        "grid": [7, 7],
        "expression": {"n_genes": 120, "markers_per_class": 10, "tumour_program_genes": 8},
    },
    "genes": {"n_top_genes": 50},
    "patches": {"size_px": 32},
    "batch_effect": {"n_top_genes": 100, "n_pcs": 10},
    "gene_vae": {
        "n_latent": 4,
        "n_hidden": 32,
        "scvi_max_epochs": 5,
        "scanvi_max_epochs": 2,
        "accelerator": "cpu",
    },
    "gene_scorecard": {"n_pcs": 10},
    "folds": {"held_out_patients": ["B"]},
    # Trained variants start from a random init here, so what they learn is visible against `random`.
    # The default frozen regime, with fewer cached views and steps than the demo's.
    "contrastive": {
        "init": "random",
        "max_steps": 60,
        "feature_views": 4,
        "batch_size": 16,
        "progress_bar": False,
        "eval_batch_size": 64,
        "embed_dim": 32,
        "gene_hidden": 64,
        "adapter_hidden": 64,
        "adapter_dim": 32,
    },
    "evaluation": {"probe_Cs": [0.1, 1.0], "n_top_genes": 20, "expression_k": 10},
}


@pytest.fixture(scope="session")
def tiny_train_params() -> dict:
    return TINY_TRAIN_PARAMS


def write_pyramidal_tiff(
    path: Path, levels: list, um_per_px: float | None, *, mpp_y: float | None = None
) -> None:
    """A tiled, lossless pyramidal TIFF that tiffslide reads as a whole slide: ``levels[0]`` (H, W, 3)
    uint8 at full resolution, the rest as its sub-resolutions; µm/px in the TIFF resolution tags."""
    import tifffile

    options = {"tile": (64, 64), "photometric": "rgb", "compression": "zlib"}
    resolution = (
        {}
        if um_per_px is None
        else {"resolution": (1e4 / um_per_px, 1e4 / (mpp_y or um_per_px)), "resolutionunit": "CENTIMETER"}
    )
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(levels[0], subifds=len(levels) - 1, **options, **resolution)
        for level in levels[1:]:
            tiff.write(level, subfiletype=1, **options)


@pytest.fixture(scope="session")
def pyramidal_tiff():
    """:func:`write_pyramidal_tiff`; skips when the whole-slide extra (tiffslide) is not installed."""
    pytest.importorskip("tifffile")
    pytest.importorskip("tiffslide")
    return write_pyramidal_tiff


def make_project_copy(root: Path) -> Path:
    """A throw-away copy of the project's configuration at ``root``; runs write under root/data."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()  # the package itself is installed (editable)
    return root


@pytest.fixture(scope="session")
def project_copy():
    """``project_copy(root)``: a throw-away copy of the project's configuration, bootstrapped."""
    from kedro.framework.startup import bootstrap_project

    def make(root: Path) -> Path:
        make_project_copy(root)
        bootstrap_project(root)
        return root

    return make


MAKE_DEMO_FILES = ("Makefile", "pyproject.toml", "constraints.txt")


@pytest.fixture(scope="session")
def trained_demo_project(tmp_path_factory) -> Path:
    """A project copy on which the README's ``make demo`` ran once, as typed, on the tiny demo:
    simulate the cohort, ``train`` every variant and its final model, ``predict`` the held-out
    slide (``make_demo.log`` holds what it printed, through a pipe as in CI), each run recorded in
    MLflow (``data/09_tracking/``) as a user's is.

    The copy shares this checkout's ``.venv`` (a link) and its Makefile, with their modification
    times, so ``make``'s set-up step finds it installed; the tiny demo's parameters are in
    ``conf/local``, the run environment. Shared by the tests that need trained outputs (reports,
    notebooks, predict): treat it as read-only; write to a copy or to new catalog versions only.
    """
    from kedro.framework.startup import bootstrap_project

    venv = PROJECT_ROOT / ".venv"
    if not (venv / "bin" / "kedro").exists():
        pytest.skip(f"`make demo` needs the project's virtual environment at {venv} (`make setup`)")
    project = make_project_copy(tmp_path_factory.mktemp("trained") / "project")
    for name in MAKE_DEMO_FILES:
        shutil.copy2(PROJECT_ROOT / name, project / name)
    (project / ".venv").symlink_to(venv)
    # Never let a test reinstall the shared environment: set-up must already be done.
    if subprocess.run(["make", "-q", "setup"], cwd=project).returncode != 0:
        pytest.fail("`make setup` is not up to date in this checkout: run it before the tests")
    bootstrap_project(project)
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(TINY_TRAIN_PARAMS))
    done = subprocess.run(
        ["make", "demo"],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", **TRACKING_ON},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    (project / "make_demo.log").write_text(done.stdout)
    if done.returncode != 0:
        raise RuntimeError(f"`make demo` failed in {project} (rc {done.returncode}):\n{done.stdout[-4000:]}")
    return project


@pytest.fixture(scope="session")
def kedro_cli():
    """:func:`kedro_run`: ``kedro run`` in its own process, as a user types it."""
    return kedro_run


def kedro_run(project: Path, pipeline: str, log: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``kedro run --pipelines=<pipeline>`` in ``project``, as a user types it (its own process, so
    what it prints is what a user sees); stdout and stderr go to ``log``, through a pipe."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "kedro", "run", f"--pipelines={pipeline}"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    log.write_text(done.stdout + done.stderr)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"kedro run --pipelines={pipeline} failed in {project} (rc {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}"
        )
    return done


def pytest_collection_modifyitems(config, items):
    """Markers that follow from the fixtures a test uses, so they cannot be forgotten: ``real_data``
    for the real HER2ST files, ``slow`` for the shared trained tiny demo (about a minute to make)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "her2st_dir" in fixtures:
            item.add_marker(pytest.mark.real_data)
        if "trained_demo_project" in fixtures:
            item.add_marker(pytest.mark.slow)

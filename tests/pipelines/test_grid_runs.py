"""The grid of cells under Kedro's own machinery, on the tiny demo: ParallelRunner and the
DaskRunner (a real dask.distributed LocalCluster) give the SequentialRunner's results, one cell
re-runs alone, and an interrupted grid resumes with ``--only-missing-outputs`` without redoing its
finished cells."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession

from tpir_kedro.parallel_workers import THREAD_VARIABLES

pytestmark = pytest.mark.slow

# Three variants (an untrained baseline, a contrastive and a supervised one), each with a final model.
GRID = {"image_runs": {"variants": ["imagenet", "clip", "supervised"], "final_models": True}}
CELLS = "data/07_model_output/cells"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, project_copy, tiny_train_params):
    """A project on which the tiny demo's cohort, patches and gene encoders exist: what every cell reads."""
    project = project_copy(tmp_path_factory.mktemp("grid") / "upstream")
    (project / "conf/local/parameters.yml").write_text(yaml.safe_dump({**tiny_train_params, **GRID}))
    for pipeline in ("demo_cohort", "data_engineering,gene_vae"):
        with KedroSession.create(project_path=project) as session:
            session.run(pipeline_names=pipeline.split(","))
    return project


@pytest.fixture()
def project(upstream, tmp_path, project_copy):
    copy = project_copy(tmp_path / "project")
    shutil.copy(upstream / "conf/local/parameters.yml", copy / "conf/local/parameters.yml")
    shutil.copytree(upstream / "data", copy / "data")
    return copy


def run(project, pipelines="contrastive,evaluation", **options):
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=pipelines.split(","), **options)
        return session.load_context().catalog


def _results(catalog) -> pd.DataFrame:
    return catalog.load("results").drop(columns="run_id")


def _table_times(project) -> dict[str, float]:
    return {str(p.relative_to(project)): p.stat().st_mtime_ns for p in (project / CELLS).rglob("*.csv")}


def _kedro_run(project, *args, env=None):
    """``kedro run --pipelines=contrastive,evaluation <args>`` in its own process, as a user types it."""
    done = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipelines=contrastive,evaluation", *args],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "400", **(env or {})},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout + done.stderr


def _copy(project, root, project_copy):
    other = project_copy(root)
    shutil.copy(project / "conf/local/parameters.yml", other / "conf/local/parameters.yml")
    shutil.copytree(project / "data", other / "data")
    return other


def test_parallel_runner_and_dask_give_the_sequential_results(project, tmp_path, project_copy):
    parallel_project = _copy(project, tmp_path / "parallel", project_copy)
    dask_project = _copy(project, tmp_path / "dask", project_copy)
    # One thread, as each ParallelRunner worker (tpir_kedro.parallel_workers) and each Dask worker has:
    # float sums then run in the same order, so the numbers can be identical, not merely close.
    _kedro_run(project, env=dict.fromkeys(THREAD_VARIABLES, "1"))
    log = _kedro_run(parallel_project, "--runner=ParallelRunner", "--runner-params=max_workers=2")
    assert "ParallelRunner workers: start method spawn, 1 thread(s) each" in log
    log = _kedro_run(
        dask_project, "--runner=tpir_kedro.dask_runner.DaskRunner", "--runner-params=n_workers=2"
    )
    assert "DaskRunner:" in log and "scheduler tcp://127.0.0.1:" in log
    sequential = KedroSession.create(project_path=project).load_context().catalog
    for other in (parallel_project, dask_project):
        catalog = KedroSession.create(project_path=other).load_context().catalog
        pd.testing.assert_frame_equal(_results(catalog), _results(sequential), check_exact=True)
        assert set(catalog.load("image_models")) == {"imagenet", "clip", "supervised"}
        assert set(catalog.load("training_runs")["fold"]) == {"holdout_B", "all"}


def test_an_interrupted_grid_resumes_and_one_cell_reruns_alone(project):
    # A grid stopped after two cells: their tables exist, nothing is gathered.
    run(project, namespaces=["imagenet__B__seed0", "clip__B__seed0"])
    done = _table_times(project)
    assert {p.split("/")[3] for p in done} == {"imagenet__B__seed0", "clip__B__seed0"}
    assert not (project / "data/08_reporting/results.csv").exists()

    run(project, only_missing_outputs=True)
    after = _table_times(project)
    assert all(after[p] == t for p, t in done.items())  # the finished cells were not redone
    assert {p.split("/")[3] for p in after} == {
        "imagenet__B__seed0",
        "clip__B__seed0",
        "supervised__B__seed0",
        "majority__B",
        "imagenet__final",
        "clip__final",
        "supervised__final",
    }
    catalog = KedroSession.create(project_path=project).load_context().catalog
    assert set(catalog.load("results")["variant"]) == {"imagenet", "clip", "supervised", "majority"}

    # One cell again: only its own tables are written.
    run(project, pipelines="contrastive", namespaces=["clip__B__seed0"])
    again = _table_times(project)
    changed = {p.split("/")[3] for p, t in again.items() if t != after[p]}
    assert changed == {"clip__B__seed0"}

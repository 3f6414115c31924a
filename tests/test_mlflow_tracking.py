"""Experiment tracking (kedro-mlflow, ``tracking_hooks.py``): what a run records, read back from the
store ``make demo`` wrote, the UI ``make mlflow`` serves, and the pure parts on small tables.

That tracking changes no result, and records nothing from worker processes, is checked where the
runners are (``test_documented_commands.py``: the ParallelRunner and Dask runs track, the
SequentialRunner run does not, and their tables are equal exactly)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tpir_kedro.reporting.tracked_metrics import cell_records, flat_parameters, summary_metrics
from tpir_kedro.tracking_hooks import tracking_enabled

STORE = "data/09_tracking/mlflow.db"
EXPERIMENT = "tpir_kedro_demo"


# --- the pure parts ---------------------------------------------------------------------------------


def test_cell_records_group_the_tables_by_variant_fold_and_seed():
    results = pd.DataFrame(
        {
            "variant": ["clip", "clip", "clip", "majority"],
            "space": ["adapter", "adapter", "adapter", "none"],
            "held_out_patient": ["B", "B", "B", "B"],
            "probe": ["logistic", "knn", "ridge", "majority"],
            "accuracy": [0.8, 0.7, np.nan, 0.5],
            "macro_f1": [0.6, np.nan, np.nan, 0.2],  # knn: nothing to score -> left out, not 0
            "balanced_accuracy": [0.7, 0.6, np.nan, 0.25],
            "pearson_r_top50": [np.nan, np.nan, 0.31, np.nan],
            "seed": [0.0, 0.0, 0.0, np.nan],  # float from CSV: the majority floor has no seed
            "fold": ["holdout_B"] * 4,
        }
    )
    decodability = pd.DataFrame(
        {
            "variant": ["clip"],
            "space": ["adapter"],
            "fold": ["holdout_B"],
            "seed": [0],
            "accuracy": [0.9],
            "chance": [0.5],
        }
    )
    runs = pd.DataFrame(
        {
            "variant": ["clip", "clip"],
            "fold": ["holdout_B", "all"],
            "seed": [0, 0],
            "steps": [60, 60],
            "epochs": [3, 2],
            "loss_fell": [True, True],
            "plateaued": [False, True],
            "state": ["still learning", "plateaued"],
        }
    )
    records = {r.name: r for r in cell_records(results, decodability, runs)}
    # Named as the grid's Kedro namespaces.
    assert sorted(records) == ["clip__B__seed0", "clip__final", "majority__B"]
    clip = records["clip__B__seed0"]
    assert clip.tags == {
        "variant": "clip",
        "fold": "holdout_B",
        "seed": "0",
        "held_out_patient": "B",
        "training_state": "still learning",
    }
    assert clip.metrics == {
        "adapter.logistic.accuracy": 0.8,
        "adapter.logistic.macro_f1": 0.6,
        "adapter.logistic.balanced_accuracy": 0.7,
        "adapter.knn.accuracy": 0.7,
        "adapter.knn.balanced_accuracy": 0.6,
        "adapter.ridge.pearson_r_top50": 0.31,
        "adapter.patient_decodability": 0.9,
        "adapter.patient_decodability_chance": 0.5,
        "steps": 60.0,
        "epochs": 3.0,
        "loss_fell": 1.0,
        "plateaued": 0.0,
    }
    final = records["clip__final"]
    assert final.tags["final_model"] == "true" and final.metrics["plateaued"] == 1.0
    floor = records["majority__B"]
    assert floor.metrics["none.majority.macro_f1"] == 0.2 and "seed" not in floor.tags
    assert cell_records(None, pd.DataFrame(), None) == []


def test_summary_metrics_and_flat_parameters():
    summary = pd.DataFrame(
        {
            "variant": ["clip", "clip"],
            "space": ["adapter", "adapter"],
            "probe": ["logistic", "ridge"],
            "macro_f1_mean": [0.6, np.nan],
            "pearson_r_top50_mean": [np.nan, 0.3],
            "macro_f1_diff_vs_imagenet_mean": [0.05, np.nan],
            "pearson_r_diff_vs_imagenet_mean": [np.nan, -0.01],
        }
    )
    assert summary_metrics(summary) == {
        "clip.adapter.logistic.macro_f1_mean": 0.6,
        "clip.adapter.logistic.diff_vs_imagenet": 0.05,
        "clip.adapter.ridge.pearson_r_top50_mean": 0.3,
        "clip.adapter.ridge.diff_vs_imagenet": -0.01,
    }
    assert summary_metrics(None) == {}
    params = {"contrastive": {"max_steps": 60, "lr": {"adapter": 1e-3}}, "seeds": [0, 1], "empty": {}}
    assert flat_parameters(params) == {
        "contrastive.max_steps": "60",
        "contrastive.lr.adapter": "0.001",
        "seeds": "[0, 1]",
        "empty": "{}",
    }


@pytest.mark.parametrize(
    ("value", "expected"), [(None, True), ("on", True), ("off", False), ("OFF", False), ("0", False)]
)
def test_tracking_switch(value, expected):
    environ = {} if value is None else {"TPIR_TRACKING": value}
    assert tracking_enabled(environ) is expected


# --- what `make demo` recorded ------------------------------------------------------------------------


def client_for(project: Path):
    from mlflow import MlflowClient

    store = project / STORE
    assert store.is_file(), f"no MLflow store at {store}"
    return MlflowClient(tracking_uri=f"sqlite:///{store}")


def latest(project: Path, name: str) -> Path:
    return sorted(project.glob(f"data/**/{name}/*/{name}"))[-1]


@pytest.fixture(scope="module")
def demo_runs(trained_demo_project):
    """(client, the train run, its cell runs by name) of the store ``make demo`` wrote."""
    client = client_for(trained_demo_project)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    by_name = {r.info.run_name: r for r in parents}
    assert sorted(by_name) == ["demo_cohort", "predict", "train"], sorted(by_name)
    assert all(r.info.status == "FINISHED" for r in parents)
    train = by_name["train"]
    cells = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == train.info.run_id}
    return client, train, cells


@pytest.mark.slow
def test_make_demo_records_the_train_run_with_its_parameters_and_artifacts(
    demo_runs, trained_demo_project, tmp_path
):
    client, train, _ = demo_runs
    tiny = yaml.safe_load((trained_demo_project / "conf" / "local" / "parameters.yml").read_text())
    params = train.data.params
    assert params["contrastive.max_steps"] == str(tiny["contrastive"]["max_steps"])
    assert params["gene_vae.n_latent"] == str(tiny["gene_vae"]["n_latent"])
    results = pd.read_csv(latest(trained_demo_project, "results.csv"))
    # The tracker's run is the run whose tables these are.
    assert train.data.tags["run_id"] == results["run_id"].iloc[0]
    artifacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {
        "report.html",
        "results.csv",
        "results_summary.csv",
        "training_runs.csv",
        "run_manifest.json",
    } <= (artifacts)
    # The train run's own manifest, although predict wrote a newer one before the test reads them.
    manifest = Path(client.download_artifacts(train.info.run_id, "run_manifest.json", str(tmp_path)))
    assert json.loads(manifest.read_text())["run_id"] == train.data.tags["run_id"]
    summary = pd.read_csv(latest(trained_demo_project, "results_summary.csv"))
    row = summary[(summary["variant"] == "clip") & (summary["probe"] == "logistic")].iloc[0]
    key = f"clip.{row['space']}.logistic.macro_f1_mean"
    assert train.data.metrics[key] == pytest.approx(row["macro_f1_mean"])


def seed_of(value) -> int | None:
    return None if pd.isna(value) else int(value)


@pytest.mark.slow
def test_make_demo_records_each_grid_cell_as_a_child_run_with_its_scores(demo_runs, trained_demo_project):
    """One child run per cell of the run's grid, named as its Kedro namespace, with the cell's rows of
    results.csv, training_runs.csv and patient_decodability.csv as metrics."""
    from kedro.framework.session import KedroSession

    from tpir_kedro.evaluation.grid import cell_namespace, floor_namespace, grid_from_parameters

    _, _, cells = demo_runs
    with KedroSession.create(project_path=trained_demo_project) as session:
        grid = grid_from_parameters(session.load_context().params)
    results = pd.read_csv(latest(trained_demo_project, "results.csv"))
    runs = pd.read_csv(latest(trained_demo_project, "training_runs.csv"))
    # Final cells of the untrained baselines (imagenet, random) leave no row in any table.
    trained = {cell_namespace(r.variant, r.fold, r.seed) for r in runs.itertuples()}
    expected = {c.namespace for c in grid.fold_cells} | {floor_namespace(u) for u in grid.units.values()}
    expected |= {c.namespace for c in grid.final_cells} & trained
    assert set(cells) == expected and len(trained) > len(grid.final_cells) // 2
    for row in results.itertuples():
        cell = cells[cell_namespace(row.variant, row.fold, seed_of(row.seed))]
        assert cell.data.tags["variant"] == row.variant and cell.data.tags["fold"] == row.fold
        assert cell.data.tags.get("seed") == (None if pd.isna(row.seed) else str(int(row.seed)))
        assert cell.data.tags["held_out_patient"] == str(row.held_out_patient)
        for metric in ("macro_f1", "pearson_r_top50"):
            value = getattr(row, metric)
            key = f"{row.space}.{row.probe}.{metric}"
            if np.isfinite(value):
                assert cell.data.metrics[key] == pytest.approx(value), key
            else:
                assert key not in cell.data.metrics
    for row in runs.itertuples():
        cell = cells[cell_namespace(row.variant, row.fold, row.seed)]
        assert cell.data.metrics["steps"] == row.steps
        assert cell.data.metrics["plateaued"] == float(row.plateaued)
        assert cell.data.tags["training_state"] == row.state
    decodability = pd.read_csv(latest(trained_demo_project, "patient_decodability.csv"))
    row = decodability.dropna(subset=["accuracy"]).iloc[0]
    cell = cells[cell_namespace(row["variant"], row["fold"], int(row["seed"]))]
    assert cell.data.metrics[f"{row['space']}.patient_decodability"] == pytest.approx(row["accuracy"])


# --- `make mlflow` --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.servers
def test_make_mlflow_serves_the_recorded_runs_on_loopback(trained_demo_project, demo_runs):
    """``make mlflow`` as typed; the port comes from the copy's ``conf/local/mlflow.yml`` (a free one,
    so a UI already on 5000 does not answer instead), the host from the project's ``conf/base``."""
    _, train, _ = demo_runs
    port = free_port()
    local = trained_demo_project / "conf" / "local" / "mlflow.yml"
    local.write_text(yaml.safe_dump({"ui": {"host": "127.0.0.1", "port": str(port)}}))
    log = (trained_demo_project / "mlflow_ui.log").open("w")
    server = subprocess.Popen(
        ["make", "mlflow"],
        cwd=trained_demo_project,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: make, kedro, mlflow and the web server
        env={**os.environ, "TPIR_TRACKING": "on"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (trained_demo_project / "mlflow_ui.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "make mlflow did not answer in 120 s"
            time.sleep(1)
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/runs/get?run_id={train.info.run_id}") as r:
            run = json.load(r)["run"]
        assert run["info"]["run_name"] == "train" and run["info"]["status"] == "FINISHED"
        with urllib.request.urlopen(base + "/") as page:
            assert b"MLflow" in page.read()
        # Served on loopback only: nothing answers on the machine's other addresses.
        others = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        for address in others - {"127.0.0.1"}:
            with socket.socket() as probe, pytest.raises(OSError):
                probe.settimeout(2)
                probe.connect((address, port))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        local.unlink()

"""`kedro viz` serves the project's pipelines on loopback, with layers in data-flow order and plotly
previews; the server (a child process of the CLI) is stopped by process group."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession

from tpir_kedro.pipeline_registry import register_pipelines

pytestmark = [
    pytest.mark.servers,
    pytest.mark.slow,
]  # starts servers or kernels (make test-fast leaves them out)

LAYERS_IN_ORDER = [
    "raw",
    "intermediate",
    "primary",
    "feature",
    "model_input",
    "models",
    "model_output",
    "reporting",
    "packaged_models",
]


def _free_port() -> int:
    """A free loopback port below 49152: kedro-viz refuses the ephemeral range the OS hands out for 0."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 49000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-49000")


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def viz(trained_demo_project):
    """A running `kedro viz` on the trained tiny project; yields its base URL."""
    port = _free_port()
    kedro = Path(sys.executable).with_name("kedro")
    log = (trained_demo_project / "viz.log").open("w")
    process = subprocess.Popen(
        [str(kedro), "viz", "run", "--host", "127.0.0.1", "--port", str(port), "--no-browser"],
        cwd=trained_demo_project,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # loading torch, scvi-tools and the catalog is slow here
        while True:
            try:
                _get(f"{base}/api/main", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(
                        f"kedro viz did not start: {(trained_demo_project / 'viz.log').read_text()[-3000:]}"
                    )
                time.sleep(2)
        yield base
    finally:
        # The CLI serves from a child process: signal the whole group, or the server outlives the test.
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


# A grid cell's fold inputs, model and embeddings pass in memory (undeclared, so that ParallelRunner
# shares them between processes): viz shows them without a layer.
IN_MEMORY = {"fold_inputs", "image_model", "embeddings", "final_model", "final_image_models"}


def test_viz_lists_every_pipeline_and_node_and_groups_the_grid_cells_by_namespace(viz, trained_demo_project):
    with KedroSession.create(project_path=trained_demo_project) as session:
        session.load_context()  # the grid of the project's parameters (tpir_kedro.grid_hooks)
        registered = register_pipelines()
    main = _get(f"{viz}/api/main")
    assert {p["id"] for p in main["pipelines"]} == set(registered)
    for name, pipeline in registered.items():
        graph = _get(f"{viz}/api/pipelines/{name}")
        assert {n.get("full_name") or n["name"] for n in graph["nodes"] if n["type"] == "task"} == {
            n.name for n in pipeline.nodes
        }, name
    # Each grid cell is one modular pipeline in viz, holding that cell's nodes only.
    contrastive = _get(f"{viz}/api/pipelines/contrastive")
    cells = {n.namespace for n in registered["contrastive"].nodes if n.namespace}
    assert {"clip__B__seed0", "clip__final", "majority__B"} <= cells <= set(contrastive["modular_pipelines"])
    for n in contrastive["nodes"]:
        if n["type"] == "task" and "." in (n.get("full_name") or ""):
            assert n["modular_pipelines"] == [n["full_name"].split(".")[0]], n
    # Every dataset of `train` sits on a layer, and the layers run in data-flow order.
    train = _get(f"{viz}/api/pipelines/train")
    # viz drops the layers altogether when they form a cycle: the full list proves there is none.
    assert train["layers"] == LAYERS_IN_ORDER
    unlayered = [
        n["name"]
        for n in train["nodes"]
        if n["type"] == "data"
        and not n.get("layer")
        and n["name"] != "run_info"
        and n["name"].rsplit(".", 1)[-1] not in IN_MEMORY
    ]
    assert not unlayered, unlayered
    assert {"data_engineering", "gene_vae", "contrastive", "evaluation", "reporting"} <= {
        t["id"] for t in train["tags"]
    }


def test_viz_previews_a_plotly_report(viz):
    train = _get(f"{viz}/api/pipelines/train")
    plotly_nodes = {
        n["name"]: n
        for n in train["nodes"]
        if n["type"] == "data" and (n.get("dataset_type") or "").startswith("plotly.")
    }
    assert "results_plot" in plotly_nodes, sorted(plotly_nodes)
    node = plotly_nodes["results_plot"]
    metadata = _get(f"{viz}/api/nodes/{node['id']}")
    assert metadata.get("preview_type") == "PlotlyPreview"
    assert metadata["preview"]["data"]

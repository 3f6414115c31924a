"""The notebooks in notebooks/: committed without outputs, reading data only through the Kedro
catalog, and running end to end (in this venv's interpreter) on the tiny trained demo project."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

pytestmark = [
    pytest.mark.servers,
    pytest.mark.slow,
]  # starts servers or kernels (make test-fast leaves them out)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
CELL_TIMEOUT_S = 300
TEST_KERNEL = "tpir-notebook-test"

# Per notebook: how many plotly figures it shows, and text its outputs must contain, on the tiny demo.
EXPECTED = {
    "01_explore_cohort.ipynb": (5, ["has_labels", "sections without an image", "patches of 112 µm"]),
    "02_batch_effects.ipynb": (5, ["silhouette_patient", "X_scanvi", "knn_patient_mixing"]),
    "03_compare_embeddings.ipynb": (
        5,
        ["silhouette_label", "scanvi_infonce", "supervised", "shown: ['imagenet', "],
    ),
}


def output_text(output) -> str:
    if output.output_type == "stream":
        return output.text
    return output.get("data", {}).get("text/plain", "")


def test_the_notebooks_listed_here_are_the_committed_ones():
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_notebook_has_no_outputs_and_reads_the_catalog(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=nbformat.NO_CONVERT)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: stored output in\n{cell.source}"
    code = "\n".join(cell.source for cell in code_cells)
    assert code_cells[0].source.strip() == "%load_ext kedro.ipython"
    assert "catalog.load(" in code
    assert not re.search(r"data/0\d_", code), "data paths belong in the catalog, not in notebooks"


@pytest.fixture(scope="module")
def venv_kernel(tmp_path_factory):
    """A kernel spec for this interpreter, alone on a private Jupyter path: the notebooks run in the
    project's venv whatever kernels the machine has, and nothing is written to the home directory."""
    jupyter_home = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_home / "path" / "kernels" / TEST_KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tpir_kedro tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUPYTER_PATH", str(jupyter_home / "path"))
        env.setenv("JUPYTER_RUNTIME_DIR", str(jupyter_home / "runtime"))
        env.setenv("IPYTHONDIR", str(jupyter_home / "ipython"))
        env.setenv("KEDRO_DISABLE_TELEMETRY", "true")
        yield TEST_KERNEL


@pytest.fixture(scope="module")
def notebook_project(trained_demo_project, tmp_path_factory) -> Path:
    """The trained demo project as users see it, with notebooks/ inside: configuration copied, data
    linked (read-only use), so the shared fixture itself is left as it was."""
    project = tmp_path_factory.mktemp("notebook_project") / "project"
    project.mkdir()
    for name in ("pyproject.toml", ".telemetry"):
        if (trained_demo_project / name).exists():
            shutil.copy(trained_demo_project / name, project / name)
    for name in ("conf", "src"):
        shutil.copytree(trained_demo_project / name, project / name)
    (project / "data").symlink_to(trained_demo_project / "data", target_is_directory=True)
    shutil.copytree(NOTEBOOKS, project / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return project


def notebook_client(notebook, kernel_name: str, folder: Path) -> NotebookClient:
    """Runs ``notebook`` with ``folder`` as the kernel's working directory, as Jupyter does."""
    return NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(folder)}},
    )


@pytest.fixture(scope="module")
def executed_notebooks(notebook_project, venv_kernel) -> dict:
    """Every notebook executed once, concurrently, each in its own kernel (the Kedro start-up that
    dominates their run time overlaps): name -> the executed notebook, or the exception it raised
    (CellExecutionError carries the failing cell's traceback)."""
    folder = notebook_project / "notebooks"
    notebooks = {name: nbformat.read(folder / name, as_version=4) for name in EXPECTED}
    for notebook in notebooks.values():
        notebook.cells.append(
            nbformat.v4.new_code_cell("import sys\nprint(sys.executable)")
        )  # which interpreter ran it

    async def execute_all():
        runs = (
            notebook_client(notebook, venv_kernel, folder).async_execute() for notebook in notebooks.values()
        )
        return await asyncio.gather(*runs, return_exceptions=True)

    return dict(zip(notebooks, asyncio.run(execute_all())))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_on_the_trained_demo(name, notebook_project, executed_notebooks):
    notebook = executed_notebooks[name]
    if isinstance(notebook, BaseException):
        raise notebook

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "\n".join(output_text(output) for output in outputs)
    n_figures, snippets = EXPECTED[name]
    figures = [output.data[PLOTLY_MIME] for output in outputs if PLOTLY_MIME in output.get("data", {})]
    assert len(figures) == n_figures
    assert all(figure["data"] for figure in figures), "a figure without traces"
    for snippet in snippets:
        assert snippet in text
    project_line = re.search(r"^project: (.+)$", text, flags=re.MULTILINE)
    assert project_line and Path(project_line.group(1)).resolve() == notebook_project.resolve()
    assert output_text(notebook.cells[-1].outputs[0]).strip() == sys.executable


def test_notebook_outside_a_project_says_how_to_point_it_at_one(venv_kernel, tmp_path):
    notebook = nbformat.read(NOTEBOOKS / "01_explore_cohort.ipynb", as_version=4)
    notebook.cells = [cell for cell in notebook.cells if cell.cell_type == "code"][:2]  # load_ext + guard
    assert not any(parent.joinpath("pyproject.toml").exists() for parent in (tmp_path, *tmp_path.parents))
    with pytest.raises(CellExecutionError, match="reload_kedro <project root>"):
        notebook_client(notebook, venv_kernel, tmp_path).execute()
    assert os.listdir(tmp_path) == []  # nothing written where it ran

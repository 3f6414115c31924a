"""Every command the README shows in its fenced blocks (and docs/data.md's section on new slides for
predict), run by a test as a user types it: in its own process, from a project whose data/ holds only
the raw demo files, on the tiny demo (``conf/local`` of the project copy). The only changes to a
command are the placeholders a user fills in (a slide's path, a scheduler's address), listed in the
test that runs it. A command in those blocks that no test runs fails
``test_every_documented_command_is_run_by_a_test``; the few that cannot run on a CPU-only machine in a
test's time are listed in ``NOT_RUN`` with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Where users read commands: a document, and the section of it (None: the whole document).
DOCUMENTS = {"README.md": None, "docs/data.md": "## New slides for `predict`"}

# The grid of the runner tests: an untrained baseline and a contrastive variant, each with a final
# model, plus the fold's majority floor (5 cells), on the tiny demo.
GRID = {"image_runs": {"variants": ["imagenet", "clip"], "final_models": True}}
CELLS = "data/07_model_output/cells"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
TRACKING_ON = {"TPIR_TRACKING": "on"}  # the suite runs untracked (conftest.py); a user's runs are tracked

# Each documented command -> the test here that runs it.
RUN_BY = {
    "make demo": "test_make_demo_simulates_trains_and_predicts",
    "make test": "test_make_test_is_what_ci_runs",
    "source .venv/bin/activate": "test_activating_the_environment_puts_kedro_on_the_path",
    "kedro run --pipeline=train": "test_train_gives_the_same_results_under_every_runner",
    "kedro run --pipeline=train --runner=ParallelRunner": "test_train_gives_the_same_results_under_every_runner",
    "kedro run --pipeline=train --runner=tpir_kedro.dask_runner.DaskRunner": "test_train_gives_the_same_results_under_every_runner",
    "kedro run --pipeline=train --runner=tpir_kedro.dask_runner.DaskRunner --runner-params address=tcp://scheduler:8786": "test_train_on_a_running_dask_cluster",
    "kedro registry describe contrastive": "test_registry_describe_lists_the_cells",
    "kedro run --pipeline=train --namespaces=clip__B__seed0": "test_one_cell_reruns_alone",
    "kedro run --pipeline=train --only-missing-outputs": "test_an_interrupted_train_run_resumes_without_redoing_finished_cells",
    "kedro run --pipeline=predict": "test_every_predict_form",
    'kedro run --pipeline=predict --params "predict.slide=/data/slide.jpg,predict.um_per_px=0.5"': "test_every_predict_form",
    'kedro run --pipeline=predict --params "predict.slide=/data/case7.svs"': "test_every_predict_form",
    'kedro run --pipeline=predict --params "predict.slide=/data/slide.jpg,predict.um_per_px=0.5,predict.spots=/data/spots.csv,predict.variant=imagenet"': "test_every_predict_form",
    "export TPIR_HER2ST_DIR=/path/to/her2st/data": "test_the_real_environment_trains_and_predicts_as_typed",
    "kedro run --pipeline=train --env her2st": "test_the_real_environment_trains_and_predicts_as_typed",
    "kedro run --pipeline=predict --env her2st": "test_the_real_environment_trains_and_predicts_as_typed",
}

# Documented, but not run by a test here, and why.
NOT_RUN = {
    'kedro run --pipeline=train --env her2st --params "contrastive.devices=4"': (
        "needs four GPUs (data-parallel training); CI and the developers' machines have none"
    ),
    "TPIR_HER2ST_DIR=$PWD/../shared/her2st .venv/bin/python benchmarks/bench_lopo_seeds.py --env her2st "
    "--seeds 0 --params-yaml benchmarks/params/her2st_frozen_cpu.yml --out benchmarks/results/her2st_frozen_cpu": (
        "a 20-minute benchmark whose results are committed; test_benchmark_command_names_files_that_exist "
        "checks its script and parameter file"
    ),
}


def documented_commands() -> list[str]:
    """The commands of the fenced ``bash`` blocks of :data:`DOCUMENTS`: continuation lines joined,
    trailing comments and repeated blanks removed, in order of appearance, each once."""
    commands: list[str] = []
    for document, section in DOCUMENTS.items():
        text = (PROJECT_ROOT / document).read_text()
        if section is not None:
            text = text[text.index(section) :]
            end = text.find("\n## ", len(section))
            text = text if end < 0 else text[:end]
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = " ".join(re.sub(r"\s#\s.*$", "", line).split())
                if command and command not in commands:
                    commands.append(command)
    return commands


def typed(command: str, **placeholders: str) -> list[str]:
    """``command`` as argv, exactly as documented but for ``placeholders`` (documented text ->
    what this test puts there). Fails when the documents no longer show ``command``."""
    assert command in documented_commands(), f"no longer documented: {command}"
    for placeholder, value in placeholders.items():
        assert placeholder in command, (placeholder, command)
        command = command.replace(placeholder, value)
    return shlex.split(command)


def run_typed(project: Path, argv: list[str], env: dict | None = None, check: bool = True) -> str:
    """Runs ``argv`` in ``project`` in its own process, through a pipe (as CI or a log file sees it),
    with the project's environment's ``bin`` first on the PATH (what ``source .venv/bin/activate``
    gives); returns what it printed."""
    bin_dir = str(Path(sys.executable).parent)
    full_env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "KEDRO_DISABLE_TELEMETRY": "true",
        **(env or {}),
    }
    done = subprocess.run(
        argv, cwd=project, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log = project / "commands.log"
    with log.open("a") as out:
        out.write(f"$ {shlex.join(argv)}\n{done.stdout}\n")
    if check:
        assert done.returncode == 0, (
            f"{shlex.join(argv)} failed (rc {done.returncode}):\n{done.stdout[-4000:]}"
        )
    return done.stdout


# --- the list itself ------------------------------------------------------------------------------


def test_the_documents_show_commands_and_the_parser_reads_them():
    commands = documented_commands()
    assert "make demo" in commands and "kedro run --pipeline=train --only-missing-outputs" in commands
    # A continued line is one command; a trailing comment is not part of it.
    assert RUN_BY.keys() & {c for c in commands if "address=tcp://scheduler:8786" in c}
    assert not any("#" in c for c in commands)


def test_every_documented_command_is_run_by_a_test():
    documented = set(documented_commands())
    unrun = documented - RUN_BY.keys() - NOT_RUN.keys()
    assert not unrun, f"documented commands that no test runs: {sorted(unrun)}"
    stale = (RUN_BY.keys() | NOT_RUN.keys()) - documented
    assert not stale, f"listed here but no longer documented: {sorted(stale)}"
    missing = {name for name in RUN_BY.values() if not callable(globals().get(name))}
    assert not missing, missing


def test_benchmark_command_names_files_that_exist():
    (command,) = [c for c in NOT_RUN if "benchmarks/" in c]
    argv = shlex.split(command)
    assert (PROJECT_ROOT / argv[2]).is_file() and (
        PROJECT_ROOT / argv[argv.index("--params-yaml") + 1]
    ).is_file()


def test_make_test_is_what_ci_runs():
    """``make test`` runs this suite: CI's script is the README's command."""
    assert typed("make test") == ["make", "test"]
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)
    assert re.search(
        r"^test: setup\n\t\$\(BIN\)/python -m pytest$", (PROJECT_ROOT / "Makefile").read_text(), re.M
    )


def test_activating_the_environment_puts_kedro_on_the_path():
    venv = PROJECT_ROOT / ".venv"
    if not (venv / "bin" / "activate").exists():
        pytest.skip(f"no environment at {venv} (`make setup`)")
    command = shlex.join(typed("source .venv/bin/activate"))
    done = subprocess.run(
        ["bash", "-c", f"{command} && command -v kedro && kedro --version"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.splitlines()[0]) == venv / "bin" / "kedro"
    assert re.search(r"kedro, version \d", done.stdout)


@pytest.mark.slow
def test_make_demo_simulates_trains_and_predicts(trained_demo_project):
    """``make demo`` ran as typed (conftest's ``trained_demo_project``): the demo cohort, then train,
    then predict, in that order, each to the end."""
    assert typed("make demo") == ["make", "demo"]
    log = (trained_demo_project / "make_demo.log").read_text()
    # Each run's manifest names the stages it ran, in the order the runs were made.
    stages = re.findall(r"run manifest \S+ written \(stages: \{([^}]*)\}", log)
    assert len(stages) == 3 and log.count("Pipeline execution completed successfully") == 3, stages
    assert "'demo'" in stages[0] and "'contrastive'" in stages[1] and "'predict'" in stages[2], stages
    assert list(trained_demo_project.glob("data/08_reporting/report.html/*/report.html"))
    assert list(
        trained_demo_project.glob("data/07_model_output/slide_predictions.csv/*/slide_predictions.csv")
    )


# --- train as typed, under every runner -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_project(project_copy, tiny_train_params):
    """``tiny_project(root, raw=None)``: a project copy running the tiny demo and :data:`GRID`
    (``conf/local``); its data/ holds only ``raw`` (the raw demo files) when given."""

    def make(root: Path, raw: Path | None = None) -> Path:
        project_copy(root)
        (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump({**tiny_train_params, **GRID}))
        if raw is not None:
            shutil.copytree(raw, root / "data" / "01_raw")
        return root

    return make


@pytest.fixture(scope="module")
def raw_demo(tmp_path_factory, tiny_project) -> Path:
    """The tiny demo's raw files, simulated once (``kedro run --pipelines=demo_cohort``)."""
    project = tiny_project(tmp_path_factory.mktemp("raw") / "project")
    run_typed(project, [sys.executable, "-m", "kedro", "run", "--pipelines=demo_cohort"])
    return project / "data" / "01_raw"


def latest(project: Path, name: str) -> Path:
    """The newest version of a versioned output of ``project``, by its catalog file name."""
    versions = sorted(project.glob(f"data/**/{name}/*/{name}"))
    assert versions, f"no {name} in {project}"
    return versions[-1]


def results(project: Path) -> pd.DataFrame:
    return pd.read_csv(latest(project, "results.csv")).drop(columns="run_id")


def cell_table_times(project: Path) -> dict[str, int]:
    return {
        str(p.relative_to(project / CELLS)): p.stat().st_mtime_ns for p in (project / CELLS).rglob("*.csv")
    }


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, raw_demo, tiny_project) -> Path:
    """``kedro run --pipeline=train`` as typed, from raw files only, one thread (as each worker of
    the other runners has, so float sums run in the same order and results can be identical)."""
    project = tiny_project(tmp_path_factory.mktemp("sequential") / "project", raw_demo)
    run_typed(project, typed("kedro run --pipeline=train"), env=ONE_THREAD)
    return project


def tracked_cells(project: Path) -> set[str]:
    """The cell runs of the one MLflow run in ``project``'s store; fails on a stray store or run."""
    from mlflow import MlflowClient

    stores = sorted(p.relative_to(project) for p in project.rglob("mlflow.db"))
    assert stores == [Path("data/09_tracking/mlflow.db")] and not list(project.rglob("mlruns")), stores
    client = MlflowClient(tracking_uri=f"sqlite:///{project / stores[0]}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == "train" and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1
    return {r.info.run_name for r in children}


@pytest.mark.slow
def test_train_gives_the_same_results_under_every_runner(sequential, raw_demo, tiny_project, tmp_path):
    """Also: MLflow tracking changes no result and logs only from the main process. The sequential
    run is untracked (the suite's default) and writes no store; the ParallelRunner and Dask runs
    are tracked, as a user's are, each into one run with a child run per cell."""
    parallel = tiny_project(tmp_path / "parallel", raw_demo)
    log = run_typed(parallel, typed("kedro run --pipeline=train --runner=ParallelRunner"), env=TRACKING_ON)
    assert "ParallelRunner workers: start method spawn, 1 thread(s) each" in log
    assert "cohort_qc" in next(line for line in log.splitlines() if "shared between the workers" in line)

    dask = tiny_project(tmp_path / "dask", raw_demo)
    log = run_typed(
        dask, typed("kedro run --pipeline=train --runner=tpir_kedro.dask_runner.DaskRunner"), env=TRACKING_ON
    )
    assert "DaskRunner:" in log and "scheduler tcp://127.0.0.1:" in log

    expected = results(sequential)
    assert set(expected["variant"]) == {"imagenet", "clip", "majority"}
    for other in (parallel, dask):
        pd.testing.assert_frame_equal(results(other), expected, check_exact=True)
        for table in ("gene_embedding_scorecard.csv", "cohort_summary.csv"):
            pd.testing.assert_frame_equal(
                pd.read_csv(latest(other, table)), pd.read_csv(latest(sequential, table)), check_exact=True
            )
        assert {p.name for p in latest(other, "image_models").iterdir() if p.is_dir()} == {"imagenet", "clip"}
        assert latest(other, "report.html").stat().st_size > 0
        # The grid's cells but imagenet__final, which trains nothing and scores nothing.
        assert tracked_cells(other) == {"imagenet__B__seed0", "clip__B__seed0", "majority__B", "clip__final"}
    assert not list(sequential.rglob("mlflow.db")) and not list(sequential.rglob("mlruns"))


@pytest.mark.slow
def test_train_on_a_running_dask_cluster(sequential, raw_demo, tiny_project, tmp_path):
    """The README's ``--runner-params address=...`` form, against a scheduler this test starts on the
    loopback interface (its workers: two processes of one thread, as the runner's own cluster)."""
    from distributed import LocalCluster

    project = tiny_project(tmp_path / "project", raw_demo)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        argv = typed(
            "kedro run --pipeline=train --runner=tpir_kedro.dask_runner.DaskRunner "
            "--runner-params address=tcp://scheduler:8786",
            **{"tcp://scheduler:8786": cluster.scheduler_address},
        )
        log = run_typed(project, argv)
    assert f"scheduler {cluster.scheduler_address}" in log
    pd.testing.assert_frame_equal(results(project), results(sequential), check_exact=True)


@pytest.mark.slow
def test_registry_describe_lists_the_cells(sequential):
    log = run_typed(sequential, typed("kedro registry describe contrastive"))
    for cell in ("imagenet__B__seed0", "clip__B__seed0", "majority__B", "clip__final"):
        assert cell in log, cell


@pytest.mark.slow
def test_one_cell_reruns_alone(sequential, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(sequential, project, symlinks=True)
    before = cell_table_times(project)
    log = run_typed(project, typed("kedro run --pipeline=train --namespaces=clip__B__seed0"))
    after = cell_table_times(project)
    assert before.keys() == after.keys()
    assert {p.split("/")[0] for p, t in after.items() if t != before[p]} == {"clip__B__seed0"}
    assert "reused" in log  # its trained model came back from the run cache, nothing retrained


@pytest.mark.slow
def test_an_interrupted_train_run_resumes_without_redoing_finished_cells(raw_demo, tiny_project, tmp_path):
    project = tiny_project(tmp_path / "project", raw_demo)
    # A train run stopped (as by Ctrl-C) once its first cell's tables are written.
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    # Ctrl-C must reach the run even when this suite itself was started in the background with
    # SIGINT ignored (POSIX shells do that to background jobs; an ignored signal stays ignored across
    # exec, a handled one does not): handle it here while the run starts.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with (project / "interrupted.log").open("w") as out:
        try:
            first = subprocess.Popen(
                typed("kedro run --pipeline=train"),
                cwd=project,
                env={**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            signal.signal(signal.SIGINT, previous)
        deadline = time.monotonic() + 600
        while not list((project / CELLS).glob("*/probe_metrics.csv")):
            assert first.poll() is None, "the run ended before any cell finished"
            assert time.monotonic() < deadline, "no cell finished in 10 minutes"
            time.sleep(0.5)
        # Ctrl-C, pressed again while the run goes on: one that lands inside a C callback (numba
        # compiling UMAP's functions) is swallowed there ("Exception ignored ..."), as in a terminal.
        for _ in range(30):
            first.send_signal(signal.SIGINT)
            try:
                first.wait(timeout=1)
                break
            except subprocess.TimeoutExpired:
                continue
        assert first.wait(timeout=120) != 0
    assert not list(project.glob("data/08_reporting/results.csv/*/results.csv")), "it stopped too late"
    before = cell_table_times(project)

    log = run_typed(project, typed("kedro run --pipeline=train --only-missing-outputs"))
    after = cell_table_times(project)
    tables = {
        cell: {p for p in after if p.startswith(f"{cell}/")} for cell in {p.split("/")[0] for p in after}
    }
    assert set(tables) == {
        "imagenet__B__seed0",
        "clip__B__seed0",
        "majority__B",
        "imagenet__final",
        "clip__final",
    }
    # A fold cell was finished when all its tables existed; one caught half-way is completed (its
    # in-memory model is rebuilt, so its first tables are written again). A final cell's product is
    # its model, which goes on in memory to packaging: its node runs again, reloading the trained
    # model from the run cache.
    complete = {cell for cell, paths in tables.items() if paths <= before.keys()}
    finished = {cell for cell in complete if not cell.endswith("__final")}
    assert finished, "no cell had finished when the run was stopped"
    redone = {p for cell in finished for p in tables[cell] if after[p] != before[p]}
    assert not redone, f"finished cells were redone: {sorted(redone)}"
    for cell in complete - finished:
        variant = cell.removesuffix("__final")
        assert f"variant {variant}, fold all, seed 0: reused" in log or variant == "imagenet", cell
    assert set(results(project)["variant"]) == {"imagenet", "clip", "majority"}
    assert "Skipping" in log and "Pipeline execution completed" in log


# --- predict as typed ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_predict_form(trained_demo_project, tmp_path, pyramidal_tiff):
    """Each documented ``predict`` form on the trained tiny demo. The placeholders become the demo's
    held-out slide (2 µm/px) written as a user's files would be: ``/data/slide.jpg`` enlarged 4x to the
    documented 0.5 µm/px, ``/data/spots.csv`` its spot centres at that scale, ``/data/case7.svs`` a
    pyramidal TIFF (0.5, 1 and 2 µm/px) whose scale only its metadata gives."""
    (folder,) = sorted(trained_demo_project.glob("data/01_raw/demo_slide/*/demo_slide"))
    with Image.open(next(folder.glob("HE_*.jpg"))) as decoded:
        image = decoded.convert("RGB")
    large = image.resize((image.width * 4, image.height * 4), Image.Resampling.BICUBIC)
    large.save(tmp_path / "slide.jpg", quality=95)
    spots = pd.read_csv(folder / "spots.csv")
    spots.assign(pixel_x=spots["pixel_x"] * 4, pixel_y=spots["pixel_y"] * 4).to_csv(
        tmp_path / "spots.csv", index=False
    )
    levels = [
        np.asarray(large),
        np.asarray(large.resize((image.width * 2, image.height * 2))),
        np.asarray(image),
    ]
    pyramidal_tiff(tmp_path / "case7.svs", levels, 0.5)
    files = {f"/data/{name}": str(tmp_path / name) for name in ("slide.jpg", "spots.csv", "case7.svs")}

    def summary() -> dict:
        import json

        return json.loads(latest(trained_demo_project, "slide_prediction_summary.json").read_text())

    run_typed(trained_demo_project, typed("kedro run --pipeline=predict"))
    assert summary()["um_per_px"] == pytest.approx(2.0)
    forms = [
        'kedro run --pipeline=predict --params "predict.slide=/data/slide.jpg,predict.um_per_px=0.5"',
        'kedro run --pipeline=predict --params "predict.slide=/data/case7.svs"',
        'kedro run --pipeline=predict --params "predict.slide=/data/slide.jpg,predict.um_per_px=0.5,'
        'predict.spots=/data/spots.csv,predict.variant=imagenet"',
    ]
    for form in forms:
        placeholders = {k: v for k, v in files.items() if k in form}
        run_typed(trained_demo_project, typed(form, **placeholders))
        assert summary()["um_per_px"] == pytest.approx(0.5), form
    predictions = pd.read_csv(latest(trained_demo_project, "slide_predictions.csv"))
    assert len(predictions) == len(spots)  # the last form: one prediction per given spot


# --- the real environment as typed ------------------------------------------------------------------

# A small subset, so the whole chain fits in a test: the labelled sections of patients A-C (A1 with its
# app image), B4's full-resolution image, A and B held out in turn, two variants (the untrained
# baseline and predict's default, scanvi_infonce, which needs the environment's label budget), the
# frozen regime with few steps and few gene-encoder epochs. Everything else -- patch size, genes, label
# budget, catalog -- is the environment's.
HER2ST_SUBSET = {
    "cohort": {"sections": ["A1", "B1", "B4", "C1"]},
    "folds": {"held_out_patients": ["A", "B"]},
    "gene_vae": {"scvi_max_epochs": 8, "scanvi_max_epochs": 4},
    "image_runs": {"variants": ["imagenet", "scanvi_infonce"], "final_models": True},
    "contrastive": {
        "regime": "frozen",
        "max_steps": 30,
        "epochs": 1,
        "feature_views": 2,
        "batch_size": 32,
        "num_workers": 0,
        "progress_bar": False,
    },
}


def override_environment(project: Path, env: str, overrides: dict) -> None:
    """Merge ``overrides`` (top-level key -> mapping) into the copy's ``conf/<env>``: into the file
    that already sets a key (Kedro refuses a key set twice in one environment), else a new file."""
    folder = project / "conf" / env
    rest = dict(overrides)
    for path in sorted(folder.glob("parameters*.yml")):
        params = yaml.safe_load(path.read_text()) or {}
        mine = {key: rest.pop(key) for key in list(rest) if key in params}
        if mine:
            path.write_text(yaml.safe_dump({**params, **{k: {**params[k], **v} for k, v in mine.items()}}))
    (folder / "parameters_zz_test_subset.yml").write_text(yaml.safe_dump(rest))


@pytest.mark.slow
def test_the_real_environment_trains_and_predicts_as_typed(her2st_dir, project_copy, tmp_path):
    """``export TPIR_HER2ST_DIR=...``, ``kedro run --pipeline=train --env her2st`` and ``kedro run
    --pipeline=predict --env her2st`` as typed, from an empty data/, on a small subset of the real
    files (:data:`HER2ST_SUBSET`, in the copy's conf/her2st). Every fold has a row in every table
    that expects one, whatever could or could not be fitted in it."""
    project = project_copy(tmp_path / "project")
    override_environment(project, "her2st", HER2ST_SUBSET)
    (variable,) = typed("export TPIR_HER2ST_DIR=/path/to/her2st/data")[1:]
    env = {variable.split("=")[0]: str(her2st_dir)}

    run_typed(project, typed("kedro run --pipeline=train --env her2st"), env=env)
    gene = pd.read_csv(latest(project, "gene_embedding_scorecard.csv"))
    assert {"pca", "harmony", "scvi", "scanvi"} <= set(gene["embedding"])
    runs = pd.read_csv(latest(project, "training_runs.csv"))
    assert set(runs["variant"]) == {"scanvi_infonce"} and set(runs["fold"]) == {
        "holdout_A",
        "holdout_B",
        "all",
    }
    table = results(project)
    assert {"A", "B"} <= set(table["held_out_patient"].astype(str))
    assert latest(project, "report.html").stat().st_size > 0
    assert not list(project.glob("data/08_reporting/results.csv"))  # the environment's own folder

    run_typed(project, typed("kedro run --pipeline=predict --env her2st"), env=env)
    summary = latest(project, "slide_prediction_summary.json").read_text()
    assert '"A1"' in summary and "patient_in_training_cohort" in summary

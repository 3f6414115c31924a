"""ParallelRunner's workers: spawn and one thread each for the run only; one GPU each."""

from __future__ import annotations

import json
import os

from kedro.framework.project import settings
from kedro.io import DataCatalog, MemoryDataset, SharedMemoryDataset
from kedro.pipeline import Pipeline, node

from tpir_kedro.parallel_workers import (
    DISABLED_PLUGINS_VARIABLE,
    GPUS_VARIABLE,
    THREAD_VARIABLES,
    ParallelWorkers,
    pin_worker_gpu,
    share_declared_memory_datasets,
    worker_gpu,
)

PARALLEL = {"runner": "<kedro.runner.parallel_runner.ParallelRunner object at 0x7f>"}
PIPELINE = Pipeline([node(lambda x: x, "raw", "in_memory", name="pass_on")])


def _catalog():
    return DataCatalog({"in_memory": MemoryDataset(copy_mode="assign"), "raw": MemoryDataset(data=1)})


def test_workers_take_the_gpus_round_robin():
    gpus = ["0", "1", "2"]
    assert [worker_gpu(gpus, (i,)) for i in range(1, 6)] == ["0", "1", "2", "0", "1"]


def test_the_parent_process_and_a_one_gpu_machine_are_left_alone(monkeypatch):
    monkeypatch.setenv(GPUS_VARIABLE, "0,1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert pin_worker_gpu() is None and "CUDA_VISIBLE_DEVICES" not in os.environ  # not a pool worker
    monkeypatch.setenv(GPUS_VARIABLE, "0")
    assert pin_worker_gpu() is None


def test_the_hook_sets_spawn_and_one_thread_for_parallel_runs_only_and_restores(monkeypatch):
    for name in ("KEDRO_MP_CONTEXT", DISABLED_PLUGINS_VARIABLE, *THREAD_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "4")  # the user's choice stays
    hook = ParallelWorkers()
    hook.before_pipeline_run({"runner": "SequentialRunner"}, PIPELINE, _catalog())
    assert "KEDRO_MP_CONTEXT" not in os.environ
    hook.before_pipeline_run(PARALLEL, PIPELINE, _catalog())
    assert os.environ["KEDRO_MP_CONTEXT"] == "spawn" and os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["MKL_NUM_THREADS"] == "4"
    # The workers' default settings get the project's disabled plugins (kedro-mlflow's hook).
    assert json.loads(os.environ[DISABLED_PLUGINS_VARIABLE]) == list(settings.DISABLE_HOOKS_FOR_PLUGINS)
    hook.after_pipeline_run()
    assert "KEDRO_MP_CONTEXT" not in os.environ and "OMP_NUM_THREADS" not in os.environ
    assert DISABLED_PLUGINS_VARIABLE not in os.environ
    assert os.environ["MKL_NUM_THREADS"] == "4"
    hook.before_pipeline_run(PARALLEL, PIPELINE, _catalog())
    hook.on_pipeline_error()
    assert "OMP_NUM_THREADS" not in os.environ


def test_declared_memory_datasets_are_shared_between_workers_only_under_the_parallel_runner(monkeypatch):
    """A declared MemoryDataset lives in one process: under ParallelRunner a worker would save into
    its own copy and the next worker load nothing (issue: cohort_qc arrived as a bare object)."""
    # The hook sets the workers' variables in this process too: restored at the end (as after a run),
    # or every later test would run with one thread and an unconfigured project's disabled plugins.
    for name in ("KEDRO_MP_CONTEXT", DISABLED_PLUGINS_VARIABLE, *THREAD_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    catalog = _catalog()
    ParallelWorkers().before_pipeline_run({"runner": "SequentialRunner"}, PIPELINE, catalog)
    assert type(catalog.get("in_memory")) is MemoryDataset
    hook = ParallelWorkers()
    hook.before_pipeline_run(PARALLEL, PIPELINE, catalog)
    hook.after_pipeline_run()
    assert DISABLED_PLUGINS_VARIABLE not in os.environ and "OMP_NUM_THREADS" not in os.environ
    assert isinstance(catalog.get("in_memory"), SharedMemoryDataset)
    assert catalog.load("raw") == 1  # one holding data (a parameter, an input) keeps it
    other = DataCatalog({"elsewhere": MemoryDataset()})
    assert share_declared_memory_datasets(other, ["in_memory"]) == []  # only the pipeline's datasets

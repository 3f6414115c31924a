"""Worker processes of ``kedro run --runner=ParallelRunner``: start method, threads, one GPU each.

- **spawn**: a forked worker inherits the parent's torch/OpenMP thread pools and CUDA state, which
  deadlocks or fails; Kedro reads ``KEDRO_MP_CONTEXT``, set here to ``spawn`` unless the user chose.
- **threads**: Kedro starts up to one worker per core, so each worker gets one BLAS/OpenMP/torch
  thread (``OMP_NUM_THREADS`` and friends, read by a spawned worker at import): workers x threads
  <= cores. A variable the user set is left alone.
- **GPUs**: on a machine with several, worker *i* sees only GPU ``i mod n`` (``CUDA_VISIBLE_DEVICES``
  set in the worker when the project's settings are imported, before any node touches CUDA), so
  each cell trains on one GPU and cells run side by side; ``contrastive.devices`` stays ``auto``.
- **plugin hooks**: a spawned worker runs with Kedro's default settings, not the project's (Kedro
  bootstraps it only when ``kedro.framework.project.PACKAGE_NAME`` is set there, which a fresh
  process lacks), yet it loads every plugin's hooks, so ``settings.DISABLE_HOOKS_FOR_PLUGINS`` did not
  reach it: kedro-mlflow's hook logged stray MLflow runs from each worker. Kedro's settings are
  Dynaconf's, which read ``DYNACONF_<NAME>`` from the environment, so the workers get the project's
  list as ``DYNACONF_DISABLE_HOOKS_FOR_PLUGINS``.
- **in-memory datasets**: a ``MemoryDataset`` the catalog declares (for its kedro-viz layer, e.g.
  ``cohort_qc``) lives in one process: a worker that saves to it saves to its own copy, and the next
  worker loads nothing. Kedro gives undeclared datasets a ``SharedMemoryDataset`` (held by the
  runner's manager process); the declared ones get the same here, before the runner starts.

The environment is restored after the run.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os

from kedro.framework.hooks import hook_impl
from kedro.io import MemoryDataset, SharedMemoryDataset

logger = logging.getLogger(__name__)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
GPUS_VARIABLE = "TPIR_WORKER_GPUS"  # the parent's visible GPUs, comma-separated, for the workers
DISABLED_PLUGINS_VARIABLE = "DYNACONF_DISABLE_HOOKS_FOR_PLUGINS"  # read by the workers' default settings


def runs_in_worker_processes(run_params: dict) -> bool:
    """Kedro records the runner as its repr (``<kedro.runner.parallel_runner.ParallelRunner object ...>``)."""
    return "ParallelRunner" in str(run_params.get("runner"))


def worker_gpu(gpus: list[str], identity: tuple[int, ...]) -> str:
    """The GPU a pool worker uses: its 1-based pool identity, round-robin over ``gpus``."""
    return gpus[(identity[0] - 1) % len(gpus)]


def pin_worker_gpu() -> str | None:
    """In a ParallelRunner worker on a several-GPU machine: show this worker one GPU only."""
    gpus = [g for g in os.environ.get(GPUS_VARIABLE, "").split(",") if g]
    process = multiprocessing.current_process()
    identity = getattr(process, "_identity", ())  # (i,) in the i-th pool worker; () in the parent
    if len(gpus) < 2 or not identity:
        return None
    gpu = worker_gpu(gpus, identity)
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 -- no torch or no driver: no GPUs to share out
        return []


def share_declared_memory_datasets(catalog, names) -> list[str]:
    """Replace each declared ``MemoryDataset`` among ``names`` by a ``SharedMemoryDataset``, which the
    ParallelRunner connects to its manager; returns the names replaced. One that already holds data
    (put there by the caller before the run) is left as it is: its data would be lost.
    """
    shared = []
    for name in sorted(n for n in names if n in catalog):
        dataset = catalog.get(name)
        if type(dataset) is MemoryDataset and not dataset.exists():
            catalog[name] = SharedMemoryDataset()
            shared.append(name)
    return shared


class ParallelWorkers:
    def __init__(self):
        self._saved: dict[str, str | None] = {}

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        # (pluggy passes only the arguments a hook names without defaults)
        if not runs_in_worker_processes(run_params):
            return
        shared = share_declared_memory_datasets(catalog, pipeline.datasets())
        if shared:
            logger.info("ParallelRunner: %s shared between the workers", ", ".join(shared))
        from kedro.framework.project import settings

        wanted = {
            "KEDRO_MP_CONTEXT": "spawn",
            DISABLED_PLUGINS_VARIABLE: json.dumps(list(settings.DISABLE_HOOKS_FOR_PLUGINS)),
            **dict.fromkeys(THREAD_VARIABLES, "1"),
        }
        gpus = _visible_gpus()
        if len(gpus) > 1:
            wanted[GPUS_VARIABLE] = ",".join(gpus)
        for name, value in wanted.items():
            if name not in os.environ:
                self._saved[name] = None
                os.environ[name] = value
        logger.info(
            "ParallelRunner workers: start method %s, %s thread(s) each%s",
            os.environ["KEDRO_MP_CONTEXT"],
            os.environ["OMP_NUM_THREADS"],
            f", one of GPUs {gpus} each" if len(gpus) > 1 else "",
        )

    def _restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._restore()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._restore()

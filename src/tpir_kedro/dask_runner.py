"""``DaskRunner``: Kedro nodes as tasks of a ``dask.distributed`` cluster (Kedro's Dask deployment
recipe, for Kedro 1.x).

``kedro run --runner=tpir_kedro.dask_runner.DaskRunner`` starts a ``LocalCluster`` on this machine
(one worker process per core, one thread each); ``--runner-params address=tcp://scheduler:8786``
uses a running cluster instead, whose workers have this project installed and see the same data
folder. Each node is one task, submitted once the tasks it depends on are done, so the grid's cells
(:mod:`tpir_kedro.evaluation.grid`) run side by side.

What a node writes to the catalog is written by the worker that ran it (the catalog travels with
each task); what passes in memory -- a cell's fold inputs, model and embeddings, which the catalog
does not declare -- travels as the task's result, through Dask, to the tasks that read it. As with
``ParallelRunner``, node hooks do not run on the workers (the run manifest has no per-node times).

GPUs: run one worker per GPU, each seeing one (``dask-cuda``'s ``LocalCUDACluster`` does this, or
start each ``dask worker`` with its own ``CUDA_VISIBLE_DEVICES``), then pass its ``address``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from typing import Any

from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node
from kedro.runner import AbstractRunner

logger = logging.getLogger(__name__)


def _in_memory(name: str, catalog) -> bool:
    """A dataset that exists only in the running process: undeclared, or declared in memory."""
    return name not in catalog or isinstance(catalog.get(name), MemoryDataset)


def _bootstrap(package_name: str | None) -> None:
    """A worker process configures the project once (settings, logging) before its first node."""
    from kedro.framework.project import PACKAGE_NAME, configure_project

    if package_name and PACKAGE_NAME != package_name:
        configure_project(package_name)


def run_node_on_worker(
    node: Node,
    catalog,
    memory_inputs: dict[str, dict[str, Any]],
    memory_outputs: Collection[str],
    package_name: str | None,
    *dependencies: Any,
) -> dict[str, Any]:
    """Runs ``node`` on a Dask worker: inputs from the catalog, or from the results of the tasks that
    produced them in memory (``memory_inputs``: name -> that task's result); saves the declared
    outputs and returns the in-memory ones. ``dependencies`` only order the task after its parents.
    """
    _bootstrap(package_name)
    inputs = {
        name: memory_inputs[name][name] if name in memory_inputs else catalog.load(name)
        for name in node.inputs
    }
    outputs = node.run(inputs)
    for name, data in outputs.items():
        if name not in memory_outputs:
            catalog.save(name, data)
    return {name: outputs[name] for name in memory_outputs}


class DaskRunner(AbstractRunner):
    """Runs a pipeline's nodes as ``dask.distributed`` tasks.

    Parameters
    ----------
    address
        A running scheduler's address; None starts a ``LocalCluster`` for the run.
    n_workers
        Worker processes of the local cluster (default: the machine's cores).
    threads_per_worker
        Threads per local worker (default 1: workers x threads <= cores; Dask also gives each worker
        one OpenMP/BLAS thread).
    """

    def __init__(
        self,
        address: str | None = None,
        n_workers: int | str | None = None,
        threads_per_worker: int | str = 1,
        is_async: bool = False,
    ):
        super().__init__(is_async=is_async)
        self._address = address
        self._n_workers = int(n_workers) if n_workers is not None else (os.cpu_count() or 1)
        self._threads = int(threads_per_worker)

    def _get_executor(self, max_workers: int):  # the cluster is the executor
        return None

    def _client(self):
        from distributed import Client, LocalCluster

        if self._address:
            return Client(self._address), None
        cluster = LocalCluster(
            n_workers=self._n_workers,
            threads_per_worker=self._threads,
            processes=True,
            host="127.0.0.1",  # loopback: the scheduler and its dashboard are not served to the network
            dashboard_address=None,
        )
        return Client(cluster), cluster

    def _run(self, pipeline: Pipeline, catalog, hook_manager=None, run_id: str | None = None) -> None:
        from distributed import as_completed
        from kedro.framework.project import PACKAGE_NAME

        nodes = pipeline.nodes
        producer = {name: node for node in nodes for name in node.outputs}
        memory = {name for name in producer if _in_memory(name, catalog)}
        client, cluster = self._client()
        try:
            logger.info("DaskRunner: %d tasks, scheduler %s", len(nodes), client.scheduler.address)
            futures = {}
            for node in nodes:  # topologically sorted: every parent is submitted before its children
                futures[node] = client.submit(
                    run_node_on_worker,
                    node,
                    catalog,
                    {name: futures[producer[name]] for name in node.inputs if name in memory},
                    [name for name in node.outputs if name in memory],
                    PACKAGE_NAME,
                    *[futures[parent] for parent in pipeline.node_dependencies[node]],
                    key=f"{node.name}-{run_id or ''}",
                    pure=False,
                )
            done = 0
            by_future = {future.key: node for node, future in futures.items()}
            for future in as_completed(futures.values()):
                future.result()  # raises the node's error here, naming the node in the traceback
                done += 1
                logger.info("Completed node: %s", by_future[future.key].name)
                logger.info("Completed %d out of %d tasks", done, len(nodes))
            # The pipeline's own in-memory outputs come back to this process, as other runners leave them.
            for name in pipeline.outputs() & memory:
                catalog[name] = futures[producer[name]].result()[name]
        finally:
            client.close()
            if cluster is not None:
                cluster.close()

"""Experiment tracking with kedro-mlflow: one MLflow run per ``kedro run``, a child run per grid cell.

kedro-mlflow gives the configuration (``conf/base/mlflow.yml``: a SQLite store under
``data/09_tracking/``), the run's life cycle (set-up, start, end, a failed run marked failed) and
``kedro mlflow ui``. Its own hook also logs every node's parameters from ``before_node_run``; under
the ParallelRunner and the Dask runner that hook runs in worker processes, where no MLflow run is
active, so each worker would open stray runs in a default store. Its hook is therefore not
registered (``settings.DISABLE_HOOKS_FOR_PLUGINS``); :class:`MlflowTracking` calls it from the main
process only, for everything but the per-node logging, and adds:

- before any node runs: the run's parameters, flattened (``contrastive.max_steps``), once;
- after the run, from what the run wrote (:mod:`tpir_kedro.reporting.tracked_metrics`): a child run
  per grid cell tagged ``variant``, ``fold``, ``seed``, with its probes' scores, Pearson r, patient
  decodability, steps and plateau; the headline numbers on the parent; the report, results, run
  manifest and training summary as artifacts.

Nothing is logged while nodes run and nothing a node reads comes from here, so tracking cannot
change a result (a test compares tracked and untracked runs exactly). ``TPIR_TRACKING=off``
switches it off (no store is opened); so does leaving kedro-mlflow uninstalled, or listing a
pipeline under ``tracking.disable_tracking.pipelines`` in ``mlflow.yml``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time

from kedro.framework.hooks import hook_impl
from kedro.io.core import AbstractVersionedDataset

from tpir_kedro.hooks import run_parameters
from tpir_kedro.reporting.tracked_metrics import cell_records, flat_parameters, summary_metrics

logger = logging.getLogger(__name__)

TRACKING_VARIABLE = "TPIR_TRACKING"
OFF = {"off", "0", "false", "no"}
PLUGIN_MODULE = "kedro_mlflow"
# kedro-mlflow's distribution name as Kedro matches it against DISABLE_HOOKS_FOR_PLUGINS.
PLUGIN_DISTRIBUTIONS = ("kedro_mlflow", "kedro-mlflow")
# Outputs kept with the run, when this run wrote them.
ARTIFACTS = (
    "html_report",
    "results",
    "results_summary",
    "training_runs",
    "gene_embedding_scorecard",
    "run_manifest",
    "slide_prediction_summary",
)
# The tables the cell records are read from.
CELL_TABLES = ("results", "patient_decodability", "training_runs")


def tracking_enabled(environ=os.environ) -> bool:
    """True unless ``TPIR_TRACKING`` says off or kedro-mlflow is not installed."""
    if environ.get(TRACKING_VARIABLE, "on").strip().lower() in OFF:
        return False
    return importlib.util.find_spec(PLUGIN_MODULE) is not None


def _written_by_run(catalog, name: str, save_version: str | None):
    """The dataset ``name`` when this run saved it (its newest version is the run's), else None."""
    if save_version is None or name not in catalog:
        return None
    dataset = catalog.get(name)
    if not isinstance(dataset, AbstractVersionedDataset):
        return None
    try:
        return dataset if dataset.resolve_load_version() == save_version else None
    except Exception:  # noqa: BLE001 -- never written: nothing to record
        return None


class MlflowTracking:
    """See the module docstring; registered by ``settings.py`` when :func:`tracking_enabled`."""

    def __init__(self):
        self._plugin = None
        self._parameters: dict = {}
        self._save_version: str | None = None
        self._run_id: str | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook

        # A fresh plugin hook per context: kedro-mlflow keeps the run's state on it.
        self._plugin = MlflowHook()
        self._plugin.after_context_created(context)

    @hook_impl
    def after_catalog_created(
        self, catalog, conf_catalog, conf_creds, parameters, save_version, load_versions
    ) -> None:
        self._parameters = run_parameters(parameters)
        self._save_version = save_version
        if self._plugin is not None:
            self._plugin.after_catalog_created(
                catalog=catalog,
                conf_catalog=conf_catalog,
                conf_creds=conf_creds,
                parameters=parameters,
                save_version=save_version,
                load_versions=load_versions,
            )

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        self._run_id = None
        if self._plugin is None:
            return
        import mlflow

        self._plugin.before_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)
        run = mlflow.active_run()
        if run is None:  # tracking disabled for this pipeline in mlflow.yml
            return
        self._run_id = run.info.run_id
        client = mlflow.MlflowClient()
        client.set_tag(self._run_id, "run_id", str(self._save_version))
        self._log_parameters(client)
        logger.info(
            "MLflow run %s (experiment %r, store %s): `make mlflow` shows it",
            self._run_id,
            mlflow.get_experiment(run.info.experiment_id).name,
            mlflow.get_tracking_uri(),
        )

    def _log_parameters(self, client) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params = []
        for key, value in flat_parameters(self._parameters).items():
            if len(value) > MAX_PARAM_VAL_LENGTH:
                logger.warning("parameter %s is longer than MLflow keeps: truncated in the tracker", key)
                value = value[:MAX_PARAM_VAL_LENGTH]
            params.append(Param(key, value))
        for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(self._run_id, params=params[start : start + MAX_PARAMS_TAGS_PER_BATCH])

    # trylast: after RunManifestHooks has written the run manifest.
    @hook_impl(trylast=True)
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        if self._plugin is None:
            return
        if self._run_id is not None:
            try:
                self._log_outputs(catalog)
            except Exception as exc:  # noqa: BLE001 -- the run's outputs are saved; only the tracker lacks them
                logger.error("MLflow run %s: recording the run's outputs failed: %s", self._run_id, exc)
        self._plugin.after_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)
        self._run_id = None

    def _log_outputs(self, catalog) -> None:
        import mlflow
        from mlflow.entities import Metric, RunTag
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        client = mlflow.MlflowClient()
        experiment_id = client.get_run(self._run_id).info.experiment_id
        now = int(time.time() * 1000)

        def table(name):
            dataset = _written_by_run(catalog, name, self._save_version)
            return None if dataset is None else dataset.load()

        def metrics(values: dict) -> list:
            return [Metric(key, value, now, 0) for key, value in values.items()]

        records = cell_records(**{name: table(name) for name in CELL_TABLES})
        for record in records:
            child = client.create_run(
                experiment_id, run_name=record.name, tags={MLFLOW_PARENT_RUN_ID: self._run_id, **record.tags}
            )
            client.log_batch(child.info.run_id, metrics=metrics(record.metrics))
            client.set_terminated(child.info.run_id)
        headline = summary_metrics(table("results_summary"))
        if headline:
            client.log_batch(self._run_id, metrics=metrics(headline))
        kept = []
        for name in ARTIFACTS:
            dataset = _written_by_run(catalog, name, self._save_version)
            if dataset is not None:
                client.log_artifact(self._run_id, str(dataset._get_load_path()))
                kept.append(name)
        client.log_batch(
            self._run_id, tags=[RunTag("cells", str(len(records))), RunTag("artifacts", ",".join(kept))]
        )
        logger.info(
            "MLflow run %s: %d cell run(s), %d headline metric(s), artifacts %s",
            self._run_id,
            len(records),
            len(headline),
            kept,
        )

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        if self._plugin is not None and self._run_id is not None:
            self._plugin.on_pipeline_error(
                error=error, run_params=run_params, pipeline=pipeline, catalog=catalog
            )
        self._run_id = None

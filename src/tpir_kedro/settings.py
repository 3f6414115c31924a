"""Kedro project settings."""

import os

from kedro.config import OmegaConfigLoader

from tpir_kedro.log_lines import plain_lines_when_not_a_terminal
from tpir_kedro.quiet_logs import quiet_third_party_logs

# Before Kedro builds its config loader (whose resolver registration warns): see quiet_logs.py.
quiet_third_party_logs()
# Kedro configured its logging on import, before these settings: a log file gets whole lines.
plain_lines_when_not_a_terminal()


def _env(name: str, default: str | None = None) -> str:
    """``${env:NAME,default}`` in any config file: where real data lives differs per machine."""
    value = os.environ.get(name, default)
    if value is None:
        raise ValueError(f"environment variable {name} is not set and has no default")
    return value


CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"env": _env},
    # An environment overrides single keys (conf/her2st sets patches.size_px only), not whole blocks.
    "merge_strategy": {"parameters": "soft"},
}

from tpir_kedro.grid_hooks import GridHooks  # noqa: E402
from tpir_kedro.hooks import RunManifestHooks, ShortInputErrors  # noqa: E402
from tpir_kedro.parallel_workers import ParallelWorkers, pin_worker_gpu  # noqa: E402
from tpir_kedro.tracking_hooks import PLUGIN_DISTRIBUTIONS, MlflowTracking, tracking_enabled  # noqa: E402

# A ParallelRunner worker imports these settings first: pin its GPU before any node touches CUDA.
pin_worker_gpu()

HOOKS = (
    GridHooks(),
    RunManifestHooks(),
    ShortInputErrors(),
    ParallelWorkers(),
    *((MlflowTracking(),) if tracking_enabled() else ()),
)
# kedro-mlflow's own hook would log from ParallelRunner/Dask workers: MlflowTracking drives it instead.
DISABLE_HOOKS_FOR_PLUGINS = PLUGIN_DISTRIBUTIONS

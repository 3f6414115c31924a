"""The run's parameters reach the experiment grid (:mod:`tpir_kedro.evaluation.grid`) before Kedro
builds the pipelines.

Kedro builds a project's pipelines once per process, lazily, at their first use -- after the
context exists, before any node runs. The grid of image-training cells is declared by parameters of
the run's environment (``--env her2st`` lists other patients than the demo), so :class:`GridHooks`
keeps the run's parameters (conf + ``--params``) for :func:`current_grid` and, when they declare
another grid than the pipelines were built with (a second session in one process), has Kedro build
them again. Commands that open no session (``kedro registry``) read the project's conf for
``$KEDRO_ENV``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

from tpir_kedro.evaluation.grid import Grid, grid_from_parameters

PIPELINES_MODULE = f"{__package__}.pipeline_registry"
# gene_vae: a variant may read any gene encoder the run fits (gene_vae.fit), checked as the grid is declared.
GRID_PARAMETERS = ("image_runs", "variants", "folds", "gene_vae")

_parameters: dict[str, Any] | None = None


def use_parameters(params: Mapping[str, Any]) -> bool:
    """Declare the grid from a Kedro context's parameters; True when that changes the grid."""
    global _parameters
    new = {k: params.get(k) for k in GRID_PARAMETERS}
    changed = new != _parameters
    _parameters = new
    return changed


def current_grid() -> Grid:
    """The grid of the running session's parameters (see the module docstring)."""
    return grid_from_parameters(_parameters if _parameters is not None else _conf_parameters())


def _conf_parameters() -> dict[str, Any]:
    from kedro.config import OmegaConfigLoader
    from kedro.framework.project import settings
    from kedro.utils import find_kedro_project

    project = find_kedro_project(Path.cwd())
    if project is None:
        raise RuntimeError("the image-training grid needs a Kedro project: run from inside one")
    loader = OmegaConfigLoader(
        conf_source=str(Path(project) / settings.CONF_SOURCE),
        env=os.environ.get("KEDRO_ENV"),
        **settings.CONFIG_LOADER_ARGS,
    )
    return dict(loader["parameters"])


class GridHooks:
    @hook_impl
    def after_context_created(self, context) -> None:
        # The config loader's parameters (conf + --params), not context.params: that one validates
        # them against the pipelines, which would build them -- from the previous grid -- first.
        try:
            params = context.config_loader["parameters"]
        except MissingConfigException:
            params = {}
        if use_parameters(params):
            from kedro.framework.project import pipelines

            pipelines.configure(PIPELINES_MODULE)  # public: reset, so the next access rebuilds

"""The experiment grid: which image-training cells the ``train`` pipeline is made of.

A *cell* is one image-training run and what is read off it: variant x held-out unit x seed (a fold
cell: fold inputs -> train -> embed -> probes, expression prediction, patient decodability), or a
variant trained on every patient (a final cell: what predict uses). Each cell is a Kedro namespace,
so ``kedro run --namespaces=<cell>`` re-runs one, ``--only-missing-outputs`` resumes a grid, runners
(ParallelRunner, Dask) spread cells, and deployment plugins group a cell's nodes into one task.

The grid is declared by parameters -- ``image_runs`` (variants, seeds, final models), ``variants``
and ``folds`` (the held-out patients or sections, listed) -- of the run's environment; how they
reach the pipeline registry: :mod:`tpir_kedro.grid_hooks`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tpir_kedro.evaluation.folds import ALL_PATIENTS, fold_key, held_out_units
from tpir_kedro.models.gene_encoder_family import parse_family
from tpir_kedro.models.image_runs import ImageRuns
from tpir_kedro.models.variants import LOG_HVG

SEPARATOR = "__"  # between a cell's parts; top-level namespaces, so plugins make one task per cell
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class Cell:
    """One image-training run. ``fold``: the fold key (``holdout_<unit>``, or ``all``)."""

    variant: str
    fold: str
    seed: int
    unit: str | None = None  # the held-out patient or section; None for a final cell

    @property
    def is_final(self) -> bool:
        return self.fold == ALL_PATIENTS

    @property
    def namespace(self) -> str:
        if self.is_final:
            return SEPARATOR.join([self.variant, "final"])
        return SEPARATOR.join([self.variant, str(self.unit), f"seed{self.seed}"])


def floor_namespace(unit: str) -> str:
    """The namespace of a fold's majority floor (``majority__<unit>``: no training, so no seed)."""
    return SEPARATOR.join(["majority", unit])


def cell_namespace(variant: str, fold: str, seed: int | None) -> str:
    """The namespace of the cell a results row came from, from its ``variant``, ``fold`` key and
    ``seed`` (None for the majority floor).
    """
    if fold == ALL_PATIENTS:
        return Cell(variant, fold, 0).namespace
    unit = fold.removeprefix(fold_key(""))
    return floor_namespace(unit) if seed is None else Cell(variant, fold, seed, unit).namespace


@dataclass(frozen=True)
class Grid:
    fold_cells: tuple[Cell, ...]
    final_cells: tuple[Cell, ...]

    @property
    def cells(self) -> tuple[Cell, ...]:
        return self.fold_cells + self.final_cells

    @property
    def folds(self) -> tuple[str, ...]:
        return tuple(self.units)

    @property
    def units(self) -> dict[str, str]:
        """Fold key -> the held-out patient or section, in grid order."""
        return {c.fold: str(c.unit) for c in self.fold_cells}


def _check_gene_inputs(defined: Mapping[str, Any], variants: list[str], gene_vae: Mapping[str, Any]) -> None:
    """Each variant's ``gene_input`` is ``log_hvg`` or a gene encoder ``gene_vae.fit`` names: a
    misspelt encoder fails when the grid is declared, not as a variant skipped in every fold.
    """
    fitted = [s.name for s in parse_family(gene_vae.get("family"), gene_vae.get("fit"))]
    for name in variants:
        gene_input = (defined.get(name) or {}).get("gene_input")
        if gene_input is not None and gene_input != LOG_HVG and gene_input not in fitted:
            raise ValueError(
                f"variants.{name}.gene_input: {gene_input!r} is neither {LOG_HVG!r} nor a gene encoder "
                f"of gene_vae.fit {fitted} (add it there, with its entry in gene_vae.family)"
            )


def grid_from_parameters(params: Mapping[str, Any]) -> Grid:
    """The cells that ``params`` declare: every variant x held-out unit x seed, then one final cell
    per variant (first seed) when ``image_runs.final_models``.
    """
    runs = ImageRuns.from_dict(params.get("image_runs"))
    defined = params.get("variants") or {}
    variants = list(defined) if runs.variants is None else list(runs.variants)
    unknown = [v for v in variants if v not in defined]
    if unknown:
        raise ValueError(f"image_runs.variants: unknown variant(s) {unknown}; defined: {sorted(defined)}")
    _check_gene_inputs(defined, variants, params.get("gene_vae") or {})
    units = held_out_units(params.get("folds") or {})
    if units is None:
        raise ValueError(
            "folds.held_out_patients is null, but the grid of image-training cells is built from the "
            "conf before the cohort is read: list the patients to hold out (e.g. [A, B, C, D]; "
            "conf/her2st lists A-H)"
        )
    for name in [*variants, *units]:
        if not _NAME.match(name) or SEPARATOR in name:
            raise ValueError(
                f"{name!r} cannot name a grid cell: use letters, digits, '-' and single '_' "
                f"(the cell namespace joins its parts with {SEPARATOR!r})"
            )
    fold_cells = tuple(
        Cell(variant, fold_key(unit), seed, unit)
        for seed in runs.seeds
        for unit in units
        for variant in variants
    )
    finals = tuple(Cell(v, ALL_PATIENTS, runs.seeds[0]) for v in variants) if runs.final_models else ()
    return Grid(fold_cells, finals)

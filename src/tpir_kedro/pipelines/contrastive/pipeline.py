"""Image training as a grid of namespaced cells (:mod:`tpir_kedro.evaluation.grid`), and collectors.

A fold cell ``<variant>__<unit>__seed<s>``: fold inputs -> train -> embed -> probes, expression
prediction, patient decodability; its tables go through the catalog's ``{cell}.*`` factories. A
final cell ``<variant>__final`` trains on every patient. ``majority__<unit>`` scores the fold's
class-prior floor. The collectors stack the cells' tables into the run's tables.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from tpir_kedro.evaluation.grid import Cell, Grid, floor_namespace
from tpir_kedro.pipelines.contrastive import nodes

# What every cell reads and nothing writes: kept out of the cell's namespace.
SHARED = {
    "cohort",
    "patient_folds",
    "fold_genes",
    "gene_encoders",
    "patch_store",
    "checkpoint_root",
}
PARAMETERS = {"params:evaluation", "params:contrastive", "params:variants"}
FOLD_INPUTS = ["cohort", "patient_folds", "fold_genes", "gene_encoders", "patch_store", "params:evaluation"]
CELL_TABLES = (
    "probe_metrics",
    "confusion_matrices",
    "expression_prediction",
    "patient_decodability",
    "training_history",
)


def _bound(func, **cell):
    """``func`` with the cell's constants bound (a partial pickles for ParallelRunner; keeps the name)."""
    return update_wrapper(partial(func, **cell), func)


def _cell(nodes_: list, namespace: str) -> Pipeline:
    """``nodes_`` as one namespace; the shared datasets and parameters they read keep their names."""
    free = Pipeline(nodes_).inputs()
    return Pipeline(
        nodes_,
        namespace=namespace,
        inputs=SHARED & free,
        parameters={p for p in PARAMETERS if p in free},
    )


def _fold_inputs_node(fold: str) -> node:
    return node(
        _bound(nodes.cell_fold_inputs, fold=fold), FOLD_INPUTS, "fold_inputs", name="assemble_fold_inputs"
    )


def _model_nodes(cell: Cell) -> list:
    return [
        _fold_inputs_node(cell.fold),
        node(
            _bound(nodes.cell_image_model, variant=cell.variant, seed=cell.seed),
            ["fold_inputs", "patch_store", "checkpoint_root", "params:contrastive", "params:variants"],
            ["image_model", "training_history"],
            name="train_image_model",
        ),
    ]


def fold_cell(cell: Cell) -> Pipeline:
    """One variant x held-out unit x seed: train, embed, score."""
    return _cell(
        [
            *_model_nodes(cell),
            node(
                _bound(nodes.cell_embeddings, seed=cell.seed),
                ["image_model", "fold_inputs", "patch_store", "checkpoint_root", "params:contrastive"],
                "embeddings",
                name="embed_fold_spots",
            ),
            node(
                nodes.cell_probe_metrics,
                ["embeddings", "fold_inputs", "params:evaluation"],
                ["probe_metrics", "confusion_matrices"],
                name="score_probes",
            ),
            node(
                nodes.cell_expression_prediction,
                ["embeddings", "fold_inputs", "params:evaluation"],
                "expression_prediction",
                name="score_expression_prediction",
            ),
            node(
                nodes.cell_patient_decodability,
                ["embeddings", "fold_inputs"],
                "patient_decodability",
                name="score_patient_decodability",
            ),
        ],
        cell.namespace,
    )


def final_cell(cell: Cell) -> Pipeline:
    """One variant on every patient: the model predict uses (packaged by the evaluation)."""
    return _cell(
        [
            *_model_nodes(cell),
            node(
                _bound(nodes.final_image_model, seed=cell.seed),
                ["image_model", "fold_inputs", "patch_store", "checkpoint_root", "params:contrastive"],
                "final_model",
                name="embed_training_spots",
            ),
        ],
        cell.namespace,
    )


def majority_floor(fold: str, unit: str) -> Pipeline:
    return _cell(
        [
            _fold_inputs_node(fold),
            node(nodes.fold_majority_metrics, "fold_inputs", "probe_metrics", name="score_majority"),
        ],
        floor_namespace(unit),
    )


def collectors(grid: Grid) -> Pipeline:
    floors = [floor_namespace(unit) for unit in grid.units.values()]
    stacks = []
    for table in CELL_TABLES:
        sources = [f"{c.namespace}.{table}" for c in grid.fold_cells]
        if table == "probe_metrics":
            sources += [f"{ns}.probe_metrics" for ns in floors]
        stacks.append(node(nodes.stacked_tables, sources, table, name=f"gather_{table}"))
    finals = [c.namespace for c in grid.final_cells]
    return Pipeline(
        [
            *stacks,
            node(
                nodes.final_image_models,
                [f"{ns}.final_model" for ns in finals],
                "final_image_models",
                name="gather_final_image_models",
            ),
            node(
                nodes.training_runs,
                ["training_history", *[f"{ns}.training_history" for ns in finals]],
                "training_runs",
                name="summarise_training_runs",
            ),
        ]
    )


def create_pipeline(grid: Grid, **kwargs) -> Pipeline:
    cells = [fold_cell(c) for c in grid.fold_cells] + [final_cell(c) for c in grid.final_cells]
    floors = [majority_floor(fold, unit) for fold, unit in grid.units.items()]
    return Pipeline([*cells, *floors, collectors(grid)], tags=["contrastive"])

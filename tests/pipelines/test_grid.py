"""The experiment grid: cells declared by parameters, one namespace each, collected by name."""

from __future__ import annotations

import pytest

from tpir_kedro.evaluation.grid import Cell, grid_from_parameters
from tpir_kedro.pipelines.contrastive.pipeline import create_pipeline

VARIANTS = {"clip": {}, "imagenet": {"objective": "none"}, "supervised": {"objective": "supervised"}}


def params(**overrides):
    base = {
        "variants": VARIANTS,
        "image_runs": {"seeds": [0, 1], "final_models": True},
        "folds": {"held_out_patients": ["A", "B"]},
    }
    return {**base, **overrides}


def test_every_variant_fold_and_seed_is_a_cell_and_each_variant_has_a_final_cell():
    grid = grid_from_parameters(params())
    assert len(grid.fold_cells) == 3 * 2 * 2 and len(grid.final_cells) == 3
    assert Cell("clip", "holdout_B", 1, "B") in grid.fold_cells
    assert grid.fold_cells[0].namespace == "clip__A__seed0"
    assert [c.namespace for c in grid.final_cells] == ["clip__final", "imagenet__final", "supervised__final"]
    assert all(c.seed == 0 for c in grid.final_cells)  # the first seed
    assert grid.folds == ("holdout_A", "holdout_B")
    assert len({c.namespace for c in grid.cells}) == len(grid.cells)


def test_the_grid_follows_variants_seeds_sections_and_final_models():
    grid = grid_from_parameters(
        params(
            image_runs={"variants": ["imagenet"], "seeds": [3], "final_models": False},
            folds={"held_out_patients": ["A"], "held_out_sections": ["C6"]},
        )
    )
    assert [c.namespace for c in grid.cells] == ["imagenet__C6__seed3", "imagenet__A__seed3"]
    # kedro run --params splits on commas: names separated by spaces are a list too
    spaced = grid_from_parameters(params(folds={"held_out_patients": "A B"}))
    assert spaced.folds == ("holdout_A", "holdout_B")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"folds": {"held_out_patients": None}}, "list the patients"),
        ({"image_runs": {"variants": ["bleep"]}}, "unknown variant"),
        ({"image_runs": {"seeds": []}}, "seeds"),
        ({"folds": {"held_out_patients": ["A__B"]}}, "cannot name a grid cell"),
        ({"folds": {"held_out_patients": ["A.1"]}}, "cannot name a grid cell"),
        (
            {"variants": {"clip": {"gene_input": "sysvi"}}},
            r"variants\.clip\.gene_input: 'sysvi' is neither 'log_hvg' nor a gene encoder of gene_vae\.fit",
        ),
        (
            {"variants": {"x": {"gene_input": "sysvi"}}, "gene_vae": {"fit": ["sysvi"]}},
            r"gene_vae\.fit: unknown encoder\(s\) \['sysvi'\]",
        ),
    ],
)
def test_a_grid_that_cannot_be_built_says_why(overrides, message):
    with pytest.raises(ValueError, match=message):
        grid_from_parameters(params(**overrides))


def test_a_variant_may_take_any_gene_encoder_the_run_fits():
    family = {"scvi": {"model": "scvi"}, "sysvi": {"model": "sysvi"}}
    grid = grid_from_parameters(
        params(variants={"x": {"gene_input": "sysvi"}}, gene_vae={"family": family, "fit": ["scvi", "sysvi"]})
    )
    assert grid.fold_cells[0].variant == "x"


def test_each_cell_is_a_namespace_whose_tables_the_gatherers_read():
    grid = grid_from_parameters(params(image_runs={"seeds": [0]}))
    pipeline = create_pipeline(grid)
    namespaces = {n.namespace for n in pipeline.nodes if n.namespace}
    assert namespaces == {c.namespace for c in grid.cells} | {"majority__A", "majority__B"}
    # One top-level namespace per cell: Kedro's --namespaces and the plugins' group-by-namespace
    # address one cell each.
    assert all("." not in ns for ns in namespaces)
    one = pipeline.only_nodes_with_namespaces(["clip__A__seed0"])
    assert {n.name.split(".")[1] for n in one.nodes} == {
        "assemble_fold_inputs",
        "train_image_model",
        "embed_fold_spots",
        "score_probes",
        "score_expression_prediction",
        "score_patient_decodability",
    }
    # What a cell reads from outside: the shared upstream datasets and parameters, nothing of another cell.
    assert one.inputs() == {
        "cohort",
        "patient_folds",
        "fold_genes",
        "gene_encoders",
        "patch_store",
        "checkpoint_root",
        "params:evaluation",
        "params:contrastive",
        "params:variants",
    }
    gather = next(n for n in pipeline.nodes if n.name == "gather_probe_metrics")
    assert set(gather.inputs) == {f"{c.namespace}.probe_metrics" for c in grid.fold_cells} | {
        "majority__A.probe_metrics",
        "majority__B.probe_metrics",
    }
    assert pipeline.outputs() >= {"probe_metrics", "training_runs", "final_image_models"}

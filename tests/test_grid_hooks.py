"""The run's parameters reach the grid before Kedro builds the pipelines, and a new grid rebuilds them."""

from __future__ import annotations

import pytest
from kedro.framework.session import KedroSession

from tpir_kedro import grid_hooks


@pytest.fixture()
def project(tmp_path, project_copy):
    return project_copy(tmp_path / "project")


def test_each_session_builds_the_grid_of_its_own_parameters(project):
    from kedro.framework.project import pipelines

    namespaces = []
    for held_out in (["B"], ["A", "C"]):
        params = {"folds": {"held_out_patients": held_out}, "image_runs": {"variants": ["imagenet"]}}
        with KedroSession.create(project_path=project, runtime_params=params) as session:
            session.load_context()
            namespaces.append(sorted({n.namespace for n in pipelines["contrastive"].nodes if n.namespace}))
    assert namespaces == [
        ["imagenet__B__seed0", "imagenet__final", "majority__B"],
        ["imagenet__A__seed0", "imagenet__C__seed0", "imagenet__final", "majority__A", "majority__C"],
    ]


def test_a_variant_may_read_a_gene_encoder_the_runs_own_parameters_fit(project):
    from kedro.framework.project import pipelines

    variant = {"gene_input": "scvi_adversarial", "loss": "infonce"}
    params = {"variants": {"adv": variant}, "image_runs": {"variants": ["adv"], "final_models": False}}
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.load_context()
        with pytest.raises(ValueError, match="neither 'log_hvg' nor a gene encoder of gene_vae.fit"):
            pipelines["contrastive"]
    params["gene_vae"] = {"fit": ["scvi", "scanvi", "scvi_adversarial"]}
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.load_context()
        assert {n.namespace for n in pipelines["contrastive"].nodes if n.namespace} >= {"adv__B__seed0"}


def test_without_a_session_the_grid_comes_from_the_environments_conf(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.setattr(grid_hooks, "_parameters", None)
    monkeypatch.setenv("KEDRO_ENV", "her2st")
    assert grid_hooks.current_grid().folds == tuple(f"holdout_{p}" for p in "ABCDEFGH")
    monkeypatch.delenv("KEDRO_ENV")
    assert grid_hooks.current_grid().folds == ("holdout_B",)


def test_a_grid_that_cannot_be_built_fails_when_the_pipelines_are_built_and_leaves_no_trace(project):
    from kedro.framework.project import pipelines

    params = {"folds": {"held_out_patients": None}}
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.load_context()
        with pytest.raises(ValueError, match="list the patients"):
            pipelines["train"]
    # The next session, with a grid that can be built, opens and builds its own.
    with KedroSession.create(project_path=project) as session:
        session.load_context()
        assert {n.namespace for n in pipelines["contrastive"].nodes} >= {"clip__B__seed0"}

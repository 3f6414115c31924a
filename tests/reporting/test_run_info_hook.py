"""``run_info`` during a run: everything known before the first node, and stage times so far."""

from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from tpir_kedro.hooks import RunManifestHooks


def _identity(x, run_info):
    return x


def _unchanged(x):
    return x


def test_run_info_carries_provenance_and_the_wall_time_of_finished_stages(tmp_path):
    first = node(_identity, ["raw", "run_info"], "middle", name="first", tags=["stage_a"])
    second = node(_identity, ["middle", "run_info"], "out", name="second", tags=["stage_b"])
    pipeline = Pipeline([first, second])
    catalog = DataCatalog({"raw": MemoryDataset(1)})
    hooks = RunManifestHooks()

    hooks.after_catalog_created(catalog=catalog, parameters={"p": 1}, save_version="v1", load_versions={})
    assert catalog.load("run_info") == {"run_id": "v1"}
    hooks.before_pipeline_run(
        run_params={"project_path": str(tmp_path), "env": "local"}, pipeline=pipeline, catalog=catalog
    )
    info = catalog.load("run_info")
    assert info["run_id"] == "v1" and info["parameters"] == {"p": 1} and info["run_params"]["env"] == "local"
    assert {"git", "packages", "device", "input_dataset_versions"} <= set(info)
    assert info["packages"]["kedro"]

    given = hooks.before_node_run(node=first)
    assert given["run_info"]["wall_seconds"]["stages"] == {}
    hooks.after_node_run(node=first)
    given = hooks.before_node_run(node=second)["run_info"]
    assert given["run_id"] == "v1" and set(given["wall_seconds"]["stages"]) == {"stage_a"}
    assert given["wall_seconds"]["elapsed"] >= given["wall_seconds"]["stages"]["stage_a"]
    # Nodes that do not read run_info get nothing new.
    assert hooks.before_node_run(node=node(_unchanged, "raw", "z", name="other")) is None

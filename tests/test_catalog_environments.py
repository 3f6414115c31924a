"""Each environment's outputs live apart (``env_folder`` in every catalog path), with no copied entries."""

from __future__ import annotations

import re

import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project


@pytest.fixture(scope="module")
def configs(project_root):
    """Each environment's resolved configuration (``base_run``: the default run, no ``--env``)."""
    bootstrap_project(project_root)
    out = {}
    for env in ("base_run", "her2st"):
        with KedroSession.create(
            project_path=project_root, env=None if env == "base_run" else env
        ) as session:
            loader = session.load_context().config_loader
            out[env] = {"catalog": loader["catalog"], "parameters": loader["parameters"]}
    return out


@pytest.fixture(scope="module")
def catalogs(configs):
    return {env: config["catalog"] for env, config in configs.items()}


def _paths(catalog):
    return {
        name: entry.get("filepath", entry.get("path"))
        for name, entry in catalog.items()
        if isinstance(entry, dict) and isinstance(entry.get("filepath", entry.get("path")), str)
    }


def test_every_output_of_her2st_sits_in_its_own_folder_and_the_demo_s_does_not(catalogs):
    demo, real = _paths(catalogs["base_run"]), _paths(catalogs["her2st"])
    outputs = [n for n, p in demo.items() if re.match(r"data/0[2-8]_", p)]
    assert len(outputs) > 30
    for name in outputs:
        layer = demo[name].split("/")[1]
        assert demo[name].startswith(f"data/{layer}/") and "/her2st/" not in demo[name], name
        assert real[name] == demo[name].replace(f"data/{layer}/", f"data/{layer}/her2st/", 1), name


def test_the_her2st_catalogs_hold_only_what_differs(project_root):
    entries = [
        name
        for path in sorted((project_root / "conf" / "her2st").glob("catalog*.yml"))
        for name in (yaml.safe_load(path.read_text()) or {})
    ]
    assert sorted(entries) == ["predict_slide", "raw_cohort"]


def test_the_her2st_environment_gives_scanvi_every_label_and_changes_nothing_else_of_gene_vae(
    configs, project_root
):
    """Only A1 is labelled and imaged on HER2ST, so base's image_spots budget would leave the fold
    holding A out without a label (conf/her2st/parameters_gene_vae.yml says why)."""
    params = {env: config["parameters"]["gene_vae"] for env, config in configs.items()}
    assert params["base_run"]["scanvi_labels"] == "image_spots"
    assert params["her2st"] == {**params["base_run"], "scanvi_labels": "all"}
    own = yaml.safe_load((project_root / "conf" / "her2st" / "parameters_gene_vae.yml").read_text())
    assert own == {"gene_vae": {"scanvi_labels": "all"}}

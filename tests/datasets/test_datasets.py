"""The project's Kedro datasets: AnnData h5ad, HER2ST-layout folders and the patch store."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from kedro.io.core import DatasetError, Version

from tpir_kedro.cohort.demo.expression import ExpressionConfig
from tpir_kedro.cohort.demo.simulate import DemoCohortConfig, simulate_demo_cohort
from tpir_kedro.cohort.her2st_layout import Her2stLayout
from tpir_kedro.cohort.schema import COUNTS_LAYER, validate_cohort
from tpir_kedro.cohort.sources import Her2stDirectory
from tpir_kedro.datasets import AnnDataDataset, Her2stDirectoryDataset, PatchStoreDataset
from tpir_kedro.imaging.patch_store import PatchStore
from tpir_kedro.imaging.tiling import plan_tiling

# Patient A's one section has an image, patient B's does not (gene side only).
TINY = DemoCohortConfig(
    n_patients=2,
    sections_per_patient=1,
    grid=(6, 6),
    sections_without_image=1,
    expression=ExpressionConfig(n_genes=60, markers_per_class=5, tumour_program_genes=5),
)


@pytest.fixture(scope="module")
def layout() -> Her2stLayout:
    return simulate_demo_cohort(TINY)


@pytest.fixture(scope="module")
def cohort_dir(layout, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("source") / "demo"
    Her2stDirectoryDataset(path=str(root)).save(layout)
    return root


def versions(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def small_anndata(seed: int) -> AnnData:
    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix(rng.poisson(2.0, (6, 4)).astype(np.int32))
    obs = pd.DataFrame(
        {"patient": pd.Categorical(list("AABBCC")), "pixel_x": rng.random(6)},
        index=[f"spot{i}" for i in range(6)],
    )
    adata = AnnData(obs=obs, var=pd.DataFrame(index=["G1", "G2", "G3", "G4"]), layers={COUNTS_LAYER: counts})
    adata.uns["sections"] = {"A1": {"image_path": "ST-imgs/A/A1/HE.jpg", "um_per_px": 0.5, "seed": seed}}
    return adata


def assert_same_anndata(got: AnnData, expected: AnnData) -> None:
    assert sp.issparse(got.layers[COUNTS_LAYER])
    np.testing.assert_array_equal(got.layers[COUNTS_LAYER].toarray(), expected.layers[COUNTS_LAYER].toarray())
    assert got.layers[COUNTS_LAYER].dtype == np.int32
    pd.testing.assert_frame_equal(got.obs, expected.obs)
    assert list(got.var_names) == list(expected.var_names)
    assert got.uns["sections"]["A1"]["image_path"] == expected.uns["sections"]["A1"]["image_path"]
    assert got.uns["sections"]["A1"]["seed"] == expected.uns["sections"]["A1"]["seed"]


# --- AnnDataDataset --------------------------------------------------------------------------


def test_anndata_round_trips_and_keeps_every_version(tmp_path):
    filepath = tmp_path / "cohort.h5ad"
    first, second = small_anndata(0), small_anndata(1)

    dataset = AnnDataDataset(filepath=str(filepath), version=Version(None, None))
    assert not dataset.exists()
    dataset.save(first)
    assert dataset.exists()
    assert_same_anndata(dataset.load(), first)
    (v1,) = versions(filepath)
    first_bytes = (filepath / v1 / "cohort.h5ad").read_bytes()

    time.sleep(0.01)  # versions are millisecond timestamps
    AnnDataDataset(filepath=str(filepath), version=Version(None, None)).save(second)
    v1_again, v2 = versions(filepath)
    assert v1_again == v1 and v2 > v1
    assert (filepath / v1 / "cohort.h5ad").read_bytes() == first_bytes
    assert_same_anndata(AnnDataDataset(filepath=str(filepath), version=Version(None, None)).load(), second)
    assert_same_anndata(AnnDataDataset(filepath=str(filepath), version=Version(v1, None)).load(), first)
    # Only the two h5ad files: no temporary files left next to them.
    assert sorted(p.relative_to(filepath).as_posix() for p in filepath.rglob("*") if p.is_file()) == [
        f"{v1}/cohort.h5ad",
        f"{v2}/cohort.h5ad",
    ]


def test_anndata_unversioned_save_args_and_permissions(tmp_path):
    filepath = tmp_path / "primary" / "cohort.h5ad"
    dataset = AnnDataDataset(filepath=str(filepath), save_args={"compression": "gzip"})
    dataset.save(small_anndata(2))
    assert_same_anndata(dataset.load(), small_anndata(2))
    assert dataset._describe()["save_args"] == {"compression": "gzip"}
    # Written via a rename, yet as readable as a file written directly (not mkstemp's 0600).
    (tmp_path / "reference").write_bytes(b"")
    assert stat.S_IMODE(filepath.stat().st_mode) == stat.S_IMODE((tmp_path / "reference").stat().st_mode)


def test_anndata_refuses_what_is_not_anndata(tmp_path):
    dataset = AnnDataDataset(filepath=str(tmp_path / "cohort.h5ad"), version=Version(None, None))
    with pytest.raises(DatasetError, match="can only save AnnData, got DataFrame"):
        dataset.save(pd.DataFrame({"a": [1]}))
    assert not dataset.exists()


def test_anndata_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no AnnData at"):
        AnnDataDataset(filepath=str(tmp_path / "cohort.h5ad")).load()
    with pytest.raises(DatasetError):
        AnnDataDataset(filepath=str(tmp_path / "cohort.h5ad"), version=Version(None, None)).load()


@pytest.mark.parametrize("versioned", [True, False])
def test_an_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch, versioned):
    filepath = tmp_path / "cohort.h5ad"

    def write_half_then_fail(self, filename, **kwargs):
        Path(filename).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 1000)
        raise OSError("disk full")

    monkeypatch.setattr(AnnData, "write_h5ad", write_half_then_fail)
    dataset = AnnDataDataset(filepath=str(filepath), version=Version(None, None) if versioned else None)
    with pytest.raises(DatasetError, match="disk full"):
        dataset.save(small_anndata(0))
    assert not dataset.exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []
    if not versioned:
        assert not filepath.exists()


# --- Her2stDirectoryDataset ------------------------------------------------------------------


def test_her2st_directory_saves_a_layout_versioned_and_loads_a_lazy_source(layout, tmp_path):
    path = tmp_path / "demo_cohort"
    dataset = Her2stDirectoryDataset(path=str(path), version=Version(None, None))
    assert not dataset.exists()
    dataset.save(layout)
    assert dataset.exists()
    (version,) = versions(path)
    assert (path / version / "demo_cohort" / "ST-cnts" / "A1.tsv.gz").is_file()
    assert not [p.name for p in (path / version).iterdir() if p.name != "demo_cohort"]  # no staging left

    source = Her2stDirectoryDataset(path=str(path), version=Version(None, None)).load()
    assert isinstance(source, Her2stDirectory)
    assert source.root == path / version / "demo_cohort"
    cohort = source.read()
    validate_cohort(cohort)
    assert sorted(cohort.uns["sections"]) == ["A1", "B1"]
    assert set(cohort.obs["section"].astype(str)) == {"A1", "B1"}
    has_image = cohort.obs.groupby("section", observed=True)["has_image"].all()
    assert has_image["A1"] and not has_image["B1"]
    for name, tables in layout.sections.items():
        assert (cohort.obs["section"] == name).sum() == len(tables.counts)


def test_her2st_directory_read_only_refuses_to_save(layout, tmp_path):
    dataset = Her2stDirectoryDataset(path=str(tmp_path / "her2st"), read_only=True)
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save(layout)
    assert not (tmp_path / "her2st").exists()
    with pytest.raises(DatasetError, match="saves a Her2stLayout, got dict"):
        Her2stDirectoryDataset(path=str(tmp_path / "x")).save({})


@pytest.mark.parametrize("versioned", [False, True])
def test_her2st_directory_missing_folder_names_the_hint(tmp_path, versioned):
    hint = "Download HER2ST into data/01_raw/her2st or run `kedro run --pipeline=demo_cohort`."
    dataset = Her2stDirectoryDataset(
        path=str(tmp_path / "her2st"), version=Version(None, None) if versioned else None, missing_hint=hint
    )
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="no cohort folder") as info:
        dataset.load()
    assert hint in str(info.value)


# --- PatchStoreDataset -----------------------------------------------------------------------


def test_patch_store_dataset_saves_a_plan_and_loads_one_patch_per_imaged_spot(cohort_dir, tmp_path):
    cohort = Her2stDirectoryDataset(path=str(cohort_dir), read_only=True).load().read()
    plan = plan_tiling(cohort, size_um=100, size_px=16)
    assert plan.sections_without_image == ("B1",)
    path = tmp_path / "patches"
    dataset = PatchStoreDataset(path=str(path), version=Version(None, None))
    assert not dataset.exists()
    dataset.save(plan)
    assert dataset.exists()

    store = PatchStoreDataset(path=str(path), version=Version(None, None)).load()
    assert isinstance(store, PatchStore)
    assert isinstance(store.patches, np.memmap) and not store.patches.flags.writeable
    imaged = cohort.obs_names[cohort.obs["has_image"].to_numpy()]
    assert len(imaged) == (cohort.obs["section"] == "A1").sum() > 0
    assert len(store) == len(imaged) == plan.n_patches
    assert store.patches.shape == (len(imaged), 16, 16, 3)
    np.testing.assert_array_equal(store.rows(imaged), np.arange(len(imaged)))
    with pytest.raises(KeyError):
        store.rows(cohort.obs_names[~cohort.obs["has_image"].to_numpy()][:1])
    assert store.meta["sections_without_image"] == ["B1"]
    assert store.meta["sections"]["A1"]["decode_factor"] == 2  # 50 px patches of a JPEG, cut to 16 px
    # Demo tissue is stained, so patches are not glass.
    assert np.asarray(store.patches).mean() < 250


def test_patch_store_dataset_refuses_what_is_not_a_plan_and_missing_stores(tmp_path):
    dataset = PatchStoreDataset(path=str(tmp_path / "patches"))
    with pytest.raises(DatasetError, match="saves a TilingPlan, got list"):
        dataset.save([])
    with pytest.raises(DatasetError, match="incomplete"):
        dataset.load()
    with pytest.raises(DatasetError):
        PatchStoreDataset(path=str(tmp_path / "patches"), version=Version(None, None)).load()

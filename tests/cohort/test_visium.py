"""Visium reader on a tiny Space Ranger ``outs/`` folder written by the test itself."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image

from tpir_kedro.cohort.assemble import concat_sections
from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.schema import COUNTS_LAYER, OBS_COLUMNS, validate_cohort
from tpir_kedro.cohort.visium import VisiumSection, read_visium_section

BARCODES = ["AAAC-1", "AAAG-1", "AACT-1", "ACGT-1"]  # the last one is outside the tissue
FEATURE_IDS = ["ENSG01", "ENSG02", "ENSG03", "ENSG04", "CD3"]
FEATURE_NAMES = ["GENEA", "GENEB", "GENEA", "GENEC", "CD3_TotalSeqB"]  # GENEA twice: summed
FEATURE_TYPES = ["Gene Expression"] * 4 + ["Antibody Capture"]  # antibodies are not genes
COUNTS = np.array(  # barcodes x features
    [
        [1, 0, 2, 5, 7],
        [0, 3, 0, 0, 1],
        [4, 1, 1, 0, 0],
        [9, 9, 9, 9, 9],
    ]
)
# barcode, in_tissue, array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres
POSITIONS = [
    ("AAAC-1", 1, 0, 0, 100, 200),
    ("AAAG-1", 1, 0, 2, 100, 300),
    ("AACT-1", 1, 1, 1, 186, 250),
    ("ACGT-1", 0, 2, 0, 272, 200),
    ("TTTT-1", 0, 2, 2, 272, 300),  # in the positions file but not in the filtered matrix
]


def write_h5(path: Path, counts: np.ndarray, data_dtype=np.int32) -> None:
    """10x HDF5 v3: features x barcodes CSC in group ``matrix``."""
    csc = sp.csc_matrix(counts.T)
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.array(BARCODES, dtype="S"))
        m.create_dataset("data", data=csc.data.astype(data_dtype))
        m.create_dataset("indices", data=csc.indices.astype(np.int64))
        m.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array(csc.shape, dtype=np.int32))
        features = m.create_group("features")
        features.create_dataset("id", data=np.array(FEATURE_IDS, dtype="S"))
        features.create_dataset("name", data=np.array(FEATURE_NAMES, dtype="S"))
        features.create_dataset("feature_type", data=np.array(FEATURE_TYPES, dtype="S"))
        features.create_dataset("genome", data=np.array(["GRCh38"] * len(FEATURE_IDS), dtype="S"))


@pytest.fixture
def outs(tmp_path: Path) -> Path:
    outs = tmp_path / "outs"
    spatial = outs / "spatial"
    spatial.mkdir(parents=True)
    write_h5(outs / "filtered_feature_bc_matrix.h5", COUNTS)
    (spatial / "tissue_positions_list.csv").write_text(
        "".join(",".join(map(str, r)) + "\n" for r in POSITIONS)
    )
    (spatial / "scalefactors_json.json").write_text(
        json.dumps(
            {
                "spot_diameter_fullres": 110.0,
                "tissue_hires_scalef": 0.5,
                "tissue_lowres_scalef": 0.15,
                "fiducial_diameter_fullres": 170.0,
            }
        )
    )
    return outs


def write_labels(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("barcode,label\n" + "".join(f"{b},{lbl}\n" for b, lbl in rows))
    return path


def section(outs: Path, **kwargs) -> VisiumSection:
    return VisiumSection(name="V1", patient="P1", outs_path=outs, **kwargs)


def test_reads_in_tissue_spots_with_summed_counts_labels_and_scale(outs: Path, tmp_path: Path) -> None:
    rows = [("AAAC-1", "invasive cancer"), ("AACT-1", "adipose tissue"), ("TTTT-1", "undetermined")]
    labels = write_labels(tmp_path / "labels.csv", rows)
    adata = read_visium_section(section(outs, labels_path=labels))

    validate_cohort(adata)
    assert tuple(adata.obs.columns) == OBS_COLUMNS
    assert adata.shape == (3, 3)
    assert list(adata.var_names) == ["GENEA", "GENEB", "GENEC"]
    assert list(adata.obs_names) == ["V1_AAAC-1", "V1_AAAG-1", "V1_AACT-1"]
    counts = adata.layers[COUNTS_LAYER]
    assert sp.isspmatrix_csr(counts) and counts.dtype == np.int32
    np.testing.assert_array_equal(counts.toarray(), [[3, 0, 5], [0, 3, 0], [5, 1, 0]])

    obs = adata.obs
    assert list(obs["spot_id"]) == ["AAAC-1", "AAAG-1", "AACT-1"]
    assert list(obs["label"].astype(str)) == ["invasive cancer", "unlabelled", "adipose tissue"]
    assert list(obs["array_x"]) == [0, 2, 1] and list(obs["array_y"]) == [0, 0, 1]
    np.testing.assert_array_equal(adata.obsm["spatial"], [[200, 100], [300, 100], [250, 186]])
    assert not obs["has_image"].any()
    np.testing.assert_allclose(obs["um_per_px"], 0.5)
    assert set(obs["patient"]) == {"P1"} and set(obs["section"]) == {"V1"}

    report = adata.uns["sections"]["V1"]
    assert report["source"] == "visium"
    assert report["um_per_px_source"] == "from Space Ranger spot_diameter_fullres"
    assert report["n_spots_in_counts"] == 4 and report["n_spots_unselected"] == 1
    assert report["n_duplicate_gene_symbols_summed"] == 1 and report["n_genes"] == 3
    assert report["n_label_rows"] == 3 and report["n_labels_joined"] == 2

    cohort = concat_sections([adata])
    assert cohort.shape == (3, 3)


def test_image_and_configured_scale(outs: Path, tmp_path: Path) -> None:
    image = tmp_path / "he.png"
    Image.new("RGB", (400, 300)).save(image)
    adata = read_visium_section(section(outs, image_path=image, um_per_px=0.25))
    assert adata.obs["has_image"].all()
    np.testing.assert_allclose(adata.obs["um_per_px"], 0.25)
    report = adata.uns["sections"]["V1"]
    assert report["um_per_px_source"] == "configuration"
    assert (report["image_width"], report["image_height"]) == (400, 300)


def test_spot_outside_image_is_an_error(outs: Path, tmp_path: Path) -> None:
    image = tmp_path / "small.png"
    Image.new("RGB", (260, 300)).save(image)  # AAAG-1 sits at x = 300
    with pytest.raises(CohortInputError, match="outside the 260x300 image") as err:
        read_visium_section(section(outs, image_path=image))
    assert err.value.path == str(image) and err.value.section == "V1"
    assert "AAAG-1" in str(err.value)


def test_unknown_label_names_the_file(outs: Path, tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.csv", [("AAAC-1", "tumour")])
    with pytest.raises(CohortInputError, match="unknown label") as err:
        read_visium_section(section(outs, labels_path=labels))
    assert err.value.path == str(labels) and "tumour" in str(err.value)


@pytest.mark.parametrize(
    "remove",
    ["filtered_feature_bc_matrix.h5", "spatial/tissue_positions_list.csv", "."],
)
def test_missing_files_name_path_and_section(outs: Path, remove: str) -> None:
    target = outs / remove
    if remove == ".":
        target = outs.parent / "elsewhere"
    else:
        target.unlink()
    with pytest.raises(CohortInputError, match=r"\[section V1, file ") as err:
        read_visium_section(section(target if remove == "." else outs))
    assert err.value.path == str(target)


def test_non_integer_counts_are_an_error(outs: Path) -> None:
    write_h5(outs / "filtered_feature_bc_matrix.h5", COUNTS + 0.5, data_dtype=np.float64)
    with pytest.raises(CohortInputError, match="non-integer") as err:
        read_visium_section(section(outs))
    assert err.value.path == str(outs / "filtered_feature_bc_matrix.h5")

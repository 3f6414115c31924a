"""HEST-1k reader on tiny samples in the HEST layout written by the test itself (st/*.h5ad,
wsis/*.tif as small pyramidal TIFFs, metadata/*.json), the hest environment's configuration, and an
end-to-end train + predict on the tiny simulated demo converted into the HEST layout."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.her2st import ReadOptions, discover_her2st_sections, read_her2st_section
from tpir_kedro.cohort.hest import HestSample, read_hest_sample
from tpir_kedro.cohort.schema import COUNTS_LAYER, OBS_COLUMNS, UNLABELLED, validate_cohort
from tpir_kedro.cohort.sources import HestDirectory

UM_PER_PX = 0.5
PITCH_PX = 100 / UM_PER_PX  # Visium: 100 µm centre to centre
IMAGE_WH = (1000, 700)
GENES = ["GENEA", "GENEB", "GENEA", "GENEC"]  # GENEA twice: summed


def visium_spots() -> pd.DataFrame:
    """Eight in-tissue spots on Visium's hexagonal grid (array_col steps of 50 µm, alternate rows
    offset), plus one spot outside the tissue."""
    rows = []
    for r in range(3):
        for c in range(3 if r != 1 else 2):
            col = 2 * c + r % 2
            rows.append(
                (f"S{r}{c}-1", 1, r, col, 100 + col * PITCH_PX / 2, 100 + r * PITCH_PX * math.sqrt(3) / 2)
            )
    rows.append(("OUT-1", 0, 2, 6, 100 + 6 * PITCH_PX / 2, 100 + 2 * PITCH_PX * math.sqrt(3) / 2))
    return pd.DataFrame(
        rows,
        columns=[
            "barcode",
            "in_tissue",
            "array_row",
            "array_col",
            "pxl_col_in_fullres",
            "pxl_row_in_fullres",
        ],
    ).set_index("barcode")


def counts_for(n_spots: int) -> np.ndarray:
    return np.arange(n_spots * len(GENES)).reshape(n_spots, len(GENES)) % 7


def visium_metadata(**changes) -> dict:
    meta = {
        "id": "S1",
        "patient": "P1",
        "st_technology": "Visium",
        "inter_spot_dist": 100.0,
        "spot_diameter": 55.0,
        "pixel_size_um_estimated": UM_PER_PX,
        "pixel_size_um_embedded": None,
        "organ": "Breast",
        "oncotree_code": "IDC",
        "dataset_title": "a toy study",
    }
    meta.update(changes)
    return meta


def write_h5ad(path: Path, obs: pd.DataFrame, counts: np.ndarray, genes=GENES, spatial=None) -> None:
    """As HEST stores a sample: float counts in X, spot centres (x, y) in obsm['spatial']."""
    with warnings.catch_warnings():
        # AnnData warns of repeated gene symbols; HEST's files have them too (summed on reading).
        warnings.simplefilter("ignore", UserWarning)
        adata = ad.AnnData(
            X=sp.csr_matrix(counts.astype(np.float32)),
            obs=obs.copy(),
            var=pd.DataFrame(index=pd.Index(genes)),
        )
    adata.obsm["spatial"] = (
        obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=float)
        if spatial is None
        else spatial
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)


def write_sample(
    root: Path,
    name: str,
    write_tiff,
    *,
    meta: dict | None = None,
    obs: pd.DataFrame | None = None,
    counts: np.ndarray | None = None,
    image_wh: tuple[int, int] = IMAGE_WH,
) -> HestSample:
    obs = visium_spots() if obs is None else obs
    write_h5ad(root / "st" / f"{name}.h5ad", obs, counts_for(len(obs)) if counts is None else counts)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "metadata" / f"{name}.json").write_text(
        json.dumps({**visium_metadata(), "id": name, **(meta or {})})
    )
    (root / "wsis").mkdir(parents=True, exist_ok=True)
    width, height = image_wh
    full = np.full((height, width, 3), 230, dtype=np.uint8)
    full[100:-100, 100:-100] = (180, 90, 160)  # something tissue-coloured under the spots
    write_tiff(root / "wsis" / f"{name}.tif", [full, full[::2, ::2]], UM_PER_PX)
    return HestSample(name=name, root=root)


@pytest.fixture
def hest_root(tmp_path: Path) -> Path:
    return tmp_path / "hest"


@pytest.fixture
def sample(hest_root: Path, pyramidal_tiff) -> HestSample:
    return write_sample(hest_root, "S1", pyramidal_tiff)


def test_reads_a_sample_into_the_cohort_format(sample: HestSample) -> None:
    adata = read_hest_sample(sample)

    validate_cohort(adata)
    assert tuple(adata.obs.columns) == OBS_COLUMNS
    assert adata.shape == (8, 3) and list(adata.var_names) == ["GENEA", "GENEB", "GENEC"]
    counts = adata.layers[COUNTS_LAYER]
    assert sp.isspmatrix_csr(counts) and counts.dtype == np.int32
    raw = counts_for(9)[:8]
    np.testing.assert_array_equal(counts.toarray(), np.c_[raw[:, 0] + raw[:, 2], raw[:, 1], raw[:, 3]])

    obs = adata.obs
    spots = visium_spots().iloc[:8]
    assert list(obs["spot_id"]) == list(spots.index) and obs_names_are_prefixed(adata, "S1")
    assert set(obs["patient"]) == {"P1"} and set(obs["section"]) == {"S1"}
    assert obs["has_image"].all() and (obs["label"].astype(str) == UNLABELLED).all()
    np.testing.assert_allclose(obs["um_per_px"], UM_PER_PX)
    np.testing.assert_allclose(adata.obsm["spatial"], spots[["pxl_col_in_fullres", "pxl_row_in_fullres"]])
    assert list(obs["array_x"]) == list(spots["array_col"]) and list(obs["array_y"]) == list(
        spots["array_row"]
    )

    report = adata.uns["sections"]["S1"]
    assert report["source"] == "hest" and report["st_technology"] == "Visium"
    assert report["patient_source"] == "metadata"
    assert report["um_per_px_source"] == "metadata pixel_size_um_estimated"
    assert report["spot_pitch_um"] == 100 and report["spot_pitch_source"] == "metadata inter_spot_dist"
    assert report["median_spot_spacing_um"] == pytest.approx(100, rel=1e-3)
    assert (
        report["image_path"] == str(sample.wsi_path)
        and (report["image_width"], report["image_height"]) == IMAGE_WH
    )
    assert report["n_spots_in_counts"] == 9 and report["n_spots_unselected"] == 1
    assert report["n_duplicate_gene_symbols_summed"] == 1
    assert report["patches_h5_exists"] is False and report["patches_h5_path"] == ""
    assert report["patches_h5_used"] is False
    assert math.isnan(report["pixel_size_um_embedded"])


def obs_names_are_prefixed(adata, section: str) -> bool:
    return all(n == f"{section}_{s}" for n, s in zip(adata.obs_names, adata.obs["spot_id"]))


def test_configured_scale_wins_and_hest_patches_are_recorded_not_used(sample: HestSample) -> None:
    sample.patches_path.parent.mkdir()
    sample.patches_path.write_bytes(b"")  # only its presence is recorded: the reader never opens it
    adata = read_hest_sample(HestSample(name="S1", root=sample.root, um_per_px=0.52))
    np.testing.assert_allclose(adata.obs["um_per_px"], 0.52)
    report = adata.uns["sections"]["S1"]
    assert report["um_per_px_source"] == "configuration (cohort.um_per_px)"
    assert report["patches_h5_exists"] is True and report["patches_h5_path"] == str(sample.patches_path)
    assert report["patches_h5_used"] is False


def test_xenium_pseudo_spots_without_array_columns(hest_root: Path, pyramidal_tiff) -> None:
    """HEST guarantees only obsm['spatial']; Xenium's metadata may lack inter_spot_dist (100 µm squares)."""
    grid = [(r, c) for r in range(3) for c in range(4)]
    obs = pd.DataFrame(
        {
            "pxl_col_in_fullres": [100 + c * PITCH_PX for _, c in grid],
            "pxl_row_in_fullres": [100 + r * PITCH_PX for r, _ in grid],
        },
        index=[f"{r:03d}x{c:03d}" for r, c in grid],
    )
    sample = write_sample(
        hest_root,
        "X1",
        pyramidal_tiff,
        obs=obs,
        meta={"st_technology": "Xenium", "inter_spot_dist": None, "spot_diameter": None},
    )
    adata = read_hest_sample(sample)
    assert adata.n_obs == 12
    report = adata.uns["sections"]["X1"]
    assert report["spot_pitch_um"] == 100 and report["spot_pitch_source"] == "Xenium spot pitch"
    assert report["array_position_source"].startswith("pixel position")
    assert list(adata.obs["array_x"][:4]) == [0, 1, 2, 3] and list(adata.obs["array_y"][::4]) == [0, 1, 2]


def test_labels_join_by_barcode_and_unknown_labels_name_the_file(sample: HestSample, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("barcode,label\nS00-1,invasive cancer\nS21-1,adipose tissue\nOUT-1,undetermined\n")
    adata = read_hest_sample(HestSample(name="S1", root=sample.root, labels_path=labels))
    by_spot = adata.obs.set_index("spot_id")["label"].astype(str)
    assert by_spot["S00-1"] == "invasive cancer" and by_spot["S21-1"] == "adipose tissue"
    assert (by_spot.drop(["S00-1", "S21-1"]) == UNLABELLED).all()
    assert adata.uns["sections"]["S1"]["n_labels_joined"] == 2

    labels.write_text("barcode,label\nS00-1,tumour\n")
    with pytest.raises(CohortInputError, match="unknown label") as err:
        read_hest_sample(HestSample(name="S1", root=sample.root, labels_path=labels))
    assert err.value.path == str(labels) and err.value.section == "S1"


def test_directory_reads_configured_samples_with_catalog_patients(hest_root: Path, pyramidal_tiff) -> None:
    write_sample(hest_root, "S1", pyramidal_tiff)
    write_sample(hest_root, "S2", pyramidal_tiff, meta={"patient": "   "})  # blank, as in HEST's table
    (hest_root / "labels").mkdir()
    (hest_root / "labels" / "S2.csv").write_text("barcode,label\nS00-1,breast glands\n")
    source = HestDirectory(
        root=hest_root, samples=("S1", "S2"), patients={"S2": "P2"}, labels={"S2": "labels/S2.csv"}
    )

    cohort = source.read(options=ReadOptions(pitch_um=100), n_jobs=2)
    validate_cohort(cohort)
    assert list(cohort.obs["section"].cat.categories) == ["S1", "S2"]
    assert cohort.obs.groupby("section", observed=True)["patient"].first().to_dict() == {
        "S1": "P1",
        "S2": "P2",
    }
    assert cohort.uns["sections"]["S2"]["patient_source"] == "catalog (patients)"

    labelled = source.read(sections="labelled", options=ReadOptions(pitch_um=100))
    assert set(labelled.obs["section"]) == {"S2"} and (labelled.obs["label"] == "breast glands").sum() == 1
    with pytest.raises(CohortInputError, match=r"\['S3'\] are not configured"):
        source.read(sections=["S3"])


def test_samples_with_different_spot_pitches_are_refused_naming_them(hest_root: Path, pyramidal_tiff) -> None:
    write_sample(hest_root, "V1", pyramidal_tiff)
    legacy = {"st_technology": "Spatial Transcriptomics", "inter_spot_dist": 200.0, "spot_diameter": 100.0}
    write_sample(hest_root, "L1", pyramidal_tiff, meta=legacy)
    source = HestDirectory(root=hest_root, samples=("V1", "L1"))
    with pytest.raises(CohortInputError, match="mix spot pitches") as err:
        source.read(options=ReadOptions(pitch_um=100))
    message = str(err.value)
    assert "100 µm: Visium (V1)" in message and "200 µm: Spatial Transcriptomics (L1)" in message
    assert err.value.path == str(hest_root)


def test_the_configured_spot_pitch_must_be_the_samples(hest_root: Path, pyramidal_tiff) -> None:
    write_sample(hest_root, "V1", pyramidal_tiff)
    source = HestDirectory(root=hest_root, samples=("V1",))
    with pytest.raises(CohortInputError, match=r"cohort.spot_pitch_um is 200: set cohort.spot_pitch_um: 100"):
        source.read(options=ReadOptions(pitch_um=200))  # base's legacy-ST default
    assert source.read().n_obs == 8  # nothing configured: the samples' own pitch


def _remove(path: Path) -> None:
    path.unlink()


BAD_INPUTS = {
    # name: (how the sample is spoilt, which of its files the error names, what the message says)
    "missing metadata": (lambda s: _remove(s.metadata_path), "metadata_path", "metadata file is missing"),
    "missing h5ad": (lambda s: _remove(s.st_path), "st_path", r"expression \(st/\*.h5ad\) file is missing"),
    "missing wsi": (
        lambda s: _remove(s.wsi_path),
        "wsi_path",
        r"whole slide \(wsis/\*.tif\) file is missing",
    ),
    "metadata not JSON": (
        lambda s: s.metadata_path.write_text("{oops"),
        "metadata_path",
        "unreadable as JSON",
    ),
    "h5ad unreadable": (lambda s: s.st_path.write_bytes(b"not hdf5"), "st_path", "unreadable as h5ad"),
    "no pixel size": (
        lambda s: _rewrite_meta(s, pixel_size_um_estimated=None),
        "metadata_path",
        "no usable pixel_size_um_estimated",
    ),
    "implausible pixel size": (
        lambda s: _rewrite_meta(s, pixel_size_um_estimated=500.0),  # nm taken for µm
        "metadata_path",
        "outside the plausible 0.05-10 µm/px",
    ),
    "pixel size off by 2x": (
        lambda s: _rewrite_meta(s, pixel_size_um_estimated=1.0),
        "metadata_path",
        r"is 200.0 µm, but the spot pitch is 100 µm",
    ),
    "no patient": (
        lambda s: _rewrite_meta(s, patient=None),
        "metadata_path",
        r"raw_cohort: patients: \{S1: ",
    ),
    "unknown technology": (
        lambda s: _rewrite_meta(s, st_technology="Slide-seq", inter_spot_dist=None),
        "metadata_path",
        "no inter_spot_dist and its st_technology 'Slide-seq'",
    ),
    "spots outside the slide": (
        lambda s: _rewrite_h5ad(s, shift=800.0),
        "wsi_path",
        r"spot centre\(s\) of S1.h5ad lie outside the 1000x700 slide",
    ),
    "non-integer counts": (
        lambda s: write_h5ad(s.st_path, visium_spots(), counts_for(9) + 0.5),
        "st_path",
        "non-integer",
    ),
    "no spatial": (lambda s: _rewrite_h5ad(s, drop_spatial=True), "st_path", r"no obsm\['spatial'\]"),
}


def _rewrite_meta(sample: HestSample, **changes) -> None:
    meta = json.loads(sample.metadata_path.read_text())
    sample.metadata_path.write_text(json.dumps({**meta, **changes}))


def _rewrite_h5ad(sample: HestSample, shift: float = 0.0, drop_spatial: bool = False) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # repeated gene symbols, as in write_h5ad
        adata = ad.read_h5ad(sample.st_path)
    if drop_spatial:
        del adata.obsm["spatial"]
    else:
        adata.obsm["spatial"] = adata.obsm["spatial"] + shift
    adata.write_h5ad(sample.st_path)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_the_sample_and_the_file(sample: HestSample, case: str) -> None:
    spoil, file_attribute, message = BAD_INPUTS[case]
    spoil(sample)
    with pytest.raises(CohortInputError, match=message) as err:
        read_hest_sample(sample)
    assert err.value.section == "S1" and err.value.path == str(getattr(sample, file_attribute))
    assert str(err.value).startswith(f"[section S1, file {getattr(sample, file_attribute)}]")


# --- the environment -----------------------------------------------------------------------------


def test_the_hest_environment_overrides_only_what_differs(project_root: Path) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from tpir_kedro.datasets import HestDirectoryDataset

    bootstrap_project(project_root)
    config = {}
    for env in (None, "hest"):
        with KedroSession.create(project_path=project_root, env=env) as session:
            loader = session.load_context().config_loader
            config[env] = {"catalog": loader["catalog"], "parameters": loader["parameters"]}
    base, hest = config[None], config["hest"]

    entry = dict(hest["catalog"]["raw_cohort"])
    assert entry.pop("type") == "tpir_kedro.datasets.HestDirectoryDataset"
    assert entry["path"] == os.environ.get("TPIR_HEST_DIR", "../shared/hest")
    HestDirectoryDataset(**entry)  # the entry builds (its patients and labels name configured samples)
    # Every fold the environment holds out is a patient its catalog names.
    assert set(hest["parameters"]["folds"]["held_out_patients"]) == set(entry["patients"].values())

    own = {p.name for p in (project_root / "conf" / "hest").glob("catalog*.yml")}
    assert own == {"catalog.yml"} and list(
        yaml.safe_load((project_root / "conf/hest/catalog.yml").read_text())
    ) == ["raw_cohort"]
    for name, demo in base["catalog"].items():
        path = demo.get("filepath", demo.get("path")) if isinstance(demo, dict) else None
        if isinstance(path, str) and path.startswith(
            ("data/02", "data/03", "data/04", "data/05", "data/06", "data/07", "data/08")
        ):
            layer = path.split("/")[1]
            assert hest["catalog"][name].get("filepath", hest["catalog"][name].get("path")) == path.replace(
                f"data/{layer}/", f"data/{layer}/hest/", 1
            ), name

    params = {env: c["parameters"] for env, c in config.items()}
    assert params["hest"]["cohort"] == {**params[None]["cohort"], "spot_pitch_um": 100}
    assert params["hest"]["patches"] == {**params[None]["patches"], "size_px": 224}


# --- end to end ------------------------------------------------------------------------------------


def demo_as_hest(demo_dir: Path, root: Path, write_tiff) -> dict[str, str]:
    """The tiny simulated demo (HER2ST layout) written as a HEST download: one sample per section
    with an image (HEST has no sample without a WSI), images as pyramidal TIFFs, labels as
    barcode,label CSVs, the spot pitch and µm/px in the metadata as HEST records them. Sample B2's
    metadata has no patient (as most of HEST's): the catalog gives it. Returns sample -> patient.
    """
    from PIL import Image

    patients = {}
    for section in discover_her2st_sections(demo_dir):
        if section.image_path is None:
            continue
        adata = read_her2st_section(section)
        name, obs = section.name, adata.obs
        table = pd.DataFrame(
            {
                "in_tissue": 1,
                "array_row": obs["array_y"].to_numpy(),
                "array_col": obs["array_x"].to_numpy(),
                "pxl_col_in_fullres": obs["pixel_x"].to_numpy(),
                "pxl_row_in_fullres": obs["pixel_y"].to_numpy(),
            },
            index=pd.Index(obs["spot_id"].astype(str).to_numpy()),
        )
        write_h5ad(
            root / "st" / f"{name}.h5ad",
            table,
            adata.layers[COUNTS_LAYER].toarray(),
            genes=list(adata.var_names),
        )
        with Image.open(section.image_path) as image:
            full = image.convert("RGB")
        half = full.resize((full.width // 2, full.height // 2))
        (root / "wsis").mkdir(parents=True, exist_ok=True)
        write_tiff(root / "wsis" / f"{name}.tif", [np.asarray(full), np.asarray(half)], 2.0)
        meta = {
            "id": name,
            "patient": "" if name == "B2" else section.patient,
            "st_technology": "Spatial Transcriptomics",
            "inter_spot_dist": 200.0,
            "spot_diameter": 100.0,
            "pixel_size_um_estimated": 2.0,  # the demo's images are simulated at 2 µm/px
            "pixel_size_um_embedded": 2.0,
            "organ": "Breast",
            "oncotree_code": "IDC",
        }
        (root / "metadata").mkdir(parents=True, exist_ok=True)
        (root / "metadata" / f"{name}.json").write_text(json.dumps(meta))
        labelled = obs[obs["label"].astype(str) != UNLABELLED]
        if len(labelled):
            (root / "labels").mkdir(parents=True, exist_ok=True)
            labelled[["spot_id", "label"]].rename(columns={"spot_id": "barcode"}).to_csv(
                root / "labels" / f"{name}.csv", index=False
            )
        patients[name] = section.patient
    return patients


def latest(project: Path, name: str) -> Path:
    versions = sorted(project.glob(f"data/**/{name}/*/{name}"))
    assert versions, f"no {name} in {project}"
    return versions[-1]


@pytest.mark.slow
def test_train_and_predict_on_a_hest_download(
    tiny_demo_dir, tmp_path, project_copy, kedro_cli, tiny_train_params, pyramidal_tiff
) -> None:
    """``kedro run --pipelines=train`` with raw_cohort on the demo in the HEST layout (the copy's
    conf/local), then ``predict`` on one sample's WSI, whose µm/px comes from the TIFF itself."""
    root = tmp_path / "hest"
    patients = demo_as_hest(tiny_demo_dir, root, pyramidal_tiff)
    assert sorted(patients) == ["A1", "A2", "B1", "B2", "C1"]
    spots = ad.read_h5ad(root / "st" / "B1.h5ad")
    spots_csv = tmp_path / "B1_spots.csv"
    pd.DataFrame(spots.obsm["spatial"], columns=["pixel_x", "pixel_y"]).assign(
        spot_id=spots.obs_names
    ).to_csv(spots_csv, index=False)

    project = project_copy(tmp_path / "project")
    local = project / "conf" / "local"
    params = {
        **tiny_train_params,
        "image_runs": {"variants": ["random", "scanvi_infonce"], "final_models": True},
    }
    (local / "parameters.yml").write_text(yaml.safe_dump(params))
    catalog = {
        "raw_cohort": {
            "type": "tpir_kedro.datasets.HestDirectoryDataset",
            "path": str(root),
            "samples": sorted(patients),
            "patients": {"B2": "B"},
            "labels": {
                name: f"labels/{name}.csv" for name in patients if (root / "labels" / f"{name}.csv").exists()
            },
        },
        "predict_slide": {
            "type": "tpir_kedro.datasets.SlideDataset",
            "path": "data/01_raw/no_slide_folder",
            "image": str(root / "wsis" / "B1.tif"),
            "spots": str(spots_csv),
        },
    }
    (local / "catalog.yml").write_text(yaml.safe_dump(catalog))

    kedro_cli(project, "train", tmp_path / "train.log")
    cohort = ad.read_h5ad(latest(project, "cohort.h5ad"))
    by_section = cohort.obs.groupby("section", observed=True)["patient"].first().astype(str).to_dict()
    assert by_section == patients
    report = pd.read_csv(latest(project, "section_report.csv")).set_index("section")
    assert set(report["source"]) == {"hest"} and report.loc["B2", "patient_source"] == "catalog (patients)"
    assert (report["st_technology"] == "Spatial Transcriptomics").all() and (report["um_per_px"] == 2.0).all()
    results = pd.read_csv(latest(project, "results.csv"))
    held_out = results[(results["held_out_patient"].astype(str) == "B") & (results["probe"] == "logistic")]
    assert set(held_out["variant"]) == {"random", "scanvi_infonce"} and held_out["macro_f1"].notna().all()

    kedro_cli(project, "predict", tmp_path / "predict.log")
    predictions = pd.read_csv(latest(project, "slide_predictions.csv"))
    assert len(predictions) == spots.n_obs and predictions["predicted_class"].notna().all()
    summary = json.loads(latest(project, "slide_prediction_summary.json").read_text())
    assert summary["image"] == str(root / "wsis" / "B1.tif") and summary["um_per_px"] == pytest.approx(2.0)

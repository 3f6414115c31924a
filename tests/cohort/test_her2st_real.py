"""The HER2ST reader on the real files in ../shared/her2st."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tpir_kedro.cohort.her2st import ReadOptions, discover_her2st_sections, read_her2st_section
from tpir_kedro.cohort.schema import OBS_COLUMNS, validate_cohort
from tpir_kedro.cohort.sources import Her2stDirectory
from tpir_kedro.imaging.tiling import plan_tiling, write_patch_store

LABELLED = ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"]
A1_APP_IMAGE = {"A1": {"file": "app-imgs/A1_HE_image_dark.png", "scale": 2000 / 6954}}


@pytest.fixture(scope="module")
def labelled_cohort(her2st_dir):
    return Her2stDirectory(her2st_dir).read(sections=LABELLED, n_jobs=2)


def test_discovers_all_36_sections_and_the_six_images(her2st_dir):
    sections = discover_her2st_sections(her2st_dir)
    assert len(sections) == 36
    assert {s.patient for s in sections} == set("ABCDEFGH")
    with_image = sorted(s.name for s in sections if s.image_path is not None)
    assert with_image == ["B4", "C2", "C3", "C4", "C5", "C6"]
    assert sorted(s.name for s in sections if s.labels_path is not None) == sorted(LABELLED)


def test_labelled_sections_join_at_least_99_percent_of_labels(labelled_cohort):
    validate_cohort(labelled_cohort)
    assert list(labelled_cohort.obs.columns[: len(OBS_COLUMNS)]) == list(OBS_COLUMNS)
    for name, report in labelled_cohort.uns["sections"].items():
        usable = report["n_label_rows"] - report["n_labels_na_coordinates"]
        assert report["n_labels_joined"] / usable >= 0.99, name
    labels = labelled_cohort.obs["label"].astype(str)
    assert (labels == "invasive cancer").sum() > 1000
    assert (labels == "unlabelled").mean() < 0.01
    assert labelled_cohort.obs["patient"].nunique() == 8
    # Genes measured in only some sections are dropped, not zero-filled.
    assert 10_000 < labelled_cohort.n_vars < 16_000


def test_counts_are_raw_integers_matching_the_file(her2st_dir, labelled_cohort):
    import pandas as pd

    table = pd.read_csv(her2st_dir / "ST-cnts" / "B1.tsv.gz", sep="\t", index_col=0, nrows=5)
    spot, gene = table.index[2], "ERBB2"
    row = labelled_cohort.obs_names.get_loc(f"B1_{spot}")
    col = labelled_cohort.var_names.get_loc(gene)
    assert labelled_cohort.layers["counts"][row, col] == table.loc[spot, gene]


def test_um_per_px_is_estimated_from_the_spot_pitch(her2st_dir):
    sections = discover_her2st_sections(her2st_dir, ["B4", "C2", "A1"], image_overrides=A1_APP_IMAGE)
    by_name = {s.name: read_her2st_section(s) for s in sections}
    for name in ("B4", "C2"):
        assert 0.66 <= by_name[name].obs["um_per_px"].iloc[0] <= 0.70
        assert by_name[name].uns["sections"][name]["um_per_px_source"].startswith("estimated")
    # A1's app image is the full resolution scaled by 2000/6954: ~3.2 µm/px.
    assert by_name["A1"].obs["um_per_px"].iloc[0] == pytest.approx(3.2, abs=0.1)
    assert by_name["A1"].obs["has_image"].all()
    configured = read_her2st_section(sections[0], ReadOptions(um_per_px={"B4": 0.5}))
    assert configured.obs["um_per_px"].iloc[0] == 0.5
    assert configured.uns["sections"]["B4"]["um_per_px_source"] == "configuration"


def test_sections_without_an_image_stay_for_the_gene_side(her2st_dir):
    cohort = Her2stDirectory(her2st_dir).read(sections=["A2", "C2"])
    by_section = cohort.obs.groupby("section", observed=True)["has_image"].all()
    assert not by_section["A2"] and by_section["C2"]
    assert np.isnan(cohort.obs.loc[cohort.obs["section"] == "A2", "um_per_px"]).all()
    plan = plan_tiling(cohort, size_um=112, size_px=32)
    assert plan.sections_without_image == ("A2",)


def test_c2_patches_sit_on_tissue(her2st_dir, tmp_path):
    cohort = Her2stDirectory(her2st_dir).read(sections=["C2"])
    store = write_patch_store(plan_tiling(cohort, size_um=112, size_px=64), tmp_path / "store")
    patches = np.asarray(store.patches, dtype=np.float32)
    assert patches.shape == (cohort.n_obs, 64, 64, 3)
    # H&E tissue is stained (darker, more saturated) than the glass around it. Compare each spot's
    # patch with a patch of the same size at the image corner, which is glass.
    corner = cohort[:1].copy()
    corner.obs[["pixel_x", "pixel_y"]] = [[120.0, 120.0]]
    glass = (
        write_patch_store(plan_tiling(corner, size_um=112, size_px=64), tmp_path / "glass")
        .patches[0]
        .astype(np.float32)
    )
    tissue_mean = patches.mean(axis=(1, 2, 3))
    saturation = (patches.max(axis=3) - patches.min(axis=3)).mean(axis=(1, 2))
    glass_saturation = (glass.max(axis=2) - glass.min(axis=2)).mean()
    assert np.mean(tissue_mean < glass.mean() - 10) > 0.95
    assert np.mean(saturation > glass_saturation + 10) > 0.95
    assert store.meta["sections"]["C2"]["decode_factor"] == 2  # 163 px -> 64 px: JPEG draft at 1/2


def test_a1_spots_land_on_the_tissue_of_its_app_image(her2st_dir):
    """The transform of the README (spot-file pixels x 2000/6954) takes A1's spots onto its app image,
    and back: every spot inside the image, on tissue (the app blacked the background out)."""
    (section,) = discover_her2st_sections(her2st_dir, ["A1"], image_overrides=A1_APP_IMAGE)
    cohort = read_her2st_section(section)
    spots = pd.read_csv(her2st_dir / "ST-spotfiles" / "A1_selection.tsv", sep="\t")
    spots.index = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)]
    ours = cohort.obs.set_index("spot_id").loc[:, ["pixel_x", "pixel_y"]]
    scale = A1_APP_IMAGE["A1"]["scale"]
    back = ours / scale  # the round trip: the app image's frame back to the spot file's
    np.testing.assert_allclose(back.to_numpy(), spots.loc[ours.index, ["pixel_x", "pixel_y"]].to_numpy())
    image = np.asarray(Image.open(her2st_dir / "app-imgs" / "A1_HE_image_dark.png").convert("RGB"))
    height, width = image.shape[:2]
    x, y = ours["pixel_x"].to_numpy(), ours["pixel_y"].to_numpy()
    assert ((x >= 0) & (x < width) & (y >= 0) & (y < height)).all()
    at_spot = image[np.round(y).astype(int), np.round(x).astype(int)]
    assert np.mean(at_spot.max(axis=1) > 30) > 0.95  # stained tissue, not the blacked-out glass

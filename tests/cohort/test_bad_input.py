"""Every bad input to the HER2ST reader, spot QC and tiling is a CohortInputError naming section and file.

A tiny demo cohort (2 patients x 1 section, 6 x 6 spots) is simulated once per module and written
afresh into each test's tmp_path; each test then breaks one thing on disk.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tpir_kedro.cohort.demo.expression import ExpressionConfig
from tpir_kedro.cohort.demo.simulate import DemoCohortConfig, simulate_demo_cohort
from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.her2st import ReadOptions
from tpir_kedro.cohort.her2st_layout import Her2stLayout, write_her2st_layout
from tpir_kedro.cohort.schema import UNLABELLED, validate_cohort
from tpir_kedro.cohort.sources import Her2stDirectory
from tpir_kedro.cohort.spot_qc import filter_spots
from tpir_kedro.imaging.tiling import plan_tiling, write_patch_store

SECTION = "A1"  # the section each test breaks; B1 stays intact


@pytest.fixture(scope="module")
def layout() -> Her2stLayout:
    config = DemoCohortConfig(
        n_patients=2,
        sections_per_patient=1,
        grid=(6, 6),
        sections_without_image=0,
        expression=ExpressionConfig(n_genes=60, markers_per_class=5, tumour_program_genes=5),
    )
    return simulate_demo_cohort(config)


@pytest.fixture
def root(layout: Her2stLayout, tmp_path: Path) -> Path:
    root = tmp_path / "her2st"
    write_her2st_layout(layout, root)
    return root


def counts_path(root: Path, section: str = SECTION) -> Path:
    return root / "ST-cnts" / f"{section}.tsv.gz"


def spots_path(root: Path, section: str = SECTION) -> Path:
    return root / "ST-spotfiles" / f"{section}_selection.tsv"


def labels_path(root: Path, section: str = SECTION) -> Path:
    return root / "ST-pat" / "lbl" / f"{section}_labeled_coordinates.tsv"


def image_path(root: Path, section: str = SECTION) -> Path:
    (path,) = (root / "ST-imgs" / section[0] / section).glob("*.jpg")
    return path


def read_counts(root: Path) -> pd.DataFrame:
    return pd.read_csv(counts_path(root), sep="\t", index_col=0)


def write_counts(root: Path, counts: pd.DataFrame) -> None:
    counts.to_csv(counts_path(root), sep="\t")


def rewrite(path: Path, edit) -> None:
    """Read a TSV, let ``edit`` change it in place, write it back."""
    table = pd.read_csv(path, sep="\t")
    edit(table)
    table.to_csv(path, sep="\t", index=False)


def read(root: Path, sections=None):
    return Her2stDirectory(root).read(sections)


def assert_names(info: pytest.ExceptionInfo, section: str | None, path: Path, *what: str) -> None:
    """The message starts with ``[section X, file Y]`` and says what is wrong."""
    error, message = info.value, str(info.value)
    where = f"[section {section}, file {path}] " if section is not None else f"[file {path}] "
    assert message.startswith(where), message
    assert error.section == section
    assert Path(error.path) == path
    for fragment in what:
        assert fragment in message, message


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- the intact layout -------------------------------------------------------------------------


def test_intact_layout_reads_and_tiles_without_touching_the_source(
    layout: Her2stLayout, root: Path, tmp_path: Path
):
    before = snapshot(root)
    cohort = read(root)
    validate_cohort(cohort)
    assert sorted(cohort.obs["section"].unique()) == sorted(layout.sections)
    assert cohort.n_obs == sum(len(t.counts) for t in layout.sections.values())
    assert cohort.obs["has_image"].all()
    assert (cohort.obs["label"] != UNLABELLED).any()
    for name, report in cohort.uns["sections"].items():
        assert report["image_path"] == str(image_path(root, name))
        assert report["n_labels_joined"] > 0
    filtered, report = filter_spots(cohort, min_counts=1)
    assert set(report["section"]) == set(layout.sections)
    store = write_patch_store(plan_tiling(filtered, size_um=100.0, size_px=16), tmp_path / "out" / "store")
    assert store is not None
    assert snapshot(root) == before, "reading or tiling modified the source folder"


def test_a_failed_read_does_not_touch_the_source(root: Path):
    rewrite(labels_path(root), lambda t: t.__setitem__("label", "tumour"))
    before = snapshot(root)
    with pytest.raises(CohortInputError):
        read(root)
    assert snapshot(root) == before


# --- missing files -----------------------------------------------------------------------------


def test_missing_counts_file_for_a_requested_section(root: Path):
    counts_path(root).unlink()
    with pytest.raises(CohortInputError) as info:
        read(root, [SECTION, "B1"])
    assert_names(info, SECTION, counts_path(root), "counts file is missing")


def test_requested_section_absent_from_the_layout(root: Path):
    with pytest.raises(CohortInputError) as info:
        read(root, ["B1", "C1"])
    assert_names(info, "C1", counts_path(root, "C1"), "counts file is missing")


def test_missing_spot_file(root: Path):
    spots_path(root).unlink()
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, spots_path(root), "spot file is missing")


@pytest.mark.parametrize("sections", [None, [SECTION]])
def test_missing_counts_folder(root: Path, sections):
    shutil.rmtree(root / "ST-cnts")
    with pytest.raises(CohortInputError) as info:
        read(root, sections)
    # No single section is at fault: the whole layout lacks its counts folder.
    assert_names(info, None, root / "ST-cnts", "no ST-cnts/ folder")


# --- counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x00\x01\xffnot gzip at all" * 40, id="not-gzip"),
        pytest.param(gzip.compress(b"\x00\xff\xfe binary \x80\x81" * 40), id="gzip-of-binary"),
        pytest.param(None, id="truncated-gzip"),
    ],
)
def test_unreadable_counts_file(root: Path, garbage):
    path = counts_path(root)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if garbage is None else garbage)
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, path, "counts file is unreadable")


def test_counts_with_only_a_header(root: Path):
    counts_path(root).write_bytes(gzip.compress(b"\tDEMO0000\tDEMO0001\n"))
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, counts_path(root), "counts table is empty")


def test_counts_spot_ids_match_no_spot_file_row(root: Path):
    counts = read_counts(root)
    counts.index = [f"{90 + i}x{90 + i}" for i in range(len(counts))]
    write_counts(root, counts)
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(
        info,
        SECTION,
        counts_path(root),
        f"{len(counts)} of {len(counts)}",
        "match no row",
        "A1_selection.tsv",
        "90x90",
    )


def test_repeated_spot_ids_in_counts(root: Path):
    counts = read_counts(root)
    counts.index = [counts.index[0], *counts.index[:-1]]
    write_counts(root, counts)
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, counts_path(root), "appear more than once", repr(counts.index[0]))


@pytest.mark.parametrize(
    ("value", "shown"),
    [(1.5, "1.5"), (-4, "-4"), (float("nan"), "nan")],
    ids=["non-integer", "negative", "missing"],
)
def test_counts_that_are_not_raw_integers(root: Path, value, shown):
    counts = read_counts(root).astype(float)
    spot, gene = counts.index[2], counts.columns[3]
    counts.loc[spot, gene] = value
    write_counts(root, counts)
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(
        info, SECTION, counts_path(root), "negative, non-integer or missing", repr(spot), repr(gene), shown
    )


def test_text_counts(root: Path):
    counts = read_counts(root).astype(object)
    gene = counts.columns[3]
    counts.iloc[2, 3] = "many"
    write_counts(root, counts)
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, counts_path(root), "not numeric", gene)


# --- spot file ---------------------------------------------------------------------------------


def test_spot_file_lacks_a_column(root: Path):
    rewrite(spots_path(root), lambda t: t.drop(columns="pixel_y", inplace=True))
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, spots_path(root), "lacks column(s) ['pixel_y']")


@pytest.mark.parametrize("column", ["x", "pixel_x"])
def test_spot_file_with_text_coordinates(root: Path, column: str):
    def edit(table):
        table[column] = table[column].astype(object)
        table.loc[0, column] = "abc"

    rewrite(spots_path(root), edit)
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, spots_path(root), "non-numeric", column, "abc")


def test_spot_without_pixel_coordinates(root: Path):
    rewrite(spots_path(root), lambda t: t.__setitem__("pixel_x", t["pixel_x"].where(t.index != 0)))
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, spots_path(root), "lack pixel_x/pixel_y")


def test_no_spot_selected(root: Path):
    rewrite(spots_path(root), lambda t: t.__setitem__("selected", 0))
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, spots_path(root), "is selected")


def test_spot_centres_outside_the_image(root: Path):
    rewrite(spots_path(root), lambda t: t.__setitem__("pixel_x", t["pixel_x"] + 5000 * (t.index < 2)))
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, image_path(root), "2 spot centre(s) lie outside the 700x700 image")


# --- labels ------------------------------------------------------------------------------------


def test_unknown_labels(root: Path):
    rewrite(labels_path(root), lambda t: t.__setitem__("label", t["label"].where(t.index != 3, "tumour")))
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, labels_path(root), "unknown label(s) ['tumour']", "invasive cancer")


def test_label_file_with_text_coordinates(root: Path):
    def edit(table):
        table["y"] = table["y"].astype(object)
        table.loc[3, "y"] = "row three"

    rewrite(labels_path(root), edit)
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, labels_path(root), "non-numeric", "row three")


def test_unreadable_label_file(root: Path):
    labels_path(root).write_bytes(b"\x00\xff\xfe garbage \x80")
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, labels_path(root), "label file is unreadable")


# --- images ------------------------------------------------------------------------------------


def test_garbage_image_fails_at_the_header(root: Path):
    image_path(root).write_bytes(b"\x00\x01 not a jpeg \xff" * 100)
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, image_path(root), "image is unreadable")


def test_image_truncated_inside_the_header(root: Path):
    path = image_path(root)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(info, SECTION, path, "image is unreadable")


def test_truncated_image_fails_when_tiled(root: Path, tmp_path: Path):
    path = image_path(root)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    cohort = read(root)  # the reader only reads the header, which is intact
    out = tmp_path / "out"
    with pytest.raises(CohortInputError) as info:
        write_patch_store(plan_tiling(cohort, size_um=100.0, size_px=16), out / "store")
    assert_names(info, SECTION, path, "could not be decoded", "truncated")
    assert not any(out.iterdir()), "a failed tiling left files behind"


def test_two_images_in_one_section_folder(root: Path):
    shutil.copy(image_path(root), image_path(root).with_name("HE_A1_copy.png"))
    with pytest.raises(CohortInputError) as info:
        read(root)
    assert_names(
        info, SECTION, root / "ST-imgs" / "A" / SECTION, "several images", "HE_A1.jpg", "HE_A1_copy.png"
    )


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("limit", [1_000, 300_000], ids=["far-over", "just-over"])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_image_over_the_pixel_limit(root: Path, limit: int, n_jobs: int):
    # 700 x 700 = 490,000 px. PIL itself only errors above twice its limit; the reader must not.
    with pytest.raises(CohortInputError) as info:
        Her2stDirectory(root).read(options=ReadOptions(max_image_pixels=limit), n_jobs=n_jobs)
    assert_names(info, SECTION, image_path(root), f"configured limit of {limit:,} pixels")


def test_parallel_reading_and_tiling_leave_pil_settings_alone(root: Path, tmp_path: Path):
    limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    cohort = Her2stDirectory(root).read(n_jobs=2)
    for i in range(6):  # threads overlap in most runs; the leak showed in most of them
        write_patch_store(plan_tiling(cohort, size_um=100.0, size_px=16), tmp_path / f"store{i}", n_jobs=2)
    assert Image.MAX_IMAGE_PIXELS == limit, "the raised pixel limit leaked out process-wide"
    assert list(warnings.filters) == filters


# --- spot QC -----------------------------------------------------------------------------------


@pytest.mark.parametrize("thresholds", [{"min_counts": 10**9}, {"min_genes": 10**6}])
def test_section_with_no_spots_left_after_qc(root: Path, thresholds: dict):
    cohort = read(root)
    with pytest.raises(CohortInputError) as info:
        filter_spots(cohort, **thresholds)
    assert_names(info, SECTION, counts_path(root), "no spots left after QC", f"{next(iter(thresholds))}=")

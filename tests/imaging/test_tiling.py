"""Patch geometry, tiling and the patch store, on synthetic images whose content is known.

Each test builds a minimal cohort AnnData by hand around images it writes itself, so the expected
patch content (where a black square falls, which colour sits in which quadrant) is exact.
"""

from __future__ import annotations

import math
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from PIL import Image

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.schema import COUNTS_LAYER, OBS_COLUMNS, label_categorical, validate_cohort
from tpir_kedro.imaging.patch_geometry import boxes_outside, decode_reduction, patch_boxes, patch_side_px
from tpir_kedro.imaging.patch_store import INDEX_FILE, PATCHES_FILE, PatchStore
from tpir_kedro.imaging.tiling import TilingPlan, plan_tiling, tile_section, write_patch_store

WHITE, BLACK = 255, 0
RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


# --- building blocks -------------------------------------------------------------------------


def make_cohort(sections: list[dict]) -> AnnData:
    """Cohort AnnData from ``[{name, image (path or None), um_per_px, centres [(x, y), ...]}]``."""
    frames, reports = [], {}
    for s in sections:
        centres = np.asarray(s["centres"], dtype=np.float64).reshape(-1, 2)
        n = len(centres)
        has_image = s.get("image") is not None
        frames.append(
            pd.DataFrame(
                {
                    "patient": s["name"][0],
                    "section": s["name"],
                    "spot_id": [f"{i + 1}x1" for i in range(n)],
                    "label": "unlabelled",
                    "array_x": np.arange(1, n + 1),
                    "array_y": 1,
                    "pixel_x": centres[:, 0],
                    "pixel_y": centres[:, 1],
                    "has_image": has_image,
                    "um_per_px": s["um_per_px"] if has_image else np.nan,
                },
                index=[f"{s['name']}_{i + 1}x1" for i in range(n)],
            )
        )
        reports[s["name"]] = {
            "image_path": str(s["image"]) if has_image else "",
            "um_per_px": s.get("um_per_px", np.nan),
        }
    obs = pd.concat(frames)
    for column in ("patient", "section"):
        obs[column] = obs[column].astype("category")
    obs["label"] = label_categorical(obs["label"])
    counts = sp.csr_matrix(np.arange(len(obs) * 3, dtype=np.int32).reshape(-1, 3) % 5)
    adata = AnnData(
        obs=obs[list(OBS_COLUMNS)],
        var=pd.DataFrame(index=["GENEA", "GENEB", "GENEC"]),
        layers={COUNTS_LAYER: counts},
        obsm={"spatial": obs[["pixel_x", "pixel_y"]].to_numpy()},
        uns={"sections": reports},
    )
    validate_cohort(adata)
    return adata


def save_image(array: np.ndarray, path: Path, **kwargs) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


def white_with_black_square(width: int, height: int, centre: tuple[int, int], side: int) -> np.ndarray:
    image = np.full((height, width, 3), WHITE, np.uint8)
    x, y = centre
    image[y - side // 2 : y + side // 2, x - side // 2 : x + side // 2] = BLACK
    return image


def darkness(patch: np.ndarray) -> float:
    """Fraction of the patch that is black, on a white background."""
    return 1.0 - float(patch.astype(np.float64).mean()) / 255.0


def dark_extent(patch: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns (half-open) where the patch is mostly dark."""
    dark = patch.mean(axis=2) < 128
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def patch_of(store: PatchStore, obs_name: str) -> np.ndarray:
    return np.asarray(store.patches[store.rows([obs_name])[0]])


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    # Quadrants meeting at (x=180, y=80) in a 300 x 200 image: asymmetric, so x/y mix-ups show.
    quadrants = np.empty((200, 300, 3), np.uint8)
    quadrants[:80, :180], quadrants[:80, 180:] = RED, GREEN
    quadrants[80:, :180], quadrants[80:, 180:] = BLUE, YELLOW
    # Sizes not divisible by 2 or 4, so a JPEG draft cannot round its way out of the test.
    draftable = white_with_black_square(1001, 803, (500, 400), 128)
    draftable[640:768, 808:936] = BLACK  # a second square near the far corner, where scale errors add up
    draftable[100:300, 100:300] = np.linspace(60, 220, 200, dtype=np.uint8)[None, :, None]  # a grey ramp
    return {
        "square": save_image(white_with_black_square(400, 400, (200, 200), 50), root / "square.png"),
        "quadrants": save_image(quadrants, root / "quadrants.png"),
        "black": save_image(np.zeros((100, 120, 3), np.uint8), root / "black.png"),
        "draftable_png": save_image(draftable, root / "draftable.png"),
        "draftable_jpg": save_image(draftable, root / "draftable.jpg", quality=95),
    }


# --- patch geometry --------------------------------------------------------------------------


def test_patch_side_is_size_um_over_um_per_px():
    assert patch_side_px(100.0, 0.5) == 200.0
    assert patch_side_px(112.0, 0.68) == pytest.approx(164.70588)  # a float, never rounded
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="µm/px must be positive"):
            patch_side_px(100.0, bad)


@pytest.mark.parametrize(
    ("side_px", "out_px", "factor"),
    [
        (64, 64, 1),  # same size
        (50, 64, 1),  # upsampling
        (127.9, 64, 1),  # just under 2x
        (128, 64, 2),
        (255, 64, 2),
        (256, 64, 4),
        (512, 64, 8),
        (10_000, 64, 8),  # JPEG drafts stop at 1/8
    ],
)
def test_decode_reduction_keeps_at_least_out_px(side_px, out_px, factor):
    assert decode_reduction(side_px, out_px) == factor
    assert side_px / factor >= out_px or factor == 1


def test_patch_boxes_are_centred_and_outside_boxes_flagged():
    boxes = patch_boxes(np.array([[50.0, 40.0], [5.0, 40.0], [95.0, 79.0]]), 20.0)
    np.testing.assert_allclose(boxes[0], [40, 30, 60, 50])
    assert boxes_outside(boxes, width=100, height=80).tolist() == [False, True, True]


# --- tiling ----------------------------------------------------------------------------------


def test_patch_covers_size_um_over_um_per_px_source_pixels(images, tmp_path):
    # The 50 px black square at (200, 200); 50 µm patches resampled to 40 px.
    # At 0.5 µm/px a patch spans 100 px: the square fills the middle 20 x 20 px of it.
    # At 0.25 µm/px it spans 200 px: the square fills the middle 10 x 10 px.
    cohort = make_cohort(
        [
            {"name": "A1", "image": images["square"], "um_per_px": 0.5, "centres": [(200, 200), (200, 150)]},
            {"name": "B1", "image": images["square"], "um_per_px": 0.25, "centres": [(200, 200)]},
        ]
    )
    store = write_patch_store(plan_tiling(cohort, size_um=50, size_px=40), tmp_path / "store")
    centred = patch_of(store, "A1_1x1")
    assert darkness(centred) == pytest.approx(0.25, abs=0.01)
    assert dark_extent(centred) == (slice(10, 30), slice(10, 30))
    wider = patch_of(store, "B1_1x1")
    assert darkness(wider) == pytest.approx(1 / 16, abs=0.01)
    assert dark_extent(wider) == (slice(15, 25), slice(15, 25))
    # 50 px above the square's centre: the square shows in the bottom rows (pixel_y is the row).
    below = patch_of(store, "A1_2x1")
    assert dark_extent(below) == (slice(30, 40), slice(10, 30))
    assert darkness(below) == pytest.approx(0.125, abs=0.01)


def test_a_spot_on_a_quadrant_corner_shows_the_four_colours(images, tmp_path):
    cohort = make_cohort(
        [{"name": "A1", "image": images["quadrants"], "um_per_px": 1.0, "centres": [(180, 80)]}]
    )
    store = write_patch_store(plan_tiling(cohort, size_um=40, size_px=20), tmp_path / "store")
    patch = patch_of(store, "A1_1x1").astype(int)
    # 40 px -> 20 px: away from the two centre lines no pixel blends across a boundary.
    for rows, cols, colour in (
        (slice(0, 8), slice(0, 8), RED),
        (slice(0, 8), slice(12, 20), GREEN),
        (slice(12, 20), slice(0, 8), BLUE),
        (slice(12, 20), slice(12, 20), YELLOW),
    ):
        np.testing.assert_allclose(patch[rows, cols], np.broadcast_to(colour, (8, 8, 3)), atol=1)


def test_patches_are_size_px_square_uint8(images, tmp_path):
    tiles = plan_tiling(
        make_cohort(
            [{"name": "A1", "image": images["square"], "um_per_px": 0.5, "centres": [(200, 200), (100, 300)]}]
        ),
        size_um=30,
        size_px=24,
    ).sections[0]
    out = np.zeros((2, 24, 24, 3), np.uint8)
    padded, report = tile_section(tiles, 30, 24, out)
    assert out.shape == (2, 24, 24, 3) and out.dtype == np.uint8
    assert padded.tolist() == [False, False]
    assert report["n_padded"] == 0
    assert out[1].min() == WHITE and out[0][8:16, 8:16].max() == BLACK  # glass there, the square here
    store = write_patch_store(
        plan_tiling(
            make_cohort(
                [{"name": "A1", "image": images["square"], "um_per_px": 0.5, "centres": [(200, 200)]}]
            ),
            30,
            24,
        ),
        tmp_path / "s",
    )
    assert store.patches.shape == (1, 24, 24, 3) and store.patches.dtype == np.uint8
    assert store.size_px == 24 and store.size_um == 30


def test_spots_at_the_edge_are_padded_with_glass_and_flagged_not_dropped(images, tmp_path):
    # A black 120 x 100 image; 40 px patches at 20 px.
    cohort = make_cohort(
        [
            {
                "name": "A1",
                "image": images["black"],
                "um_per_px": 1.0,
                "centres": [(10, 50), (60, 50), (119, 99)],
            }
        ]
    )
    store = write_patch_store(plan_tiling(cohort, size_um=40, size_px=20), tmp_path / "store")
    assert len(store) == 3
    assert store.index.loc[["A1_1x1", "A1_2x1", "A1_3x1"], "padded"].tolist() == [True, False, True]
    assert store.meta["sections"]["A1"]["n_padded"] == 2
    left = patch_of(store, "A1_1x1")  # box x from -10 to 30: the left quarter is off the image
    assert (left[:, :4] == WHITE).all()
    assert (left[:, 6:] == BLACK).all()
    assert (patch_of(store, "A1_2x1") == BLACK).all()
    corner = patch_of(store, "A1_3x1")  # box from (99, 79) to (139, 119): only the top-left is image
    assert (corner[:9, :9] == BLACK).all()
    assert (corner[12:] == WHITE).all() and (corner[:, 12:] == WHITE).all()


def test_jpeg_draft_decoding_downsamples_and_keeps_the_content(images, tmp_path):
    # 64 µm at 0.25 µm/px is 256 px per patch; at 64 px a 1/4 draft still leaves 64 px.
    centres = [(500, 400), (872, 704), (200, 200), (436, 336)]
    cohort = make_cohort(
        [
            {"name": "J1", "image": images["draftable_jpg"], "um_per_px": 0.25, "centres": centres},
            {"name": "P1", "image": images["draftable_png"], "um_per_px": 0.25, "centres": centres},
        ]
    )
    store = write_patch_store(plan_tiling(cohort, size_um=64, size_px=64), tmp_path / "store")
    jpeg, png = store.meta["sections"]["J1"], store.meta["sections"]["P1"]
    assert jpeg["decode_factor"] == 4
    assert (jpeg["decoded_width"], jpeg["decoded_height"]) == (math.ceil(1001 / 4), math.ceil(803 / 4))
    assert png["decode_factor"] == 1  # not a JPEG: decoded in full
    assert (png["decoded_width"], png["decoded_height"]) == (1001, 803)
    for i in range(1, len(centres) + 1):
        drafted = patch_of(store, f"J1_{i}x1").astype(np.float64)
        full = patch_of(store, f"P1_{i}x1").astype(np.float64)
        assert np.abs(drafted - full).mean() < 3.0, i
        assert darkness(drafted) == pytest.approx(darkness(full), abs=0.01), i
    # The squares land where they are, also at the far corner of the image.
    assert (
        dark_extent(patch_of(store, "J1_1x1"))
        == dark_extent(patch_of(store, "P1_1x1"))
        == (slice(16, 48), slice(16, 48))
    )
    assert (
        dark_extent(patch_of(store, "J1_2x1"))
        == dark_extent(patch_of(store, "P1_2x1"))
        == (slice(16, 48), slice(16, 48))
    )


def test_jpeg_is_decoded_in_full_when_the_patch_is_not_downsampled_2x(images, tmp_path):
    cohort = make_cohort(
        [{"name": "J1", "image": images["draftable_jpg"], "um_per_px": 1.0, "centres": [(500, 400)]}]
    )
    store = write_patch_store(plan_tiling(cohort, size_um=100, size_px=64), tmp_path / "store")
    assert store.meta["sections"]["J1"]["decode_factor"] == 1
    assert store.meta["sections"]["J1"]["decoded_width"] == 1001


def test_sections_without_an_image_are_skipped_and_listed(images, tmp_path):
    cohort = make_cohort(
        [
            {"name": "A1", "image": images["square"], "um_per_px": 0.5, "centres": [(200, 200), (150, 150)]},
            {"name": "B1", "image": None, "centres": [(10, 10), (20, 20), (30, 30)]},
        ]
    )
    plan = plan_tiling(cohort, size_um=50, size_px=16)
    assert isinstance(plan, TilingPlan)
    assert [s.section for s in plan.sections] == ["A1"]
    assert plan.sections_without_image == ("B1",)
    assert plan.n_patches == 2
    store = write_patch_store(plan, tmp_path / "store")
    assert len(store) == 2
    assert store.meta["sections_without_image"] == ["B1"]
    assert set(store.index["section"]) == {"A1"}
    with pytest.raises(KeyError, match="B1_1x1"):
        store.rows(["A1_1x1", "B1_1x1"])


def test_plan_and_write_reject_what_cannot_be_tiled(images, tmp_path):
    cohort = make_cohort(
        [{"name": "A1", "image": images["square"], "um_per_px": 0.5, "centres": [(200, 200)]}]
    )
    for size_um, size_px in ((0, 16), (50, 0), (-5, 16)):
        with pytest.raises(ValueError, match="patch size must be positive"):
            plan_tiling(cohort, size_um=size_um, size_px=size_px)
    no_scale = cohort.copy()
    no_scale.obs["um_per_px"] = np.nan
    with pytest.raises(CohortInputError, match="A1.*µm/px"):
        plan_tiling(no_scale, size_um=50, size_px=16)
    gene_side_only = make_cohort([{"name": "B1", "image": None, "centres": [(10, 10)]}])
    with pytest.raises(CohortInputError, match="nothing to tile"):
        write_patch_store(plan_tiling(gene_side_only, size_um=50, size_px=16), tmp_path / "store")
    assert not (tmp_path / "store").exists()


# --- the patch store -------------------------------------------------------------------------


@pytest.fixture
def store_cohort(images) -> AnnData:
    return make_cohort(
        [
            {
                "name": "A1",
                "image": images["square"],
                "um_per_px": 0.5,
                "centres": [(200, 200), (100, 100), (5, 5)],
            },
            {"name": "B1", "image": images["quadrants"], "um_per_px": 1.0, "centres": [(180, 80), (60, 150)]},
        ]
    )


def test_the_store_is_memory_mapped_read_only_and_indexed_by_spot(store_cohort, tmp_path):
    written = write_patch_store(plan_tiling(store_cohort, size_um=40, size_px=16), tmp_path / "store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no staging folder left
    store = PatchStore.open(tmp_path / "store")
    assert isinstance(store.patches, np.memmap)
    assert not store.patches.flags.writeable
    with pytest.raises(ValueError):
        store.patches[0, 0, 0, 0] = 1
    assert len(store) == store_cohort.n_obs == 5
    np.testing.assert_array_equal(store.rows(["B1_2x1", "A1_1x1"]), [4, 0])
    assert list(store.index.index) == list(store_cohort.obs_names)
    assert store.index["padded"].tolist() == [False, False, True, False, False]
    assert store.index.loc["B1_1x1", ["patient", "section"]].tolist() == ["B", "B1"]
    np.testing.assert_array_equal(store.patches, written.patches)
    with pytest.raises(KeyError, match="no patch.*'Z9_1x1'"):
        store.rows(["A1_1x1", "Z9_1x1"])
    # Staged and renamed, yet as readable as any folder the user makes (not mkdtemp's 0700).
    (tmp_path / "reference").mkdir()
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == stat.S_IMODE(
        (tmp_path / "reference").stat().st_mode
    )


def test_write_refuses_an_existing_path(store_cohort, tmp_path):
    plan = plan_tiling(store_cohort, size_um=40, size_px=16)
    write_patch_store(plan, tmp_path / "store")
    before = (tmp_path / "store" / PATCHES_FILE).read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_patch_store(plan, tmp_path / "store")
    assert (tmp_path / "store" / PATCHES_FILE).read_bytes() == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileExistsError):
        write_patch_store(plan, tmp_path / "empty")


def test_threads_give_the_same_store(store_cohort, tmp_path):
    plan = plan_tiling(store_cohort, size_um=40, size_px=16)
    one = write_patch_store(plan, tmp_path / "one")
    two = write_patch_store(plan, tmp_path / "two", n_jobs=2)
    np.testing.assert_array_equal(one.patches, two.patches)
    pd.testing.assert_frame_equal(one.index, two.index)


def test_incomplete_or_inconsistent_stores_are_refused_clearly(store_cohort, tmp_path):
    good = tmp_path / "good"
    write_patch_store(plan_tiling(store_cohort, size_um=40, size_px=16), good)

    missing_index = shutil.copytree(good, tmp_path / "missing_index")
    (missing_index / INDEX_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"incomplete: {INDEX_FILE} is missing"):
        PatchStore.open(missing_index)

    short_index = shutil.copytree(good, tmp_path / "short_index")
    index = pd.read_csv(short_index / INDEX_FILE)
    index.iloc[:-1].to_csv(short_index / INDEX_FILE, index=False)
    with pytest.raises(ValueError, match="inconsistent: 4 index rows"):
        PatchStore.open(short_index)

    truncated = shutil.copytree(good, tmp_path / "truncated")
    data = (truncated / PATCHES_FILE).read_bytes()
    (truncated / PATCHES_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="patch store .*truncated"):
        PatchStore.open(truncated)

    with pytest.raises(FileNotFoundError, match="incomplete"):
        PatchStore.open(tmp_path / "nowhere")

"""Tissue detection and the tile grid, on synthetic thumbnails whose tissue is known."""

from __future__ import annotations

import numpy as np
import pytest

from tpir_kedro.imaging.tissue_grid import otsu_threshold, tissue_mask, tissue_tile_grid

PINK, GLASS = (200, 120, 190), 245


def synthetic_slide(seed: int = 0) -> np.ndarray:
    """(200, 300, 3): noisy grey-white glass, a pink tissue block x 40-160 y 50-150 with a pale
    hole (fat) inside, and a blacked-out strip x >= 260."""
    rng = np.random.default_rng(seed)
    rgb = np.clip(GLASS + rng.normal(0, 3, (200, 300, 3)), 0, 255)
    rgb[50:150, 40:160] = np.array(PINK) + rng.normal(0, 6, (100, 120, 3))
    rgb[90:100, 90:100] = GLASS  # a pale lumen inside the tissue
    rgb[:, 260:] = rng.integers(0, 4, (200, 40, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def test_otsu_splits_two_modes():
    values = np.r_[np.full(500, 10), np.full(300, 200)].astype(np.uint8)
    assert 10 <= otsu_threshold(values) < 200
    assert otsu_threshold(np.array([], np.uint8)) == 0.0


def test_tissue_is_the_coloured_block_not_glass_nor_black_background():
    mask = tissue_mask(
        synthetic_slide(), min_saturation=20, max_saturation=50, min_brightness=30, closing_px=3
    )
    expected = np.zeros((200, 300), bool)
    expected[50:150, 40:160] = True  # the lumen is filled in: it is inside tissue
    assert (mask == expected).mean() > 0.99
    assert not mask[:, 260:].any()


def test_all_glass_is_no_tissue_and_all_tissue_is_tissue():
    rng = np.random.default_rng(1)
    glass = np.clip(GLASS + rng.normal(0, 3, (100, 100, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(glass, min_saturation=20, closing_px=5).any()  # the saturation floor
    tissue = np.clip(np.array(PINK) + rng.normal(0, 6, (100, 100, 3)), 0, 255).astype(np.uint8)
    assert tissue_mask(tissue, closing_px=5).all()


def test_tiles_cover_the_tissue_only_and_stay_inside_the_image():
    mask = tissue_mask(synthetic_slide(), closing_px=3)
    # The thumbnail is 1/10 of a 3000 x 2000 px slide; tiles of 100 px, every 100 px.
    tiles = tissue_tile_grid(mask, (3000, 2000), side_px=100, stride_px=100, min_tissue_fraction=0.5)
    assert len(tiles) == 12 * 10  # the 1200 x 1000 px tissue block, tile by tile
    assert tiles["pixel_x"].between(400, 1600).all() and tiles["pixel_y"].between(500, 1500).all()
    assert (tiles["tissue_fraction"] >= 0.5).all() and tiles["spot_id"].is_unique
    assert list(tiles.columns) == ["spot_id", "pixel_x", "pixel_y", "tissue_fraction"]
    # A stricter tile size still never reaches past the image edge.
    big = tissue_tile_grid(
        np.ones_like(mask), (3000, 2000), side_px=700, stride_px=350, min_tissue_fraction=0.5
    )
    assert (
        (big["pixel_x"] - 350 >= 0).all()
        and (big["pixel_x"] + 350 <= 3000).all()
        and (big["pixel_y"] + 350 <= 2000).all()
    )


def test_no_tissue_or_an_image_smaller_than_a_tile_gives_an_empty_grid():
    empty = np.zeros((20, 30), bool)
    assert tissue_tile_grid(empty, (300, 200), 10, 10, 0.5).empty
    assert tissue_tile_grid(~empty, (300, 200), 400, 400, 0.5).empty
    with pytest.raises(ValueError, match="positive"):
        tissue_tile_grid(~empty, (300, 200), 0, 10, 0.5)

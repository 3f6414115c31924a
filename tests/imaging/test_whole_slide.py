"""Whole slides (pyramidal TIFF here; SVS/NDPI read alike) through tiffslide and OpenSlide: the same
pixels as PIL on the matching pyramid level, glass outside the slide, µm/px from the metadata, and
errors that say what to install."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tpir_kedro.cohort import whole_slide
from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.slide_image import image_size, open_slide_image
from tpir_kedro.cohort.whole_slide import whole_slide_reader, whole_slide_um_per_px
from tpir_kedro.imaging import whole_slide_pixels
from tpir_kedro.imaging.slide_thumbnail import slide_thumbnail
from tpir_kedro.imaging.tiling import SectionTiles, tile_section

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("tiffslide")


def tissue_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(height, width, 3) uint8: smooth colour blobs with texture, so resampling errors would show."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 230, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16
    )
    return np.clip(smooth + rng.integers(-20, 21, size=smooth.shape), 0, 255).astype(np.uint8)


def reduce(image: np.ndarray, factor: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).reduce(factor))


@pytest.fixture
def pyramid(tmp_path, pyramidal_tiff):
    """A 1024 x 768 slide at 0.5 µm/px with levels at 1/2 and 1/4, and each level as a PNG."""
    full = tissue_like(1024, 768)
    levels = [full, reduce(full, 2), reduce(full, 4)]
    path = tmp_path / "slide.tif"
    pyramidal_tiff(path, levels, 0.5)
    pngs = []
    for i, level in enumerate(levels):
        pngs.append(tmp_path / f"level{i}.png")
        Image.fromarray(level).save(pngs[-1])
    return path, pngs


def cut(
    image_path, um_per_px: float, centres: np.ndarray, size_um: float, size_px: int, max_pixels: int = 10**9
):
    tiles = SectionTiles(
        "S1",
        "P1",
        str(image_path),
        um_per_px,
        tuple(f"s{i}" for i in range(len(centres))),
        np.asarray(centres, dtype=float),
    )
    out = np.zeros((len(centres), size_px, size_px, 3), np.uint8)
    padded, report = tile_section(tiles, size_um, size_px, out, max_image_pixels=max_pixels)
    return out, padded, report


@pytest.mark.parametrize(("size_px", "level"), [(64, 0), (24, 1), (12, 2)])
def test_patches_equal_pils_patches_from_the_pyramid_level_read(pyramid, size_px, level):
    """A 40 µm patch (80 px at level 0) at 64 px reads level 0, at 24 px level 1 (1/2), at 12 px
    level 2 (1/4); each equals PIL's patch cut from that level saved as a plain image."""
    path, pngs = pyramid
    centres = np.array([[500.3, 400.7], [100.0, 120.0], [900.0, 650.5]])
    patches, padded, report = cut(path, 0.5, centres, 40.0, size_px)
    assert report["reader"] == "tiffslide" and report["pyramid_level"] == level and not padded.any()
    factor = 2**level
    expected, _, pil_report = cut(pngs[level], 0.5 * factor, centres / factor, 40.0, size_px)
    assert "reader" not in pil_report
    np.testing.assert_array_equal(patches, expected)


def test_outside_the_slide_is_glass_and_flagged(pyramid):
    path, pngs = pyramid
    centres = np.array([[5.0, 5.0], [1020.0, 760.0]])
    patches, padded, _ = cut(path, 0.5, centres, 40.0, 20)
    assert padded.all()
    assert (patches[0, :8, :8] == 255).all() and (patches[1, -8:, -8:] == 255).all()  # white, never black
    assert (patches[0, -5:, -5:] < 250).any() and (
        patches[1, :5, :5] < 250
    ).any()  # tissue where the slide is


def test_openslide_reads_the_same_pixels_and_pads_with_glass(pyramid, monkeypatch):
    """OpenSlide sees this TIFF as one flat level (it ignores SubIFD pyramids), so it is used only
    once the TIFF is too large for PIL; its transparent outside becomes glass too."""
    pytest.importorskip("openslide")
    path, pngs = pyramid
    monkeypatch.setattr(whole_slide, "READERS", ("openslide",))
    assert whole_slide_reader(path, max_pixels=10**9) is None
    assert whole_slide_reader(path, max_pixels=1000) == "openslide"
    centres = np.array([[500.0, 400.0], [5.0, 5.0]])
    patches, padded, report = cut(path, 0.5, centres, 40.0, 32, max_pixels=1000)
    assert report["reader"] == "openslide" and report["pyramid_level"] == 0
    expected, _, _ = cut(pngs[0], 0.5, centres[:1], 40.0, 32)
    np.testing.assert_array_equal(patches[:1], expected)
    assert padded.tolist() == [False, True] and (patches[1, :8, :8] == 255).all()


def test_a_flat_tiff_stays_with_pil_unless_too_large_for_it(tmp_path):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, tissue_like(300, 200), tile=(64, 64), photometric="rgb", compression="zlib")
    small = 300 * 200 - 1
    assert whole_slide_reader(path, max_pixels=10**9) is None
    assert whole_slide_reader(path, max_pixels=small) == "tiffslide"
    with pytest.raises(CohortInputError, match="larger than the configured limit"):
        with open_slide_image(path, max_pixels=small):  # PIL would refuse to decode it whole
            pass
    assert image_size(path, max_pixels=small) == (300, 200)  # the reader never decodes it whole


def test_a_pyramids_size_and_thumbnail_come_from_its_header_and_coarse_level(pyramid, monkeypatch):
    path, pngs = pyramid
    assert image_size(path, max_pixels=1000) == (1024, 768)  # never decoded, so never over a limit
    thumbnail = slide_thumbnail(path, 200, max_pixels=1000)
    assert thumbnail.full_size == (1024, 768) and thumbnail.rgb.shape == (150, 200, 3)
    expected = np.asarray(Image.open(pngs[0]).resize((200, 150), Image.Resampling.BOX), dtype=float)
    assert np.abs(thumbnail.rgb.astype(float) - expected).mean() < 3.0
    # Read in many bands (a flat BigTIFF's way), the thumbnail is the same picture.
    monkeypatch.setattr(whole_slide_pixels, "THUMBNAIL_BAND_PIXELS", 256 * 40)
    banded = slide_thumbnail(path, 200, max_pixels=1000)
    assert np.abs(banded.rgb.astype(float) - thumbnail.rgb).mean() < 1.0


def test_microns_per_pixel_come_from_the_slides_metadata(pyramid, tmp_path, pyramidal_tiff):
    path, pngs = pyramid
    assert whole_slide_um_per_px(path) == pytest.approx(0.5)
    assert whole_slide_um_per_px(pngs[0]) is None  # not a whole slide
    unknown = tmp_path / "unknown.tif"
    pyramidal_tiff(unknown, [tissue_like(256, 256), tissue_like(128, 128)], None)
    assert whole_slide_um_per_px(unknown) is None
    oblong = tmp_path / "oblong.tif"
    pyramidal_tiff(oblong, [tissue_like(256, 256), tissue_like(128, 128)], 0.5, mpp_y=0.6)
    with pytest.raises(CohortInputError, match=r"section S2.*oblong\.tif.*not square"):
        whole_slide_um_per_px(oblong, section="S2")


def test_whole_slide_formats_say_what_to_install_or_that_they_are_unreadable(
    tmp_path, monkeypatch, pyramidal_tiff
):
    slide = tmp_path / "case7.svs"
    slide.write_bytes(b"not a slide at all")
    with pytest.raises(
        CohortInputError,
        match=r"section S3, file .*case7\.svs\] no installed whole-slide reader opens this file \(tiffslide: ",
    ):
        image_size(slide, section="S3")
    monkeypatch.setattr(whole_slide, "READERS", ())
    with pytest.raises(
        CohortInputError,
        match=r"case7\.svs\] \.svs is a whole-slide format and neither tiffslide nor OpenSlide is installed: pip install -e '\.\[wsi\]'.*export",
    ):
        image_size(slide, section="S3")
    # Without readers a pyramidal TIFF is still a TIFF: PIL reads its full-resolution page.
    tiff = tmp_path / "pyramid.tif"
    pyramidal_tiff(tiff, [tissue_like(256, 128), tissue_like(128, 64)], 0.5)
    assert image_size(tiff) == (256, 128)

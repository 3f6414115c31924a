"""Pyramidal whole-slide images (SVS, NDPI, MRXS, pyramidal TIFF, ...) through tiffslide or OpenSlide.

Neither reader is a core dependency (``pip install -e '.[wsi]'`` adds both). They share OpenSlide's
API; tiffslide is tried first (pure Python: SVS, NDPI, SCN, generic and OME pyramidal TIFF), then
OpenSlide (also MRXS, VMS, BIF). A whole slide is never decoded whole: sizes come from its header,
thumbnails from its pyramid, and each patch from the coarsest level that still has the patch's
output resolution, so PIL's decompression-bomb limit (``max_pixels``) does not apply to it.

Plain TIFFs stay with PIL unless a reader is installed and the TIFF is a pyramid or is too large for
PIL, so the same image tiles the same way whichever packages are installed.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image

from tpir_kedro.cohort.errors import CohortInputError

logger = logging.getLogger(__name__)

# Formats PIL cannot read (or reads only a strip or a thumbnail of): a whole-slide reader is required.
WHOLE_SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".czi", ".isyntax")
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
# Tried in this order; tests narrow it to one.
READERS = ("tiffslide", "openslide")
GLASS = 255
THUMBNAIL_BAND_PIXELS = 16_000_000  # per band read for a thumbnail: ~48 MB of RGB
INSTALL_HINT = "pip install -e '.[wsi]' (tiffslide, openslide-python and openslide-bin)"


def _reader_class(name: str):
    """The reader's slide class, or None when it is not installed (openslide-python without its C
    library raises OSError on import)."""
    try:
        if name == "tiffslide":
            import tiffslide

            return tiffslide.TiffSlide
        if name == "openslide":
            import openslide

            return openslide.OpenSlide
    except (ImportError, OSError):
        return None
    raise ValueError(f"unknown whole-slide reader {name!r}; known: {READERS}")


def installed_readers() -> list[str]:
    return [name for name in READERS if _reader_class(name) is not None]


def _open_with_any(path: Path) -> tuple[str | None, object | None, dict[str, str]]:
    """(reader name, open slide) of the first installed reader that opens ``path``, and why the
    others did not."""
    failures = {}
    for name in installed_readers():
        try:
            return name, _reader_class(name)(str(path)), failures
        except Exception as exc:  # each reader raises its own types for "not my format"
            failures[name] = f"{type(exc).__name__}: {exc}"
    return None, None, failures


def whole_slide_reader(path: str | Path, *, section: str | None = None, max_pixels: int | None = None) -> str | None:
    """The reader that should read ``path`` (``"tiffslide"`` / ``"openslide"``), or None for PIL.

    Raises :class:`CohortInputError` for a whole-slide format that no installed reader opens.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WHOLE_SLIDE_SUFFIXES + TIFF_SUFFIXES or not path.is_file():
        return None  # PIL's path raises the missing-file error
    name, slide, failures = _open_with_any(path)
    if slide is None:
        if suffix in TIFF_SUFFIXES:
            return None
        if not failures:
            raise CohortInputError(
                f"{suffix} is a whole-slide format and neither tiffslide nor OpenSlide is installed: {INSTALL_HINT}; "
                "or export the slide (or a region of it) as TIFF, PNG or JPEG and give its µm/px",
                path=path,
                section=section,
            )
        raise CohortInputError(
            f"no installed whole-slide reader opens this file ({'; '.join(f'{k}: {v}' for k, v in failures.items())}); "
            "export the slide (or a region of it) as TIFF, PNG or JPEG and give its µm/px",
            path=path,
            section=section,
        )
    try:
        width, height = slide.dimensions
        pyramid = slide.level_count > 1
    finally:
        slide.close()
    if suffix in TIFF_SUFFIXES and not pyramid and (max_pixels is None or width * height <= max_pixels):
        return None  # a flat TIFF PIL can decode: keep PIL's tiling, identical with or without readers
    return name


@contextlib.contextmanager
def open_whole_slide(path: str | Path, reader: str, *, section: str | None = None):
    """The slide at ``path`` opened by ``reader`` (OpenSlide's API), closed on exit."""
    try:
        slide = _reader_class(reader)(str(path))
    except Exception as exc:
        raise CohortInputError(f"{reader} cannot read this whole slide: {type(exc).__name__}: {exc}", path=path, section=section) from exc
    try:
        yield slide
    finally:
        slide.close()


def whole_slide_um_per_px(path: str | Path, *, section: str | None = None) -> float | None:
    """µm per level-0 pixel from the slide's own metadata (``<reader>.mpp-x``), or None when the file
    is not a whole slide or does not say. Pixels that are not square are refused: patches are squares in µm."""
    reader = whole_slide_reader(path, section=section)
    if reader is None:
        return None
    with open_whole_slide(path, reader, section=section) as slide:
        values = [slide.properties.get(f"{reader}.mpp-{axis}") for axis in ("x", "y")]
    try:
        mpp_x, mpp_y = (float(v) if v not in (None, "") else math.nan for v in values)
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(mpp_x) and mpp_x > 0):
        return None
    if np.isfinite(mpp_y) and abs(mpp_y - mpp_x) > 0.01 * mpp_x:
        raise CohortInputError(f"pixels are not square ({mpp_x} x {mpp_y} µm); resample the slide to square pixels first", path=path, section=section)
    return mpp_x


def whole_slide_size(path: str | Path, reader: str, *, section: str | None = None) -> tuple[int, int]:
    """(width, height) of level 0, from the header."""
    with open_whole_slide(path, reader, section=section) as slide:
        return tuple(int(v) for v in slide.dimensions)


def whole_slide_thumbnail(path: str | Path, reader: str, max_side: int, *, section: str | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(rgb (h, w, 3) uint8 at most ``max_side`` a side, level-0 (width, height)), from the pyramid.

    The chosen level is read in bands, each box-reduced as it comes, so a slide without a coarse
    level (a flat BigTIFF) never sits in memory at full resolution.
    """
    with open_whole_slide(path, reader, section=section) as slide:
        full = tuple(int(v) for v in slide.dimensions)
        scale = min(1.0, max_side / max(full))
        size = (max(1, round(full[0] * scale)), max(1, round(full[1] * scale)))
        level = pyramid_level(slide, 1.0 / scale, 1)
        level_w, level_h = slide.level_dimensions[level]
        factor = max(1, int(level_w / size[0]))  # whole pixels box-averaged per band, before the final resize
        band_rows = factor * max(1, THUMBNAIL_BAND_PIXELS // (level_w * factor))
        downsample = float(slide.level_downsamples[level])
        bands = []
        for top in range(0, level_h, band_rows):
            rows = min(band_rows, level_h - top)
            band = Image.fromarray(_on_glass(slide.read_region((0, int(round(top * downsample))), level, (level_w, rows))))
            bands.append(np.asarray(band.reduce(factor)) if factor > 1 else np.asarray(band))
        reduced = Image.fromarray(np.concatenate(bands, axis=0))
        return np.asarray(reduced.resize(size, Image.Resampling.BILINEAR)), full


def pyramid_level(slide, side_px: float, out_px: int) -> int:
    """The coarsest level whose downsample still leaves at least ``out_px`` pixels per patch side."""
    wanted = side_px / out_px
    fitting = [i for i, d in enumerate(slide.level_downsamples) if d <= wanted * (1 + 1e-6)]
    return max(fitting, key=lambda i: slide.level_downsamples[i]) if fitting else 0


def read_patch(slide, box: np.ndarray, size_px: int, level: int) -> np.ndarray:
    """(size_px, size_px, 3) uint8: level-0 ``box`` (x0, y0, x1, y1) resampled from ``level``
    (antialiased bilinear), glass (white) wherever the box leaves the slide."""
    downsample = float(slide.level_downsamples[level])
    width, height = slide.dimensions
    box = np.asarray(box, dtype=np.float64) / downsample  # in level pixels from here on
    margin = int(np.ceil(max(1.0, (box[2] - box[0]) / size_px))) + 1  # the filter's support
    x0, y0 = int(np.floor(box[0])) - margin, int(np.floor(box[1])) - margin
    x1, y1 = int(np.ceil(box[2])) + margin, int(np.ceil(box[3])) + margin
    level_w, level_h = slide.level_dimensions[level]
    inside = max(x0, 0), max(y0, 0), min(x1, level_w), min(y1, level_h)
    canvas = Image.new("RGB", (x1 - x0, y1 - y0), (GLASS, GLASS, GLASS))
    if inside[2] > inside[0] and inside[3] > inside[1]:
        # read_region takes its corner in level-0 pixels and its size in level pixels.
        corner = (min(int(round(inside[0] * downsample)), width - 1), min(int(round(inside[1] * downsample)), height - 1))
        region = slide.read_region(corner, level, (inside[2] - inside[0], inside[3] - inside[1]))
        canvas.paste(Image.fromarray(_on_glass(region)), (inside[0] - x0, inside[1] - y0))
    local = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    return np.asarray(canvas.resize((size_px, size_px), Image.Resampling.BILINEAR, box=local, reducing_gap=None))


def _on_glass(image: Image.Image) -> np.ndarray:
    """RGB of an RGB or RGBA read; OpenSlide marks pixels outside the scanned area transparent."""
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (GLASS, GLASS, GLASS, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("RGB"))

"""Pyramidal whole-slide images (SVS, NDPI, MRXS, pyramidal TIFF, ...) through tiffslide or OpenSlide.

Neither reader is a core dependency (``pip install -e '.[wsi]'`` adds both). They share OpenSlide's
API; tiffslide is tried first (pure Python: SVS, NDPI, SCN, generic and OME pyramidal TIFF), then
OpenSlide (also MRXS, VMS, BIF). This module decides which reader opens a file and reads its
header (size, µm/px); its pixels are read region by region from the pyramid
(:mod:`tpir_kedro.imaging.whole_slide_pixels`), never decoded whole, so PIL's decompression-bomb
limit (``max_pixels``) does not apply to it.

Plain TIFFs stay with PIL unless a reader is installed and the TIFF is a pyramid or is too large for
PIL, so the same image tiles the same way whichever packages are installed.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np

from tpir_kedro.cohort.errors import CohortInputError

# Formats PIL cannot read (or reads only a strip or a thumbnail of): a whole-slide reader is required.
WHOLE_SLIDE_SUFFIXES = (
    ".svs",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
    ".czi",
    ".isyntax",
)
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
# Tried in this order; tests narrow it to one.
READERS = ("tiffslide", "openslide")
INSTALL_HINT = "pip install -e '.[wsi]' (tiffslide, openslide-python and openslide-bin)"


def _reader_class(name: str):
    """The reader's slide class, or None when it is not installed (openslide-python without its C
    library raises OSError on import).
    """
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
    others did not.
    """
    failures = {}
    for name in installed_readers():
        try:
            return name, _reader_class(name)(str(path)), failures
        except Exception as exc:  # each reader raises its own types for "not my format"
            failures[name] = f"{type(exc).__name__}: {exc}"
    return None, None, failures


def whole_slide_reader(
    path: str | Path, *, section: str | None = None, max_pixels: int | None = None
) -> str | None:
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
        raise CohortInputError(
            f"{reader} cannot read this whole slide: {type(exc).__name__}: {exc}", path=path, section=section
        ) from exc
    try:
        yield slide
    finally:
        slide.close()


def whole_slide_um_per_px(path: str | Path, *, section: str | None = None) -> float | None:
    """µm per level-0 pixel from the slide's own metadata (``<reader>.mpp-x``), or None when the file
    is not a whole slide or does not say. Pixels that are not square are refused: patches are squares in µm.
    """
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
        raise CohortInputError(
            f"pixels are not square ({mpp_x} x {mpp_y} µm); resample the slide to square pixels first",
            path=path,
            section=section,
        )
    return mpp_x


def whole_slide_size(path: str | Path, reader: str, *, section: str | None = None) -> tuple[int, int]:
    """(width, height) of level 0, from the header."""
    with open_whole_slide(path, reader, section=section) as slide:
        return tuple(int(v) for v in slide.dimensions)

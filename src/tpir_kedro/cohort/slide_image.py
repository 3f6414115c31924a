"""Opening H&E images deliberately.

Full-resolution ST images (HER2ST: ~9,300 x 9,900 px) exceed PIL's decompression-bomb guard
(~89 Mpx), which exists to stop untrusted uploads from exhausting memory. Here the images are the
user's own slides, so we raise the limit explicitly, to a bound the user can configure, instead of
disabling the guard process-wide.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

from PIL import Image

from tpir_kedro.cohort.errors import CohortInputError

# 1 gigapixel RGB is 3 GB decoded: large enough for 40x ST sections, small enough to catch garbage.
DEFAULT_MAX_PIXELS = 1_000_000_000


@contextlib.contextmanager
def _pixel_limit(max_pixels: int):
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


@contextlib.contextmanager
def open_slide_image(path: str | Path, *, section: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Open ``path`` lazily (header only until pixels are requested), as a context manager.

    Raises :class:`CohortInputError` naming the file and section when it is missing, not an
    image, or larger than ``max_pixels``.
    """
    path = Path(path)
    if not path.is_file():
        raise CohortInputError("image file does not exist", path=path, section=section)
    with _pixel_limit(max_pixels):
        try:
            image = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise CohortInputError(
                f"image is larger than the configured limit of {max_pixels:,} pixels ({exc})",
                path=path,
                section=section,
            ) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise CohortInputError(f"image is unreadable: {exc}", path=path, section=section) from exc
        try:
            yield image
        finally:
            image.close()


def image_size(path: str | Path, *, section: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) in pixels from the header, without decoding."""
    with open_slide_image(path, section=section, max_pixels=max_pixels) as image:
        return image.size

"""Opening H&E images deliberately.

Full-resolution ST images (HER2ST: ~9,300 x 9,900 px) exceed PIL's decompression-bomb guard
(~89 Mpx), which exists to stop untrusted uploads from exhausting memory. Here the images are the
user's own slides, so we raise the limit explicitly, to a bound the user can configure, instead of
disabling the guard process-wide.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from PIL import Image

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.whole_slide import whole_slide_reader, whole_slide_size

# 1 gigapixel RGB is 3 GB decoded: large enough for 40x ST sections, small enough to catch garbage.
DEFAULT_MAX_PIXELS = 1_000_000_000

# PIL's limit is one process-wide value and sections are opened from several threads at once
# (reading and tiling with n_jobs > 1): saved and restored per call, one thread would restore
# another's raised value and leave the guard raised for good. So the raised value is shared, the
# largest limit of the images open now (PIL's own once none is), and each image is checked against
# its own limit explicitly.
_LIMIT_LOCK = threading.Lock()
_open_limits: list[int] = []
_pil_limit: int | None = Image.MAX_IMAGE_PIXELS


@contextlib.contextmanager
def _pixel_limit(max_pixels: int):
    global _pil_limit
    with _LIMIT_LOCK:
        if not _open_limits:
            _pil_limit = Image.MAX_IMAGE_PIXELS
        _open_limits.append(max_pixels)
        Image.MAX_IMAGE_PIXELS = max(_open_limits)
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            _open_limits.remove(max_pixels)
            Image.MAX_IMAGE_PIXELS = max(_open_limits) if _open_limits else _pil_limit


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
            width, height = image.size
            if width * height > max_pixels:
                raise CohortInputError(
                    f"image is larger than the configured limit of {max_pixels:,} pixels ({width}x{height})",
                    path=path,
                    section=section,
                )
            yield image
        finally:
            image.close()


def image_size(
    path: str | Path, *, section: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """(width, height) in full-resolution pixels from the header, without decoding (a whole slide's level 0)."""
    reader = whole_slide_reader(path, section=section, max_pixels=max_pixels)
    if reader is not None:
        return whole_slide_size(path, reader, section=section)
    with open_slide_image(path, section=section, max_pixels=max_pixels) as image:
        return image.size

"""A small RGB copy of a slide, for finding tissue and for drawing predictions over."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.slide_image import DEFAULT_MAX_PIXELS, open_slide_image
from tpir_kedro.cohort.whole_slide import whole_slide_reader
from tpir_kedro.imaging.whole_slide_pixels import whole_slide_thumbnail


@dataclass(frozen=True)
class Thumbnail:
    """``rgb`` (h, w, 3) uint8 of an image whose full resolution is ``full_size`` (W, H)."""

    rgb: np.ndarray
    full_size: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Thumbnail pixels per full-resolution pixel, along x and along y."""
        return self.rgb.shape[1] / self.full_size[0], self.rgb.shape[0] / self.full_size[1]


def slide_thumbnail(
    path: str | Path, max_side: int, *, section: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Thumbnail:
    """The image at ``path`` shrunk to at most ``max_side`` px a side (aspect kept; never enlarged).

    JPEGs are decoded at a reduced draft scale first, and whole slides read from their pyramid, so
    a large slide is never decoded in full.
    """
    reader = whole_slide_reader(path, section=section, max_pixels=max_pixels)
    if reader is not None:
        rgb, full_size = whole_slide_thumbnail(path, reader, max_side, section=section)
        return Thumbnail(rgb=rgb, full_size=full_size)
    with open_slide_image(path, section=section, max_pixels=max_pixels) as image:
        full_size = image.size
        try:
            image.thumbnail((int(max_side), int(max_side)), Image.Resampling.BILINEAR)  # drafts JPEGs itself
            rgb = np.asarray(image.convert("RGB"))
        except OSError as exc:
            raise CohortInputError(f"image could not be decoded: {exc}", path=path, section=section) from exc
    return Thumbnail(rgb=rgb, full_size=full_size)

"""The pixels of a whole slide: thumbnails and patches read from its pyramid, never decoded whole.

The slide is one opened by :func:`tpir_kedro.cohort.whole_slide.open_whole_slide` (OpenSlide's
API, whichever reader). Patches are resampled by the same PIL call as the tiler's, so a level that
holds the same pixels as a plain image gives the same patches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tpir_kedro.cohort.whole_slide import open_whole_slide

GLASS = 255
THUMBNAIL_BAND_PIXELS = 16_000_000  # per band read for a thumbnail: ~48 MB of RGB


def whole_slide_thumbnail(
    path: str | Path, reader: str, max_side: int, *, section: str | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
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
            band = Image.fromarray(
                _on_glass(slide.read_region((0, int(round(top * downsample))), level, (level_w, rows)))
            )
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
    (antialiased bilinear), glass (white) wherever the box leaves the slide.
    """
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
        corner = (
            min(int(round(inside[0] * downsample)), width - 1),
            min(int(round(inside[1] * downsample)), height - 1),
        )
        region = slide.read_region(corner, level, (inside[2] - inside[0], inside[3] - inside[1]))
        canvas.paste(Image.fromarray(_on_glass(region)), (inside[0] - x0, inside[1] - y0))
    local = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    return np.asarray(
        canvas.resize((size_px, size_px), Image.Resampling.BILINEAR, box=local, reducing_gap=None)
    )


def _on_glass(image: Image.Image) -> np.ndarray:
    """RGB of an RGB or RGBA read; OpenSlide marks pixels outside the scanned area transparent."""
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (GLASS, GLASS, GLASS, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("RGB"))

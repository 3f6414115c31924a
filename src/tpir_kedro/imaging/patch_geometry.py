"""Where a spot's patch lies in its image, at a physical size, and how much to pre-shrink on decode."""

from __future__ import annotations

import numpy as np

JPEG_DRAFT_FACTORS = (1, 2, 4, 8)


def patch_side_px(size_um: float, um_per_px: float) -> float:
    """Side of a ``size_um`` patch in image pixels (float: boxes are resampled, not rounded)."""
    if not (um_per_px > 0):
        raise ValueError(f"µm/px must be positive, got {um_per_px}")
    return size_um / um_per_px


def patch_boxes(centres_xy: np.ndarray, side_px: float) -> np.ndarray:
    """(n, 4) boxes ``(x0, y0, x1, y1)`` of side ``side_px`` centred on (n, 2) pixel centres."""
    half = side_px / 2.0
    centres_xy = np.asarray(centres_xy, dtype=np.float64)
    return np.c_[centres_xy - half, centres_xy + half]


def decode_reduction(side_px: float, out_px: int) -> int:
    """Largest JPEG draft factor (1, 2, 4, 8) that still leaves at least ``out_px`` pixels per patch.

    Decoding a JPEG at 1/2..1/8 scale skips most of the IDCT work, so a patch that is downsampled
    anyway costs far less to tile than decoding at full resolution.
    """
    best = 1
    for factor in JPEG_DRAFT_FACTORS:
        if side_px / factor >= out_px:
            best = factor
    return best


def boxes_outside(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(n,) bool: the box reaches beyond the image and needs padding."""
    return (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height)

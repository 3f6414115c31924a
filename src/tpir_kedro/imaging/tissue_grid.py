"""Where to cut patches when a slide comes without spots: a regular tile grid over the tissue.

Tissue is found on a thumbnail: stained tissue is coloured (saturated), glass is white or grey
and a blacked-out background is dark, so tissue is saturation above an Otsu threshold among pixels
that are not dark. The threshold is held between a floor and a ceiling: on a slide that is nearly
all glass or all tissue the histogram has one mode, and Otsu would split that mode in two. A closing and hole filling then take in what H&E leaves
pale inside tissue (fat, lumina). A tile is kept when enough of its area is tissue.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 ``values`` (any shape): the cut maximising between-class variance."""
    hist = np.bincount(np.asarray(values, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    if hist.sum() == 0:
        return 0.0
    levels = np.arange(256)
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(hist * levels) / np.maximum(weight_low, 1)
    mean_high = ((hist * levels).sum() - np.cumsum(hist * levels)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(np.argmax(between))  # values <= threshold are the low class


def tissue_mask(
    rgb: np.ndarray,
    min_saturation: int = 20,
    max_saturation: int = 50,
    min_brightness: int = 30,
    closing_px: int = 0,
) -> np.ndarray:
    """(h, w) bool tissue mask of an (h, w, 3) uint8 thumbnail.

    Parameters
    ----------
    min_saturation, max_saturation
        the range the saturation threshold (0-255) is held in.
    min_brightness
        pixels darker than this (HSV value, 0-255) are background, not tissue.
    closing_px
        radius of the morphological closing, in thumbnail pixels (0: none).
    """
    hsv = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3])).convert("HSV"))
    saturation, value = hsv[..., 1], hsv[..., 2]
    lit = value >= min_brightness
    threshold = float(
        np.clip(otsu_threshold(saturation[lit]) if lit.any() else 0.0, min_saturation, max_saturation)
    )
    mask = lit & (saturation > threshold)
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool))  # isolated specks of dust/noise
    if closing_px > 0 and mask.any():
        # A closing by a disk, through distance transforms: linear time whatever the radius (a
        # structuring element of radius r costs r^2 per pixel). The image border erodes nothing.
        # (A transform of an array without zeros is meaningless, hence the two guards.)
        dilated = ndimage.distance_transform_edt(~mask) <= closing_px
        mask = dilated if dilated.all() else ndimage.distance_transform_edt(dilated) > closing_px
    return ndimage.binary_fill_holes(mask)


def tissue_tile_grid(
    mask: np.ndarray, full_size: tuple[int, int], side_px: float, stride_px: float, min_tissue_fraction: float
) -> pd.DataFrame:
    """Centres of the tiles of side ``side_px`` (full-resolution px) on a ``stride_px`` grid, inside
    the image, whose area is at least ``min_tissue_fraction`` tissue in ``mask`` (a thumbnail's).

    Returns
    -------
        (n, 4) ``spot_id`` (``tile_{column}_{row}``), ``pixel_x``, ``pixel_y``, ``tissue_fraction``.
    """
    width, height = full_size
    if side_px <= 0 or stride_px <= 0:
        raise ValueError(f"tile side and stride must be positive, got {side_px} and {stride_px} px")
    xs = np.arange(side_px / 2, width - side_px / 2 + 1e-9, stride_px)
    ys = np.arange(side_px / 2, height - side_px / 2 + 1e-9, stride_px)
    columns = ["spot_id", "pixel_x", "pixel_y", "tissue_fraction"]
    if len(xs) == 0 or len(ys) == 0:
        return pd.DataFrame(columns=columns)
    sx, sy = mask.shape[1] / width, mask.shape[0] / height
    # Summed-area table: the tissue pixels of any box in four lookups.
    table = np.pad(np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1), ((1, 0), (1, 0)))

    def edges(centres, scale, limit):
        lo = np.clip(np.floor((centres - side_px / 2) * scale).astype(int), 0, limit - 1)
        hi = np.clip(np.ceil((centres + side_px / 2) * scale).astype(int), lo + 1, limit)
        return lo, hi

    x0, x1 = edges(xs, sx, mask.shape[1])
    y0, y1 = edges(ys, sy, mask.shape[0])
    inside = (
        table[y1[:, None], x1[None, :]]
        - table[y0[:, None], x1[None, :]]
        - table[y1[:, None], x0[None, :]]
        + table[y0[:, None], x0[None, :]]
    )
    fraction = inside / ((y1 - y0)[:, None] * (x1 - x0)[None, :])  # (n_rows, n_columns)
    rows, cols = np.nonzero(fraction >= min_tissue_fraction)
    return pd.DataFrame(
        {
            "spot_id": [f"tile_{c}_{r}" for c, r in zip(cols, rows)],
            "pixel_x": xs[cols],
            "pixel_y": ys[rows],
            "tissue_fraction": fraction[rows, cols],
        },
        columns=columns,
    )

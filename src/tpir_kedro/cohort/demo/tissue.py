"""Spatially coherent tissue-class maps.

Each patient has one smooth random field per class, biased by that patient's class composition;
serial sections of a patient share the fields plus a small section-specific perturbation, so they
look alike without being copies. The class at a pixel is the argmax of the fields.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_fields(rng: np.random.Generator, n: int, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """(n, H, W) unit-variance Gaussian random fields with correlation length ~``sigma`` cells."""
    noise = rng.standard_normal((n, *shape))
    fields = np.stack([ndimage.gaussian_filter(f, sigma, mode="reflect") for f in noise])
    return fields / fields.reshape(n, -1).std(axis=1)[:, None, None]


def class_map(
    fields: np.ndarray, log_prior: np.ndarray, upsample: float, out_shape: tuple[int, int]
) -> np.ndarray:
    """Class index per pixel: argmax over classes of (field + log prior), fields zoomed to pixels.

    Parameters
    ----------
    fields
        (n_classes, h, w) coarse fields.
    log_prior
        (n_classes,) patient composition bias.
    upsample
        pixels per coarse cell.
    out_shape
        (H, W) of the image.

    Returns
    -------
        (H, W) int8 class indices.
    """
    scores = (fields + log_prior[:, None, None]).astype(np.float32)
    ry = _linear_upsampler(scores.shape[1], out_shape[0], upsample)
    rx = _linear_upsampler(scores.shape[2], out_shape[1], upsample)
    return np.einsum("Yy,cyx,Xx->cYX", ry, scores, rx, optimize=True).argmax(axis=0).astype(np.int8)


def _linear_upsampler(n_in: int, n_out: int, upsample: float) -> np.ndarray:
    """(n_out, n_in) matrix doing 1-D linear interpolation; separable, so far faster than ndimage.zoom."""
    pos = np.clip(np.arange(n_out) / upsample, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def tissue_mask(rng: np.random.Generator, shape: tuple[int, int], margin: float) -> np.ndarray:
    """(H, W) bool: an irregular ellipse-like tissue outline inside ``margin`` pixels of the border."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = h / 2, w / 2
    ry, rx = h / 2 - margin, w / 2 - margin
    radius = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    coarse = rng.standard_normal((6, 6)).astype(np.float32)
    wobble = _linear_upsampler(6, h, h / 5) @ coarse @ _linear_upsampler(6, w, w / 5).T
    return radius < 1.0 + 0.12 * wobble


def class_fractions_in_disks(
    classes: np.ndarray, centres_xy: np.ndarray, radius_px: float, n_classes: int
) -> np.ndarray:
    """(n_spots, n_classes) fraction of each class's pixels inside each spot's disk.

    A spot averages the cells under it, so its expression is a mixture of neighbouring tissues.
    """
    r = int(np.ceil(radius_px))
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    inside = ox**2 + oy**2 <= radius_px**2
    oy, ox = oy[inside], ox[inside]
    h, w = classes.shape
    out = np.zeros((len(centres_xy), n_classes))
    for i, (x, y) in enumerate(np.round(centres_xy).astype(int)):
        ys, xs = np.clip(y + oy, 0, h - 1), np.clip(x + ox, 0, w - 1)
        out[i] = np.bincount(classes[ys, xs], minlength=n_classes)[:n_classes]
    return out / out.sum(axis=1, keepdims=True)

"""Physical scale of a section image from its spot grid.

ST arrays have a known centre-to-centre pitch (HER2ST/legacy ST: 200 µm; Visium: 100 µm), so the
least-squares map from array coordinates to image pixels gives the image's µm/px whenever no
scanner metadata is available.
"""

from __future__ import annotations

import numpy as np

LEGACY_ST_PITCH_UM = 200.0
VISIUM_PITCH_UM = 100.0
VISIUM_SPOT_DIAMETER_UM = 55.0


def estimate_um_per_px(
    array_xy: np.ndarray, pixel_xy: np.ndarray, pitch_um: float = LEGACY_ST_PITCH_UM
) -> float:
    """Estimate µm per image pixel from spot positions.

    Parameters
    ----------
    array_xy
        (n_spots, 2) array (grid) coordinates.
    pixel_xy
        (n_spots, 2) positions of the same spots in the image, pixels.
    pitch_um
        physical distance of one array step.

    Returns
    -------
        µm/px, from the mean length of the two fitted axis vectors (pixels per array step).
    """
    array_xy = np.asarray(array_xy, dtype=float)
    pixel_xy = np.asarray(pixel_xy, dtype=float)
    if len(array_xy) < 3 or np.linalg.matrix_rank(np.c_[array_xy, np.ones(len(array_xy))]) < 3:
        raise ValueError("need at least three spots not on one line to estimate the spot pitch")
    design = np.c_[array_xy, np.ones(len(array_xy))]
    coef, *_ = np.linalg.lstsq(design, pixel_xy, rcond=None)
    px_per_step = float(np.mean(np.linalg.norm(coef[:2], axis=1)))
    return pitch_um / px_per_step

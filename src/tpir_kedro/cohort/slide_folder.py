"""A slide folder: one H&E image with its scale, spot centres and (optionally) true labels.

    slide.json   {"name", "image", "um_per_px", "spots", "labels", "description", "patient"}: the sidecar
    <image>      the H&E image (JPEG or PNG)
    spots.csv    spot_id, pixel_x, pixel_y (full-resolution pixel centres)
    labels.csv   spot_id, label (only to score predictions)

The demo writes its held-out slide this way; a user can lay out a slide of their own alike. The
layout and its writer live here, with the other input layouts; reading one for ``predict`` is
:func:`tpir_kedro.imaging.slide_folder.read_slide_folder`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tpir_kedro.atomic_folder import new_folder_atomically

SIDECAR = "slide.json"
SPOTS_FILE = "spots.csv"
LABELS_FILE = "labels.csv"


@dataclass
class SlideFolder:
    """A slide folder in memory: ``image`` (H, W, 3) uint8, ``spots`` (n, 3) ``spot_id pixel_x pixel_y``,
    ``labels`` (n, 2) ``spot_id label`` or None.
    """

    name: str
    image: np.ndarray
    um_per_px: float
    spots: pd.DataFrame
    labels: pd.DataFrame | None = None
    image_name: str = "HE.jpg"
    description: str = ""
    patient: str | None = None


def write_slide_folder(slide: SlideFolder, root: str | Path, jpeg_quality: int = 90) -> None:
    """Write ``slide`` under ``root`` atomically (staging folder, then rename); never overwrites."""
    with new_folder_atomically(root, "a slide folder") as staging:
        Image.fromarray(slide.image).save(staging / slide.image_name, quality=jpeg_quality)
        slide.spots[["spot_id", "pixel_x", "pixel_y"]].to_csv(staging / SPOTS_FILE, index=False)
        if slide.labels is not None:
            slide.labels[["spot_id", "label"]].to_csv(staging / LABELS_FILE, index=False)
        sidecar = {
            "name": slide.name,
            "image": slide.image_name,
            "um_per_px": float(slide.um_per_px),
            "spots": SPOTS_FILE,
            "labels": LABELS_FILE if slide.labels is not None else None,
            "description": slide.description,
            "patient": slide.patient,
        }
        (staging / SIDECAR).write_text(json.dumps(sidecar, indent=2))

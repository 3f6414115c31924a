"""Images inline in a figure, as ``data:`` URIs: the figure JSON and the report need no side files."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def jpeg_data_uri(rgb: np.ndarray, quality: int = 85) -> str:
    """``data:image/jpeg;base64,...`` of an (h, w, 3) uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

"""``Her2stSectionSlideDataset``: one section of a HER2ST download as a slide to predict on (read-only).

Example (conf/her2st/catalog_predict.yml)::

    predict_slide:
      type: tpir_kedro.datasets.Her2stSectionSlideDataset
      path: ${env:TPIR_HER2ST_DIR,../shared/her2st}
      section: A1
      image_overrides:
        A1: {file: app-imgs/A1_HE_image_dark.png, scale: 0.28760425654299683}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from tpir_kedro.cohort.slide_image import DEFAULT_MAX_PIXELS
from tpir_kedro.cohort.spot_geometry import LEGACY_ST_PITCH_UM
from tpir_kedro.imaging.her2st_slide import her2st_section_slide
from tpir_kedro.imaging.slide_source import SlideSource


class Her2stSectionSlideDataset(AbstractDataset[None, SlideSource]):
    """Args: ``path`` the download's ``data/`` folder; ``section``; ``image_overrides`` as for
    ``Her2stDirectoryDataset``; ``um_per_px`` (else estimated from the ``pitch_um`` spot pitch).
    """

    def __init__(
        self,
        *,
        path: str,
        section: str,
        image_overrides: dict[str, dict] | None = None,
        um_per_px: float | None = None,
        pitch_um: float = LEGACY_ST_PITCH_UM,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        metadata: dict[str, Any] | None = None,
    ):
        self._root = Path(path)
        self._section = str(section)
        self._image_overrides = dict(image_overrides or {})
        self._um_per_px = um_per_px
        self._pitch_um = float(pitch_um)
        self._max_image_pixels = int(max_image_pixels)
        self.metadata = metadata

    def load(self) -> SlideSource:
        if not self._root.is_dir():
            raise DatasetError(
                f"no HER2ST folder at {self._root}; set TPIR_HER2ST_DIR to the download's data/ folder"
            )
        return her2st_section_slide(
            self._root,
            self._section,
            self._image_overrides,
            self._um_per_px,
            self._pitch_um,
            self._max_image_pixels,
        )

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._root} is a read-only HER2ST download; refusing to write into it")

    def _exists(self) -> bool:
        return self._root.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._root), "section": self._section}

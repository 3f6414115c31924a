"""``SlideDataset``: a slide to predict on, as a lazy :class:`~tpir_kedro.imaging.slide_source.SlideSource`.

Two ways to name the slide:
- ``path``: a slide folder (``slide.json`` + image + spots/labels CSVs), versioned like the demo's;
  saving a :class:`~tpir_kedro.imaging.slide_folder.SlideFolder` writes one.
- ``image`` (+ optional ``spots``, ``labels``, ``um_per_px``): any image file, which then wins over
  ``path``, so ``--params predict.slide=...`` can point the catalog at a user's slide (see
  conf/base/catalog_predict.yml).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, VersionNotFoundError

from tpir_kedro.cohort.slide_folder import SlideFolder, write_slide_folder
from tpir_kedro.imaging.slide_folder import read_slide_folder
from tpir_kedro.imaging.slide_source import SlideSource, read_label_table, read_spot_table


class SlideDataset(AbstractVersionedDataset[SlideFolder, SlideSource]):
    def __init__(
        self,
        *,
        path: str,
        version: Version | None = None,
        image: str | None = None,
        spots: str | None = None,
        labels: str | None = None,
        um_per_px: float | None = None,
        name: str | None = None,
        missing_hint: str = "",
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(filepath=PurePosixPath(path), version=version)
        self._image = None if image in (None, "") else Path(image)
        self._spots = None if spots in (None, "") else Path(spots)
        self._labels = None if labels in (None, "") else Path(labels)
        self._um_per_px = None if um_per_px in (None, "") else float(um_per_px)
        self._name = name
        self._missing_hint = missing_hint
        self.metadata = metadata

    def load(self) -> SlideSource:
        if self._image is not None:
            name = self._name or self._image.stem
            return SlideSource(
                name=name,
                image_path=self._image,
                um_per_px=self._um_per_px,
                spots=None if self._spots is None else read_spot_table(self._spots, name),
                spots_path=self._spots,
                labels=None if self._labels is None else read_label_table(self._labels, name),
                description=f"slide {self._image}",
            )
        try:
            root = Path(self._get_load_path())
        except VersionNotFoundError as exc:
            raise DatasetError(
                f"no slide folder under {self._filepath}. {self._missing_hint}".strip()
            ) from exc
        if not root.is_dir():
            raise DatasetError(f"no slide folder at {root}. {self._missing_hint}".strip())
        slide = read_slide_folder(root)
        return slide if self._um_per_px is None else slide.with_scale(self._um_per_px)

    def save(self, data: SlideFolder) -> None:
        if not isinstance(data, SlideFolder):
            raise DatasetError(f"SlideDataset saves a SlideFolder, got {type(data).__name__}")
        write_slide_folder(data, Path(self._get_save_path()))

    def _exists(self) -> bool:
        if self._image is not None:
            return self._image.is_file()
        try:
            return Path(self._get_load_path()).is_dir()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._filepath),
            "version": self._version,
            "image": None if self._image is None else str(self._image),
            "spots": None if self._spots is None else str(self._spots),
        }

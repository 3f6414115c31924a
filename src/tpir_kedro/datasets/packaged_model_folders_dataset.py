"""``PackagedModelFoldersDataset``: the ``image_models`` folders opened lazily (read-only).

Catalogued as the transcoded ``image_models@folders``: the same files ``train`` writes through
``ImageModelsDataset`` (Kedro links the two by the name before ``@``), loaded as a
:class:`~tpir_kedro.models.packaged_model_folders.PackagedModelFolders` so that only the variant
``predict`` uses is read, and a missing training run says which command makes it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, VersionNotFoundError

from tpir_kedro.models.packaged_model_folders import TRAIN_HINT, PackagedModelFolders


class PackagedModelFoldersDataset(AbstractVersionedDataset[None, PackagedModelFolders]):
    def __init__(self, *, path: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(filepath=PurePosixPath(path), version=version)
        self.metadata = metadata

    def load(self) -> PackagedModelFolders:
        try:
            root = Path(self._get_load_path())
        except VersionNotFoundError as exc:
            raise DatasetError(f"no trained image models under {self._filepath}: {TRAIN_HINT}") from exc
        if not root.is_dir():
            raise DatasetError(f"no trained image models at {root}: {TRAIN_HINT}")
        return PackagedModelFolders(root)

    def save(self, data: None) -> None:
        raise DatasetError(
            "image_models@folders is read-only; `train` saves the models through `image_models`"
        )

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).is_dir()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version}

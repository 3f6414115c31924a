"""``ImageModelsDataset``: the packaged final image models of every variant, versioned.

Layout: ``{path}/{version}/{path name}/{variant}/`` each a :class:`PackagedImageModel` folder
(weights-only encoder, probe as JSON, model card). Loading never unpickles.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, VersionNotFoundError

from tpir_kedro.models.packaged_model_folders import TRAIN_HINT

if TYPE_CHECKING:
    from tpir_kedro.models.packaged_model import PackagedImageModel


class ImageModelsDataset(AbstractVersionedDataset[dict, dict]):
    """Save/load ``{variant: PackagedImageModel}``."""

    def __init__(self, *, path: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(filepath=PurePosixPath(path), version=version)
        self.metadata = metadata

    def load(self) -> dict[str, PackagedImageModel]:
        from tpir_kedro.models.packaged_model import PackagedImageModel

        try:
            root = Path(self._get_load_path())
        except VersionNotFoundError as exc:  # Kedro's own message would not say how to make one
            raise DatasetError(f"no trained image models under {self._filepath}: {TRAIN_HINT}") from exc
        if not root.is_dir():
            raise DatasetError(f"no trained image models at {root}: {TRAIN_HINT}")
        return {
            d.name: PackagedImageModel.load(d)
            for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith(".")
        }

    def save(self, data: dict[str, PackagedImageModel]) -> None:
        root = Path(self._get_save_path())
        staging = root.with_name(f".{root.name}.tmp")
        if staging.exists():
            raise DatasetError(f"{staging} exists: an earlier save was interrupted; remove it")
        staging.mkdir(parents=True)
        for variant, model in data.items():
            model.save(staging / variant)
        staging.rename(root)

    def _exists(self) -> bool:
        return Path(self._get_load_path()).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version}

"""``PatchStoreDataset``: the memory-mapped patch store, versioned.

Saving takes a :class:`~tpir_kedro.imaging.tiling.TilingPlan` and streams each section's patches
straight into the store on disk, so no node ever holds (and Kedro never copies) the patch array.
Loading returns a read-only, memory-mapped :class:`~tpir_kedro.imaging.patch_store.PatchStore`.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

from tpir_kedro.imaging.patch_store import PatchStore
from tpir_kedro.imaging.tiling import TilingPlan, write_patch_store


class PatchStoreDataset(AbstractVersionedDataset[TilingPlan, PatchStore]):
    def __init__(
        self,
        *,
        path: str,
        version: Version | None = None,
        n_jobs: int = 1,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(filepath=PurePosixPath(path), version=version)
        self._n_jobs = int(n_jobs)
        self.metadata = metadata

    def load(self) -> PatchStore:
        return PatchStore.open(Path(self._get_load_path()))

    def save(self, data: TilingPlan) -> None:
        if not isinstance(data, TilingPlan):
            raise DatasetError(f"PatchStoreDataset saves a TilingPlan, got {type(data).__name__}")
        write_patch_store(data, Path(self._get_save_path()), n_jobs=self._n_jobs)

    def _exists(self) -> bool:
        return (Path(self._get_load_path()) / "patches.npy").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version, "n_jobs": self._n_jobs}

"""``FolderDataset``: hands a node a working folder the catalog owns (the training checkpoints).

Loading creates the folder and returns its path; nothing is ever saved through it. Training runs
inside are keyed by a fingerprint of their inputs, so the folder is a cache, not a versioned output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError


class FolderDataset(AbstractDataset[None, Path]):
    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> Path:
        self._path.mkdir(parents=True, exist_ok=True)
        return self._path

    def save(self, data: None) -> None:
        raise DatasetError(
            f"FolderDataset {self._path} is a working folder; nodes write inside it, never save to it"
        )

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

"""``CellTableDataset``: one grid cell's table (a local CSV), written whole or not at all.

``kedro run --only-missing-outputs`` treats a cell whose tables exist as finished, so a run killed
while writing must not leave a half file behind: the table is written beside its path and renamed
onto it (atomic on one filesystem). Not versioned: a cell's tables are a resumable intermediate;
the tables users keep (``results`` and the rest, gathered from every cell) are versioned.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError


class CellTableDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None):
        self._path = Path(filepath)
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        if not self._path.is_file():
            raise DatasetError(f"{self._path}: this cell's table was not written yet (run its cell)")
        return pd.read_csv(self._path)

    def save(self, data: pd.DataFrame) -> None:
        if not isinstance(data, pd.DataFrame):
            raise DatasetError(f"{self._path}: a cell table must be a DataFrame, got {type(data).__name__}")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        staging = self._path.with_name(f".{self._path.name}.{uuid.uuid4().hex}.tmp")
        try:
            data.to_csv(staging, index=False)
            os.replace(staging, self._path)
        finally:
            staging.unlink(missing_ok=True)

    def _exists(self) -> bool:
        return self._path.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._path)}

"""``AnnDataDataset``: AnnData as h5ad, versioned, written atomically."""

from __future__ import annotations

import os
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import anndata as ad
from anndata import AnnData
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version


class AnnDataDataset(AbstractVersionedDataset[AnnData, AnnData]):
    """Load/save an :class:`~anndata.AnnData` as ``.h5ad``.

    Example catalog entry::

        cohort:
          type: tpir_kedro.datasets.AnnDataDataset
          filepath: data/03_primary/cohort.h5ad
          versioned: true
          save_args: {compression: lzf}

    ``load_args`` go to :func:`anndata.read_h5ad` (e.g. ``backed: r``), ``save_args`` to
    :meth:`AnnData.write_h5ad`. Saving writes a temporary file next to the target and renames it,
    so an interrupted run never leaves a truncated h5ad behind.
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(filepath=PurePosixPath(filepath), version=version)
        self._load_args = dict(load_args or {})
        self._save_args = {"compression": "lzf", **(save_args or {})}
        self.metadata = metadata

    def load(self) -> AnnData:
        path = Path(self._get_load_path())
        if not path.is_file():
            raise DatasetError(f"no AnnData at {path}; run the pipeline that produces it first")
        return ad.read_h5ad(path, **self._load_args)

    def save(self, data: AnnData) -> None:
        if not isinstance(data, AnnData):
            raise DatasetError(f"AnnDataDataset can only save AnnData, got {type(data).__name__}")
        path = Path(self._get_save_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not tempfile.mkstemp: its 0600 would make the h5ad private to whoever ran the pipeline.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            data.write_h5ad(tmp, **self._save_args)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _exists(self) -> bool:
        return Path(self._get_load_path()).is_file()

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": str(self._filepath),
            "version": self._version,
            "load_args": self._load_args,
            "save_args": self._save_args,
        }

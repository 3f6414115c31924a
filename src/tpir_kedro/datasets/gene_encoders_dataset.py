"""``GeneEncodersDataset``: the batch-agnostic gene encoders of every fold, versioned.

Layout: ``{path}/{version}/{name}/{fold}/{kind}/`` with scvi-tools' own model folder inside (so
``scvi.model.SCVI.load`` works on it) plus a weights-only copy that loading uses — no unpickling.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

if TYPE_CHECKING:
    from tpir_kedro.models.gene_encoder import GeneEncoder

FoldEncoders = dict[str, dict[str, "GeneEncoder"]]


class GeneEncodersDataset(AbstractVersionedDataset[FoldEncoders, FoldEncoders]):
    """Save/load ``{fold: {kind: GeneEncoder}}`` (kind: ``scvi`` / ``scanvi``)."""

    def __init__(self, *, path: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(filepath=PurePosixPath(path), version=version)
        self.metadata = metadata

    def load(self) -> FoldEncoders:
        from tpir_kedro.models.gene_encoder import GeneEncoder  # scvi-tools is slow to import

        root = Path(self._get_load_path())
        if not root.is_dir():
            raise DatasetError(f"no gene encoders at {root}; run the gene_vae pipeline first")
        return {
            fold.name: {kind.name: GeneEncoder.load(kind) for kind in sorted(fold.iterdir()) if kind.is_dir()}
            for fold in sorted(root.iterdir())
            if fold.is_dir() and not fold.name.startswith(".")
        }

    def save(self, data: FoldEncoders) -> None:
        root = Path(self._get_save_path())
        staging = root.with_name(f".{root.name}.tmp")
        if staging.exists():
            raise DatasetError(f"{staging} exists: an earlier save was interrupted; remove it")
        for fold, encoders in data.items():
            for kind, encoder in encoders.items():
                encoder.save(staging / fold / kind)
        staging.rename(root)

    def _exists(self) -> bool:
        return Path(self._get_load_path()).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version}

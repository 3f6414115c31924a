"""Datasets for raw cohort folders: they load a lazy source handle, never the data itself.

Like ``PartitionedDataset``, loading returns something to read from (a
:class:`~tpir_kedro.cohort.sources.Her2stDirectory`, ``VisiumDirectory`` or ``HestDirectory``), so the
reading node can pick sections and read them in parallel. ``Her2stDirectoryDataset`` can also *save* a
:class:`~tpir_kedro.cohort.her2st_layout.Her2stLayout` (the demo simulator's output).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

from tpir_kedro.cohort.her2st_layout import Her2stLayout, write_her2st_layout
from tpir_kedro.cohort.sources import Her2stDirectory, HestDirectory, VisiumDirectory


class Her2stDirectoryDataset(AbstractVersionedDataset[Her2stLayout, Her2stDirectory]):
    """A folder in the HER2ST layout (``ST-cnts``, ``ST-spotfiles``, ``ST-pat/lbl``, ``ST-imgs``).

    Parameters
    ----------
    path
        the folder (the HER2ST download's ``data/`` folder, or where the demo is written).
    image_overrides
        section -> ``{file, scale}`` (``file`` relative to ``path``) for images outside ``ST-imgs``.
    read_only
        refuse to save (real downloads are never written to).
    missing_hint
        appended to the error when the folder does not exist.
    """

    def __init__(
        self,
        *,
        path: str,
        version: Version | None = None,
        image_overrides: dict[str, dict] | None = None,
        read_only: bool = False,
        missing_hint: str = "",
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(filepath=PurePosixPath(path), version=version)
        self._image_overrides = dict(image_overrides or {})
        self._read_only = read_only
        self._missing_hint = missing_hint
        self.metadata = metadata

    def load(self) -> Her2stDirectory:
        try:
            root = Path(self._get_load_path()).resolve()
        except DatasetError as exc:
            raise DatasetError(f"no cohort folder at {self._filepath}. {self._missing_hint}".strip()) from exc
        if not root.is_dir():
            raise DatasetError(f"no cohort folder at {root}. {self._missing_hint}".strip())
        return Her2stDirectory(root=root, image_overrides=self._image_overrides)

    def save(self, data: Her2stLayout) -> None:
        if self._read_only:
            raise DatasetError(f"{self._filepath} is a read-only cohort source; refusing to write into it")
        if not isinstance(data, Her2stLayout):
            raise DatasetError(f"Her2stDirectoryDataset saves a Her2stLayout, got {type(data).__name__}")
        write_her2st_layout(data, Path(self._get_save_path()))

    def _exists(self) -> bool:
        return Path(self._get_load_path()).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version, "read_only": self._read_only}


class VisiumDirectoryDataset(AbstractVersionedDataset[None, VisiumDirectory]):
    """Space Ranger ``outs/`` folders, one per section (read-only).

    Example::

        raw_cohort:
          type: tpir_kedro.datasets.VisiumDirectoryDataset
          path: /data/visium_cohort
          sections:
            P1_S1: {patient: P1, outs: P1_S1/outs, image: P1_S1/he.tif, labels: P1_S1/labels.csv}
    """

    def __init__(self, *, path: str, sections: dict[str, dict], metadata: dict[str, Any] | None = None):
        super().__init__(filepath=PurePosixPath(path), version=None)
        self._sections = dict(sections)
        self.metadata = metadata

    def load(self) -> VisiumDirectory:
        root = Path(self._filepath)
        if not root.is_dir():
            raise DatasetError(f"no Visium cohort folder at {root}")
        return VisiumDirectory(root=root, sections=self._sections)

    def save(self, data: None) -> None:
        raise DatasetError("VisiumDirectoryDataset is read-only")

    def _exists(self) -> bool:
        return Path(self._filepath).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "sections": sorted(self._sections)}


class HestDirectoryDataset(AbstractVersionedDataset[None, HestDirectory]):
    """A HEST-1k download (``st/``, ``wsis/``, ``metadata/``; read-only), one section per sample.

    Parameters
    ----------
    path
        the folder holding ``st/``, ``wsis/`` and ``metadata/``.
    samples
        the sample ids to read (HEST's ``id``, e.g. ``NCBI681``).
    patients
        sample id -> patient, overriding the metadata's ``patient`` (empty for most HEST samples,
        and free text: folds hold out patients named with letters, digits, ``-`` and ``_``).
    labels
        sample id -> a ``barcode,label`` CSV, relative to ``path``.
    missing_hint
        appended to the error when the folder does not exist.

    Example::

        raw_cohort:
          type: tpir_kedro.datasets.HestDirectoryDataset
          path: /data/hest
          samples: [NCBI681, NCBI682]
          patients: {NCBI681: P8, NCBI682: P7}
          labels: {NCBI681: labels/NCBI681.csv}
    """

    def __init__(
        self,
        *,
        path: str,
        samples: list[str],
        patients: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        missing_hint: str = "",
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(filepath=PurePosixPath(path), version=None)
        if isinstance(samples, str) or not samples:
            raise DatasetError(f"HestDirectoryDataset needs a list of sample ids, got samples={samples!r}")
        # YAML reads an id such as 123 as a number: ids are file names, so text.
        self._samples = tuple(str(s) for s in samples)
        if len(set(self._samples)) < len(self._samples):
            raise DatasetError(f"samples lists an id twice: {list(self._samples)}")
        self._patients = {str(k): str(v) for k, v in (patients or {}).items()}
        self._labels = {str(k): str(v) for k, v in (labels or {}).items()}
        for what, mapping in (("patients", self._patients), ("labels", self._labels)):
            stray = sorted(set(mapping) - set(self._samples))
            if stray:
                raise DatasetError(f"{what} names sample(s) {stray} that are not in samples")
        self._missing_hint = missing_hint
        self.metadata = metadata

    def load(self) -> HestDirectory:
        root = Path(self._filepath)
        if not root.is_dir():
            raise DatasetError(f"no HEST folder at {root}. {self._missing_hint}".strip())
        return HestDirectory(root=root, samples=self._samples, patients=self._patients, labels=self._labels)

    def save(self, data: None) -> None:
        raise DatasetError("HestDirectoryDataset is read-only")

    def _exists(self) -> bool:
        return Path(self._filepath).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "samples": list(self._samples)}

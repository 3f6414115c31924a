"""The patch store: every spot's patch once, as one uint8 array that training memory-maps.

Layout of a store folder:
    patches.npy   (n_patches, size_px, size_px, 3) uint8, NumPy format (np.load(mmap_mode="r"))
    index.csv     one row per patch: obs_name, patient, section, row, padded
    meta.json     size_um, size_px, per-section µm/px and image, and how the store was made

No per-epoch JPEG decoding, no pickles, and nothing but a path needs to travel between processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PATCHES_FILE = "patches.npy"
INDEX_FILE = "index.csv"
META_FILE = "meta.json"


@dataclass
class PatchStore:
    """A read-only, memory-mapped patch store."""

    path: Path
    patches: np.ndarray  # (n, size_px, size_px, 3) uint8 memmap
    index: pd.DataFrame  # indexed by obs_name
    meta: dict

    @classmethod
    def open(cls, path: str | Path) -> PatchStore:
        path = Path(path)
        for name in (PATCHES_FILE, INDEX_FILE, META_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"patch store {path} is incomplete: {name} is missing")
        try:
            patches = np.load(path / PATCHES_FILE, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:  # e.g. numpy's bare "mmap length is greater than file size"
            raise ValueError(
                f"patch store {path} is unreadable: {PATCHES_FILE} is truncated or not a NumPy array ({exc})"
            ) from exc
        index = pd.read_csv(path / INDEX_FILE, index_col="obs_name", dtype={"patient": str, "section": str})
        meta = json.loads((path / META_FILE).read_text())
        if len(index) != len(patches) or patches.shape[1:] != (meta["size_px"], meta["size_px"], 3):
            raise ValueError(
                f"patch store {path} is inconsistent: {len(index)} index rows, patches {patches.shape}, "
                f"size_px {meta['size_px']}"
            )
        return cls(path=path, patches=patches, index=index, meta=meta)

    @property
    def size_px(self) -> int:
        return int(self.meta["size_px"])

    @property
    def size_um(self) -> float:
        return float(self.meta["size_um"])

    def rows(self, obs_names) -> np.ndarray:
        """Store rows of ``obs_names``; a name without a patch raises KeyError naming it."""
        obs_names = pd.Index(obs_names)
        missing = obs_names[~obs_names.isin(self.index.index)]
        if len(missing):
            raise KeyError(f"{len(missing)} spot(s) have no patch in {self.path}, e.g. {list(missing[:3])}")
        return self.index.loc[obs_names, "row"].to_numpy()

    def __len__(self) -> int:
        return len(self.index)

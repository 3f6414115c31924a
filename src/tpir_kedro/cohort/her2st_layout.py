"""The HER2ST file layout as plain tables in memory, and writing it to disk.

Anything that produces a cohort in this shape (the demo simulator, a conversion script) can be
read back by :mod:`tpir_kedro.cohort.her2st`, so the demo exercises the real reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tpir_kedro.atomic_folder import new_folder_atomically


@dataclass
class Her2stSectionTables:
    """One section. ``counts``: spots x genes, index ``"{x}x{y}"``; ``spots``: the selection table
    (``x y new_x new_y pixel_x pixel_y selected``); ``labels``: ``Row.names x y pixel_x pixel_y
    label`` or None; ``image``: (H, W, 3) uint8 or None.
    """

    patient: str
    counts: pd.DataFrame
    spots: pd.DataFrame
    labels: pd.DataFrame | None = None
    image: np.ndarray | None = None
    image_name: str = "HE.jpg"


@dataclass
class Her2stLayout:
    sections: dict[str, Her2stSectionTables] = field(default_factory=dict)
    readme: str = ""


def write_her2st_layout(layout: Her2stLayout, root: str | Path, jpeg_quality: int = 90) -> None:
    """Write ``layout`` under ``root`` atomically: into a sibling temp folder, then renamed.

    Refuses to write into an existing folder, so nothing already on disk is overwritten.
    """
    with new_folder_atomically(root, "a cohort folder") as staging:
        for name, tables in layout.sections.items():
            _write_section(staging, name, tables, jpeg_quality)
        if layout.readme:
            (staging / "README.md").write_text(layout.readme)


def _write_section(root: Path, name: str, tables: Her2stSectionTables, jpeg_quality: int) -> None:
    for sub in ("ST-cnts", "ST-spotfiles", "ST-pat/lbl"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    tables.counts.to_csv(
        root / "ST-cnts" / f"{name}.tsv.gz", sep="\t", compression={"method": "gzip", "compresslevel": 1}
    )
    tables.spots.to_csv(root / "ST-spotfiles" / f"{name}_selection.tsv", sep="\t", index=False)
    if tables.labels is not None:
        tables.labels.to_csv(
            root / "ST-pat" / "lbl" / f"{name}_labeled_coordinates.tsv", sep="\t", index=False
        )
    if tables.image is not None:
        folder = root / "ST-imgs" / tables.patient / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tables.image).save(folder / tables.image_name, quality=jpeg_quality)

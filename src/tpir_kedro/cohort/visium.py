"""Reader for one 10x Visium section from its Space Ranger ``outs/`` folder.

    {outs}/filtered_feature_bc_matrix.h5     10x HDF5 (v3): features x barcodes UMI counts
    {outs}/spatial/tissue_positions.csv      Space Ranger >= 2.0, with a header row
    {outs}/spatial/tissue_positions_list.csv Space Ranger 1.x, no header; either file has the columns
                                             barcode, in_tissue, array_row, array_col,
                                             pxl_row_in_fullres, pxl_col_in_fullres
    {outs}/spatial/scalefactors_json.json    spot_diameter_fullres (px) gives the image scale

Pixel coordinates are in the frame of the full-resolution H&E the user gave Space Ranger, so that
image (not ``tissue_hires_image.png``) is the section image. A Visium spot is 55 µm across, so
µm/px is 55 / ``spot_diameter_fullres`` unless the configuration says otherwise.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.schema import LABEL_CATEGORIES, UNLABELLED
from tpir_kedro.cohort.section_table import section_anndata
from tpir_kedro.cohort.slide_image import DEFAULT_MAX_PIXELS, image_size
from tpir_kedro.cohort.spot_geometry import VISIUM_SPOT_DIAMETER_UM

logger = logging.getLogger(__name__)

COUNT_FILE = "filtered_feature_bc_matrix.h5"
POSITION_FILES = ("tissue_positions.csv", "tissue_positions_list.csv")
POSITION_COLUMNS = (
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
)
SCALEFACTORS_FILE = "scalefactors_json.json"


@dataclass(frozen=True)
class VisiumSection:
    """Where one Visium section's files are.

    ``image_path`` is the full-resolution H&E aligned in Space Ranger (optional); ``labels_path``
    a CSV with columns ``barcode,label`` (optional); ``um_per_px`` overrides the scale derived from
    the spot diameter.
    """

    name: str
    patient: str
    outs_path: Path
    image_path: Path | None = None
    labels_path: Path | None = None
    um_per_px: float | None = None


def read_visium_section(section: VisiumSection, max_image_pixels: int = DEFAULT_MAX_PIXELS) -> AnnData:
    """Read the in-tissue spots of one section into the cohort format.

    Returns an AnnData of (in-tissue spots x unique gene symbols) with int32 counts in
    ``layers["counts"]``; what was found and dropped is in ``uns["sections"][section.name]``.
    """
    name = section.name
    outs = Path(section.outs_path)
    if not outs.is_dir():
        raise CohortInputError("Space Ranger outs/ folder does not exist", path=outs, section=name)
    h5_path = outs / COUNT_FILE
    if not h5_path.is_file():
        raise CohortInputError("count matrix file is missing", path=h5_path, section=name)
    positions_path = _positions_path(outs, name)

    raw = _read_counts(outs, h5_path, name)
    barcodes = pd.Index(raw.obs_names.astype(str))
    positions = _read_positions(positions_path, name)
    unmatched = barcodes[~barcodes.isin(positions.index)]
    if len(unmatched):
        raise CohortInputError(
            f"{len(unmatched)} of {len(barcodes)} barcode(s) have no row in {positions_path.name} "
            f"(e.g. {list(unmatched[:3])}); do the matrix and spatial/ come from the same Space Ranger run?",
            path=h5_path,
            section=name,
        )
    positions = positions.loc[barcodes]
    keep = positions["in_tissue"].to_numpy() == 1
    if not keep.any():
        raise CohortInputError(
            f"none of the {len(barcodes)} spot(s) is marked in_tissue", path=positions_path, section=name
        )
    counts, genes, n_duplicate_genes = integer_counts_summed(
        raw.X[keep], raw.var_names, path=h5_path, section=name
    )
    positions, barcodes = positions[keep], barcodes[keep]

    labels, label_report = read_barcode_labels(section, barcodes)
    um_per_px, um_source = _um_per_px(section, outs)
    image_wh = (0, 0)
    if section.image_path is not None:
        image_wh = image_size(section.image_path, section=name, max_pixels=max_image_pixels)

    obs = pd.DataFrame(
        {
            "patient": section.patient,
            "section": name,
            "spot_id": barcodes.to_numpy(),
            "label": labels,
            "array_x": positions["array_col"].to_numpy(dtype=np.int64),
            "array_y": positions["array_row"].to_numpy(dtype=np.int64),
            "pixel_x": positions["pxl_col_in_fullres"].to_numpy(dtype=np.float64),
            "pixel_y": positions["pxl_row_in_fullres"].to_numpy(dtype=np.float64),
            "has_image": section.image_path is not None,
            "um_per_px": um_per_px,
        },
        index=pd.Index([f"{name}_{b}" for b in barcodes]),
    )
    report = {
        "source": "visium",
        "patient": section.patient,
        "counts_path": str(h5_path),
        "positions_path": str(positions_path),
        "image_path": "" if section.image_path is None else str(section.image_path),
        "image_width": image_wh[0],
        "image_height": image_wh[1],
        "image_scale": 1.0,
        "um_per_px": um_per_px,
        "um_per_px_source": um_source,
        "n_spots_in_counts": int(raw.n_obs),
        "n_spots_unselected": int((~keep).sum()),
        "n_genes": int(len(genes)),
        "n_duplicate_gene_symbols_summed": n_duplicate_genes,
        **label_report,
    }
    if image_wh[0]:
        _check_spots_inside(obs, image_wh, section)
    adata = section_anndata(counts, genes, obs, report)
    logger.info(
        "section %s: %d in-tissue spots (%d outside tissue dropped), %d genes, %d/%d labels joined, %.3f µm/px (%s)",
        name,
        adata.n_obs,
        report["n_spots_unselected"],
        adata.n_vars,
        label_report["n_labels_joined"],
        label_report["n_label_rows"],
        um_per_px,
        um_source,
    )
    return adata


def _positions_path(outs: Path, section: str) -> Path:
    for file_name in POSITION_FILES:
        path = outs / "spatial" / file_name
        if path.is_file():
            return path
    raise CohortInputError(
        f"tissue positions file is missing (looked for {' and '.join(POSITION_FILES)})",
        path=outs / "spatial" / POSITION_FILES[-1],
        section=section,
    )


def _read_counts(outs: Path, h5_path: Path, section: str) -> AnnData:
    """Counts via scanpy; positions are read separately (scanpy only reads them with the PNGs)."""
    import scanpy as sc  # deferred: importing scanpy takes seconds

    try:
        with warnings.catch_warnings():
            # read_visium is deprecated in favour of squidpy, which this project does not use.
            warnings.filterwarnings("ignore", message=r".*squidpy\.read\.visium", category=FutureWarning)
            # Repeated symbols are expected here and summed below; making them unique would split counts.
            warnings.filterwarnings("ignore", message="Variable names are not unique", category=UserWarning)
            # library_id given so files without the "library_ids" attribute are accepted.
            return sc.read_visium(outs, count_file=COUNT_FILE, library_id=section, load_images=False)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CohortInputError(
            f"count matrix is unreadable as 10x HDF5: {exc}", path=h5_path, section=section
        ) from exc


def _read_positions(path: Path, section: str) -> pd.DataFrame:
    """Positions indexed by barcode; the header row is optional (Space Ranger 1.x has none)."""
    try:
        table = pd.read_csv(path, header=None, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise CohortInputError(
            f"tissue positions file is unreadable: {exc}", path=path, section=section
        ) from exc
    if table.shape[1] != len(POSITION_COLUMNS):
        raise CohortInputError(
            f"tissue positions file has {table.shape[1]} columns, expected {list(POSITION_COLUMNS)}",
            path=path,
            section=section,
        )
    if len(table) and str(table.iloc[0, 0]).strip() == "barcode":
        table = table.iloc[1:]
    table.columns = list(POSITION_COLUMNS)
    table = table.set_index("barcode")
    try:
        table = table.astype(np.float64)
    except ValueError as exc:
        raise CohortInputError(
            f"tissue positions are not numeric: {exc}", path=path, section=section
        ) from exc
    if table.isna().any().any() or table.index.duplicated().any():
        raise CohortInputError(
            "tissue positions have missing values or repeated barcodes", path=path, section=section
        )
    return table


def integer_counts_summed(
    matrix, genes: pd.Index, *, path: Path, section: str
) -> tuple[sp.csr_matrix, pd.Index, int]:
    """Validate spots x features counts and sum features sharing a gene symbol, staying sparse.

    Returns (spots x unique symbols int32 CSR, the symbols in first-seen order, duplicates summed).
    scanpy hands int32 counts back as float32, which is exact for any realistic UMI count.
    """
    matrix = sp.csr_matrix(matrix)
    matrix.sum_duplicates()
    data = matrix.data
    bad = ~np.isfinite(data) | (data < 0) | (data != np.round(data))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        spot_i = int(np.searchsorted(matrix.indptr, first, side="right") - 1)
        raise CohortInputError(
            f"{int(bad.sum())} count value(s) are negative, non-integer or missing, e.g. spot #{spot_i}, "
            f"gene {genes[matrix.indices[first]]!r}: {data[first]!r}; raw integer UMI counts are required",
            path=path,
            section=section,
        )
    codes, symbols = pd.factorize(pd.Index(genes).astype(str))
    merge = sp.csr_matrix(
        (np.ones(len(codes), dtype=np.int64), (np.arange(len(codes)), codes)),
        shape=(len(codes), len(symbols)),
    )
    summed = sp.csr_matrix(matrix.astype(np.int64) @ merge)
    if summed.nnz and summed.data.max() > np.iinfo(np.int32).max:
        raise CohortInputError("counts exceed the int32 range", path=path, section=section)
    summed = summed.astype(np.int32)
    summed.sort_indices()
    return summed, pd.Index(symbols), int(len(codes) - len(symbols))


def read_barcode_labels(section: VisiumSection, barcodes: pd.Index) -> tuple[np.ndarray, dict]:
    """(n,) labels of ``barcodes`` from ``section.labels_path`` (a ``barcode,label`` CSV; unlisted
    barcodes are ``unlabelled``) and what was joined. Any section with ``name`` and ``labels_path``
    will do (the HEST reader uses it too).
    """
    labels = np.full(len(barcodes), UNLABELLED, dtype=object)
    report = {"labels_path": "", "n_label_rows": 0, "n_labels_na_coordinates": 0, "n_labels_joined": 0}
    if section.labels_path is None:
        return labels, report
    path = Path(section.labels_path)
    if not path.is_file():
        raise CohortInputError("label file is missing", path=path, section=section.name)
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise CohortInputError(f"label file is unreadable: {exc}", path=path, section=section.name) from exc
    missing = [c for c in ("barcode", "label") if c not in table.columns]
    if missing:
        raise CohortInputError(
            f"label file lacks column(s) {missing}; it has {list(table.columns)[:8]}",
            path=path,
            section=section.name,
        )
    # Rows without a barcode or label carry nothing to join ("na_coordinates" to match HER2ST's report).
    na = table["barcode"].isna() | table["label"].isna()
    kept = table[~na]
    text = kept["label"].str.strip()
    unknown = sorted(set(text) - set(LABEL_CATEGORIES))
    if unknown:
        raise CohortInputError(
            f"unknown label(s) {unknown}; expected one of {list(LABEL_CATEGORIES)}",
            path=path,
            section=section.name,
        )
    by_barcode = pd.Series(text.to_numpy(), index=kept["barcode"].str.strip().to_numpy())
    by_barcode = by_barcode[~by_barcode.index.duplicated()]
    joined = barcodes.isin(by_barcode.index)
    labels[joined] = by_barcode.loc[barcodes[joined]].to_numpy()
    report.update(
        labels_path=str(path),
        n_label_rows=int(len(table)),
        n_labels_na_coordinates=int(na.sum()),
        n_labels_joined=int(joined.sum()),
    )
    return labels, report


def _um_per_px(section: VisiumSection, outs: Path) -> tuple[float, str]:
    if section.um_per_px is not None:
        return float(section.um_per_px), "configuration"
    path = outs / "spatial" / SCALEFACTORS_FILE
    if not path.is_file():
        raise CohortInputError(
            "scale factors file is missing; set um_per_px for this section instead",
            path=path,
            section=section.name,
        )
    try:
        diameter = float(json.loads(path.read_text())["spot_diameter_fullres"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CohortInputError(
            f"cannot read spot_diameter_fullres from the scale factors: {exc!r}",
            path=path,
            section=section.name,
        ) from exc
    if not np.isfinite(diameter) or diameter <= 0:
        raise CohortInputError(f"spot_diameter_fullres is {diameter!r}", path=path, section=section.name)
    return VISIUM_SPOT_DIAMETER_UM / diameter, "from Space Ranger spot_diameter_fullres"


def _check_spots_inside(obs: pd.DataFrame, image_wh: tuple[int, int], section: VisiumSection) -> None:
    x, y = obs["pixel_x"].to_numpy(), obs["pixel_y"].to_numpy()
    outside = (x < 0) | (y < 0) | (x >= image_wh[0]) | (y >= image_wh[1])
    if outside.any():
        examples = obs["spot_id"].to_numpy()[outside][:3].tolist()
        raise CohortInputError(
            f"{int(outside.sum())} spot centre(s) lie outside the {image_wh[0]}x{image_wh[1]} image "
            f"(e.g. {examples}); is this the full-resolution image aligned in Space Ranger, "
            "not tissue_hires_image.png?",
            path=section.image_path,
            section=section.name,
        )

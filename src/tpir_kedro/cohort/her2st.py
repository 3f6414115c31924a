"""Reader for the published HER2ST layout (Andersson et al. 2021), one section at a time.

    {root}/ST-cnts/{section}.tsv.gz                      spots x genes counts, first column "{x}x{y}"
    {root}/ST-spotfiles/{section}_selection.tsv          x y new_x new_y pixel_x pixel_y selected
    {root}/ST-pat/lbl/{section}_labeled_coordinates.tsv  pathologist labels (some sections)
    {root}/ST-imgs/{patient}/{section}/*.jpg             full-resolution H&E (some sections)

The patient is the section name's leading letters (``"C2"`` -> ``"C"``). Label files give array
coordinates as decimals and pixel columns that are not in the image frame, so labels are joined by
rounding ``x``/``y`` to the spot id.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from tpir_kedro.cohort.errors import CohortInputError
from tpir_kedro.cohort.schema import LABEL_CATEGORIES, UNLABELLED, spot_id
from tpir_kedro.cohort.section_table import integer_counts, section_anndata, sum_duplicate_genes
from tpir_kedro.cohort.slide_image import DEFAULT_MAX_PIXELS, image_size
from tpir_kedro.cohort.spot_geometry import LEGACY_ST_PITCH_UM, estimate_um_per_px

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_SECTION_NAME = re.compile(r"^([A-Za-z]+)(\d+)$")


@dataclass(frozen=True)
class Her2stSection:
    """Where one section's files are. ``image_scale`` maps spot-file pixels onto ``image_path``."""

    name: str
    patient: str
    counts_path: Path
    spots_path: Path
    labels_path: Path | None = None
    image_path: Path | None = None
    image_scale: float = 1.0


@dataclass(frozen=True)
class ReadOptions:
    """How to read sections. ``um_per_px`` overrides the estimate from the spot pitch, per section."""

    um_per_px: dict[str, float] = field(default_factory=dict)
    pitch_um: float = LEGACY_ST_PITCH_UM
    max_image_pixels: int = DEFAULT_MAX_PIXELS


def patient_of(section: str) -> str:
    match = _SECTION_NAME.match(section)
    if not match:
        raise CohortInputError(
            "section names must be patient letters followed by a number (e.g. 'C2')", section=section
        )
    return match.group(1)


def discover_her2st_sections(
    root: str | Path,
    sections: list[str] | None = None,
    image_overrides: dict[str, dict] | None = None,
) -> list[Her2stSection]:
    """List the sections under ``root`` (all with a counts file, or those named in ``sections``).

    ``image_overrides`` maps a section to ``{"file": relative-or-absolute, "scale": float}`` for
    images kept elsewhere or at another resolution (e.g. HER2ST's ``app-imgs`` A1 thumbnail).
    """
    root = Path(root)
    counts_dir = root / "ST-cnts"
    if not counts_dir.is_dir():
        raise CohortInputError("HER2ST layout expected: no ST-cnts/ folder here", path=counts_dir)
    available = {p.name.split(".")[0]: p for p in sorted(counts_dir.glob("*.tsv*"))}
    names = sorted(available) if sections is None else list(sections)
    if not names:
        raise CohortInputError("no counts files (*.tsv or *.tsv.gz)", path=counts_dir)
    image_overrides = image_overrides or {}
    found = []
    for name in names:
        if name not in available:
            raise CohortInputError("counts file is missing", path=counts_dir / f"{name}.tsv.gz", section=name)
        patient = patient_of(name)
        labels = root / "ST-pat" / "lbl" / f"{name}_labeled_coordinates.tsv"
        image, scale = _find_image(root, patient, name, image_overrides.get(name))
        found.append(
            Her2stSection(
                name=name,
                patient=patient,
                counts_path=available[name],
                spots_path=root / "ST-spotfiles" / f"{name}_selection.tsv",
                labels_path=labels if labels.is_file() else None,
                image_path=image,
                image_scale=scale,
            )
        )
    return found


def _find_image(root: Path, patient: str, name: str, override: dict | None) -> tuple[Path | None, float]:
    if override:
        path = Path(override["file"])
        return (path if path.is_absolute() else root / path), float(override.get("scale", 1.0))
    folder = root / "ST-imgs" / patient / name
    candidates = (
        sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    )
    if len(candidates) > 1:
        raise CohortInputError(
            f"several images, cannot tell which is the H&E: {[p.name for p in candidates]}",
            path=folder,
            section=name,
        )
    return (candidates[0] if candidates else None), 1.0


def _read_table(path: Path, section: str, what: str, **kwargs) -> pd.DataFrame:
    if not path.is_file():
        raise CohortInputError(f"{what} file is missing", path=path, section=section)
    try:
        # low_memory=False: one pass over wide tables (15k gene columns), ~2x faster here.
        return pd.read_csv(path, sep="\t", low_memory=False, **kwargs)
    except (OSError, ValueError, pd.errors.ParserError, EOFError) as exc:
        raise CohortInputError(f"{what} file is unreadable: {exc}", path=path, section=section) from exc


def _require_columns(frame: pd.DataFrame, columns: list[str], path: Path, section: str, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CohortInputError(
            f"{what} lacks column(s) {missing}; it has {list(frame.columns)[:8]}", path=path, section=section
        )


def _require_numeric(frame: pd.DataFrame, columns: list[str], path: Path, section: str, what: str) -> None:
    text = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        examples = {
            c: frame[c][pd.to_numeric(frame[c], errors="coerce").isna() & frame[c].notna()].iloc[:3].tolist()
            for c in text
        }
        raise CohortInputError(
            f"{what} has non-numeric values in column(s) {examples}", path=path, section=section
        )


def read_her2st_section(section: Her2stSection, options: ReadOptions | None = None) -> AnnData:
    """Read one section into the cohort format; what was dropped is in ``uns["sections"]``."""
    options = options or ReadOptions()
    name = section.name
    counts = _read_table(section.counts_path, name, "counts", index_col=0)
    counts.index = counts.index.astype(str)
    if counts.shape[0] == 0 or counts.shape[1] == 0:
        raise CohortInputError("counts table is empty", path=section.counts_path, section=name)
    repeated = counts.index[counts.index.duplicated()]
    if len(repeated):
        raise CohortInputError(
            f"{len(repeated)} spot id(s) appear more than once (e.g. {list(repeated[:3])})",
            path=section.counts_path,
            section=name,
        )
    counts, n_duplicate_genes = sum_duplicate_genes(counts)
    matrix = integer_counts(counts, path=section.counts_path, section=name)

    spots = _read_table(section.spots_path, name, "spot")
    _require_columns(spots, ["x", "y", "pixel_x", "pixel_y"], section.spots_path, name, "spot file")
    _require_numeric(spots, ["x", "y", "pixel_x", "pixel_y"], section.spots_path, name, "spot file")
    spots = spots.dropna(subset=["x", "y"])
    spots.index = [spot_id(x, y) for x, y in zip(spots["x"], spots["y"])]
    spots = spots[~spots.index.duplicated()]
    unmatched = counts.index[~counts.index.isin(spots.index)]
    if len(unmatched):
        raise CohortInputError(
            f"{len(unmatched)} of {len(counts)} counts spot id(s) match no row of {section.spots_path.name} "
            f"(e.g. {list(unmatched[:3])}); spot ids are '{{x}}x{{y}}' array coordinates",
            path=section.counts_path,
            section=name,
        )
    spots = spots.loc[counts.index]
    keep = spots["selected"].to_numpy() != 0 if "selected" in spots.columns else np.ones(len(spots), bool)
    if not keep.any():
        raise CohortInputError(
            f"none of the {len(keep)} spot(s) is selected (column 'selected' is 0)",
            path=section.spots_path,
            section=name,
        )
    no_pixel = spots[["pixel_x", "pixel_y"]].isna().any(axis=1).to_numpy() & keep
    if no_pixel.any():
        raise CohortInputError(
            f"{int(no_pixel.sum())} spot(s) lack pixel_x/pixel_y (e.g. {list(counts.index[no_pixel][:3])})",
            path=section.spots_path,
            section=name,
        )

    labels, label_report = _read_labels(section, counts.index)
    um_per_px, um_source, image_wh = _image_scale(section, spots, options)

    pixel = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64) * section.image_scale
    obs = pd.DataFrame(
        {
            "patient": section.patient,
            "section": name,
            "spot_id": counts.index,
            "label": labels,
            "array_x": spots["x"].to_numpy().astype(np.int64),
            "array_y": spots["y"].to_numpy().astype(np.int64),
            "pixel_x": pixel[:, 0],
            "pixel_y": pixel[:, 1],
            "has_image": section.image_path is not None,
            "um_per_px": um_per_px,
        },
        index=pd.Index([f"{name}_{s}" for s in counts.index]),
    )
    report = {
        "source": "her2st",
        "patient": section.patient,
        "counts_path": str(section.counts_path),
        "image_path": "" if section.image_path is None else str(section.image_path),
        "image_width": image_wh[0],
        "image_height": image_wh[1],
        "image_scale": section.image_scale,
        "um_per_px": um_per_px,
        "um_per_px_source": um_source,
        "n_spots_in_counts": int(len(counts)),
        "n_spots_unselected": int((~keep).sum()),
        "n_genes": int(counts.shape[1]),
        "n_duplicate_gene_symbols_summed": n_duplicate_genes,
        **label_report,
    }
    adata = section_anndata(matrix, counts.columns, obs, report)[keep].copy()
    if image_wh[0]:
        _check_spots_inside(adata, image_wh, section)
    logger.info(
        "section %s: %d spots, %d genes, %d/%d labels joined, image %s",
        name,
        adata.n_obs,
        adata.n_vars,
        label_report["n_labels_joined"],
        label_report["n_label_rows"],
        "none" if section.image_path is None else f"{um_per_px:.3f} µm/px ({um_source})",
    )
    return adata


def _read_labels(section: Her2stSection, spot_ids: pd.Index) -> tuple[np.ndarray, dict]:
    labels = np.full(len(spot_ids), UNLABELLED, dtype=object)
    report = {"labels_path": "", "n_label_rows": 0, "n_labels_na_coordinates": 0, "n_labels_joined": 0}
    if section.labels_path is None:
        return labels, report
    path = section.labels_path
    table = _read_table(path, section.name, "label")
    _require_columns(table, ["x", "y", "label"], path, section.name, "label file")
    _require_numeric(table, ["x", "y"], path, section.name, "label file")
    na = table[["x", "y"]].isna().any(axis=1) | table["label"].isna()
    table = table[~na]
    text = table["label"].astype(str).str.strip()
    unknown = sorted(set(text) - set(LABEL_CATEGORIES))
    if unknown:
        raise CohortInputError(
            f"unknown label(s) {unknown}; expected one of {list(LABEL_CATEGORIES)}",
            path=path,
            section=section.name,
        )
    ids = [spot_id(round(x), round(y)) for x, y in zip(table["x"], table["y"])]
    by_id = pd.Series(text.to_numpy(), index=ids)
    by_id = by_id[~by_id.index.duplicated()]
    joined = spot_ids.isin(by_id.index)
    labels[joined] = by_id.loc[spot_ids[joined]].to_numpy()
    report.update(
        labels_path=str(path),
        n_label_rows=int(len(table) + na.sum()),
        n_labels_na_coordinates=int(na.sum()),
        n_labels_joined=int(joined.sum()),
    )
    if int(na.sum()):
        logger.info(
            "section %s: %d label row(s) without coordinates skipped (%s)", section.name, int(na.sum()), path
        )
    return labels, report


def _image_scale(
    section: Her2stSection, spots: pd.DataFrame, options: ReadOptions
) -> tuple[float, str, tuple[int, int]]:
    if section.image_path is None:
        return float("nan"), "no image", (0, 0)
    wh = image_size(section.image_path, section=section.name, max_pixels=options.max_image_pixels)
    if section.name in options.um_per_px:
        return float(options.um_per_px[section.name]), "configuration", wh
    pixel = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=float) * section.image_scale
    try:
        estimate = estimate_um_per_px(spots[["x", "y"]].to_numpy(dtype=float), pixel, options.pitch_um)
    except ValueError as exc:
        raise CohortInputError(
            f"cannot estimate µm/px from the spot pitch ({exc}); set it in the configuration",
            path=section.spots_path,
            section=section.name,
        ) from exc
    return estimate, f"estimated from the {options.pitch_um:g} µm spot pitch", wh


def _check_spots_inside(adata: AnnData, image_wh: tuple[int, int], section: Her2stSection) -> None:
    x, y = adata.obs["pixel_x"].to_numpy(), adata.obs["pixel_y"].to_numpy()
    outside = (x < 0) | (y < 0) | (x >= image_wh[0]) | (y >= image_wh[1])
    if outside.any():
        examples = adata.obs["spot_id"].to_numpy()[outside][:3].tolist()
        raise CohortInputError(
            f"{int(outside.sum())} spot centre(s) lie outside the {image_wh[0]}x{image_wh[1]} image "
            f"(e.g. {examples}); do the spot file's pixel_x/pixel_y belong to this image?",
            path=section.image_path,
            section=section.name,
        )

"""The ``data_engineering`` pipeline's parameter sections, typed (conf/base/parameters_data_engineering.yml).

Defaults equal the conf (a test reads it); ``conf/her2st`` overrides only what differs. Each is read
with :func:`tpir_kedro.typed_settings.settings_from_dict`, so a misspelt key or a value of the wrong
kind fails before any file is read, naming ``section.key``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tpir_kedro.cohort.slide_image import DEFAULT_MAX_PIXELS
from tpir_kedro.cohort.sources import LABELLED_SECTIONS
from tpir_kedro.typed_settings import SectionSettings, require_at_least, require_positive


@dataclass(frozen=True)
class CohortSettings(SectionSettings):
    """``cohort``: which sections to read, and how to scale their images."""

    SECTION = "cohort"

    # None: all; a list; "labelled"; or names separated by spaces ("A1 B1": `kedro run --params`
    # splits its argument on commas, so a list cannot be given there)
    sections: tuple[str, ...] | str | None = None
    um_per_px: dict[str, float] = field(default_factory=dict)  # per section; else from the spot pitch
    spot_pitch_um: float = 200.0
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    n_jobs: int = 2

    def __post_init__(self):
        require_positive("cohort", self, "spot_pitch_um")
        require_at_least("cohort", self, 1, "max_image_pixels", "n_jobs")
        if any(v <= 0 for v in self.um_per_px.values()):
            raise ValueError(f"cohort.um_per_px must be positive, got {self.um_per_px}")

    def section_selection(self) -> list[str] | str | None:
        """What the cohort source's ``read(sections=...)`` takes."""
        if isinstance(self.sections, str) and self.sections != LABELLED_SECTIONS:
            return self.sections.split()
        return list(self.sections) if isinstance(self.sections, tuple) else self.sections


@dataclass(frozen=True)
class SpotQC(SectionSettings):
    """``spot_qc``: a spot is kept with at least this many counts and detected genes."""

    SECTION = "spot_qc"

    min_counts: int = 100
    min_genes: int = 50

    def __post_init__(self):
        require_at_least("spot_qc", self, 0, "min_counts", "min_genes")


@dataclass(frozen=True)
class GeneSelection(SectionSettings):
    """``genes``: each fold's genes, fitted on its training patients only."""

    SECTION = "genes"

    n_top_genes: int = 300
    min_spot_fraction: float = 0.01
    exclude_patterns: tuple[str, ...] = ("^MT-", "^RP[SL]\\d", "^MRP[SL]\\d")
    batch_key: str = "patient"

    def __post_init__(self):
        require_at_least("genes", self, 1, "n_top_genes")
        require_at_least("genes", self, 0, "min_spot_fraction")
        if self.min_spot_fraction > 1:
            raise ValueError(f"genes.min_spot_fraction is a fraction of spots, got {self.min_spot_fraction}")


@dataclass(frozen=True)
class PatchSettings(SectionSettings):
    """``patches``: every spot's patch, of a physical side resampled to a pixel size."""

    SECTION = "patches"

    size_um: float = 112.0
    size_px: int = 48
    max_image_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        require_positive("patches", self, "size_um")
        require_at_least("patches", self, 1, "size_px", "max_image_pixels")


@dataclass(frozen=True)
class BatchEffectSettings(SectionSettings):
    """``batch_effect``: the raw batch effect's size, on PCA of the most variable genes."""

    SECTION = "batch_effect"

    n_top_genes: int = 2000
    n_pcs: int = 30

    def __post_init__(self):
        require_at_least("batch_effect", self, 1, "n_top_genes", "n_pcs")

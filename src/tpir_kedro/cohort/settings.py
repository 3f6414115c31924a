"""The ``data_engineering`` pipeline's parameter sections, typed (conf/base/parameters_data_engineering.yml).

Defaults equal the conf (a test reads it); ``conf/her2st`` overrides only what differs. Each is read
with :func:`tpir_kedro.typed_settings.settings_from_dict`, so a misspelt key or a value of the wrong
kind fails before any file is read, naming ``section.key``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tpir_kedro.cohort.slide_image import DEFAULT_MAX_PIXELS
from tpir_kedro.cohort.sources import LABELLED_SECTIONS
from tpir_kedro.typed_settings import require_at_least, require_positive, settings_from_dict


@dataclass(frozen=True)
class CohortSettings:
    """``cohort``: which sections to read, and how to scale their images."""

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

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> CohortSettings:
        return settings_from_dict(cls, params, "cohort")

    def section_selection(self) -> list[str] | str | None:
        """What the cohort source's ``read(sections=...)`` takes."""
        if isinstance(self.sections, str) and self.sections != LABELLED_SECTIONS:
            return self.sections.split()
        return list(self.sections) if isinstance(self.sections, tuple) else self.sections


@dataclass(frozen=True)
class SpotQC:
    """``spot_qc``: a spot is kept with at least this many counts and detected genes."""

    min_counts: int = 100
    min_genes: int = 50

    def __post_init__(self):
        require_at_least("spot_qc", self, 0, "min_counts", "min_genes")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> SpotQC:
        return settings_from_dict(cls, params, "spot_qc")


@dataclass(frozen=True)
class GeneSelection:
    """``genes``: each fold's genes, fitted on its training patients only."""

    n_top_genes: int = 300
    min_spot_fraction: float = 0.01
    exclude_patterns: tuple[str, ...] = ("^MT-", "^RP[SL]\\d", "^MRP[SL]\\d")
    batch_key: str = "patient"

    def __post_init__(self):
        require_at_least("genes", self, 1, "n_top_genes")
        require_at_least("genes", self, 0, "min_spot_fraction")
        if self.min_spot_fraction > 1:
            raise ValueError(f"genes.min_spot_fraction is a fraction of spots, got {self.min_spot_fraction}")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> GeneSelection:
        return settings_from_dict(cls, params, "genes")


@dataclass(frozen=True)
class PatchSettings:
    """``patches``: every spot's patch, of a physical side resampled to a pixel size."""

    size_um: float = 112.0
    size_px: int = 48
    max_image_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        require_positive("patches", self, "size_um")
        require_at_least("patches", self, 1, "size_px", "max_image_pixels")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> PatchSettings:
        return settings_from_dict(cls, params, "patches")


@dataclass(frozen=True)
class BatchEffectSettings:
    """``batch_effect``: the raw batch effect's size, on PCA of the most variable genes."""

    n_top_genes: int = 2000
    n_pcs: int = 30

    def __post_init__(self):
        require_at_least("batch_effect", self, 1, "n_top_genes", "n_pcs")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> BatchEffectSettings:
        return settings_from_dict(cls, params, "batch_effect")

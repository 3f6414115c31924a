"""The ``reporting`` pipeline's parameters, typed (conf/base/parameters_reporting.yml); defaults
equal the conf (a test reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tpir_kedro.evaluation.probes import PROBES
from tpir_kedro.typed_settings import SectionSettings, require_at_least


@dataclass(frozen=True)
class SlideFigureSettings:
    """``reporting.slide``: one section's labels over a thumbnail of its H&E."""

    section: str | None = None  # None: the first section (by name) with pathologist labels and an image
    thumbnail_max_side_px: int = 1024
    jpeg_quality: int = 85
    spot_marker_px: float = 6.0

    def __post_init__(self):
        require_at_least(
            "reporting.slide", self, 1, "thumbnail_max_side_px", "jpeg_quality", "spot_marker_px"
        )
        if self.jpeg_quality > 100:
            raise ValueError(f"reporting.slide.jpeg_quality is 1-100, got {self.jpeg_quality}")


@dataclass(frozen=True)
class ReportingSettings(SectionSettings):
    SECTION = "reporting"

    title: str = "tpir_kedro: image encoder trained against spatial transcriptomics"
    slide: SlideFigureSettings = field(default_factory=SlideFigureSettings)
    confusion_probe: str = "logistic"  # whose confusion matrices the report opens on
    training_curve_columns: int = 3

    def __post_init__(self):
        require_at_least("reporting", self, 1, "training_curve_columns")
        if self.confusion_probe not in PROBES:
            raise ValueError(
                f"reporting.confusion_probe: unknown {self.confusion_probe!r}; choose from {list(PROBES)}"
            )

"""The ``predict`` pipeline's parameters, typed (conf/base/parameters_predict.yml).

Defaults equal the conf (a test reads it). ``predict.slide``, ``predict.spots`` and
``predict.labels`` are the catalog's (``predict_slide`` reads them as runtime parameters), so they
are accepted here and not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tpir_kedro.cohort.slide_image import DEFAULT_MAX_PIXELS
from tpir_kedro.typed_settings import SectionSettings, require_at_least, require_positive

CATALOG_KEYS = ("slide", "spots", "labels")


@dataclass(frozen=True)
class TileGridSettings:
    """``predict.tile_grid``: patches over the detected tissue, for a slide without spot coordinates."""

    stride_um: float | None = None  # tile centre to centre; None: the model's patch size
    min_tissue_fraction: float = 0.5
    thumbnail_max_side: int = 2048
    min_saturation: int = 20  # Otsu's threshold on saturation (0-255), held in this range
    max_saturation: int = 50
    min_brightness: int = 30
    closing_um: float = 100.0

    def __post_init__(self):
        where = "predict.tile_grid"
        if self.stride_um is not None:
            require_positive(where, self, "stride_um")
        require_at_least(where, self, 1, "thumbnail_max_side")
        require_at_least(
            where, self, 0, "min_tissue_fraction", "min_saturation", "min_brightness", "closing_um"
        )
        if self.min_tissue_fraction > 1:
            raise ValueError(f"{where}.min_tissue_fraction is a fraction, got {self.min_tissue_fraction}")
        if not self.min_saturation <= self.max_saturation <= 255:
            raise ValueError(
                f"{where}: need 0 <= min_saturation <= max_saturation <= 255, got {self.min_saturation}, {self.max_saturation}"
            )


@dataclass(frozen=True)
class PredictSettings(SectionSettings):
    SECTION = "predict"

    variant: str = "scanvi_infonce"  # which packaged model of the latest `train` run
    um_per_px: float | None = None  # None: the slide's own, else a whole slide's metadata
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    tile_grid: TileGridSettings = field(default_factory=TileGridSettings)
    batch_size: int = 128
    device: str | None = "auto"  # auto (or None): a GPU when there is one; or cpu, cuda, cuda:1
    overlay_max_side: int = 1024

    def __post_init__(self):
        if self.um_per_px is not None:
            require_positive("predict", self, "um_per_px")
        require_at_least("predict", self, 1, "max_image_pixels", "batch_size", "overlay_max_side")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> PredictSettings:
        if isinstance(params, Mapping):
            params = {k: v for k, v in params.items() if k not in CATALOG_KEYS}
        return super().from_dict(params)

    @property
    def torch_device(self) -> str | None:
        """What the model's ``embed(device=...)`` takes: None picks a GPU when there is one."""
        return None if self.device in (None, "auto") else self.device

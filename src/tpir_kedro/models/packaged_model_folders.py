"""The packaged image models of one training run, opened lazily: only the variant asked for is loaded.

A run packages every variant (``{root}/{variant}/``, see :mod:`tpir_kedro.models.packaged_model`);
prediction needs one, and a real run's ResNet-50 variants are ~100 MB each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tpir_kedro.models.packaged_model import CARD_FILE, PackagedImageModel

TRAIN_HINT = "run `kedro run --pipeline=train` (with the same --env) to train and package them"


@dataclass(frozen=True)
class PackagedModelFolders:
    root: Path

    @property
    def variants(self) -> list[str]:
        """Variants with a model card, sorted."""
        return sorted(
            d.name
            for d in self.root.iterdir()
            if d.is_dir() and not d.name.startswith(".") and (d / CARD_FILE).is_file()
        )

    def load(self, variant: str) -> PackagedImageModel:
        """The packaged model of ``variant``; a KeyError lists the variants there are."""
        available = self.variants
        if variant not in available:
            raise KeyError(
                f"no trained image model for variant {variant!r} in {self.root}; available: {available or 'none'}. "
                f"Pick one with `--params predict.variant=<name>`, or train it: {TRAIN_HINT} "
                "(`image_runs.variants` lists the variants that are trained)"
            )
        return PackagedImageModel.load(self.root / variant)

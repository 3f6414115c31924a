"""What users keep: a final image encoder, its linear probe, and a model card, saved without pickles.

Folder layout (one per variant):
    encoder.pt        the image encoder's state dict (``torch.load(..., weights_only=True)``)
    adapter.pt        the trained adapter's state dict, when the probe reads its output (the card's
                      ``representation`` is ``adapter`` and its ``adapter`` entry rebuilds it)
    probe.json        standardisation + multinomial logistic regression, as plain numbers
    model_card.json   classes, patch scale (µm and px), normalisation, backbone, training cohort,
                      leave-one-patient-out metrics, limits -- what ``predict`` checks before use
    MODEL_CARD.md     the same card for people
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tpir_kedro.models.adapter import ImageAdapter
    from tpir_kedro.models.image_encoders import ImageEncoder

ENCODER_FILE = "encoder.pt"
ADAPTER_FILE = "adapter.pt"
PROBE_FILE = "probe.json"
CARD_FILE = "model_card.json"
CARD_MD = "MODEL_CARD.md"


@dataclass
class LinearProbe:
    """Standardise then multinomial logistic regression: (n, d) features -> (n, n_classes) probabilities."""

    classes: list[str]
    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    coef: np.ndarray  # (n_classes, d), or (1, d) for two classes (scikit-learn's binary form)
    intercept: np.ndarray  # (n_classes,) or (1,)
    C: float

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        logits = x @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:  # binary: sigmoid of the positive class's score
            p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.column_stack([1.0 - p, p])
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "C": float(self.C),
        }

    @classmethod
    def from_dict(cls, d: dict) -> LinearProbe:
        return cls(
            list(d["classes"]),
            np.asarray(d["mean"]),
            np.asarray(d["scale"]),
            np.atleast_2d(np.asarray(d["coef"])),
            np.atleast_1d(np.asarray(d["intercept"])),
            float(d["C"]),
        )

    @classmethod
    def from_sklearn(cls, scaler, logistic, C: float) -> LinearProbe:
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        return cls(
            [str(c) for c in logistic.classes_],
            np.asarray(scaler.mean_, float),
            np.asarray(scale, float),
            np.asarray(logistic.coef_, float),
            np.asarray(logistic.intercept_, float),
            C,
        )


@dataclass
class PackagedImageModel:
    """The encoder, the optional adapter on its features, the probe on the result, and the card."""

    encoder: ImageEncoder
    probe: LinearProbe | None
    card: dict
    adapter: ImageAdapter | None = None

    def embed(self, patches, rows, batch_size: int = 256, device: str | None = None):
        """(n,) ``rows`` of a (n_store, S, S, 3) uint8 store -> (n, d) the representation the probe
        reads: the encoder's features, through the adapter when there is one.
        """
        from tpir_kedro.models.inference import embed_patches

        features, adapted = embed_patches(
            self.encoder, patches, rows, head=self.adapter, batch_size=batch_size, device=device
        )
        return features if self.adapter is None else adapted

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the folder atomically (staging folder, then rename); never overwrites one."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} exists; packaged models are never overwritten")
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        import torch

        from tpir_kedro.models.image_encoders import encoder_state_dict

        torch.save(encoder_state_dict(self.encoder), staging / ENCODER_FILE)
        if self.adapter is not None:
            torch.save(
                {k: v.detach().cpu() for k, v in self.adapter.state_dict().items()}, staging / ADAPTER_FILE
            )
        if self.probe is not None:
            (staging / PROBE_FILE).write_text(json.dumps(self.probe.to_dict()))
        (staging / CARD_FILE).write_text(
            json.dumps(_json_safe(self.card), indent=2, default=str, allow_nan=False)
        )
        (staging / CARD_MD).write_text(card_markdown(self.card))
        staging.rename(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PackagedImageModel:
        path = Path(path)
        if not (path / CARD_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a packaged image model: {CARD_FILE} is missing")
        card = json.loads((path / CARD_FILE).read_text())
        from tpir_kedro.models.image_encoders import build_image_encoder

        encoder = build_image_encoder(card["backbone"], "file", str(path / ENCODER_FILE))
        encoder.eval()
        probe = (
            LinearProbe.from_dict(json.loads((path / PROBE_FILE).read_text()))
            if (path / PROBE_FILE).is_file()
            else None
        )
        adapter = None
        if card.get("adapter"):
            import torch

            from tpir_kedro.models.adapter import ImageAdapter

            if not (path / ADAPTER_FILE).is_file():
                raise FileNotFoundError(
                    f"{path}: the model card describes an adapter but {ADAPTER_FILE} is missing"
                )
            adapter = ImageAdapter(**card["adapter"])
            adapter.load_state_dict(torch.load(path / ADAPTER_FILE, map_location="cpu", weights_only=True))
            adapter.eval()
        return cls(encoder, probe, card, adapter)


def _json_safe(value):
    """NaN/inf -> None (strict JSON has neither), recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def card_markdown(card: dict) -> str:
    lines = [f"# Model card: {card.get('variant', '?')}", "", card.get("description", ""), ""]
    for key in (
        "backbone",
        "backbone_weights_sha256",
        "init",
        "regime",
        "representation",
        "classes",
        "patch_size_um",
        "patch_size_px",
        "um_per_px_of_training_slides",
        "normalisation",
        "training_cohort",
        "lopo_metrics",
        "run_id",
        "limits",
    ):
        if key in card:
            value = card[key]
            text = json.dumps(_json_safe(value), default=str) if not isinstance(value, str) else value
            lines.append(f"- **{key}**: {text}")
    return "\n".join(lines) + "\n"

"""H&E-like images: class-specific textures in stain-density space, then Beer-Lambert to RGB.

Textures are drawn in physical units (µm) so they look the same at any µm/px. Per-patient stain
vectors and intensities and per-section scanner blur/brightness give the image side its own
"batch effects", as real slides from different labs and days have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Ruifrok & Johnston optical-density vectors for haematoxylin and eosin (RGB).
_H_OD = np.array([0.65, 0.70, 0.29])
_E_OD = np.array([0.07, 0.99, 0.11])


@dataclass(frozen=True)
class StainStyle:
    h_od: np.ndarray  # (3,) optical density per unit haematoxylin
    e_od: np.ndarray  # (3,) optical density per unit eosin
    blur_px: float
    brightness: float


def patient_stain(
    rng: np.random.Generator, vector_sd: float, intensity_sd: float
) -> tuple[np.ndarray, np.ndarray]:
    def jitter(v):
        v = np.clip(v + rng.normal(0.0, vector_sd, 3), 0.02, None)
        return v / np.linalg.norm(v) * np.exp(rng.normal(0.0, intensity_sd))

    return jitter(_H_OD) * 1.3, jitter(_E_OD) * 0.6


def section_style(
    rng: np.random.Generator, h_od: np.ndarray, e_od: np.ndarray, blur_max_px: float
) -> StainStyle:
    return StainStyle(
        h_od=h_od,
        e_od=e_od,
        blur_px=float(rng.uniform(0.0, blur_max_px)),
        brightness=float(rng.normal(0.0, 0.04)),
    )


def _nuclei(rng, shape, per_um2, radius_um, um_per_px, aniso=1.0):
    """Density map of Gaussian blobs (peak ~1) at Poisson positions."""
    lam = per_um2 * um_per_px**2
    points = rng.poisson(lam, shape).astype(np.float32)
    sigma = max(radius_um / um_per_px / 1.5, 0.5)
    blob = ndimage.gaussian_filter(points, (sigma, sigma * aniso))
    return blob * (2 * np.pi * sigma * sigma * aniso)


def _cells(rng, shape, per_um2, um_per_px):
    """Nearest-seed distance (µm) and boundaries of a random Voronoi tessellation."""
    seeds = rng.random(shape) < per_um2 * um_per_px**2
    if not seeds.any():
        seeds[shape[0] // 2, shape[1] // 2] = True
    distance, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    label = iy * shape[1] + ix
    edge = np.zeros(shape, bool)
    edge[:-1] |= label[:-1] != label[1:]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    return distance * um_per_px, edge


def _fibres(rng, shape, um_per_px, length_um=40.0, width_um=3.0):
    sigma = (width_um / um_per_px, length_um / um_per_px)
    noise = ndimage.gaussian_filter(
        rng.standard_normal(shape).astype(np.float32), sigma if rng.random() < 0.5 else sigma[::-1]
    )
    return noise / (noise.std() + 1e-8)


def class_textures(
    rng: np.random.Generator, shape: tuple[int, int], um_per_px: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(haematoxylin, eosin) density maps, one pair per tissue class in ``schema.TISSUE_CLASSES`` order."""
    u = um_per_px
    stroma = 0.55 + 0.25 * np.tanh(_fibres(rng, shape, u))
    sparse_nuclei = _nuclei(rng, shape, 0.0008, 3.0, u, aniso=2.5)

    nests = ndimage.gaussian_filter(rng.standard_normal(shape), 25.0 / u)
    nests = (nests > -0.3 * nests.std()).astype(np.float32)
    invasive_h = 0.9 * _nuclei(rng, shape, 0.006, 5.0, u) * nests + 0.3 * sparse_nuclei
    invasive_e = 0.35 * nests + stroma * (1 - nests)

    duct_d, _ = _cells(rng, shape, 1 / (160.0**2), u)
    duct = duct_d < 55.0
    lumen = duct_d < 12.0
    in_situ_h = np.where(duct & ~lumen, 0.9 * _nuclei(rng, shape, 0.007, 4.5, u), 0.3 * sparse_nuclei)
    in_situ_e = np.where(duct, 0.3, stroma) * ~lumen

    immune_h = 1.1 * _nuclei(rng, shape, 0.012, 2.8, u) + 0.2 * sparse_nuclei
    immune_e = 0.2 + 0.1 * stroma

    gland_d, _ = _cells(rng, shape, 1 / (90.0**2), u)
    gland_lumen = gland_d < 14.0
    gland_ring = (gland_d >= 14.0) & (gland_d < 24.0)
    glands_h = np.where(gland_ring, 0.9 * _nuclei(rng, shape, 0.01, 3.5, u), 0.4 * sparse_nuclei)
    glands_e = np.where(gland_lumen, 0.02, np.where(gland_ring, 0.3, stroma))

    connective_h = 0.7 * sparse_nuclei
    connective_e = 0.15 + 0.9 * stroma

    _, membranes = _cells(rng, shape, 1 / (70.0**2), u)
    membranes = ndimage.gaussian_filter(membranes.astype(np.float32), 0.8 / u + 0.3)
    adipose_h = 0.25 * sparse_nuclei
    adipose_e = 0.02 + 1.2 * membranes / (membranes.max() + 1e-8)

    return [
        (invasive_h, invasive_e),
        (in_situ_h, in_situ_e),
        (immune_h, immune_e),
        (glands_h, glands_e),
        (connective_h, connective_e),
        (adipose_h, adipose_e),
    ]


def render_he(
    rng: np.random.Generator, classes: np.ndarray, tissue: np.ndarray, um_per_px: float, style: StainStyle
) -> np.ndarray:
    """Render an H&E-like RGB image.

    Parameters
    ----------
    classes
        (H, W) tissue-class index per pixel.
    tissue
        (H, W) bool, False is glass (background).

    Returns
    -------
        (H, W, 3) uint8.
    """
    h = np.zeros(classes.shape, np.float32)
    e = np.zeros(classes.shape, np.float32)
    for c, (hc, ec) in enumerate(class_textures(rng, classes.shape, um_per_px)):
        where = classes == c
        h[where] = hc[where]
        e[where] = ec[where]
    h *= tissue
    e *= tissue
    od = h[..., None] * style.h_od + e[..., None] * style.e_od + 0.03
    rgb = np.exp(-od) * (1.0 + style.brightness)
    if style.blur_px > 0.05:
        rgb = ndimage.gaussian_filter(rgb, (style.blur_px, style.blur_px, 0))
    rgb += rng.normal(0.0, 0.015, rgb.shape)
    return (np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)

"""Sentinel-2 L2A-like surface reflectance for four seasons.

Each 10 m pixel mixes the materials under it (area fractions warped from the fine scene with
GDAL's area-weighted 'average'), with per-material spectra that change over the year
(phenology: cereal green in spring and ripe in summer, maize bare until summer, deciduous trees
leafless in winter...).  Shadows darken dense built-up pixels, more so with the low winter sun.
The 20 m bands are blurred to 20 m-like sharpness.  DN = reflectance x 10000, 0 = nodata.
"""
import math

import numpy as np

from . import materials as M
from .randomness import stream
from .shadows import SUN_ELEVATION_DEG

SEASONS = ("spring", "summer", "autumn", "winter")
BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
BANDS_20M = ("B5", "B6", "B7", "B8A", "B11", "B12")
WAVELENGTHS_NM = (490, 560, 665, 705, 740, 783, 842, 865, 1610, 2190)

# Pure surface spectra (reflectance) in the band order above.
SPECTRA = {
    "asphalt": (0.060, 0.070, 0.080, 0.090, 0.100, 0.110, 0.120, 0.125, 0.150, 0.140),
    "concrete": (0.170, 0.200, 0.220, 0.240, 0.250, 0.260, 0.270, 0.275, 0.300, 0.270),
    "paint": (0.450, 0.500, 0.520, 0.530, 0.540, 0.550, 0.550, 0.550, 0.500, 0.450),
    "roof_red": (0.070, 0.090, 0.200, 0.260, 0.300, 0.320, 0.330, 0.340, 0.400, 0.360),
    "roof_grey": (0.090, 0.100, 0.110, 0.120, 0.130, 0.140, 0.145, 0.150, 0.170, 0.160),
    "roof_white": (0.380, 0.410, 0.430, 0.440, 0.450, 0.455, 0.460, 0.460, 0.420, 0.370),
    "roof_metal": (0.200, 0.210, 0.210, 0.220, 0.225, 0.230, 0.235, 0.240, 0.230, 0.210),
    "tank": (0.350, 0.380, 0.400, 0.405, 0.410, 0.410, 0.420, 0.420, 0.380, 0.330),
    "green_leaf": (0.030, 0.080, 0.040, 0.130, 0.320, 0.400, 0.430, 0.440, 0.220, 0.100),
    "canopy": (0.020, 0.050, 0.025, 0.090, 0.280, 0.360, 0.390, 0.400, 0.170, 0.070),
    "needle": (0.020, 0.040, 0.025, 0.070, 0.180, 0.230, 0.250, 0.255, 0.120, 0.050),
    "autumn_leaf": (0.040, 0.080, 0.090, 0.140, 0.240, 0.290, 0.310, 0.320, 0.210, 0.110),
    "bare_branches": (0.050, 0.065, 0.075, 0.095, 0.120, 0.135, 0.145, 0.150, 0.190, 0.150),
    "dry_grass": (0.070, 0.100, 0.130, 0.170, 0.220, 0.250, 0.270, 0.280, 0.330, 0.250),
    "ripe_cereal": (0.080, 0.120, 0.160, 0.200, 0.240, 0.260, 0.280, 0.290, 0.350, 0.280),
    "stubble": (0.090, 0.120, 0.150, 0.180, 0.210, 0.230, 0.240, 0.250, 0.330, 0.280),
    "soil": (0.080, 0.110, 0.150, 0.180, 0.200, 0.220, 0.230, 0.240, 0.320, 0.280),
    "water": (0.050, 0.060, 0.040, 0.030, 0.020, 0.015, 0.012, 0.010, 0.005, 0.003),
    "turbid_water": (0.060, 0.080, 0.060, 0.050, 0.030, 0.020, 0.018, 0.015, 0.006, 0.004),
    "tartan": (0.060, 0.070, 0.160, 0.200, 0.220, 0.230, 0.240, 0.240, 0.220, 0.180),
    "gravel": (0.120, 0.130, 0.140, 0.150, 0.160, 0.170, 0.175, 0.180, 0.200, 0.180),
    "steel": (0.050, 0.055, 0.060, 0.062, 0.065, 0.068, 0.070, 0.072, 0.080, 0.075),
    "car_paint": (0.150, 0.150, 0.150, 0.150, 0.150, 0.150, 0.150, 0.150, 0.140, 0.120),
}

# Each material as a mixture of pure spectra, per season.
_CONST = {
    M.ASPHALT: {"asphalt": 1}, M.CONCRETE: {"concrete": 1}, M.PAINT: {"paint": 1},
    M.ROOF_RED: {"roof_red": 1}, M.ROOF_GREY: {"roof_grey": 1}, M.ROOF_WHITE: {"roof_white": 1},
    M.ROOF_METAL: {"roof_metal": 1}, M.TANK: {"tank": 1}, M.BARE_SOIL: {"soil": 1},
    M.TRACK: {"tartan": 1}, M.GRAVEL: {"gravel": 1}, M.RAIL: {"steel": 1},
    M.VEHICLE: {"car_paint": 1}, M.CONIFER: {"needle": 0.9, "soil": 0.1},
}
_SEASONAL = {
    M.GRASS: {"spring": {"green_leaf": 0.85, "soil": 0.15},
              "summer": {"green_leaf": 0.7, "dry_grass": 0.3},
              "autumn": {"green_leaf": 0.7, "dry_grass": 0.3},
              "winter": {"green_leaf": 0.3, "dry_grass": 0.6, "soil": 0.1}},
    M.SPORTS_TURF: {"spring": {"green_leaf": 0.9, "soil": 0.1},
                    "summer": {"green_leaf": 0.9, "dry_grass": 0.1},
                    "autumn": {"green_leaf": 0.85, "dry_grass": 0.15},
                    "winter": {"green_leaf": 0.5, "dry_grass": 0.4, "soil": 0.1}},
    M.MEADOW: {"spring": {"green_leaf": 0.7, "dry_grass": 0.2, "soil": 0.1},
               "summer": {"green_leaf": 0.6, "dry_grass": 0.4},
               "autumn": {"green_leaf": 0.4, "dry_grass": 0.6},
               "winter": {"green_leaf": 0.15, "dry_grass": 0.7, "soil": 0.15}},
    M.TREE: {"spring": {"canopy": 0.7, "bare_branches": 0.3},
             "summer": {"canopy": 1.0},
             "autumn": {"autumn_leaf": 0.6, "canopy": 0.15, "bare_branches": 0.25},
             "winter": {"bare_branches": 0.75, "dry_grass": 0.25}},
    M.CROP_CEREAL: {"spring": {"green_leaf": 0.85, "soil": 0.15},
                    "summer": {"ripe_cereal": 0.85, "green_leaf": 0.15},
                    "autumn": {"soil": 0.8, "green_leaf": 0.2},
                    "winter": {"soil": 0.65, "green_leaf": 0.35}},
    M.CROP_MAIZE: {"spring": {"soil": 0.95, "green_leaf": 0.05},
                   "summer": {"green_leaf": 0.95, "soil": 0.05},
                   "autumn": {"stubble": 0.7, "dry_grass": 0.3},
                   "winter": {"soil": 0.8, "stubble": 0.2}},
    M.WATER: {"spring": {"water": 1.0}, "summer": {"turbid_water": 0.7, "water": 0.3},
              "autumn": {"water": 1.0}, "winter": {"water": 1.0}},
}
# S2 overpass (~10:30 local solar time) sun elevation at 52.4 N, for shadow length.
SUN_ELEVATION = {"spring": 42.0, "summer": 57.0, "autumn": 28.0, "winter": 14.0}
SHADOW_DARKENING = 0.6      # fraction of direct light lost in shadow
NOISE_ABS, NOISE_REL = 0.003, 0.01


def material_spectra(season):
    """(n_materials, 10) reflectance table for a season."""
    out = np.zeros((M.COUNT, len(BANDS)), np.float64)
    for m in range(1, M.COUNT):
        mix = _CONST.get(m) or _SEASONAL[m][season]
        for name, w in mix.items():
            out[m] += w * np.asarray(SPECTRA[name])
    return out


def describe():
    """Assumptions for the metadata file."""
    return {
        "bands": list(BANDS), "bands_20m_blurred": list(BANDS_20M),
        "wavelengths_nm": list(WAVELENGTHS_NM),
        "dn": "reflectance x 10000, uint16, 0 = nodata",
        "material_spectra": {s: {M.NAMES[m]: [round(v, 4) for v in row]
                                 for m, row in enumerate(material_spectra(s)) if m}
                             for s in SEASONS},
        "sun_elevation_deg": SUN_ELEVATION,
        "shadow_darkening": SHADOW_DARKENING,
        "noise": {"absolute": NOISE_ABS, "relative": NOISE_REL},
        "mixing": "area fractions of fine materials, GDAL 'average' resampling",
    }


def _blur(img, sigma_px):
    """Separable Gaussian blur along the last two axes, edges reflected."""
    if sigma_px <= 0:
        return img
    r = max(1, int(math.ceil(3 * sigma_px)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_px) ** 2)
    k /= k.sum()
    pad = [(0, 0)] * (img.ndim - 2)
    out = np.pad(img, pad + [(r, r), (0, 0)], mode="reflect")
    out = sum(w * out[..., i:i + img.shape[-2], :] for i, w in enumerate(k))
    out = np.pad(out, pad + [(0, 0), (r, r)], mode="reflect")
    return sum(w * out[..., i:i + img.shape[-1]] for i, w in enumerate(k))


def reflectance(season, fractions, shadow_fraction, valid, seed, tag):
    """(10, h, w) float32 reflectance from material fractions (n_materials, h, w)."""
    spec = material_spectra(season).astype(np.float32)
    refl = np.tensordot(spec.T, fractions, axes=1)          # (10, h, w)
    # Longer shadows with a lower sun; in shadow only the diffuse light remains.
    length = (math.tan(math.radians(SUN_ELEVATION_DEG))
              / math.tan(math.radians(SUN_ELEVATION[season])))
    refl *= 1.0 - SHADOW_DARKENING * np.clip(shadow_fraction * length, 0.0, 1.0)
    rng = stream(seed, "s2", tag)
    # Slight adjacency / MTF blur of the 10 m bands, stronger blur for 20 m bands.
    twenty = [BANDS.index(b) for b in BANDS_20M]
    ten = [i for i in range(len(BANDS)) if i not in twenty]
    # Normalised convolution: pixels outside the footprint do not darken the edge.
    wgt = valid.astype(np.float32)
    refl *= wgt
    for idx, sigma in ((ten, 0.4), (twenty, 0.9)):
        refl[idx] = _blur(refl[idx], sigma) / np.maximum(_blur(wgt[None], sigma), 1e-6)
    # Thin haze varying smoothly over the scene, then sensor noise.
    h, w = refl.shape[1:]
    haze = _blur(rng.standard_normal((1, h, w)).astype(np.float32), 12.0)[0]
    haze = (haze / (haze.std() + 1e-9)) * 0.003
    blue_weight = np.array([1.0, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3, 0.3, 0.1, 0.05], np.float32)
    refl += blue_weight[:, None, None] * (0.004 + haze)[None]
    refl += (NOISE_ABS + NOISE_REL * refl) * rng.standard_normal(refl.shape).astype(np.float32)
    return refl


def to_dn(refl, valid):
    dn = np.clip(np.rint(refl * 10000.0), 1, 65535).astype(np.uint16)
    dn[:, ~valid] = 0
    return dn

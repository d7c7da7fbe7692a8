"""Night-time light radiance (nW/cm²/sr-like), coarse, blurred and slightly mis-registered.

Radiance is emitted per fine pixel from its function class (shops and offices bright, homes
moderate, parks and fields dark) plus street lamps over paved roads.  It is averaged onto a
~10 m work grid, padded with dark countryside, blurred by the sensor's PSF plus a wide skyglow
halo, shifted by a seeded geolocation error and warped onto a lat/lon grid with area
averaging.  Multiplicative noise follows; cells outside the imaged swath are NaN.
"""
import math

import numpy as np

from . import materials as M
from .layout import AGR, COM, GRE, IND, PUB, RES, TRA, WAT
from .randomness import stream

# Radiance emitted by a fine pixel of each class (before lamps).
CLASS_RADIANCE = {RES: 14.0, COM: 60.0, IND: 30.0, TRA: 22.0, PUB: 16.0, GRE: 2.0, WAT: 0.3,
                  AGR: 0.4}
# Street lighting over paved traffic surfaces in built-up classes; extra for major roads.
LAMP_MATERIALS = (M.ASPHALT, M.PAINT, M.VEHICLE)
LAMP_RADIANCE = 25.0
MAJOR_ROAD_EXTRA = 30.0
BUILT = (RES, COM, IND, TRA, PUB)
RURAL_RADIANCE = 0.4
GLOW_SIGMA_M, GLOW_WEIGHT = 300.0, 0.12
NOISE_MULT_SIGMA, NOISE_ADD_SIGMA = 0.10, 0.08
SWATH_BUFFER_M = 150.0   # valid data extends this far beyond the city square
PAD_M = 900.0


def radiance_lut():
    """(9, n_materials) radiance emitted by a fine pixel of (class, material)."""
    lut = np.zeros((9, M.COUNT), np.float32)
    for c, v in CLASS_RADIANCE.items():
        lut[c, :] = v
        if c in BUILT:
            lut[c, list(LAMP_MATERIALS)] += LAMP_RADIANCE
    lut[TRA, list(LAMP_MATERIALS)] += MAJOR_ROAD_EXTRA
    return lut


def _gauss_matrix(n, sigma_px):
    idx = np.arange(n, dtype=np.float64)
    g = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma_px) ** 2)
    return g / g.sum(axis=1, keepdims=True)


def _blur(img, sigma_px):
    return _gauss_matrix(img.shape[0], sigma_px) @ img @ _gauss_matrix(img.shape[1], sigma_px).T


def psf_sigma_m(gsd_deg):
    """Gaussian PSF with a full width at half maximum of one NTL pixel (north-south extent)."""
    return gsd_deg * 111320.0 / 2.3548


def work_image(mean_radiance, cell_m, size_m, seed, gsd_deg):
    """Blurred radiance on the padded work grid; returns (image, pad_cells, shift_m)."""
    rng = stream(seed, "ntl")
    pad = int(math.ceil(PAD_M / cell_m))
    h, w = mean_radiance.shape
    img = RURAL_RADIANCE * np.exp(rng.normal(0.0, 0.3, (h + 2 * pad, w + 2 * pad)))
    img[pad:pad + h, pad:pad + w] = mean_radiance
    sharp = _blur(img, psf_sigma_m(gsd_deg) / cell_m)
    glow = _blur(img, GLOW_SIGMA_M / cell_m)
    out = (1 - GLOW_WEIGHT) * sharp + GLOW_WEIGHT * glow
    # Swath: NaN outside the city square grown by a buffer.
    centres = (np.arange(out.shape[0]) - pad + 0.5) * cell_m
    inside_y = np.abs(centres - size_m / 2) < size_m / 2 + SWATH_BUFFER_M
    centres = (np.arange(out.shape[1]) - pad + 0.5) * cell_m
    inside_x = np.abs(centres - size_m / 2) < size_m / 2 + SWATH_BUFFER_M
    out[~(inside_y[:, None] & inside_x[None, :])] = np.nan
    mag = rng.uniform(20.0, 60.0)
    ang = rng.uniform(0, 2 * math.pi)
    shift = (mag * math.cos(ang), mag * math.sin(ang))   # (east, north) metres
    return out.astype(np.float32), pad, shift


def add_noise(arr, seed):
    rng = stream(seed, "ntl-noise")
    noisy = arr * np.exp(rng.normal(0.0, NOISE_MULT_SIGMA, arr.shape)) \
        + rng.normal(0.0, NOISE_ADD_SIGMA, arr.shape)
    return np.where(np.isnan(arr), np.nan, np.maximum(noisy, 0.0)).astype(np.float32)


def describe(gsd_deg, shift):
    from ..core.classes import CLASS_BY_CODE
    return {
        "unit": "nW/cm2/sr (synthetic)",
        "class_radiance": {CLASS_BY_CODE[c].key: v for c, v in CLASS_RADIANCE.items()},
        "street_lamps": {"materials": [M.NAMES[m] for m in LAMP_MATERIALS],
                         "added_radiance": LAMP_RADIANCE, "major_road_extra": MAJOR_ROAD_EXTRA},
        "rural_background": RURAL_RADIANCE,
        "psf": {"shape": "gaussian", "fwhm_m": round(psf_sigma_m(gsd_deg) * 2.3548, 1),
                "sigma_m": round(psf_sigma_m(gsd_deg), 1)},
        "skyglow": {"sigma_m": GLOW_SIGMA_M, "weight": GLOW_WEIGHT},
        "misregistration_m": {"east": round(shift[0], 2), "north": round(shift[1], 2)},
        "noise": {"multiplicative_lognormal_sigma": NOISE_MULT_SIGMA,
                  "additive_sigma": NOISE_ADD_SIGMA},
        "swath_buffer_m": SWATH_BUFFER_M,
        "resampling": "area average onto EPSG:4326",
    }

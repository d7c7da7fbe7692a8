"""Very-high-resolution RGB + NIR (8-bit) from the fine scene, one chunk of rows at a time.

Colour = material colour (interpolated by the object's tone) x relief (roof sides, crowns,
crop rows) x texture (two scales of value noise and grain, amplitude per material) x shadow,
plus haze and sensor noise.  Texture differs by material on purpose: a CNN should be able to
tell a lawn from a crop field or a tree from a roof by texture, not only by colour.
"""
import numpy as np

from . import materials as M
from .noise import LatticeNoise, grain
from .randomness import stream

BANDS = ("red", "green", "blue", "nir")

# (R, G, B, NIR) digital numbers of each material for tone 0 and tone 255, early summer.
COLOURS = {
    M.ASPHALT: ((60, 62, 66, 52), (108, 108, 112, 90)),
    M.CONCRETE: ((148, 146, 138, 128), (204, 202, 194, 178)),
    M.PAINT: ((222, 222, 218, 198), (250, 250, 246, 226)),
    M.ROOF_RED: ((132, 58, 46, 92), (200, 112, 76, 128)),
    M.ROOF_GREY: ((64, 66, 70, 60), (170, 170, 172, 148)),
    M.ROOF_WHITE: ((196, 198, 196, 178), (242, 242, 238, 218)),
    M.ROOF_METAL: ((112, 128, 144, 108), (178, 188, 196, 162)),
    M.TANK: ((196, 198, 196, 180), (236, 238, 236, 216)),
    M.GRASS: ((74, 108, 46, 166), (132, 152, 82, 206)),
    M.TREE: ((34, 60, 30, 142), (72, 104, 52, 192)),
    M.CONIFER: ((26, 46, 30, 100), (48, 72, 46, 134)),
    M.WATER: ((28, 46, 54, 10), (54, 74, 78, 24)),
    M.BARE_SOIL: ((118, 96, 72, 106), (178, 152, 120, 156)),
    M.CROP_CEREAL: ((166, 146, 86, 146), (218, 198, 134, 186)),
    M.CROP_MAIZE: ((56, 98, 38, 188), (92, 138, 62, 228)),
    M.MEADOW: ((102, 118, 66, 148), (154, 158, 102, 186)),
    M.SPORTS_TURF: ((60, 118, 50, 184), (90, 152, 74, 216)),
    M.TRACK: ((156, 60, 50, 102), (198, 90, 72, 130)),
    M.GRAVEL: ((108, 102, 92, 98), (172, 166, 152, 150)),
    M.RAIL: ((52, 48, 44, 46), (88, 80, 72, 70)),
    M.VEHICLE: ((128, 128, 128, 110), (128, 128, 128, 110)),   # replaced by the palette
}
# Car paints, picked by tone (8 slots of 32).
VEHICLE_PALETTE = np.array([
    (238, 238, 236, 214), (198, 200, 204, 178), (130, 132, 136, 118), (28, 28, 32, 26),
    (34, 44, 82, 40), (172, 30, 28, 70), (44, 84, 142, 62), (222, 200, 64, 172)], np.float32)

# Texture amplitudes: (coarse mottling ~10 m, fine grain ~2 m, per-pixel noise), relative.
TEXTURE = {
    M.ASPHALT: (0.05, 0.04, 0.03), M.CONCRETE: (0.05, 0.03, 0.025), M.PAINT: (0.0, 0.0, 0.02),
    M.ROOF_RED: (0.02, 0.03, 0.035), M.ROOF_GREY: (0.02, 0.02, 0.03),
    M.ROOF_WHITE: (0.015, 0.015, 0.015), M.ROOF_METAL: (0.02, 0.02, 0.02),
    M.TANK: (0.0, 0.0, 0.01), M.GRASS: (0.10, 0.07, 0.05), M.TREE: (0.05, 0.16, 0.09),
    M.CONIFER: (0.04, 0.14, 0.10), M.WATER: (0.05, 0.02, 0.015), M.BARE_SOIL: (0.12, 0.06, 0.04),
    M.CROP_CEREAL: (0.06, 0.04, 0.03), M.CROP_MAIZE: (0.07, 0.06, 0.05),
    M.MEADOW: (0.12, 0.09, 0.07), M.SPORTS_TURF: (0.03, 0.02, 0.02), M.TRACK: (0.02, 0.02, 0.02),
    M.GRAVEL: (0.06, 0.08, 0.07), M.RAIL: (0.02, 0.02, 0.02), M.VEHICLE: (0.0, 0.0, 0.02),
}
# Shadows are lit by the blue sky only: darker overall, relatively bluer, very dark in NIR.
SHADOW_FACTOR = np.array([0.34, 0.38, 0.50, 0.30], np.float32)
HAZE = np.array([7.0, 9.0, 14.0, 3.0], np.float32)
SENSOR_NOISE_DN = 1.6


TONE_LEVELS = 64   # colour steps between a material's two tone colours


def colour_lut():
    """(n_materials * TONE_LEVELS, 4) colour of (material, tone // 4); cars from the palette."""
    lut = np.zeros((M.COUNT, TONE_LEVELS, 4), np.float32)
    t = (np.arange(TONE_LEVELS, dtype=np.float32) + 0.5) / TONE_LEVELS
    for m, (a, b) in COLOURS.items():
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        lut[m] = a + (b - a) * t[:, None]
    lut[M.VEHICLE] = VEHICLE_PALETTE[np.arange(TONE_LEVELS) * len(VEHICLE_PALETTE) // TONE_LEVELS]
    return lut.reshape(-1, 4)


def texture_lut():
    tex = np.zeros((M.COUNT, 3), np.float32)
    for m, t in TEXTURE.items():
        tex[m] = t
    return tex


class VhrRenderer:
    """Renders rows of the VHR map grid; the same rows always give the same pixels."""

    def __init__(self, seed, height, width, gsd_m):
        rng = stream(seed, "vhr-texture")
        self.coarse = LatticeNoise(rng, height, width, max(2.0, 10.0 / gsd_m))
        self.fine = LatticeNoise(rng, height, width, max(1.5, 2.0 / gsd_m))
        self.colours = colour_lut()
        self.tex = texture_lut()
        self.seed = seed

    def render(self, r0, material, tone, relief, shadow):
        """uint8 array (rows, cols, 4) for map rows starting at r0 (nodata wedge not applied)."""
        r1 = r0 + material.shape[0]
        rng = stream(self.seed, "vhr-grain", r0)
        m = material.astype(np.intp)
        col = self.colours[m * TONE_LEVELS + (tone >> 2)]
        # brightness: relief x (1 + coarse mottling + fine grain + pixel noise), by material
        tex = self.tex[m]
        gain = self.coarse.rows(r0, r1)
        gain *= tex[..., 0]
        fine = self.fine.rows(r0, r1)
        fine *= tex[..., 1]
        gain += fine
        pixel = grain(rng, material.shape)
        pixel *= tex[..., 2]
        gain += pixel
        gain += 1.0
        gain *= relief
        gain *= 0.94 / 128.0
        col *= gain[..., None]
        col[shadow] *= SHADOW_FACTOR
        col += HAZE + 0.5
        noise = grain(rng, col.shape)
        noise *= SENSOR_NOISE_DN
        col += noise
        np.clip(col, 1.0, 255.0, out=col)   # 0 is reserved for nodata
        return col.astype(np.uint8)


def nodata_wedge(height, width, fraction):
    """A triangle cut off the north-east corner (legs = fraction of the width/height)."""
    legs = (max(1, int(round(width * fraction))), max(1, int(round(height * fraction))))

    def rows(r0, r1):
        r = np.arange(r0, r1)[:, None]
        c = np.arange(width)[None, :]
        # inside when (width - c) / leg_x + r / leg_y < 1
        return (width - 0.5 - c) / legs[0] + (r + 0.5) / legs[1] < 1.0

    return legs, rows

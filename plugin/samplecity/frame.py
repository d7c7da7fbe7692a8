"""Where the city lies and how its plan coordinates map onto the map.

Two local frames, both in metres:

* ``x, y``: map frame, x east from the city's west edge, y south from its north edge
  (image order), axis-aligned with UTM 33N (EPSG:32633).
* ``u, v``: plan frame in which streets and blocks are axis-aligned rectangles.  A gentle
  smooth shear ``u = x + fu(y)``, ``v = y + fv(x)`` makes the straight plan look like a grown
  city with slightly curved streets, while every drawing operation stays a cheap array slice.
  Because ``u - x`` depends on the row only and ``v - y`` on the column only, nearest-neighbour
  lookup from the map grid into the plan canvas never skips or doubles a pixel of a line.
"""
import math
from dataclasses import dataclass

import numpy as np

CITY_EPSG = 32633
# South-west corner of the city: on the Havel west of Potsdam, Brandenburg (~52.40 N, 13.06 E).
CITY_WEST = 370000.0
CITY_SOUTH = 5806000.0


@dataclass(frozen=True)
class ShearField:
    """Smooth offsets (m) of the plan frame: fu(y) shifts rows, fv(x) shifts columns."""
    amp_u: tuple
    wave_u: tuple
    phase_u: tuple
    amp_v: tuple
    wave_v: tuple
    phase_v: tuple

    @staticmethod
    def random(rng, size_m):
        # Amplitudes grow with the city but stay small against block sizes (~100 m).
        a = min(30.0, 0.012 * size_m)

        def parts():
            amps = (a * rng.uniform(0.5, 1.0), a * rng.uniform(0.15, 0.35))
            waves = (size_m * rng.uniform(0.9, 1.6), size_m * rng.uniform(0.35, 0.6))
            phases = tuple(rng.uniform(0, 2 * math.pi, 2))
            return amps, waves, phases

        au, wu, pu = parts()
        av, wv, pv = parts()
        return ShearField(au, wu, pu, av, wv, pv)

    @property
    def max_offset(self):
        return max(sum(self.amp_u), sum(self.amp_v))

    def fu(self, y):
        y = np.asarray(y, dtype=np.float64)
        return sum(a * np.sin(2 * np.pi * y / w + p)
                   for a, w, p in zip(self.amp_u, self.wave_u, self.phase_u))

    def fv(self, x):
        x = np.asarray(x, dtype=np.float64)
        return sum(a * np.sin(2 * np.pi * x / w + p)
                   for a, w, p in zip(self.amp_v, self.wave_v, self.phase_v))


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: CRS (EPSG code), GDAL geotransform and size."""
    epsg: int
    geotransform: tuple
    width: int
    height: int

    @property
    def res(self):
        return (self.geotransform[1], -self.geotransform[5])

    @property
    def bounds(self):
        gt = self.geotransform
        return (gt[0], gt[3] + gt[5] * self.height, gt[0] + gt[1] * self.width, gt[3])

    def as_dict(self):
        return {"epsg": self.epsg, "geotransform": list(self.geotransform),
                "width": self.width, "height": self.height}


def city_grid(size_m, gsd_m, offset_m=0.0, epsg=CITY_EPSG):
    """Grid covering the city square in UTM 33N; offset_m shifts the origin to mis-align grids."""
    n = int(math.ceil(size_m / gsd_m - 1e-9))
    west = CITY_WEST - offset_m
    north = CITY_SOUTH + size_m + offset_m
    if offset_m:
        n = int(math.ceil((size_m + offset_m) / gsd_m - 1e-9))
    return Grid(epsg, (west, gsd_m, 0.0, north, 0.0, -gsd_m), n, n)


def pixel_centres(n, gsd_m, start_m=0.0):
    """Centres (m) of n pixels of size gsd_m starting at start_m."""
    return start_m + (np.arange(n, dtype=np.float64) + 0.5) * gsd_m

"""Raster grids in the plan frame (u, v) and the lookup from map pixels into them."""
import math
from dataclasses import dataclass

import numpy as np

from .frame import pixel_centres


@dataclass(frozen=True)
class PlanGrid:
    """A square raster over the plan frame: pixel i covers [origin + i*gsd, origin + (i+1)*gsd)."""
    origin: float
    gsd: float
    n: int

    @staticmethod
    def covering(size_m, margin_m, gsd_m):
        n = int(math.ceil((size_m + 2 * margin_m) / gsd_m))
        return PlanGrid(-margin_m, gsd_m, n)

    def index_range(self, lo, hi):
        """Pixels whose centres lie in [lo, hi), clipped to the grid."""
        a = int(math.ceil((lo - self.origin) / self.gsd - 0.5))
        b = int(math.ceil((hi - self.origin) / self.gsd - 0.5))
        return max(0, min(self.n, a)), max(0, min(self.n, b))

    def window(self, rect):
        """(row slice, col slice, u centres as a row vector, v centres as a column vector)."""
        u0, v0, u1, v1 = rect
        c0, c1 = self.index_range(u0, u1)
        r0, r1 = self.index_range(v0, v1)
        uu = self.origin + (np.arange(c0, c1) + 0.5) * self.gsd
        vv = self.origin + (np.arange(r0, r1) + 0.5) * self.gsd
        return slice(r0, r1), slice(c0, c1), uu[None, :], vv[:, None]

    def centres(self):
        c = self.origin + (np.arange(self.n) + 0.5) * self.gsd
        return c[None, :], c[:, None]


def map_to_plan_index(grid, shear, size_m, gsd_m, row0=0, rows=None):
    """Flat indices into a PlanGrid array for the map pixels of a size_m square at gsd_m.

    Covers map rows [row0, row0 + rows) so large rasters can be processed in chunks.
    """
    n = int(math.ceil(size_m / gsd_m - 1e-9))
    rows = n - row0 if rows is None else min(rows, n - row0)
    x = pixel_centres(n, gsd_m)
    y = pixel_centres(rows, gsd_m, row0 * gsd_m)
    u = x[None, :] + shear.fu(y)[:, None]
    v = y[:, None] + shear.fv(x)[None, :]
    iu = np.clip(np.floor((u - grid.origin) / grid.gsd), 0, grid.n - 1).astype(np.int64)
    iv = np.clip(np.floor((v - grid.origin) / grid.gsd), 0, grid.n - 1).astype(np.int64)
    return iv * grid.n + iu

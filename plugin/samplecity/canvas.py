"""The fine scene raster in the plan frame and the drawing primitives the painters use.

Per pixel it holds what every sensor renderer needs:

* ``material``: surface material code (``materials``);
* ``height``: object height in metres (roofs, trees, tanks) for casting shadows;
* ``tone``: per-object variation 0..255 (one roof lighter than the next, one field riper...);
* ``relief``: brightness factor x128 for shape and pattern (pitched-roof sides, tree crowns,
  crop rows, mowing stripes);
* ``blocked``: network corridors (river, railway, major roads) that buildings must avoid.
"""
import numpy as np

from . import materials as M
from .plan_grid import PlanGrid


class SceneCanvas:
    def __init__(self, size_m, margin_m, gsd_m):
        self.grid = PlanGrid.covering(size_m, margin_m, gsd_m)
        n = self.grid.n
        self.gsd = gsd_m
        self.material = np.zeros((n, n), dtype=np.uint8)
        self.height = np.zeros((n, n), dtype=np.uint8)
        self.tone = np.full((n, n), 128, dtype=np.uint8)
        self.relief = np.full((n, n), 128, dtype=np.uint8)
        self.blocked = np.zeros((n, n), dtype=bool)

    # ---- geometry helpers -------------------------------------------------------------------
    def window(self, rect):
        return self.grid.window(rect)

    def is_free(self, rect, margin_m=0.0):
        """True when no network corridor touches rect (grown by margin_m)."""
        u0, v0, u1, v1 = rect
        rs, cs, _, _ = self.window((u0 - margin_m, v0 - margin_m, u1 + margin_m, v1 + margin_m))
        return not self.blocked[rs, cs].any()

    # ---- painting ---------------------------------------------------------------------------
    def paint(self, rs, cs, mask, material, height=None, tone=None, relief=None):
        """Paint material (and optional attributes) where mask (None = everywhere) in a window."""
        def put(arr, value):
            view = arr[rs, cs]
            if mask is None:
                view[...] = value
            elif np.ndim(value) == 0:
                view[mask] = value
            else:
                view[mask] = np.broadcast_to(value, view.shape)[mask]
        put(self.material, material)
        if height is not None:
            put(self.height, np.clip(height, 0, 255).astype(np.uint8) if np.ndim(height) else
                min(255, max(0, int(round(height)))))
        if tone is not None:
            put(self.tone, np.clip(tone, 0, 255).astype(np.uint8) if np.ndim(tone) else
                min(255, max(0, int(tone))))
        if relief is not None:
            put(self.relief, np.clip(relief * 128.0, 0, 255).astype(np.uint8) if np.ndim(relief)
                else min(255, max(0, int(round(relief * 128)))))

    def rect(self, rect, material, height=0, tone=None, relief=1.0):
        rs, cs, _, _ = self.window(rect)
        self.paint(rs, cs, None, material, height, tone, relief)

    def disc(self, cu, cv, radius, material, height=0, tone=None, relief=1.0):
        rs, cs, uu, vv = self.window((cu - radius, cv - radius, cu + radius, cv + radius))
        mask = (uu - cu) ** 2 + (vv - cv) ** 2 < radius * radius
        self.paint(rs, cs, mask, material, height, tone, relief)

    def pitched_roof(self, rect, material, height, tone, ridge_along_u=None):
        """A gable roof: the side facing the sun (south-east) is lit, the other darker."""
        u0, v0, u1, v1 = rect
        rs, cs, uu, vv = self.window(rect)
        if ridge_along_u is None:
            ridge_along_u = (u1 - u0) >= (v1 - v0)
        if ridge_along_u:   # ridge runs east-west: south half faces the sun
            side = vv > 0.5 * (v0 + v1)
            shape = (rs.stop - rs.start, 1)
        else:               # ridge runs north-south: east half faces the sun
            side = uu > 0.5 * (u0 + u1)
            shape = (1, cs.stop - cs.start)
        relief = np.where(side, 1.12, 0.84).reshape(shape)
        # The ridge line itself catches light.
        ridge = np.abs((vv - 0.5 * (v0 + v1)) if ridge_along_u else (uu - 0.5 * (u0 + u1)))
        relief = np.where(ridge.reshape(shape) < 0.5 * self.gsd, 1.2, relief)
        self.paint(rs, cs, None, material, height, tone, relief)

    def flat_roof(self, rect, material, height, tone, parapet=True):
        """A flat roof with a slightly darker parapet rim and a few roof fixtures."""
        self.rect(rect, material, height, tone, 1.0)
        if parapet:
            u0, v0, u1, v1 = rect
            g = self.gsd
            for r in ((u0, v0, u1, v0 + g), (u0, v1 - g, u1, v1),
                      (u0, v0, u0 + g, v1), (u1 - g, v0, u1, v1)):
                rs, cs, _, _ = self.window(r)
                self.relief[rs, cs] = 108

    def tree(self, cu, cv, radius, height, tone, conifer=False):
        """A crown: dome-shaded disc, lit towards the sun (south-east), height for its shadow."""
        self.dome(cu, cv, radius, height, tone, M.CONIFER if conifer else M.TREE)

    def dome(self, cu, cv, radius, height, tone, material):
        """A rounded object (crown, heap): shaded disc that never covers anything taller."""
        rs, cs, uu, vv = self.window((cu - radius, cv - radius, cu + radius, cv + radius))
        du = (uu - cu) * (1.0 / radius)
        dv = (vv - cv) * (1.0 / radius)
        d2 = du * du + dv * dv
        dome = np.sqrt(np.maximum(1.0 - d2, 0.0))
        h = height * (0.6 + 0.4 * dome)
        cur = self.height[rs, cs]
        mask = (d2 < 1.0) & (h >= cur)   # a lower crown never covers a higher roof or crown
        if not mask.any():
            return
        # lit towards the sun (south-east), darker rim: reads as a 3-D crown
        lit = 92.0 + 45.0 * dome + 20.0 * (du + dv)
        self.material[rs, cs][mask] = material
        cur[mask] = h[mask]
        self.tone[rs, cs][mask] = tone
        self.relief[rs, cs][mask] = lit[mask]

    def stadium_shape(self, cu, cv, half_len, radius, along_u):
        """Mask function of a running-track oval (two semicircles joined by straights)."""
        def dist(uu, vv):
            a, b = (uu - cu, vv - cv) if along_u else (vv - cv, uu - cu)
            a = np.maximum(np.abs(a) - half_len, 0.0)
            return np.sqrt(a * a + b * b)
        return dist

    def vehicle(self, cu, cv, along_u, tone):
        """A car (4.5 m x 1.8 m), tone picks its paint colour."""
        hl, hw = (2.25, 0.9) if along_u else (0.9, 2.25)
        self.rect((cu - hl, cv - hw, cu + hl, cv + hw), M.VEHICLE, 2, tone, 1.0)

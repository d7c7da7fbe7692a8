"""Cast shadows of buildings and trees for the VHR acquisition's sun position."""
import math

import numpy as np

# A mid-morning overpass in early summer at 52 N: sun in the south-east, ~50 degrees high.
SUN_AZIMUTH_DEG = 135.0
SUN_ELEVATION_DEG = 50.0


def cast_shadows(height, gsd_m, elevation_deg=SUN_ELEVATION_DEG):
    """Boolean mask of pixels in shadow, for a sun in the south-east (shadows fall north-west).

    A pixel is shadowed when some object k diagonal steps to its south-east is taller than
    the pixel by more than the sun ray drops over those k steps.  The max over k of
    ``h(p + k) - k*c`` is computed by doubling (log2(K) array passes instead of K).
    """
    h = height.astype(np.float32)
    top = float(h.max()) if h.size else 0.0
    drop = gsd_m * math.sqrt(2.0) * math.tan(math.radians(elevation_deg))
    s = h.copy()
    m = 1
    while top > 0 and (m - 1) * drop < top and m < min(h.shape):
        np.maximum(s[:-m, :-m], s[m:, m:] - m * drop, out=s[:-m, :-m])
        m *= 2
    return s > h + 0.5

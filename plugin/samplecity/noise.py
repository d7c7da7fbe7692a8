"""Smooth random fields, evaluated anywhere (so chunked rendering gives identical pixels)."""
import numpy as np


class WaveNoise:
    """Sum of random plane waves: a cheap smooth field with a chosen feature size (m)."""

    def __init__(self, rng, scale_m, n_waves=6):
        ang = rng.uniform(0, 2 * np.pi, n_waves)
        k = 2 * np.pi / (scale_m * rng.uniform(0.7, 1.4, n_waves))
        self.ku = k * np.cos(ang)
        self.kv = k * np.sin(ang)
        self.phase = rng.uniform(0, 2 * np.pi, n_waves)
        self.norm = np.sqrt(2.0 / n_waves)

    def __call__(self, uu, vv):
        out = 0.0
        for ku, kv, p in zip(self.ku, self.kv, self.phase):
            out = out + np.cos(ku * uu + kv * vv + p)
        return out * self.norm   # roughly unit variance


class LatticeNoise:
    """Value noise: random values on a square lattice (spacing in pixels), smoothly interpolated.

    The lattice is drawn once for a whole raster; ``rows(r0, r1)`` evaluates any row range, so
    a raster written in chunks is identical to one rendered at once.
    """

    def __init__(self, rng, height, width, spacing_px):
        self.s = float(spacing_px)
        self.lat = rng.standard_normal(
            (int(height / spacing_px) + 3, int(width / spacing_px) + 3)).astype(np.float32)
        self.width = width

    @staticmethod
    def _weights(pos, s):
        t = pos / s
        i = np.floor(t).astype(np.int64)
        f = (t - i).astype(np.float32)
        f = f * f * (3 - 2 * f)   # smoothstep: no visible lattice creases
        return i, f

    def rows(self, r0, r1):
        ri, rf = self._weights(np.arange(r0, r1) + 0.5, self.s)
        ci, cf = self._weights(np.arange(self.width) + 0.5, self.s)
        a = self.lat[ri] * (1 - rf)[:, None] + self.lat[ri + 1] * rf[:, None]
        return a[:, ci] * (1 - cf)[None, :] + a[:, ci + 1] * cf[None, :]


def grain(rng, shape):
    """Unit-variance zero-mean noise, float32: sum of two uniform bytes (triangular).

    Several times faster than Gaussian draws, and indistinguishable as sensor grain.
    """
    n = int(np.prod(shape))
    b = np.frombuffer(rng.bytes(2 * n), dtype=np.uint8)
    out = b[:n].astype(np.float32)
    out += b[n:]
    out -= 255.0
    out *= np.float32(1.0 / 104.5)   # sd of the sum of two U{0..255} is ~104.5
    return out.reshape(shape)

"""Exact area-average resampling for inputs in the output CRS, without GDAL's warper.

The VHR input is usually finer than the model's pixel and in the same projected CRS, with the
same north-up axes. Averaging it onto the model's grid is then a separable weighted sum: each
output pixel is the mean of the source pixels it covers, each weighted by the length of overlap
along x times along y. GDAL's warped VRT computes the same thing (``-r average``, fractional
overlaps) through a generic per-pixel transformer, about twice as slowly on 2 cores, and that
time competes with onnxruntime for the CPU (README, Benchmarks).

Semantics are those of the warped VRT with ``dstAlpha`` (the tests compare the two):

- a pixel is missing where every band is nodata (or NaN), and pixels outside the raster are
  missing; ``valid``: some of the output pixel's area has data (the VRT's alpha is then 255,
  else 0);
- each band's mean leaves out that band's own nodata pixels (0 where it has none). Here alone
  the two differ: GDAL's warper averages a band's nodata value (-9999, say) into that band
  wherever another band has data. With nodata in all bands at once, the usual case, they agree.

At the raster's border the sums here are exact; GDAL's warper weighs the pixels that straddle
the border slightly differently, and may give a value to an output pixel just outside the raster,
so the outermost output pixels can differ (the tests bound where).

Used only where it is exact: same CRS, no rotation, source pixels no larger than the output
pixel, and a source whose mask is its nodata value (or none); anything else goes through GDAL.
"""
import math
from collections import OrderedDict

import numpy as np
from osgeo import gdal

from .rasters import srs_from_wkt

gdal.UseExceptions()

_MASK_OK = (gdal.GMF_ALL_VALID, gdal.GMF_NODATA)


def area_average_geometry(info, ds, bands, grid, resampling):
    """(scale_x, scale_y, offset_x, offset_y): source pixels per output pixel and the output
    grid's origin in source pixel coordinates, when the fast path is exact here; else None."""
    if resampling != "average":
        return None
    gt = info.geotransform
    if gt[2] or gt[4] or gt[1] <= 0 or gt[5] >= 0:
        return None
    if not srs_from_wkt(info.crs_wkt).IsSame(srs_from_wkt(grid.crs_wkt)):
        return None
    sx, sy = grid.cell / gt[1], grid.cell / -gt[5]
    if sx < 1.0 - 1e-9 or sy < 1.0 - 1e-9:     # upsampling: leave it to GDAL
        return None
    if any(ds.GetRasterBand(b).GetMaskFlags() not in _MASK_OK for b in bands):
        return None                             # alpha bands, per-dataset masks
    return sx, sy, (grid.left - gt[0]) / gt[1], (gt[3] - grid.top) / -gt[5]


def _taps(start, scale, n_out, n_src):
    """Per output pixel k covering source coordinates [start + k*scale, start + (k+1)*scale):
    the first source index, and the overlap weights of the ``J`` pixels from there (0 outside
    the raster). Returns (first [n_out] int, weights [n_out, J] float64)."""
    lo = start + np.arange(n_out, dtype=np.float64) * scale
    hi = lo + scale
    first = np.floor(lo + 1e-9).astype(np.int64)
    taps = int(np.ceil(scale)) + 1
    idx = first[:, None] + np.arange(taps)[None, :]
    w = np.clip(np.minimum(hi[:, None], idx + 1) - np.maximum(lo[:, None], idx), 0.0, None)
    w[(idx < 0) | (idx >= n_src)] = 0.0
    return first, w


def _weighted_sum(a, axis, first, w, lo, chunk=64):
    """sum_j w[k, j] * a[first[k] + j - lo] along ``axis`` (-1 or -2; ``a`` starts at source
    index ``lo``; indices outside ``a`` have weight 0). A band of the weight matrix at a time,
    as small dense products: BLAS does them far faster than numpy gathers."""
    n = a.shape[axis]
    n_out, taps = w.shape
    out = np.empty(a.shape[:axis] + (n_out,) + a.shape[axis:][1:], np.float32)
    for k0 in range(0, n_out, chunk):
        k1 = min(k0 + chunk, n_out)
        idx = first[k0:k1, None] + np.arange(taps)[None, :] - lo
        ww = np.where((idx >= 0) & (idx < n), w[k0:k1], 0.0)
        s0 = int(max(0, min(n - 1, idx[ww > 0].min()))) if (ww > 0).any() else 0
        s1 = int(min(n, idx[ww > 0].max() + 1)) if (ww > 0).any() else s0 + 1
        m = np.zeros((s1 - s0, k1 - k0), np.float32)
        keep = ww > 0
        kk = np.broadcast_to(np.arange(k1 - k0)[:, None], idx.shape)
        m[idx[keep] - s0, kk[keep]] = ww[keep]     # (source, output) pairs are distinct
        if axis == -1:
            out[..., k0:k1] = a[..., s0:s1] @ m
        else:
            out[..., k0:k1, :] = m.T @ a[..., s0:s1, :]
    return out


class AreaAverageReader:
    """Area-averaged reads of ``bands`` of ``ds`` on the output grid (``geometry`` from
    :func:`area_average_geometry`), window by window.

    The output grid is computed in blocks of ``block`` pixels kept in a small LRU cache (as a
    warped VRT's blocks sit in GDAL's block cache): the engine's tiles overlap their neighbours,
    and an overlap is then averaged once, not once per tile. ``cache_mb`` bounds its memory.
    """

    BLOCK = 256
    MAX_SOURCE_SIDE = 2048     # source pixels along a block's side: very fine imagery (drone
    #                            photos on a 2 m grid) gets smaller blocks, not huge reads

    def __init__(self, ds, bands, nodata, size, geometry, cache_mb=48):
        self.ds, self.bands, self.nodata = ds, list(bands), nodata
        self.width, self.height = size
        self.sx, self.sy, self.ox, self.oy = geometry
        self._cache = OrderedDict()
        self.block = int(max(8, min(self.BLOCK,
                                    self.MAX_SOURCE_SIDE // math.ceil(max(self.sx, self.sy)))))
        block_bytes = (len(self.bands) * 4 + 1) * self.block * self.block
        self._cache_blocks = max(4, int(cache_mb * 2 ** 20 // block_bytes))

    def read(self, col, row, w, h):
        """(values float32 [B, h, w], valid bool [h, w]) for output pixels col..col+w,
        row..row+h (0 where nothing has data)."""
        b = self.block
        # room for one read of this size and a column of blocks more: the next tile's overlap
        # with this one is then found in the cache however large the tiles are, and the cache
        # never holds much more than one tile's pixels
        rows_b, cols_b = (h + 2 * b - 1) // b, (w + 2 * b - 1) // b
        need = rows_b * cols_b + rows_b
        self._cache_blocks = max(self._cache_blocks, need)
        out = np.empty((len(self.bands), h, w), np.float32)
        valid = np.empty((h, w), bool)
        for br in range(row // b, (row + h - 1) // b + 1):
            for bc in range(col // b, (col + w - 1) // b + 1):
                x, v = self._block(br, bc)
                r0, r1 = max(row, br * b), min(row + h, (br + 1) * b)
                c0, c1 = max(col, bc * b), min(col + w, (bc + 1) * b)
                dst = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
                src = (slice(r0 - br * b, r1 - br * b), slice(c0 - bc * b, c1 - bc * b))
                out[(slice(None),) + dst] = x[(slice(None),) + src]
                valid[dst] = v[src]
        return out, valid

    def _block(self, br, bc):
        key = (br, bc)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        b = self.block
        block = self._compute(bc * b, br * b, b, b)
        self._cache[key] = block
        while len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)
        return block

    def _compute(self, col, row, w, h):
        nb = len(self.bands)
        cfirst, cw = _taps(self.ox + col * self.sx, self.sx, w, self.width)
        rfirst, rw = _taps(self.oy + row * self.sy, self.sy, h, self.height)
        used_c = cw > 0
        used_r = rw > 0
        if not used_c.any() or not used_r.any():
            return np.zeros((nb, h, w), np.float32), np.zeros((h, w), bool)
        jc = np.nonzero(used_c)
        jr = np.nonzero(used_r)
        x0 = int((cfirst[jc[0]] + jc[1]).min())
        x1 = int((cfirst[jc[0]] + jc[1]).max()) + 1
        y0 = int((rfirst[jr[0]] + jr[1]).min())
        y1 = int((rfirst[jr[0]] + jr[1]).max()) + 1
        raw = self.ds.ReadAsArray(x0, y0, x1 - x0, y1 - y0, band_list=self.bands)
        if raw.ndim == 2:
            raw = raw[None]
        x = raw.astype(np.float32)
        ok = None
        if self.nodata is not None and not np.isnan(self.nodata):
            ok = raw != self.nodata
        if np.issubdtype(raw.dtype, np.floating):
            # NaN/inf are missing whatever the nodata value (never spread over a block)
            finite = np.isfinite(x)
            ok = finite if ok is None else ok & finite

        def resample(a):
            t = _weighted_sum(a, -1, cfirst, cw, x0)
            return _weighted_sum(t, -2, rfirst, rw, y0)

        if ok is not None and ok.all():
            ok = None
        if ok is not None:
            x[~ok] = 0.0
            anyb = ok.any(axis=0)
        if ok is None:
            # no missing pixel: the weights alone give the covered area
            den = (rw.sum(axis=1)[:, None] * cw.sum(axis=1)[None, :]).astype(np.float32)[None]
            cover = den[0]
        elif (anyb == ok.all(axis=0)).all():     # the usual case: nodata in all bands at once
            den = resample(anyb[None].astype(np.float32))
            cover = den[0]
        else:
            den = resample(ok.astype(np.float32))
            cover = resample(anyb[None].astype(np.float32))[0]
        total = resample(x)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(den > 0, total / np.where(den > 0, den, 1.0), 0.0).astype(np.float32)
        valid = cover > 0
        out[:, ~valid] = 0.0
        return out, valid

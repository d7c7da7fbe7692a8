"""Block-wise access to a classified raster: class table, per-class pixel counts, pixel values.

Everything reads the raster in windows aligned to its blocks (tiles or strips), a few million
pixels at a time, so memory stays small and a 100-million-pixel raster is read in about a second.
"""
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from osgeo import gdal, osr

from ..core.classes import CLASS_BY_CODE, NODATA_CODE

gdal.UseExceptions()

WINDOW_PIXELS = 1 << 23  # ~8 million pixels per read


class ValidationError(Exception):
    """A problem the user can act on (unreadable raster, impossible design...)."""


@dataclass
class RasterInfo:
    path: str
    width: int
    height: int
    geotransform: Tuple[float, ...]
    crs_wkt: str
    nodata: Optional[float]           # the value never sampled / counted
    block: Tuple[int, int]            # (block x size, block y size)
    dtype: str
    pixel_area: float                 # in squared CRS units
    area_unit_m2: Optional[float]     # one squared CRS unit in m2 (None: geographic / unknown)
    labels: Dict[int, str] = field(default_factory=dict)   # code -> category name
    colors: Dict[int, str] = field(default_factory=dict)   # code -> "#rrggbb"

    @property
    def pixel_area_m2(self):
        """Area of one pixel in m2, or None when the CRS is not projected in linear units."""
        return None if self.area_unit_m2 is None else self.pixel_area * self.area_unit_m2

    def centre(self, row, col):
        """Map coordinates of pixel centres (arrays or scalars)."""
        gt = self.geotransform
        c = np.asarray(col, np.float64) + 0.5
        r = np.asarray(row, np.float64) + 0.5
        return gt[0] + c * gt[1] + r * gt[2], gt[3] + c * gt[4] + r * gt[5]

    def pixel_of(self, x, y):
        """(row, col) integer arrays of the pixels containing map coordinates x, y."""
        inv = gdal.InvGeoTransform(self.geotransform)
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        col = np.floor(inv[0] + x * inv[1] + y * inv[2]).astype(np.int64)
        row = np.floor(inv[3] + x * inv[4] + y * inv[5]).astype(np.int64)
        return row, col

    def label(self, code):
        code = int(code)
        if self.labels.get(code):
            return self.labels[code]
        if code in CLASS_BY_CODE:
            return CLASS_BY_CODE[code].label
        return f"Class {code}"

    def color(self, code):
        code = int(code)
        if code in self.colors:
            return self.colors[code]
        if code in CLASS_BY_CODE:
            return CLASS_BY_CODE[code].color
        return "#999999"


def _open(path):
    if not path:
        raise ValidationError("No raster was given.")
    try:
        ds = gdal.Open(str(path))
    except RuntimeError as exc:
        if not os.path.exists(str(path)) and ":" not in str(path) and \
                not str(path).startswith("/vsi"):
            raise ValidationError(f"Raster not found: {path!r}.") from exc
        raise ValidationError(f"Cannot open {path!r} as a raster: {exc}") from exc
    if ds is None:
        raise ValidationError(f"Cannot open {path!r} as a raster.")
    return ds


def raster_info(path, band=1, nodata="auto") -> RasterInfo:
    """Describe a classified raster.

    ``nodata``: ``"auto"`` = the band's nodata value, or 0 when the band has none (0 is never a
    class in this plugin); ``None`` = count every value; a number = that value.
    """
    ds = _open(path)
    try:
        if band < 1 or band > ds.RasterCount:
            raise ValidationError(f"{path!r} has no band {band}.")
        b = ds.GetRasterBand(band)
        if nodata == "auto":
            nd = b.GetNoDataValue()
            nodata = NODATA_CODE if nd is None else nd
        gt = ds.GetGeoTransform()
        wkt = ds.GetProjection() or ""
        unit = None
        if wkt:
            srs = osr.SpatialReference(wkt=wkt)
            if srs.IsProjected():
                unit = srs.GetLinearUnits() ** 2
        labels, colors = {}, {}
        # GDAL 3.6 GTiff loads the .aux.xml sidecar (where category names live) lazily, and
        # GetCategoryNames alone does not trigger it: any other PAM read does
        b.GetMetadata()
        names = b.GetCategoryNames() or []
        for code, name in enumerate(names):
            if name and code != nodata:
                labels[code] = name
        table = b.GetRasterColorTable()
        if table is not None:
            for code in range(min(table.GetCount(), 256)):
                r, g, bl, a = table.GetColorEntry(code)
                if (r, g, bl, a) != (0, 0, 0, 0) or code in labels:
                    colors[code] = f"#{r:02x}{g:02x}{bl:02x}"
        return RasterInfo(str(path), ds.RasterXSize, ds.RasterYSize, tuple(gt), wkt, nodata,
                          tuple(b.GetBlockSize()), gdal.GetDataTypeName(b.DataType),
                          abs(gt[1] * gt[5] - gt[2] * gt[4]), unit, labels, colors)
    finally:
        ds = None


def windows(width, height, block, target=WINDOW_PIXELS) -> List[Tuple[int, int, int, int]]:
    """Block-aligned windows (xoff, yoff, xsize, ysize) covering the raster in row-major order."""
    bx, by = max(1, int(block[0])), max(1, int(block[1]))
    if width * by <= target or bx >= width:
        cw = width
    else:
        cw = max(bx, (target // by) // bx * bx)
    rh = max(by, (target // max(cw, 1)) // by * by)
    out = []
    for r in range(0, height, rh):
        for c in range(0, width, cw):
            out.append((c, r, min(cw, width - c), min(rh, height - r)))
    return out


def _as_codes(arr):
    """Integer class codes of a block (float rasters are rounded; NaN becomes -1)."""
    if arr.dtype.kind == "f":
        arr = np.where(np.isfinite(arr), arr, -1)
        return np.rint(arr).astype(np.int64)
    return arr


def _window_counts(arr, nodata):
    """{code: count} of one window, nodata excluded."""
    small = arr.dtype == np.uint8 or arr.dtype == np.uint16
    if not small and arr.dtype.kind in "iu" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        small = lo >= 0 and hi < (1 << 20)  # bincount beats sorting (np.unique) by far
    if small:
        counts = np.bincount(arr.ravel(), minlength=1)
        codes = np.flatnonzero(counts)
        vals = counts[codes]
    else:
        if arr.dtype.kind == "f":
            arr = arr[np.isfinite(arr)]
        codes, vals = np.unique(_as_codes(arr), return_counts=True)
    out = {}
    for c, v in zip(codes.tolist(), vals.tolist()):
        if nodata is not None and c == nodata:
            continue
        out[int(c)] = int(v)
    return out


@dataclass
class ClassCounts:
    """Per-class pixel counts of a raster, and per window (for the second sampling pass)."""
    info: RasterInfo
    windows: List[Tuple[int, int, int, int]]
    per_window: List[Dict[int, int]]
    totals: Dict[int, int]

    @property
    def total(self):
        return int(sum(self.totals.values()))


def count_classes(path, band=1, nodata="auto", progress=None, is_cancelled=None) -> ClassCounts:
    """One block-wise pass: pixel count of each class (nodata excluded)."""
    info = raster_info(path, band, nodata)
    wins = windows(info.width, info.height, info.block)
    per_window, totals = [], {}
    ds = _open(path)
    try:
        b = ds.GetRasterBand(band)
        for i, (x, y, w, h) in enumerate(wins):
            if is_cancelled and is_cancelled():
                raise ValidationError("Cancelled.")
            counts = _window_counts(b.ReadAsArray(x, y, w, h), info.nodata)
            per_window.append(counts)
            for c, v in counts.items():
                totals[c] = totals.get(c, 0) + v
            if progress:
                progress((i + 1) / len(wins))
    finally:
        ds = None
    return ClassCounts(info, wins, per_window, dict(sorted(totals.items())))


def values_at(path, rows, cols, band=1):
    """Raster values at integer pixel positions (arrays); positions outside the raster give None.

    Returns a float64 array with NaN outside; reads only the windows holding points.
    """
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    out = np.full(rows.shape, np.nan)
    ds = _open(path)
    try:
        b = ds.GetRasterBand(band)
        w, h = ds.RasterXSize, ds.RasterYSize
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        if not inside.any():
            return out
        bx, by = b.GetBlockSize()
        # group by block row of windows of full block height; read only rows that hold points
        wins = windows(w, h, (bx, by))
        idx = np.flatnonzero(inside)
        for (x0, y0, ww, hh) in wins:
            sel = idx[(rows[idx] >= y0) & (rows[idx] < y0 + hh) &
                      (cols[idx] >= x0) & (cols[idx] < x0 + ww)]
            if sel.size == 0:
                continue
            if sel.size < 64:  # a few points: read them one by one through GDAL's block cache
                for i in sel:
                    out[i] = float(b.ReadAsArray(int(cols[i]), int(rows[i]), 1, 1)[0, 0])
            else:
                arr = b.ReadAsArray(x0, y0, ww, hh)
                out[sel] = arr[rows[sel] - y0, cols[sel] - x0]
    finally:
        ds = None
    return out


def transform_coords(x, y, src_wkt, dst_wkt):
    """Transform coordinate arrays between two CRSs (traditional x/y = lon/lat order)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if not src_wkt or not dst_wkt:
        return x, y
    src = srs_from(src_wkt)
    dst = srs_from(dst_wkt)
    if src.IsSame(dst):
        return x, y
    ct = osr.CoordinateTransformation(src, dst)
    if x.size == 0:
        return x, y
    pts = ct.TransformPoints(np.column_stack([x.ravel(), y.ravel()]).tolist())
    arr = np.asarray(pts, np.float64)
    return arr[:, 0].reshape(x.shape), arr[:, 1].reshape(y.shape)


def srs_from(crs):
    """osr.SpatialReference from WKT, 'EPSG:n', an int EPSG code or an osr object."""
    if isinstance(crs, osr.SpatialReference):
        srs = crs.Clone()
    else:
        srs = osr.SpatialReference()
        if isinstance(crs, int):
            srs.ImportFromEPSG(crs)
        else:
            srs.SetFromUserInput(str(crs))
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def is_finite_number(v):
    return v is not None and isinstance(v, (int, float, np.integer, np.floating)) and \
        math.isfinite(float(v))


def reference_classes(path=None, band=1, present=None):
    """(code, label) choices offered to the person labelling reference classes.

    Every named category of the raster (the engine names all of the model's classes, mapped or
    not, since a reference class may be one the map never shows); without category names the
    plugin's eight classes when the codes fit them, else the codes present as "Class n".
    """
    info = raster_info(path, band) if path else None
    if info is not None and info.labels:
        return [(c, info.labels[c]) for c in sorted(info.labels)]
    codes = set(present or ())
    if not codes or codes <= set(CLASS_BY_CODE):
        return [(c, CLASS_BY_CODE[c].label) for c in sorted(CLASS_BY_CODE)]
    return [(c, f"Class {c}") for c in sorted(codes)]

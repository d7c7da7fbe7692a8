"""The output grid: CRS, origin, cell size and size of the map the engine writes.

Each modality is later resampled onto the same extent at its own cell size (``Grid.with_cell``),
so all modality grids share one origin and whole tiles map to whole input pixels.
"""
import math
from dataclasses import dataclass, replace

from osgeo import ogr, osr

from .errors import InputError
from .rasters import crs_label, inspect_raster, srs_from_wkt

# Inputs are searched for the output CRS in this order (the finest data usually defines the map).
CRS_PREFERENCE = ("vhr", "s2_summer", "s2_spring", "s2_autumn", "s2_winter", "ntl")
MAX_CELLS = 2_000_000_000  # a sanity bound that catches a wrong CRS/extent before hours of work


@dataclass(frozen=True)
class Grid:
    crs_wkt: str
    left: float
    top: float
    cell: float
    width: int
    height: int

    @property
    def geotransform(self):
        return (self.left, self.cell, 0.0, self.top, 0.0, -self.cell)

    @property
    def bounds(self):
        """(xmin, ymin, xmax, ymax)"""
        return (self.left, self.top - self.height * self.cell,
                self.left + self.width * self.cell, self.top)

    def with_cell(self, cell):
        """Same extent at another cell size (the extent must hold whole cells of it)."""
        w = self.width * self.cell / cell
        h = self.height * self.cell / cell
        if abs(w - round(w)) > 1e-6 or abs(h - round(h)) > 1e-6:
            raise ValueError(f"extent does not hold whole {cell} m cells")
        return replace(self, cell=cell, width=int(round(w)), height=int(round(h)))

    def window(self, col, row, ncols, nrows):
        """The sub-grid of a window in cells."""
        return replace(self, left=self.left + col * self.cell, top=self.top - row * self.cell,
                       width=ncols, height=nrows)


def _transform(src_wkt, dst_wkt):
    return osr.CoordinateTransformation(srs_from_wkt(src_wkt), srs_from_wkt(dst_wkt))


def transform_bounds(bounds, src_wkt, dst_wkt, densify=21):
    """Bounding box of ``bounds`` reprojected, sampling points along the edges."""
    if srs_from_wkt(src_wkt).IsSame(srs_from_wkt(dst_wkt)):
        return tuple(bounds)
    xmin, ymin, xmax, ymax = bounds
    ct = _transform(src_wkt, dst_wkt)
    xs, ys = [], []
    for i in range(densify + 1):
        t = i / densify
        for x, y in ((xmin + t * (xmax - xmin), ymin), (xmin + t * (xmax - xmin), ymax),
                     (xmin, ymin + t * (ymax - ymin)), (xmax, ymin + t * (ymax - ymin))):
            px, py, _ = ct.TransformPoint(x, y)
            if math.isfinite(px) and math.isfinite(py):
                xs.append(px)
                ys.append(py)
    if not xs:
        raise InputError("Cannot transform the extent between the coordinate systems.")
    return (min(xs), min(ys), max(xs), max(ys))


def raster_bounds(info):
    gt = info.geotransform
    x0, x1 = gt[0], gt[0] + gt[1] * info.width
    y0, y1 = gt[3], gt[3] + gt[5] * info.height
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def metric_crs_for(infos):
    """The output CRS: the first projected (metre) input CRS, else the UTM zone of the data."""
    by_modality = dict(infos)
    for modality in CRS_PREFERENCE:
        info = by_modality.get(modality)
        if info is None:
            continue
        srs = srs_from_wkt(info.crs_wkt)
        if srs.IsProjected() and abs(srs.GetLinearUnits() - 1.0) < 1e-9:
            return info.crs_wkt
    # all geographic (e.g. VIIRS in EPSG:4326): use the UTM zone of the centre of the first input
    info = next(iter(by_modality.values()))
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    lon0, lat0, lon1, lat1 = transform_bounds(raster_bounds(info), info.crs_wkt, wgs84.ExportToWkt())
    lon, lat = (lon0 + lon1) / 2, (lat0 + lat1) / 2
    zone = int((lon + 180) // 6) + 1
    utm = osr.SpatialReference()
    utm.ImportFromEPSG((32600 if lat >= 0 else 32700) + zone)
    return utm.ExportToWkt()


def _intersect(a, b):
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def _empty(b):
    return b[0] >= b[2] or b[1] >= b[3]


def _fmt(b):
    return f"x {b[0]:.1f}..{b[2]:.1f}, y {b[1]:.1f}..{b[3]:.1f}"


def aoi_bounds(aoi, dst_wkt):
    """Bounds of an AOI polygon (wkt, crs_wkt) in ``dst_wkt``."""
    wkt, crs = aoi
    geom = ogr.CreateGeometryFromWkt(wkt)
    if geom is None or geom.IsEmpty():
        raise InputError("The area-of-interest polygon is empty or not valid WKT.")
    xmin, xmax, ymin, ymax = geom.GetEnvelope()
    return transform_bounds((xmin, ymin, xmax, ymax), crs, dst_wkt)


def plan_grid(card, inputs, extent=None, aoi=None, crs_wkt=None):
    """Output grid for ``inputs`` (modality -> path) under ``card``.

    The default area is the common footprint (intersection) of all inputs. ``extent`` =
    (xmin, ymin, xmax, ymax, crs_wkt) or ``aoi`` = (polygon_wkt, crs_wkt) replace it; cells that
    an input does not cover are masked later. Origin and size are snapped outwards so that every
    modality grid holds whole pixels.
    """
    if not inputs:
        raise InputError("No input raster was given: choose at least one of "
                         f"{', '.join(i.label for i in card.inputs)}.")
    infos = [(m, inspect_raster(p, card.input_for(m).label)) for m, p in inputs.items()]
    target = crs_wkt or metric_crs_for(infos)
    tsrs = srs_from_wkt(target)
    if not tsrs.IsProjected():
        raise InputError(f"The output CRS {crs_label(target)} is not projected; the engine works "
                         "in metres. Choose a projected CRS.")
    footprints = {m: transform_bounds(raster_bounds(i), i.crs_wkt, target) for m, i in infos}

    common = None
    for b in footprints.values():
        common = b if common is None else _intersect(common, b)
    if _empty(common):
        listing = "; ".join(f"{card.input_for(m).label}: {_fmt(b)}" for m, b in footprints.items())
        raise InputError(f"The inputs do not overlap (in {crs_label(target)}: {listing}). Check "
                         "that they show the same place and carry the right CRS.")
    area = common
    if extent is not None or aoi is not None:
        area = (transform_bounds(extent[:4], extent[4], target) if extent is not None
                else aoi_bounds(aoi, target))
        union = None
        for b in footprints.values():
            union = b if union is None else (min(union[0], b[0]), min(union[1], b[1]),
                                             max(union[2], b[2]), max(union[3], b[3]))
        area = _intersect(area, union)
        if _empty(area):
            raise InputError("The chosen area to process does not overlap any input raster.")

    cell = card.output.gsd_m
    coarsest = max([cell] + [s.gsd_m for s in card.inputs])
    # snap outwards on the pixel grid of the first input in the output CRS, so that input is
    # read without a sub-pixel shift (and a single input keeps its own origin)
    ax, ay = 0.0, 0.0
    for _, info in infos:
        if srs_from_wkt(info.crs_wkt).IsSame(tsrs):
            ax, ay = info.geotransform[0], info.geotransform[3]
            break
    left = ax + math.floor((area[0] - ax) / coarsest + 1e-9) * coarsest
    top = ay + math.ceil((area[3] - ay) / coarsest - 1e-9) * coarsest
    multiple = card.tile_multiple()
    width = math.ceil((area[2] - left) / cell / multiple) * multiple
    height = math.ceil((top - area[1]) / cell / multiple) * multiple
    if width * height > MAX_CELLS:
        raise InputError(f"The area to process is {width} x {height} cells of {cell} m; this looks "
                         "like a CRS or extent mistake. Choose a smaller area.")
    return Grid(target, left, top, cell, width, height)

"""Opening and checking user rasters (GDAL), without reading their pixels."""
import hashlib
import os
from dataclasses import dataclass

from osgeo import gdal, osr

from .errors import InputError

gdal.UseExceptions()
osr.UseExceptions()

HASH_FULL_LIMIT = 512 * 1024 * 1024  # hash whole files up to this size, sample larger ones
# GDAL type names -> the numpy names model cards use
DTYPE_NAMES = {"byte": "uint8", "int8": "int8", "uint16": "uint16", "int16": "int16",
               "uint32": "uint32", "int32": "int32", "uint64": "uint64", "int64": "int64",
               "float32": "float32", "float64": "float64"}


@dataclass(frozen=True)
class RasterInfo:
    path: str
    width: int
    height: int
    band_count: int
    dtype: str
    crs_wkt: str
    geotransform: tuple
    nodata: object  # float, nan, or None
    band_names: tuple  # description or colour interpretation per band, lower case

    @property
    def pixel_size(self):
        return abs(self.geotransform[1]), abs(self.geotransform[5])


def srs_from_wkt(wkt):
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def crs_label(wkt):
    srs = srs_from_wkt(wkt)
    code = srs.GetAuthorityCode(None)
    return f"{srs.GetAuthorityName(None)}:{code}" if code else srs.GetName()


def inspect_raster(path, label="input") -> RasterInfo:
    """Open a raster and describe it; a clear InputError when it cannot be used at all."""
    if not path or not os.path.exists(path):
        raise InputError(f"{label}: file not found: {path!r}.")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise InputError(f"{label}: {path!r} is empty (0 bytes).")
    try:
        ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    except RuntimeError as exc:
        kind = ("it is not a raster format GDAL knows (is it really a GeoTIFF?)"
                if "not recognized" in str(exc) else "it may be truncated or damaged")
        raise InputError(f"{label}: GDAL cannot open {path!r} as a raster: {kind} ({exc}).") \
            from exc
    if ds is None:
        raise InputError(f"{label}: GDAL cannot open {path!r} as a raster.")
    try:
        wkt = ds.GetProjection()
        gt = ds.GetGeoTransform(can_return_null=True)
        if not wkt or gt is None:
            raise InputError(f"{label}: {path!r} has no coordinate reference system or "
                             "georeferencing; assign a CRS (e.g. Raster > Projections > Assign "
                             "Projection) and try again.")
        if gt[2] != 0 or gt[4] != 0:
            raise InputError(f"{label}: {path!r} is rotated; warp it to a north-up grid first.")
        band = ds.GetRasterBand(1)
        names = []
        for i in range(1, ds.RasterCount + 1):
            b = ds.GetRasterBand(i)
            desc = (b.GetDescription() or "").strip().lower()
            interp = gdal.GetColorInterpretationName(b.GetColorInterpretation()).lower()
            names.append(desc or interp)
        return RasterInfo(str(path), ds.RasterXSize, ds.RasterYSize, ds.RasterCount,
                          _dtype_name(band.DataType), wkt, tuple(gt),
                          band.GetNoDataValue(), tuple(names))
    finally:
        ds = None


def _dtype_name(gdal_type):
    name = gdal.GetDataTypeName(gdal_type).lower()
    return DTYPE_NAMES.get(name, name)  # complex types keep GDAL's name (and are rejected later)


def file_hash(path):
    """sha256 of the file; files over 512 MiB hash their size plus first and last 64 MiB."""
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= HASH_FULL_LIMIT:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return {"sha256": h.hexdigest(), "scope": "full file", "bytes": size}
        h.update(str(size).encode())
        for start in (0, size - (64 << 20)):
            f.seek(start)
            h.update(f.read(64 << 20))
    return {"sha256": h.hexdigest(), "scope": "size + first and last 64 MiB", "bytes": size}

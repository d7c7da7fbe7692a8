"""GeoTIFF output: tiled, DEFLATE, georeferenced, written atomically.

Every file is written under a temporary name in the target folder and moved into place with
``os.replace`` only when complete, so an interrupted run never leaves a half-written raster
under a final name.  No global GDAL state (exceptions mode, config options) is changed: the
plugin shares GDAL with QGIS.
"""
import os

import numpy as np
from osgeo import gdal, osr

_GDAL_TYPES = {
    np.dtype(np.uint8): gdal.GDT_Byte,
    np.dtype(np.uint16): gdal.GDT_UInt16,
    np.dtype(np.float32): gdal.GDT_Float32,
}


def srs_from_epsg(epsg):
    srs = osr.SpatialReference()
    if srs.ImportFromEPSG(int(epsg)) != 0:
        raise RuntimeError(f"GDAL does not know EPSG:{epsg} (is the PROJ database installed?)")
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def creation_options(dtype, bands, rgb=False):
    predictor = "3" if np.dtype(dtype).kind == "f" else "2"
    opts = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE",
            f"PREDICTOR={predictor}", "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS"]
    opts.append("INTERLEAVE=PIXEL" if bands > 1 else "INTERLEAVE=BAND")
    if rgb:
        opts.append("PHOTOMETRIC=RGB")
    return opts


def _temp_path(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.part-{os.getpid()}.tif")


class GeoTiffWriter:
    """A GeoTIFF being written (possibly in row chunks); ``close()`` moves it into place."""

    def __init__(self, path, grid, bands, dtype, nodata=None, descriptions=None, rgb=False,
                 metadata=None):
        self.path = os.path.abspath(path)
        self.tmp = _temp_path(self.path)
        self.dtype = np.dtype(dtype)
        self.bands = bands
        drv = gdal.GetDriverByName("GTiff")
        self.ds = drv.Create(self.tmp, grid.width, grid.height, bands, _GDAL_TYPES[self.dtype],
                             creation_options(dtype, bands, rgb))
        if self.ds is None:
            raise OSError(f"Cannot create {self.tmp}: {gdal.GetLastErrorMsg()}")
        self.ds.SetGeoTransform(list(grid.geotransform))
        self.ds.SetProjection(srs_from_epsg(grid.epsg).ExportToWkt())
        for i in range(bands):
            band = self.ds.GetRasterBand(i + 1)
            if nodata is not None:
                band.SetNoDataValue(float(nodata))
            if descriptions:
                band.SetDescription(descriptions[i])
        if metadata:
            self.ds.SetMetadata({k: str(v) for k, v in metadata.items()})

    def band(self, i):
        return self.ds.GetRasterBand(i + 1)

    def write(self, array, row0=0):
        """array: (bands, rows, cols), or (rows, cols) for a single band, from row0 down."""
        array = np.asarray(array, dtype=self.dtype)
        if array.ndim == 2:
            array = array[None]
        for i in range(self.bands):
            if self.band(i).WriteArray(array[i], 0, row0) != 0:
                raise OSError(f"Writing {self.tmp} failed: {gdal.GetLastErrorMsg()}")

    def write_pixels(self, array, row0):
        """array: (rows, cols, bands), written in one call (cheap for pixel-interleaved files)."""
        array = np.ascontiguousarray(array, dtype=self.dtype)
        rows, cols, nb = array.shape
        size = array.dtype.itemsize
        err = self.ds.WriteRaster(0, row0, cols, rows, array.tobytes(), cols, rows,
                                  _GDAL_TYPES[self.dtype], list(range(1, nb + 1)),
                                  buf_pixel_space=nb * size, buf_line_space=nb * size * cols,
                                  buf_band_space=size)
        if err != 0:
            raise OSError(f"Writing {self.tmp} failed: {gdal.GetLastErrorMsg()}")

    def close(self):
        self.ds.FlushCache()
        self.ds = None
        # Side-car metadata (category names) follows the file to its final name.
        aux = self.tmp + ".aux.xml"
        if os.path.exists(aux):
            os.replace(aux, self.path + ".aux.xml")
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self):
        self.ds = None
        for p in (self.tmp, self.tmp + ".aux.xml"):
            if os.path.exists(p):
                os.remove(p)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def hex_to_rgb(color):
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def write_class_raster(path, grid, classes, function_classes, nodata_code=0):
    """Ground truth: class codes with a colour table and category names."""
    with GeoTiffWriter(path, grid, 1, np.uint8, nodata=nodata_code,
                       descriptions=["function_class"]) as w:
        band = w.band(0)
        ct = gdal.ColorTable()
        ct.SetColorEntry(nodata_code, (0, 0, 0, 0))
        names = ["nodata"]
        for c in sorted(function_classes, key=lambda c: c.code):
            ct.SetColorEntry(c.code, hex_to_rgb(c.color) + (255,))
            while len(names) < c.code:
                names.append("")
            names.append(c.key)
        band.SetRasterColorTable(ct)
        band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        band.SetCategoryNames(names)
        w.write(classes)
    return os.path.abspath(path)


def write_array(path, grid, array, nodata, descriptions=None, metadata=None):
    array = np.asarray(array)
    bands = 1 if array.ndim == 2 else array.shape[0]
    with GeoTiffWriter(path, grid, bands, array.dtype, nodata=nodata, descriptions=descriptions,
                       metadata=metadata) as w:
        w.write(array)
    return os.path.abspath(path)

"""Streaming writer for the classified GeoTIFF, with atomic publication.

The file is written under a temporary name next to the target, gets its colour table, category
names and overviews, and only then is renamed onto the target. Until ``commit`` nothing exists
under the target name; ``discard`` removes every trace.
"""
import os
import tempfile

import numpy as np
from osgeo import gdal

from .errors import OutputError

gdal.UseExceptions()

NODATA = 0
CREATION_OPTIONS = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE",
                    "BIGTIFF=IF_SAFER"]


def check_output_path(path, overwrite):
    """Fail early, before any work, when the output cannot be written."""
    if not path:
        raise OutputError("No output file was given.")
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise OutputError(f"The output folder {folder!r} does not exist.")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"The output folder {folder!r} is not writable.")
    if os.path.exists(path) and not overwrite:
        raise OutputError(f"{path!r} already exists; choose another name or allow overwriting.")
    if not path.lower().endswith((".tif", ".tiff")):
        raise OutputError(f"{path!r}: the output must be a GeoTIFF (.tif).")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _hex_to_rgba(color):
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5)) + (255,)


class AtomicGeoTiff:
    """A tiled, compressed GeoTIFF written under a temporary name beside its target."""

    def __init__(self, path, grid, bands, data_type, description=""):
        self.path = os.path.abspath(path)
        fd, self.tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                             suffix=".partial.tif",
                                             dir=os.path.dirname(self.path))
        os.close(fd)
        os.chmod(self.tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are shared files
        try:
            drv = gdal.GetDriverByName("GTiff")
            self.ds = drv.Create(self.tmp_path, grid.width, grid.height, bands, data_type,
                                 CREATION_OPTIONS)
            self.ds.SetGeoTransform(grid.geotransform)
            self.ds.SetProjection(grid.crs_wkt)
            if description:
                self.ds.SetMetadataItem("TIFFTAG_IMAGEDESCRIPTION", description)
            self._setup()
        except Exception as exc:
            self.discard()
            raise OutputError(f"Cannot create {path!r}: {exc}") from exc

    def _setup(self):
        """Band metadata of the subclass."""

    overview_resampling = "NEAREST"

    def commit(self, build_overviews=True):
        """Finish the file and move it onto the target name in one rename."""
        if build_overviews and min(self.ds.RasterXSize, self.ds.RasterYSize) > 512:
            self.ds.BuildOverviews(self.overview_resampling, [2, 4, 8, 16])
        self.ds.FlushCache()
        self.ds = None
        # GTiff keeps category names in the PAM sidecar: publish it first, the raster last
        aux = self.tmp_path + ".aux.xml"
        if os.path.exists(aux):
            os.replace(aux, self.path + ".aux.xml")
        elif os.path.exists(self.path + ".aux.xml"):
            os.remove(self.path + ".aux.xml")  # a stale sidecar of an overwritten output
        try:
            os.replace(self.tmp_path, self.path)
        except OSError as exc:  # e.g. Windows: the old output is open in QGIS
            self.discard()
            raise OutputError(f"Cannot replace {self.path!r} ({exc.strerror}); remove its layer "
                              "from the project or choose another output name.") from exc
        return self.path

    def discard(self):
        self.ds = None
        for p in (self.tmp_path, self.tmp_path + ".ovr", self.tmp_path + ".aux.xml"):
            if os.path.exists(p):
                os.remove(p)


class ClassRasterWriter(AtomicGeoTiff):
    """Band 1: class codes (uint8, 0 = nodata); optional band 2: confidence in percent."""
    # NEAREST keeps class codes intact (GDAL 3.6 warns on MODE for paletted bands)
    overview_resampling = "NEAREST"

    def __init__(self, path, grid, classes, confidence=False, description="",
                 band_name="urban function class"):
        self.classes = classes
        self.band_name = band_name
        self.codes = np.array([c.code for c in classes], np.uint8)
        self.counts = np.zeros(len(classes), np.int64)
        super().__init__(path, grid, 2 if confidence else 1, gdal.GDT_Byte, description)

    def _setup(self):
        band = self.ds.GetRasterBand(1)
        band.SetNoDataValue(NODATA)
        band.SetDescription(self.band_name)
        table = gdal.ColorTable()
        table.SetColorEntry(NODATA, (0, 0, 0, 0))
        names = [""] * (int(self.codes.max()) + 1)
        names[NODATA] = "no data"
        for c in self.classes:
            table.SetColorEntry(c.code, _hex_to_rgba(c.color))
            names[c.code] = c.label
        band.SetRasterColorTable(table)
        band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        band.SetCategoryNames(names)
        if self.ds.RasterCount > 1:
            conf = self.ds.GetRasterBand(2)
            conf.SetNoDataValue(NODATA)
            conf.SetDescription("confidence (max class probability, %)")

    def write_rows(self, row, probs, valid):
        """Write rows starting at ``row`` from probabilities [C, n, W] and a validity mask."""
        idx = np.argmax(probs, axis=0)
        cls = np.where(valid, self.codes[idx], NODATA).astype(np.uint8)
        self.counts += np.bincount(idx[valid].ravel(), minlength=len(self.codes))
        self.ds.GetRasterBand(1).WriteArray(cls, 0, row)
        if self.ds.RasterCount > 1:
            conf = np.clip(np.round(probs.max(axis=0) * 100), 1, 100).astype(np.uint8)
            self.ds.GetRasterBand(2).WriteArray(np.where(valid, conf, NODATA), 0, row)


class ValueRasterWriter(AtomicGeoTiff):
    """float32 bands (probabilities, derived fractions) with NaN where no input has data."""
    overview_resampling = "AVERAGE"

    def __init__(self, path, grid, band_names, description=""):
        self.band_names = list(band_names)
        super().__init__(path, grid, len(self.band_names), gdal.GDT_Float32, description)

    def _setup(self):
        for i, name in enumerate(self.band_names, start=1):
            band = self.ds.GetRasterBand(i)
            band.SetNoDataValue(float("nan"))
            band.SetDescription(name)

    def write_rows(self, row, values, valid):
        for i in range(values.shape[0]):
            self.ds.GetRasterBand(i + 1).WriteArray(
                np.where(valid, values[i], np.nan).astype(np.float32), 0, row)


def write_json_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

"""Streaming writer for the classified GeoTIFF, with atomic publication.

The file is written under a temporary name next to the target, gets its colour table, category
names and overviews, and only then is renamed onto the target. Until ``commit`` nothing exists
under the target name; ``discard`` removes every trace.
"""
import os
import sys

import numpy as np
from osgeo import gdal

from .errors import OutputError
from .publication import partial_file, publish

gdal.UseExceptions()

NODATA = 0
READ_BACK_CELLS = 1 << 22   # cells per strip when a finished file is read back
CREATION_OPTIONS = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE",
                    "BIGTIFF=IF_SAFER"]


def _quiet_close(obj, attr):
    """Set ``obj.attr`` (a GDAL dataset) to None and return the errors its closing raised: GDAL
    reports a failed final write (a full disk) only from the dataset's destructor, where Python
    would print and ignore it."""
    errors = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: errors.append(u.exc_value)
    try:
        setattr(obj, attr, None)
    finally:
        sys.unraisablehook = hook
    return errors


def _hex_to_rgba(color):
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5)) + (255,)


class AtomicGeoTiff:
    """A tiled, compressed GeoTIFF written under a hidden partial name beside its target.

    ``finish`` closes it and reads it back (a full disk must never publish a damaged map),
    ``publish`` moves it onto the target, ``discard`` removes every trace and never raises.
    """

    def __init__(self, path, grid, bands, data_type, description=""):
        self.path = os.path.abspath(path)
        self.ds = None
        self.tmp_path = partial_file(self.path, ".tif")
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
        self.size = (grid.width, grid.height, bands)
        self.geotransform = tuple(grid.geotransform)

    def _setup(self):
        """Band metadata of the subclass."""

    def _check_strip(self, index, data):
        """Subclass check of rows of band ``index`` read back (called strip by strip)."""

    def _check_band(self, index, band):
        """Subclass check of band ``index`` once all its strips were read back."""

    overview_resampling = "NEAREST"

    # GDAL errors are re-raised outside their ``except`` block, unchained: their tracebacks
    # hold the GDAL dataset (in the bindings' frames), which would keep the partial file open
    # until the exception is gone, and a deleted file open keeps its disk space
    def write(self, band, array, row):
        try:
            self.ds.GetRasterBand(band).WriteArray(array, 0, row)
            return
        except RuntimeError as exc:
            error = self._failed(exc)
        self.discard()
        raise error

    def _failed(self, exc):
        return OutputError(f"Cannot write {self.path!r}: {str(exc).rstrip('.')}. Nothing was "
                           "written under that name; free some space or choose another folder.")

    def finish(self, build_overviews=True):
        """Overviews, flush, close; then read the file back whole. Raises OutputError."""
        error = None
        try:
            if build_overviews and min(self.ds.RasterXSize, self.ds.RasterYSize) > 512:
                self.ds.BuildOverviews(self.overview_resampling, [2, 4, 8, 16])
            self.ds.FlushCache()
        except RuntimeError as exc:
            error = self._failed(exc)
        errors = _quiet_close(self, "ds")
        if error or errors:
            self.discard()
            raise error or self._failed(errors[0])
        try:
            self._read_back()
            return
        except RuntimeError as exc:
            error = self._failed(f"reading it back failed ({exc})")
        self.discard()
        raise error

    def _read_back(self):
        ds = gdal.OpenEx(self.tmp_path, gdal.OF_RASTER | gdal.OF_READONLY)
        if (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) != self.size:
            raise RuntimeError("the file read back has the wrong size.")
        # (this also loads the PAM sidecar: GTiff reads category names only after it)
        if not np.allclose(ds.GetGeoTransform(), self.geotransform, rtol=1e-12, atol=0):
            raise RuntimeError("the file read back has the wrong georeferencing.")
        width, height = ds.RasterXSize, ds.RasterYSize
        step = max(1, READ_BACK_CELLS // max(width, 1))   # strips: memory stays flat
        for i in range(1, ds.RasterCount + 1):
            band = ds.GetRasterBand(i)
            for y in range(0, height, step):
                self._check_strip(i, band.ReadAsArray(0, y, width, min(step, height - y)))
            self._check_band(i, band)

    def publish(self, overwrite=True):
        """Move the finished file onto its target (its PAM sidecar first: GTiff keeps category
        names there). Returns the path."""
        aux = self.tmp_path + ".aux.xml"
        try:
            publish(self.tmp_path, self.path, overwrite)
        except OSError as exc:  # e.g. Windows: the old output is open in QGIS
            self.discard()
            raise OutputError(f"Cannot replace {self.path!r} ({exc.strerror}); remove its layer "
                              "from the project or choose another output name.") from exc
        except OutputError:
            self.discard()
            raise
        if os.path.exists(aux):
            os.replace(aux, self.path + ".aux.xml")
        elif os.path.exists(self.path + ".aux.xml"):
            os.remove(self.path + ".aux.xml")  # a stale sidecar of an overwritten output
        return self.path

    def discard(self):
        if self.ds is not None:
            _quiet_close(self, "ds")
        for p in (self.tmp_path, self.tmp_path + ".ovr", self.tmp_path + ".aux.xml"):
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
            except OSError:
                pass  # nothing more can be done; a later run removes it (pid in the name)


def encode_classes(codes, probs, valid, confidence):
    """What a class raster stores for some rows: class codes (uint8, 0 = nodata), the class
    counts, and the confidence in percent when asked; compact enough to send from a worker."""
    idx = np.argmax(probs, axis=0)
    enc = {"classes": np.where(valid, codes[idx], NODATA).astype(np.uint8),
           "counts": np.bincount(idx[valid].ravel(), minlength=len(codes)).astype(np.int64)}
    if confidence:
        conf = np.clip(np.round(probs.max(axis=0) * 100), 1, 100).astype(np.uint8)
        enc["confidence"] = np.where(valid, conf, NODATA).astype(np.uint8)
    return enc


def encode_values(values, valid):
    """float32 bands [B, n, W] with NaN where no input has data."""
    return np.where(valid[None], values, np.nan).astype(np.float32)


MAX_PROBABILITY = "confidence (max class probability, %)"   # band 2 of a class map


class ClassRasterWriter(AtomicGeoTiff):
    """Band 1: class codes (uint8, 0 = nodata); optional band 2: confidence in percent."""
    # NEAREST keeps class codes intact (GDAL 3.6 warns on MODE for paletted bands)
    overview_resampling = "NEAREST"

    def __init__(self, path, grid, classes, confidence=False, description="",
                 band_name="urban function class",
                 confidence_name=MAX_PROBABILITY):
        self.classes = classes
        self.band_name = band_name
        self.confidence_name = confidence_name
        self.codes = np.array([c.code for c in classes], np.uint8)
        self.counts = np.zeros(len(classes), np.int64)
        self._found = np.zeros(256, np.int64)   # counts read back
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
            conf.SetDescription(self.confidence_name)

    def write_rows(self, row, probs, valid):
        """Write rows starting at ``row`` from probabilities [C, n, W] and a validity mask."""
        self.write_encoded(row, encode_classes(self.codes, probs, valid,
                                               self.ds.RasterCount > 1))

    def write_encoded(self, row, enc):
        """Write rows from :func:`encode_classes` (made here or on a cluster worker)."""
        self.counts += enc["counts"]
        self.write(1, enc["classes"], row)
        if self.ds.RasterCount > 1:
            self.write(2, enc["confidence"], row)

    def _check_strip(self, index, data):
        if index == 1:
            self._found += np.bincount(data.ravel(), minlength=256)

    def _check_band(self, index, band):
        if index != 1:
            return
        found = self._found[self.codes]
        if not np.array_equal(found, self.counts):
            raise RuntimeError("the class counts read back differ from those written.")
        names = band.GetCategoryNames() or []
        if any(len(names) <= c or names[c] != cl.label for c, cl in zip(self.codes, self.classes)):
            raise RuntimeError("the class names were not saved (its .aux.xml could not be "
                               "written).")


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
        self.write_encoded(row, encode_values(values, valid))

    def write_encoded(self, row, values):
        """Write rows from :func:`encode_values` (made here or on a cluster worker)."""
        for i in range(values.shape[0]):
            self.write(i + 1, values[i], row)

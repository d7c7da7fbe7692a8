"""Co-registration on the fly: each input is a warped VRT onto its modality grid, read per window.

Nothing is loaded whole: GDAL warps only the window asked for. Each VRT carries an alpha band
(``dstAlpha``) so source nodata and areas outside the source become "invalid" uniformly.
"""
import os

import numpy as np
from osgeo import gdal, ogr, osr

from .area_average import AreaAverageReader, area_average_geometry
from .errors import InputError
from .model_card import modality_group
from .rasters import inspect_raster, srs_from_wkt

gdal.UseExceptions()

# band names a raster may carry (description or colour interpretation) for each card band name
BAND_ALIASES = {
    "red": ("red", "r"),
    "green": ("green", "g"),
    "blue": ("blue", "b"),
    "nir": ("nir", "near infrared", "nearinfrared"),
}
# a float raster with no declared nodata often marks it with NaN (e.g. clipped VIIRS composites)
FLOAT_TYPES = ("float32", "float64")
# how much coarser than the card's resolution an input may be before it is refused: a 10 m
# Sentinel-2 stack in the VHR slot (1 m) is not VHR imagery (night light is coarse by nature)
MAX_COARSER = {"vhr": 4.0, "s2": 3.0}


def _band_key(name):
    """'B02', 'b2', 'Band 2 (B2)'... -> 'b2'; colour names as they are."""
    name = name.strip().lower()
    for token in name.replace("(", " ").replace(")", " ").replace("-", " ").split():
        if len(token) >= 2 and token[0] == "b" and token[1:].rstrip("a").isdigit():
            digits = token[1:].rstrip("a")
            return "b" + str(int(digits)) + ("a" if token.endswith("a") else "")
    return name


def _is_band_id(name):
    key = _band_key(name)
    return key in {a for v in BAND_ALIASES.values() for a in v} or (
        key[:1] == "b" and key[1:].rstrip("a").isdigit())


def _matches(have, want):
    return _band_key(have) in (_band_key(want),) + BAND_ALIASES.get(want, ())


def select_bands(info, spec):
    """1-based band indices of ``info`` for the card's ``spec.bands``, or a clear InputError.

    Band names (descriptions, else colour interpretations) are used when the raster has them:
    bands in another order are reordered (and said), bands that contradict the card are refused.
    Unnamed bands are taken in file order when their count matches.
    """
    want = [b.lower() for b in spec.bands]
    # only names that identify a band (colours, Sentinel-2 band ids) can contradict the card;
    # others ("avg_rad", "layer_1") say nothing about order
    named = [n for n in info.band_names if _is_band_id(n)]
    picked = []
    for name in want:
        idx = [i + 1 for i, have in enumerate(info.band_names) if _matches(have, name)]
        picked.append(idx[0] if len(idx) == 1 else None)
    if None not in picked and len(set(picked)) == len(picked):
        return picked
    listing = ", ".join(info.band_names) or "unnamed"
    if info.band_count == len(want) and not named:
        return list(range(1, len(want) + 1))
    if info.band_count == len(want):
        raise InputError(
            f"{spec.label}: the bands of {info.path!r} are named {listing}, which does not match "
            f"what the model needs ({', '.join(spec.bands)}). Is this the right layer for "
            f"{spec.label}? Provide a raster with exactly these bands, or clear the band "
            "descriptions if the names are wrong.")
    raise InputError(
        f"{spec.label}: {info.path!r} has {info.band_count} bands ({listing}); the model needs "
        f"{len(want)} ({', '.join(spec.bands)}) and they cannot all be identified by name. "
        "Provide a raster with exactly these bands in this order.")


def aligned_offset(info, grid, tol=1e-6):
    """Pixel offset (dx, dy) of ``grid`` inside the raster when both share CRS, pixel size and
    phase (the raster can then be read directly, with no resampling); else None."""
    gt = info.geotransform
    if gt[2] or gt[4]:
        return None
    if abs(gt[1] - grid.cell) > tol * grid.cell or abs(-gt[5] - grid.cell) > tol * grid.cell:
        return None
    if not srs_from_wkt(info.crs_wkt).IsSame(srs_from_wkt(grid.crs_wkt)):
        return None
    dx = (grid.left - gt[0]) / grid.cell
    dy = (gt[3] - grid.top) / grid.cell
    if abs(dx - round(dx)) > 1e-6 or abs(dy - round(dy)) > 1e-6:
        return None
    return int(round(dx)), int(round(dy))


def warped_vrt(src, grid, spec, crs_wkt, src_nodata, path):
    """``src`` warped on the fly onto ``grid`` (a modality's pixel grid) as a VRT with an alpha
    band (GDAL's nodata rule: a pixel is missing where every band is nodata)."""
    xmin, ymin, xmax, ymax = grid.bounds
    options = dict(format="VRT", outputBounds=(xmin, ymin, xmax, ymax), xRes=spec.gsd_m,
                   yRes=spec.gsd_m, dstSRS=crs_wkt, resampleAlg=spec.resampling, dstAlpha=True,
                   outputType=gdal.GDT_Float32, multithread=False)
    if src_nodata is not None:
        options["srcNodata"] = src_nodata
    try:
        return gdal.Warp("", src, **options)
    except RuntimeError as exc:
        raise InputError(f"{spec.label}: cannot reproject {path!r} ({exc}).") from exc


def read_source(src, *window):
    """``src.read(*window)``, with GDAL's read errors (a truncated or damaged file) turned into
    a message that names the layer."""
    try:
        return src.read(*window)
    except RuntimeError as exc:
        raise InputError(f"{src.spec.label}: cannot read {src.info.path!r} ({exc}). The file "
                         "may be truncated or damaged: open it in QGIS, or check it with "
                         "gdalinfo -checksum.") from exc


def band_order_note(info, spec, bands):
    if bands == list(range(1, len(bands) + 1)):
        return None
    return (f"{spec.label}: bands {', '.join(str(b) for b in bands)} of "
            f"{os.path.basename(info.path)} are read as {', '.join(spec.bands)} (from their names).")


def metres_per_unit(info):
    """Metres per unit of the input's CRS (approximate for geographic CRSs)."""
    srs = srs_from_wkt(info.crs_wkt)
    return 111320.0 if srs.IsGeographic() else (srs.GetLinearUnits() or 1.0)


def check_plausible(info, spec, cell, min_cells=4):
    """Refuse an input whose pixels are far coarser than the modality's resolution, or that
    covers fewer than ``min_cells`` x ``min_cells`` output cells of ``cell`` m (a 1 x 1 pixel
    raster gives a map that says nothing: each cell is classified from its surroundings)."""
    unit = metres_per_unit(info)
    w = int(info.width * info.pixel_size[0] * unit // cell)
    h = int(info.height * info.pixel_size[1] * unit // cell)
    if min(w, h) < min_cells:
        raise InputError(
            f"{spec.label}: {info.path!r} covers only {w} x {h} cells of {cell:g} m "
            f"({info.width} x {info.height} pixels): too small to map (at least {min_cells} x "
            f"{min_cells} cells).")
    limit = MAX_COARSER.get(modality_group(spec.modality))
    size = min(info.pixel_size) * unit
    if limit is not None and size > limit * spec.gsd_m:
        raise InputError(
            f"{spec.label}: {info.path!r} has {size:.3g} m pixels; the model reads this input at "
            f"{spec.gsd_m:g} m and accepts up to {limit * spec.gsd_m:g} m. Is this the right "
            f"layer for {spec.label}?")


# Sentinel-2 inputs whose card scales them by 1e-4 expect reflectance x 10000 (L1C or L2A).
# Reflectance 0-1 stays below about 2 even in its brightest pixels, while in any real scene
# x 10000 the brightest one percent reads hundreds or more (even over open water, in the blue
# band): the 99th percentile tells the two apart whatever share of the file is fill or sea.
# Typical pixels above REFLECTANCE_HIGH once scaled are not reflectance x 10000 at all.
REFLECTANCE_LOW, REFLECTANCE_HIGH = 0.005, 1.5
SAMPLE_WINDOWS, SAMPLE_PX = 6, 64      # a 6 x 6 lattice of 64-pixel windows on large rasters
_CHECKED = {}                          # (path, size, mtime, bands, modality) already checked


def sample_values(src, bands, nodata, whole_below=1024 * 1024):
    """Values [B, n] of the selected bands at valid pixels: the whole raster when it is small
    (decimated to at most 256 px a side), else a lattice of small windows, so that a large
    compressed file is not decompressed whole. Nodata, NaN and GDAL's mask band count as
    missing. Nothing is written beside the file."""
    w, h = src.RasterXSize, src.RasterYSize
    mask_band = src.GetRasterBand(bands[0]).GetMaskBand()
    use_mask = not (src.GetRasterBand(bands[0]).GetMaskFlags() & gdal.GMF_ALL_VALID)
    reads = []
    if w * h <= whole_below:
        scale = max(1.0, max(w, h) / 256.0)
        reads.append((0, 0, w, h, max(1, int(w / scale)), max(1, int(h / scale))))
    else:
        for i in range(SAMPLE_WINDOWS):
            for j in range(SAMPLE_WINDOWS):
                x = int((j + 0.5) * w / SAMPLE_WINDOWS) - SAMPLE_PX // 2
                y = int((i + 0.5) * h / SAMPLE_WINDOWS) - SAMPLE_PX // 2
                x, y = min(max(x, 0), w - SAMPLE_PX), min(max(y, 0), h - SAMPLE_PX)
                reads.append((x, y, SAMPLE_PX, SAMPLE_PX, SAMPLE_PX, SAMPLE_PX))
    out = []
    for x, y, rw, rh, bw, bh in reads:
        arr = src.ReadAsArray(x, y, rw, rh, buf_xsize=bw, buf_ysize=bh, band_list=bands)
        arr = np.asarray(arr, np.float64).reshape(len(bands), -1)
        valid = np.all(np.isfinite(arr), axis=0)
        if nodata is not None and not np.isnan(nodata):
            valid &= ~np.all(arr == nodata, axis=0)
        if use_mask:
            valid &= mask_band.ReadAsArray(x, y, rw, rh, buf_xsize=bw, buf_ysize=bh).ravel() > 0
        out.append(arr[:, valid])
    return np.concatenate(out, axis=1)


def check_values(src, info, spec, bands, nodata):
    """A clear InputError for an input whose values cannot be what the model reads: imagery
    holding one value in every pixel, or Sentinel-2 values far outside reflectance x 10000
    (reflectance 0-1 gives a confident, wrong map). Once per file and process (a Dask worker
    opens the same input for every block)."""
    try:
        st = os.stat(info.path)
        key = (info.path, st.st_size, st.st_mtime, tuple(bands), spec.modality)
    except OSError:
        key = None
    if key is not None and key in _CHECKED:
        return
    try:
        arr = sample_values(src, bands, nodata)
    except RuntimeError:
        return   # a damaged file: the tile reads say so with the layer's name
    _check_sample(arr, info, spec)
    if key is not None:
        _CHECKED[key] = True


def _check_sample(arr, info, spec):
    if arr.shape[1] < 16:
        return   # (almost) no data: the engine refuses a map without any, with its reason
    name = os.path.basename(info.path)
    group = modality_group(spec.modality)
    # (night light may well be 0 everywhere over a dark rural clip: only imagery is checked)
    if group in ("vhr", "s2") and np.all(arr.max(axis=1) == arr.min(axis=1)):
        raise InputError(
            f"{spec.label}: every pixel of {name} holds the same value ("
            f"{', '.join(f'{v:g}' for v in arr[:, 0])}): it carries no imagery. Is it the right "
            "layer, or is its nodata value not set?")
    if group != "s2" or not np.isclose(spec.scale, 1e-4):
        return
    bright = float(np.percentile(arr, 99))
    if bright * spec.scale + spec.offset < REFLECTANCE_LOW:
        raise InputError(
            f"{spec.label}: the brightest pixels of {name} read about {bright:.3g}; the model "
            "reads Sentinel-2 reflectance x 10000 (a typical pixel: a few hundred to a few "
            "thousand). These look like reflectance 0-1: multiply the bands by 10000 (Raster "
            "Calculator, or gdal_translate -scale 0 1 0 10000 -ot UInt16) and give that raster.")
    lit = arr[arr > 0]
    typical = float(np.median(lit)) if lit.size else 0.0
    if typical * spec.scale + spec.offset > REFLECTANCE_HIGH:
        raise InputError(
            f"{spec.label}: the values of {name} are around {typical:.3g}; the model reads "
            "Sentinel-2 reflectance x 10000 (a typical pixel: a few hundred to a few thousand, "
            "at most about 15000 even in cloud). Give top-of-atmosphere (L1C) or surface (L2A) "
            "reflectance x 10000, as ESA delivers it.")


def normalize(x, spec, own_stats=None):
    """Raw values [B, h, w] -> what the model was trained on, as the card describes."""
    if own_stats is not None:
        mean, std = own_stats
        return (x - mean) / std
    if spec.rounding == "float16":
        # some original pipelines scale in half precision: reproduce it bit for bit
        with np.errstate(over="ignore"):
            x = (x.astype(np.float16).astype(np.float32) * np.float32(spec.scale)).astype(
                np.float16).astype(np.float32) + np.float32(spec.offset)
    else:
        x = x * np.float32(spec.scale) + np.float32(spec.offset)
    if spec.transform == "log1p":
        x = np.log1p(np.maximum(x, 0.0))
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    return (x - mean) / std


def band_statistics(ds, nodata, max_side=1024):
    """Per-band mean and std [B, 1, 1] from a decimated read (no statistics are stored, so no
    .aux.xml appears beside the user's raster)."""
    scale = max(ds.RasterXSize, ds.RasterYSize) / max_side
    w = max(1, int(ds.RasterXSize / max(scale, 1)))
    h = max(1, int(ds.RasterYSize / max(scale, 1)))
    arr = ds.ReadAsArray(buf_xsize=w, buf_ysize=h).astype(np.float64).reshape(ds.RasterCount, -1)
    valid = np.all(np.isfinite(arr), axis=0)
    if nodata is not None and not np.isnan(nodata):
        valid &= np.all(arr != nodata, axis=0)
    if valid.sum() < 16:
        raise InputError("The raster has almost no valid pixels to compute statistics from.")
    arr = arr[:, valid]
    std = np.maximum(arr.std(axis=1), 1e-6)
    return (arr.mean(axis=1).astype(np.float32)[:, None, None],
            std.astype(np.float32)[:, None, None])


class ModalitySource:
    """One input raster warped onto the output extent at the modality's cell size."""

    def __init__(self, path, spec, grid):
        self.spec = spec
        self.info = inspect_raster(path, spec.label)
        if self.info.dtype.startswith("c"):
            raise InputError(f"{spec.label}: {path!r} holds complex numbers ({self.info.dtype}); "
                             "provide real-valued imagery.")
        check_plausible(self.info, spec, grid.cell)
        self.bands = select_bands(self.info, spec)
        self.grid = grid.with_cell(spec.gsd_m)
        src = gdal.Open(self.info.path, gdal.GA_ReadOnly)
        src_nodata = self.info.nodata
        if src_nodata is None and self.info.dtype in FLOAT_TYPES:
            src_nodata = float("nan")
        check_values(src, self.info, spec, self.bands, src_nodata)
        self.notes = [n for n in [band_order_note(self.info, spec, self.bands)] if n]
        # an input already on the model's pixel grid is read as it is: the same values as the
        # warped read (a 1:1 resampling returns the pixels), about three times faster
        self._direct = aligned_offset(self.info, self.grid)
        self._ds = src if self._direct is not None else None
        if self._direct is not None:
            self.notes.append(f"{spec.label} lies on the model's {spec.gsd_m:g} m pixel grid: "
                              "read without resampling.")
        # finer imagery in the output CRS is averaged in numpy (exact, about twice as fast as
        # the warper, whose time competes with onnxruntime's)
        self._area = None
        geometry = (None if self._direct is not None else
                    area_average_geometry(self.info, src, self.bands, self.grid, spec.resampling))
        if geometry is not None:
            self._area = AreaAverageReader(src, self.bands, src_nodata,
                                           (self.info.width, self.info.height), geometry)
            self.notes.append(f"{spec.label} is finer than the model's {spec.gsd_m:g} m pixels "
                              "and in the same CRS: area-averaged onto them directly.")
        self._vrt = None
        if self.bands != list(range(1, self.info.band_count + 1)):
            src = gdal.Translate("", src, format="VRT", bandList=self.bands)
        if self._area is None:   # also beside a direct read: the tests compare the two
            self._vrt = warped_vrt(src, self.grid, spec, grid.crs_wkt, src_nodata, path)
        self._src = src  # keep the band-selection VRT alive as long as the warped VRT
        self._nb = len(self.bands)
        self._nodata = src_nodata
        self._own_stats = None
        if spec.dtype == "uint8" and self.info.dtype != "uint8":
            # imagery of another bit depth (11/12/16-bit, float): the card's 8-bit statistics
            # do not apply, so each band is standardised by its own statistics instead
            self._own_stats = band_statistics(src, src_nodata)
            self.notes.append(
                f"{spec.label} is {self.info.dtype}, the model expects uint8: each band is "
                "standardised by its own mean and standard deviation (from a decimated read).")

    def read(self, grid_window):
        """(values float32 [bands, h, w] normalised with invalid = 0, valid bool [h, w])."""
        f = self.spec.gsd_m
        col = int(round((grid_window.left - self.grid.left) / f))
        row = int(round((self.grid.top - grid_window.top) / f))
        w = int(round(grid_window.width * grid_window.cell / f))
        h = int(round(grid_window.height * grid_window.cell / f))
        if self._direct is not None:
            x, valid = self._read_direct(col, row, w, h)
        elif self._area is not None:
            x, valid = self._area.read(col, row, w, h)
        else:
            arr = self._vrt.ReadAsArray(col, row, w, h)
            if arr.ndim == 2:  # a single band plus alpha always gives 3-d; guard anyway
                arr = arr[None]
            alpha = arr[self._nb]
            valid = alpha > 127.5
            x = arr[: self._nb].astype(np.float32, copy=False)
        valid &= np.all(np.isfinite(x), axis=0)
        x = normalize(x, self.spec, self._own_stats)
        x[:, ~valid] = 0.0
        return x, valid

    def _read_direct(self, col, row, w, h):
        """(values float32 [B, h, w], valid [h, w]) straight from the file; outside the raster
        is invalid, as the warped read makes it."""
        x0, y0 = col + self._direct[0], row + self._direct[1]
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + w, self.info.width), min(y0 + h, self.info.height)
        x = np.zeros((self._nb, h, w), np.float32)
        valid = np.zeros((h, w), bool)
        if cx1 <= cx0 or cy1 <= cy0:
            return x, valid
        raw = self._ds.ReadAsArray(cx0, cy0, cx1 - cx0, cy1 - cy0, band_list=self.bands)
        if raw.ndim == 2:
            raw = raw[None]
        part = raw.astype(np.float32)
        ok = np.ones(part.shape[1:], bool)
        if self._nodata is not None:
            # as GDAL's warper does: nodata is per band (that band reads 0), and a pixel is
            # nodata only where every band is
            missing = np.isnan(part) if np.isnan(self._nodata) else raw == self._nodata
            part[missing] = 0.0
            ok = ~np.all(missing, axis=0)
        sl = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        x[(slice(None),) + sl] = part
        valid[sl] = ok
        return x, valid

    def close(self):
        self._vrt = None
        self._src = None
        self._ds = None
        self._area = None


def resize_mask(valid, shape):
    """Valid fraction >= 0.5 per output cell (block mean when coarser, nearest when finer)."""
    h, w = valid.shape
    oh, ow = shape
    if (h, w) == (oh, ow):
        return valid
    if h % oh == 0 and w % ow == 0:
        fy, fx = h // oh, w // ow
        return valid.reshape(oh, fy, ow, fx).mean(axis=(1, 3)) >= 0.5
    rows = np.minimum(((np.arange(oh) + 0.5) * h / oh).astype(int), h - 1)
    cols = np.minimum(((np.arange(ow) + 0.5) * w / ow).astype(int), w - 1)
    return valid[np.ix_(rows, cols)]


class AoiMask:
    """Rasterises an area-of-interest polygon onto output windows."""

    def __init__(self, aoi, grid):
        wkt, crs = aoi
        geom = ogr.CreateGeometryFromWkt(wkt)
        src, dst = srs_from_wkt(crs), srs_from_wkt(grid.crs_wkt)
        if not src.IsSame(dst):
            geom.Transform(osr.CoordinateTransformation(src, dst))
        self._ds = ogr.GetDriverByName("Memory").CreateDataSource("aoi")
        self._layer = self._ds.CreateLayer("aoi", srs=dst, geom_type=ogr.wkbMultiPolygon)
        feat = ogr.Feature(self._layer.GetLayerDefn())
        feat.SetGeometry(geom)
        self._layer.CreateFeature(feat)

    def read(self, win):
        mem = gdal.GetDriverByName("MEM").Create("", win.width, win.height, 1, gdal.GDT_Byte)
        mem.SetGeoTransform(win.geotransform)
        mem.SetProjection(win.crs_wkt)
        gdal.RasterizeLayer(mem, [1], self._layer, burn_values=[1])
        return mem.ReadAsArray().astype(bool)

    def close(self):
        self._layer = None
        self._ds = None


class InputSet:
    """The opened inputs of one run (one source per modality) plus the optional AOI mask."""

    source_class = None  # set by subclasses: (path, InputSpec, grid) -> source

    def __init__(self, card, inputs, grid, aoi=None):
        self.card = card
        self.grid = grid
        self.sources = {}
        self.aoi = None
        unknown = sorted(set(inputs) - set(card.modalities))
        if unknown:
            raise InputError(f"Model '{card.name}' does not use {', '.join(unknown)}; it accepts "
                             f"{', '.join(card.modalities)}.")
        if len(inputs) < card.min_inputs:
            raise InputError(f"Model '{card.name}' needs at least {card.min_inputs} input(s).")
        try:
            for modality, path in inputs.items():
                self.sources[modality] = self.source_class(path, card.input_for(modality), grid)
            self.aoi = AoiMask(aoi, grid) if aoi is not None else None
        except Exception:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for src in self.sources.values():
            src.close()
        self.sources = {}
        if self.aoi is not None:
            self.aoi.close()
            self.aoi = None


class FeedReader(InputSet):
    """Builds the ONNX feed for any window of the output grid.

    Missing modalities are fed as zeros with mask 0, so one graph serves any input subset.
    """
    source_class = ModalitySource

    def read(self, col, row, ncols, nrows):
        """(feed dict with batch dim 1, valid_any bool [nrows, ncols]) for an output window."""
        win = self.grid.window(col, row, ncols, nrows)
        feed = {}
        masks = []
        for spec in self.card.inputs:
            src = self.sources.get(spec.modality)
            ratio = self.card.cells_per_input(spec)
            h, w = int(round(nrows * ratio)), int(round(ncols * ratio))
            if src is None:
                feed[spec.name] = np.zeros((1, spec.band_count, h, w), np.float32)
                masks.append(np.zeros((nrows, ncols), bool))
                continue
            x, valid = read_source(src, win)
            feed[spec.name] = x[None]
            masks.append(resize_mask(valid, (nrows, ncols)))
        mask = np.stack(masks).astype(np.float32)
        if self.aoi is not None:
            mask *= self.aoi.read(win)[None]
        if self.card.mask_input:
            feed[self.card.mask_input] = mask[None]
        return feed, mask.max(axis=0) > 0


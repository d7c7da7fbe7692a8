"""Patch classifiers: one class vector per output cell from a fixed window of input pixels.

The patch of cell (r, c) covers input pixels ``stride*r + lo .. stride*r + hi`` (rows; columns
alike) of the pixel grid that shares the output grid's origin. Pixels beyond the raster come from
symmetric padding at the raster's edges, as the original pipelines of imported models pad the
whole image. When an input already lies on that pixel grid (same CRS, pixel size and phase) it is
read directly, with no resampling at all; otherwise it is warped onto the grid on the fly.
Several inputs feeding the same ONNX input (e.g. seasons) are classified separately and their
probabilities averaged per cell over the inputs that have data there.

A model with a shared-trunk graph (card ``patch.shared_trunk``) runs its trunk once per tile
instead of once per window (``fast`` / ``accurate`` modes, :mod:`.shared_trunk`).
"""
import time

import numpy as np
from osgeo import gdal

from .errors import InputError
from .area_average import AreaAverageReader, area_average_geometry
from .feeds import (FLOAT_TYPES, InputSet, aligned_offset, band_order_note, band_statistics,
                    check_plausible, check_values, normalize, read_source, select_bands,
                    warped_vrt)
from .rasters import inspect_raster
from .shared_trunk import classify_tile, classify_windows, resolve_mode, tile_pixels

gdal.UseExceptions()


class PatchSource:
    """Raw pixels of one input on the patch pixel grid, any window, edges padded symmetrically."""

    def __init__(self, path, spec, grid):
        self.spec = spec
        self.info = inspect_raster(path, spec.label)
        if self.info.dtype.startswith("c"):
            raise InputError(f"{spec.label}: {path!r} holds complex numbers; provide real values.")
        check_plausible(self.info, spec, grid.cell)
        self.bands = select_bands(self.info, spec)
        self.grid = grid.with_cell(spec.gsd_m)
        src = gdal.Open(self.info.path, gdal.GA_ReadOnly)
        nodata = self.info.nodata
        if nodata is None and self.info.dtype in FLOAT_TYPES:
            nodata = float("nan")
        self.nodata = nodata
        check_values(src, self.info, spec, self.bands, nodata)
        self.notes = [n for n in [band_order_note(self.info, spec, self.bands)] if n]
        offset = aligned_offset(self.info, self.grid)
        geometry = (None if offset is not None else
                    area_average_geometry(self.info, src, self.bands, self.grid,
                                          spec.resampling))
        self._area = None
        if offset is not None:
            self.ds, self.offset = src, offset
            self.size = (self.info.width, self.info.height)
            self._alpha = False
            self.notes.append(f"{spec.label} lies on the model's pixel grid: read without "
                              "resampling.")
        else:
            if geometry is not None:
                # finer imagery in the output CRS: an exact area average in numpy
                self._area = AreaAverageReader(src, self.bands, nodata,
                                               (self.info.width, self.info.height), geometry)
                self.ds = None
            if self.bands != list(range(1, self.info.band_count + 1)):
                src = gdal.Translate("", src, format="VRT", bandList=self.bands)
            if geometry is None:
                self.ds = warped_vrt(src, self.grid, spec, grid.crs_wkt, nodata, path)
            self._src = src
            self.offset = (0, 0)
            self.size = (self.grid.width, self.grid.height)
            self._alpha = True
            self.notes.append(f"{spec.label} was resampled ({spec.resampling}) onto the model's "
                              f"{spec.gsd_m:g} m pixel grid"
                              + (" directly (same CRS, exact area average)."
                                 if self._area is not None else "."))
        self._own_stats = None
        if spec.dtype == "uint8" and self.info.dtype != "uint8":
            self._own_stats = band_statistics(src, nodata)
            self.notes.append(f"{spec.label} is {self.info.dtype}, the model expects uint8: each "
                              "band is standardised by its own mean and standard deviation.")

    def read(self, x0, y0, w, h):
        """(normalised values [B, h, w], valid [h, w], inside [h, w]) for a pixel window that may
        reach beyond the raster; ``inside`` is False on padded pixels."""
        W, H = self.size
        X0, Y0 = x0 + self.offset[0], y0 + self.offset[1]
        cx0, cy0 = max(X0, 0), max(Y0, 0)
        cx1, cy1 = min(X0 + w, W), min(Y0 + h, H)
        if cx1 <= cx0 or cy1 <= cy0:  # entirely outside the raster
            nb = len(self.bands)
            return (np.zeros((nb, h, w), np.float32), np.zeros((h, w), bool),
                    np.zeros((h, w), bool))
        if self._area is not None:
            raw, valid = self._area.read(cx0, cy0, cx1 - cx0, cy1 - cy0)
        elif self._alpha:
            arr = self.ds.ReadAsArray(cx0, cy0, cx1 - cx0, cy1 - cy0).astype(np.float32)
            raw, valid = arr[:-1], arr[-1] > 127.5
        else:
            raw = self.ds.ReadAsArray(cx0, cy0, cx1 - cx0, cy1 - cy0,
                                      band_list=self.bands).astype(np.float32)
            if raw.ndim == 2:
                raw = raw[None]
            valid = np.ones(raw.shape[1:], bool)
            if self.nodata is not None and not np.isnan(self.nodata):
                valid &= np.all(raw != self.nodata, axis=0)
        valid &= np.all(np.isfinite(raw), axis=0)
        x = normalize(raw, self.spec, self._own_stats)
        x[:, ~valid] = 0.0
        pads = ((cy0 - Y0, Y0 + h - cy1), (cx0 - X0, X0 + w - cx1))
        inside = np.ones(valid.shape, bool)
        if any(p for pair in pads for p in pair):
            x = np.pad(x, ((0, 0),) + pads, mode="symmetric")
            valid = np.pad(valid, pads, mode="symmetric")
            inside = np.pad(inside, pads, mode="constant", constant_values=False)
        return x, valid, inside

    def close(self):
        self.ds = None
        self._src = None
        self._area = None


class PatchReader(InputSet):
    """Reads tiles of output cells as normalised input windows; classifies their patches."""
    source_class = PatchSource

    def __init__(self, card, inputs, grid, aoi=None, mode=None):
        self.patch = card.patch
        self.patches_classified = 0   # over all inputs and tiles (reported in the timings)
        self.trunk_pixels = 0         # pixels run through the network (all views)
        self._chunk = None            # patches per inference call once a call took too long
        self.mode, self.mode_note = resolve_mode(card.patch, mode)
        self.shared = self.mode != "windows"
        # test-time views: only a shared-trunk graph has them, in the accurate and per-window
        # modes (a plain patch graph such as So2Sat's runs each window once)
        p = card.patch
        self.views = p.views if p.trunk_stride and self.mode != "fast" else ("identity",)
        super().__init__(card, inputs, grid, aoi)

    def read(self, col, row, ncols, nrows):
        """(windows: modality -> (values [B, h, w], cell valid [nrows, ncols]), valid_any).
        For a shared trunk the tile reaches on to whole trunk strides (real pixels, or padding
        beyond the raster)."""
        p = self.patch
        s = p.stride_px
        x0, y0 = col * s + p.window_lo, row * s + p.window_lo
        if self.shared:
            # one trunk stride more than the windows need: any block of cells can be cut out
            # with whole strides of real pixels (see infer)
            w = (ncols - 1) * s + p.patch_px + p.trunk_stride - 1
            h = (nrows - 1) * s + p.patch_px + p.trunk_stride - 1
        else:
            w, h = (ncols - 1) * s + p.patch_px, (nrows - 1) * s + p.patch_px
        windows = {}
        any_valid = np.zeros((nrows, ncols), bool)
        aoi = self.aoi.read(self.grid.window(col, row, ncols, nrows)) if self.aoi else None
        for modality, src in self.sources.items():
            x, valid, inside = read_source(src, x0, y0, w, h)
            # a cell is classified when any pixel of its own stride x stride block is real data:
            # its patch is then mostly real pixels (as the original pipelines classify edge cells)
            block = (valid & inside)[-p.window_lo:-p.window_lo + nrows * s,
                                     -p.window_lo:-p.window_lo + ncols * s]
            cells = block.reshape(nrows, s, ncols, s).any(axis=(1, 3))
            if aoi is not None:
                cells &= aoi
            windows[modality] = (x, cells)
            any_valid |= cells
        return windows, any_valid

    def infer(self, session, windows, nrows, ncols, chunk=256, only=None, on_chunk=None,
              chunk_seconds=0.5):
        """Class probabilities [C, nrows, ncols]: each input's patches classified, then averaged
        over the inputs that have data in the cell. ``only`` ([nrows, ncols] bool): classify
        just these cells (the others stay 0). ``on_chunk(done, of)`` is called after each chunk
        of patches (cancel checks and progress); chunks shrink so that one takes about
        ``chunk_seconds`` (a big CNN on a slow CPU must not hold cancel back for a minute)."""
        p = self.patch
        s = p.stride_px
        total = np.zeros((len(self.card.classes), nrows, ncols), np.float32)
        count = np.zeros((nrows, ncols), np.float32)
        todo = sum(int(np.count_nonzero(c if only is None else c & only))
                   for _, c in windows.values())
        done = 0
        name = self.card.output.name

        def run(feed):
            return session.run(name, feed)

        if self.shared:
            views = self.views
            for x, cells in windows.values():
                use = cells if only is None else cells & only
                n = int(np.count_nonzero(use))
                if n == 0:
                    continue

                def on_view(k, of, done=done, n=n):
                    if on_chunk:
                        on_chunk(done + n * k // of, todo)
                # only the block of cells to classify goes through the trunk (the last tile of a
                # row or column overlaps the one before it)
                rows, cols = np.flatnonzero(use.any(axis=1)), np.flatnonzero(use.any(axis=0))
                r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
                probs = classify_tile(run, p, x[:, r0 * s:, c0 * s:], r1 - r0, c1 - c0, views,
                                      on_view)
                self.patches_classified += n
                self.trunk_pixels += len(views) * (
                    tile_pixels(r1 - r0, s, p.patch_px, p.trunk_stride) *
                    tile_pixels(c1 - c0, s, p.patch_px, p.trunk_stride))
                done += n
                total[:, r0:r1, c0:c1] += np.where(use[r0:r1, c0:c1], probs, 0.0)
                count += use
            return total / np.maximum(count, 1)
        size = min(chunk, self._chunk or 16)  # start small: the first call is timed
        for x, cells in windows.values():
            idx = np.flatnonzero(cells if only is None else cells & only)
            if idx.size == 0:
                continue
            self.patches_classified += int(idx.size)
            view = np.lib.stride_tricks.sliding_window_view(x, (p.patch_px, p.patch_px),
                                                           axis=(1, 2))[:, ::s, ::s]
            rr, cc = np.unravel_index(idx, cells.shape)
            probs = np.empty((idx.size, len(self.card.classes)), np.float32)
            k = 0
            while k < idx.size:
                sl = slice(k, k + size)
                batch = np.ascontiguousarray(view[:, rr[sl], cc[sl]].transpose(1, 0, 2, 3))
                t = time.perf_counter()
                if p.trunk_stride:   # the shared-trunk graph, one window at a time
                    probs[sl] = classify_windows(run, p, batch, self.views)
                else:
                    probs[sl] = run({p.input: batch})
                self.trunk_pixels += batch.size // batch.shape[1] * (
                    len(p.views) if p.trunk_stride else 1)
                took = time.perf_counter() - t
                n = batch.shape[0]
                k += n
                done += n
                # about chunk_seconds per call, between 8 and ``chunk`` patches (kept for the
                # next tiles)
                size = self._chunk = int(min(chunk, max(8, n * chunk_seconds / max(took, 1e-3))))
                if on_chunk:
                    on_chunk(done, todo)
            total[:, rr, cc] += probs.T
            count[rr, cc] += 1
        return total / np.maximum(count, 1)

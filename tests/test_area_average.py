"""Finer imagery in the output CRS is area-averaged in numpy (issue 14: reading competes with
onnxruntime on a few cores): the same values as GDAL's warped VRT wherever an output pixel lies
inside the raster, a band's nodata never averaged into its neighbours, and GDAL's warper still
used wherever the fast path would not be its equal."""
import os

import numpy as np
import pytest
from osgeo import gdal

from plugin.core.area_average import AreaAverageReader, area_average_geometry
from plugin.core.engine import ClassifyRequest, run_classification
from plugin.core.feeds import ModalitySource, warped_vrt
from plugin.core.grid import plan_grid
from plugin.core.model_card import read_card
from plugin.core.rasters import inspect_raster
from rasters_factory import X0, Y0, write_raster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "sample_city_fusion.onnx")
SCENES = os.path.join(ROOT, "models", "vhr_scenes_resnet.onnx")


class Grid:
    """A north-up pixel grid (what the readers need of the engine's grid)."""

    def __init__(self, left, top, cell, width, height, crs_wkt):
        self.left, self.top, self.cell = left, top, cell
        self.width, self.height, self.crs_wkt = width, height, crs_wkt

    @property
    def bounds(self):
        return (self.left, self.top - self.height * self.cell,
                self.left + self.width * self.cell, self.top)


class Spec:
    def __init__(self, cell):
        self.gsd_m, self.resampling, self.label = cell, "average", "test"


def _raster(path, px, dtype, nodata, seed, holes):
    rng = np.random.default_rng(seed)
    arr = rng.integers(1, 250, (3, 131, 157)).astype(np.float64)
    if holes:
        fill = np.nan if nodata is None else nodata
        arr[:, 10:40, 5:60] = fill                      # every band
        arr[:, rng.random(arr.shape[1:]) < 0.15] = fill  # scattered, all bands at once
    return write_raster(path, arr, 32633, (X0, px, 0, Y0, 0, -px), dtype, nodata)


CASES = {  # source pixel, output cell, type, nodata, holes, grid shift (m)
    "vhr 0.8 m to 2 m, nodata 0": (0.8, 2.0, gdal.GDT_Byte, 0, True, (0.0, 0.0)),
    "vhr 0.8 m to 2 m, shifted": (0.8, 2.0, gdal.GDT_Byte, None, False, (0.3, -0.7)),
    "vhr 0.8 m to 1 m, nodata 0": (0.8, 1.0, gdal.GDT_Byte, 0, True, (1.1, 0.45)),
    "0.3 m to 1 m": (0.3, 1.0, gdal.GDT_Byte, None, False, (0.0, 0.0)),
    "uint16 1 m to 3 m": (1.0, 3.0, gdal.GDT_UInt16, 0, True, (0.5, 0.5)),
    "float, NaN, same size, half a pixel off": (1.0, 1.0, gdal.GDT_Float32, None, True,
                                                (0.25, 0.75)),
    "float -9999, 0.5 m to 2 m": (0.5, 2.0, gdal.GDT_Float32, -9999.0, True, (-3.3, 2.2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_area_average_equals_the_warped_read_inside_the_raster(case, tmp_path):
    px, cell, dtype, nodata, holes, shift = CASES[case]
    path = _raster(tmp_path / "in.tif", px, dtype, nodata, sorted(CASES).index(case), holes)
    info = inspect_raster(path)
    nd = nodata if nodata is not None else (np.nan if dtype == gdal.GDT_Float32 else None)
    # a grid reaching two cells beyond the raster on every side
    width, height = int(157 * px / cell) + 4, int(131 * px / cell) + 4
    grid = Grid(X0 + shift[0] - 2 * cell, Y0 + shift[1] + 2 * cell, cell, width, height,
                info.crs_wkt)
    ds = gdal.Open(path)
    geometry = area_average_geometry(info, ds, [1, 2, 3], grid, "average")
    assert geometry is not None
    fast = AreaAverageReader(ds, [1, 2, 3], nd, (info.width, info.height), geometry)
    vrt = warped_vrt(ds, grid, Spec(cell), grid.crs_wkt, nd, path)
    sx, sy, ox, oy = geometry
    for col, row, w, h in ((0, 0, width, height), (3, 5, 17, 23), (width - 10, height - 7, 10, 7)):
        ref = vrt.ReadAsArray(col, row, w, h)
        out, valid = fast.read(col, row, w, h)
        ref_valid = ref[3] > 127.5
        # output pixels wholly inside the raster: the warper's values, to float rounding
        cx = ox + (col + np.arange(w)) * sx
        cy = oy + (row + np.arange(h)) * sy
        inner = (((cy >= 0) & (cy + sy <= info.height))[:, None]
                 & ((cx >= 0) & (cx + sx <= info.width))[None, :])
        assert inner.sum() > 0.5 * inner.size or (w, h) != (width, height)
        assert np.array_equal(valid[inner], ref_valid[inner]), (case, col, row)
        both = inner & valid
        assert np.allclose(out[:, both], ref[:3, both], rtol=1e-5, atol=1e-3), (case, col, row)
        # elsewhere only the pixels that straddle the border (or touch it from outside) differ
        ring = ~inner & ~(((cy + sy <= -sy) | (cy >= info.height + sy))[:, None]
                          | ((cx + sx <= -sx) | (cx >= info.width + sx))[None, :])
        differs = (valid != ref_valid) | (valid & ~np.isclose(out, ref[:3], rtol=1e-5,
                                                              atol=1e-3).all(axis=0))
        assert not (differs & ~ring).any(), (case, col, row)
        # far outside the raster nothing is valid
        assert not valid[~inner & ~ring].any()


def _float_reader(path, arr, px, cells):
    """A float32 raster (nodata -9999) of ``px`` m pixels and the fast reader of its 2 m grid
    of ``cells`` x ``cells``: (path, dataset, grid, reader)."""
    path = write_raster(path, arr, 32633, (X0, px, 0, Y0, 0, -px), gdal.GDT_Float32, -9999.0)
    info = inspect_raster(path)
    grid = Grid(X0, Y0, 2.0, cells, cells, info.crs_wkt)
    ds = gdal.Open(path)
    reader = AreaAverageReader(ds, [1, 2, 3], -9999.0, (info.width, info.height),
                               area_average_geometry(info, ds, [1, 2, 3], grid, "average"))
    return path, ds, grid, reader


def test_a_bands_nodata_is_never_averaged_into_its_neighbours(tmp_path):
    """One band nodata (-9999) where the others have data: GDAL's warper averages -9999 into
    that band's values there (its rule for inputs it reprojects); the fast path leaves it out."""
    arr = np.full((3, 60, 60), 100.0)
    arr[0, 10:20, 10:20] = -9999.0
    arr[0, 12, 12] = 50.0                       # one valid pixel among them
    arr[:, 40:50, 40:50] = -9999.0              # every band: no data at all
    path, ds, grid, fast = _float_reader(tmp_path / "f.tif", arr, 0.5, 15)
    out, valid = fast.read(0, 0, 15, 15)
    assert out.min() >= 0.0                       # no -9999 mixed in anywhere
    assert out[0, 3, 3] == pytest.approx(50.0)    # the one valid pixel of band 1
    assert out[0, 4, 4] == 0.0 and out[1, 4, 4] == pytest.approx(100.0)
    assert valid[4, 4] and not valid[11, 11]      # data in some band / in none
    warped = warped_vrt(ds, grid, Spec(2.0), grid.crs_wkt, -9999.0, path).ReadAsArray()
    assert warped[0, 3, 3] < 0                    # GDAL's rule, for the record
    assert np.array_equal(warped[3] > 127.5, valid)


def test_a_stray_nan_spoils_no_other_cell_and_fine_imagery_reads_in_small_blocks(tmp_path):
    """A NaN pixel beside a finite nodata value is missing data, not a NaN spread over the
    block's banded products; very fine imagery (0.05 m on a 2 m grid) is read in blocks small
    enough to bound memory, with the same values as GDAL's warper inside the raster."""
    arr = np.full((3, 400, 400), 100.0, np.float32)
    arr[:, 200, 200] = np.nan
    arr[1, 10:30, 10:30] = 50.0
    path, ds, grid, reader = _float_reader(tmp_path / "nan.tif", arr, 0.05, 10)
    assert reader.block * 40 <= AreaAverageReader.MAX_SOURCE_SIDE
    out, valid = reader.read(0, 0, 10, 10)
    assert valid.all() and np.isfinite(out).all()
    assert out[0, 5, 5] == pytest.approx(100.0)            # the NaN's cell: the others' mean
    ref = warped_vrt(ds, grid, Spec(2.0), grid.crs_wkt, -9999.0, path).ReadAsArray()
    ok = np.isfinite(ref[:3]).all(axis=0)
    assert ok.sum() == 99                                  # GDAL: only that cell spoilt
    assert np.allclose(out[:, ok], ref[:3, ok], rtol=1e-5, atol=1e-3)


def test_the_fast_path_is_taken_only_where_it_is_exact(tmp_path):
    arr = np.full((3, 50, 50), 7, np.uint8)
    finer = write_raster(tmp_path / "a.tif", arr, 32633, (X0, 0.8, 0, Y0, 0, -0.8),
                         gdal.GDT_Byte, 0)
    info = inspect_raster(finer)
    ds = gdal.Open(finer)
    grid = Grid(X0, Y0, 2.0, 20, 20, info.crs_wkt)
    assert area_average_geometry(info, ds, [1, 2, 3], grid, "average") is not None
    assert area_average_geometry(info, ds, [1, 2, 3], grid, "bilinear") is None
    coarse = Grid(X0, Y0, 0.5, 80, 80, info.crs_wkt)                   # upsampling
    assert area_average_geometry(info, ds, [1, 2, 3], coarse, "average") is None
    other = write_raster(tmp_path / "b.tif", arr, 25833, (X0, 0.8, 0, Y0, 0, -0.8),
                         gdal.GDT_Byte, 0)                            # another CRS
    assert area_average_geometry(inspect_raster(other), gdal.Open(other), [1, 2, 3], grid,
                                 "average") is None
    rgba = write_raster(tmp_path / "c.tif", np.full((4, 50, 50), 9, np.uint8), 32633,
                        (X0, 0.8, 0, Y0, 0, -0.8), gdal.GDT_Byte)
    d = gdal.Open(rgba, gdal.GA_Update)
    d.GetRasterBand(4).SetColorInterpretation(gdal.GCI_AlphaBand)
    d = None
    assert area_average_geometry(inspect_raster(rgba), gdal.Open(rgba), [1, 2, 3], grid,
                                 "average") is None                  # an alpha band: GDAL


def test_classify_maps_finer_imagery_through_the_fast_path(tmp_path, monkeypatch):
    """The engine takes the fast path for VHR in the output CRS (the log says so), and its map
    is the warper's map except near the raster's border."""
    rng = np.random.default_rng(5)
    vhr = rng.integers(1, 255, (3, 625, 625)).astype(np.uint8)
    vhr[:, 200:260, 300:420] = 0
    path = write_raster(tmp_path / "vhr.tif", vhr, 32633, (X0, 0.8, 0, Y0, 0, -0.8),
                        gdal.GDT_Byte, 0)
    card = read_card(MODEL)
    spec = next(s for s in card.inputs if s.modality == "vhr")
    src = ModalitySource(path, spec, plan_grid(card, {"vhr": path}))
    try:
        assert src._area is not None and src._vrt is None
        assert any("area-averaged" in n for n in src.notes)     # the log says so
    finally:
        src.close()
    maps = {}
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr("plugin.core.feeds.area_average_geometry", lambda *a: None)
            monkeypatch.setattr("plugin.core.patches.area_average_geometry", lambda *a: None)
        for name, model in (("fusion", MODEL), ("scenes", SCENES)):
            out = str(tmp_path / f"{name}_{fast}.tif")
            run_classification(ClassifyRequest({"vhr": path}, model, out, tile_size=64))
            maps[name, fast] = gdal.Open(out).ReadAsArray()
    for name in ("fusion", "scenes"):
        same = (maps[name, True] == maps[name, False]).mean()
        assert same > 0.97, (name, same)

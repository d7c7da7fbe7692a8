"""Inputs already on the model's pixel grid are read directly (issue: speed): the same values,
bit for bit, as the warped read, at edges, across nodata and past the raster's end."""
import os

import numpy as np
import pytest
from osgeo import gdal

from plugin.core import feeds
from plugin.core.engine import ClassifyRequest, run_classification
from plugin.core.feeds import ModalitySource
from plugin.core.grid import plan_grid
from plugin.core.model_card import read_card
from rasters_factory import X0, Y0, write_raster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "sample_city_fusion.onnx")


@pytest.fixture(scope="module")
def s2_with_nodata(tmp_path_factory):
    """A 10 m uint16 stack on whole 10 m metres, nodata 0: whole pixels and single bands."""
    rng = np.random.default_rng(3)
    arr = rng.integers(200, 4000, (10, 130, 170)).astype(np.uint16)
    arr[:, 20:30, 40:60] = 0          # every band nodata
    arr[3, 50:55, 10:30] = 0          # one band nodata
    path = write_raster(tmp_path_factory.mktemp("s2") / "s2.tif", arr, 32633,
                        (X0, 10, 0, Y0, 0, -10), gdal.GDT_UInt16, 0)
    return path


def test_direct_read_equals_the_warped_read(s2_with_nodata):
    card = read_card(MODEL)
    spec = next(s for s in card.inputs if s.modality == "s2_summer")
    grid = plan_grid(card, {"s2_summer": s2_with_nodata})
    src = ModalitySource(s2_with_nodata, spec, grid)
    try:
        assert src._direct is not None
        assert any("read without resampling" in n for n in src.notes)
        for col, row, w, h in ((0, 0, 64, 64), (100, 60, 64, 64), (108, 68, 64, 64),
                               (30, 15, 40, 30), (140, 100, 32, 32)):
            win = grid.window(col, row, w, h)
            direct = src.read(win)
            offset, src._direct = src._direct, None
            warped = src.read(win)
            src._direct = offset
            assert np.array_equal(direct[1], warped[1]), (col, row)
            assert np.array_equal(direct[0], warped[0]), (col, row)
    finally:
        src.close()


def test_a_map_from_an_aligned_input_is_unchanged(s2_with_nodata, tmp_path, monkeypatch):
    out = {}
    for direct in (True, False):
        if not direct:
            monkeypatch.setattr(feeds, "aligned_offset", lambda info, grid: None)
        path = str(tmp_path / f"map_{direct}.tif")
        res = run_classification(ClassifyRequest({"s2_summer": s2_with_nodata}, MODEL, path,
                                                 tile_size=48, probabilities=True))
        assert any("read without resampling" in m for m in res.messages) == direct
        ds = gdal.Open(res.extra_outputs["probabilities"])
        out[direct] = (gdal.Open(path).ReadAsArray(), ds.ReadAsArray())
    assert np.array_equal(out[True][0], out[False][0])
    assert np.array_equal(out[True][1], out[False][1], equal_nan=True)

"""Inference modes of segmentation models: the accurate mode averages test-time views of each
tile (the bundled fusion model, real GDAL rasters, real onnxruntime)."""
import json
import os

import numpy as np
import pytest
from osgeo import gdal

from plugin.core.engine import ClassifyRequest, run_classification
from plugin.core.errors import InputError
from plugin.core.inference_modes import VIEWS, apply_view, segmentation_views
from plugin.core.model_card import read_card
from plugin.samplecity import generate_sample_city

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "sample_city_fusion.onnx")
# the fusion network with other graph outputs than the class probabilities (built-up fraction)
URBAN_FUSION = os.path.join(ROOT, "models", "urban_fusion.onnx")


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return generate_sample_city(str(tmp_path_factory.mktemp("city_views")), seed=5,
                                size_m=640.0)


def _seen(src, name, out):
    """A copy of the raster ``src`` whose pixels are seen through the view ``name``, on the
    same georeferencing (a square raster keeps its extent when transposed)."""
    ds = gdal.Open(src)
    a = ds.ReadAsArray()
    a = np.ascontiguousarray(apply_view(a if a.ndim == 3 else a[None], name))
    dst = gdal.GetDriverByName("GTiff").Create(out, a.shape[2], a.shape[1], a.shape[0],
                                               ds.GetRasterBand(1).DataType)
    dst.SetGeoTransform(ds.GetGeoTransform())
    dst.SetProjection(ds.GetProjection())
    for b in range(a.shape[0]):
        dst.GetRasterBand(b + 1).WriteArray(a[b])
        nodata = ds.GetRasterBand(b + 1).GetNoDataValue()
        if nodata is not None:
            dst.GetRasterBand(b + 1).SetNoDataValue(nodata)
    dst = None
    return out


def _probs(path):
    return gdal.Open(path).ReadAsArray().astype(np.float64)


def test_accurate_mode_averages_the_four_views_of_each_tile(city, tmp_path):
    """One tile over the whole (square) grid: the accurate map's probabilities are the average
    of the fast maps of the inputs flipped and transposed, each turned back."""
    inputs = {m: city.inputs[m] for m in ("s2_summer", "s2_winter")}   # the grid's own CRS
    ds = gdal.Open(inputs["s2_summer"])
    assert ds.RasterXSize == ds.RasterYSize, "a square city: the transpose keeps the extent"
    ds = None
    kw = dict(tile_size=512, overlap=0, probabilities=True)
    acc = run_classification(ClassifyRequest(inputs, URBAN_FUSION, str(tmp_path / "acc.tif"),
                                             inference_mode="accurate", **kw))
    assert acc.inference_mode == "accurate"
    assert acc.grid.width == acc.grid.height <= 512, "one tile covers the grid"
    assert ("Inference mode: accurate (test-time views: flips and transpose, averaged). "
            "Views: identity, flip_x, flip_y, transpose.") in acc.messages
    with open(acc.manifest_path, encoding="utf-8") as f:
        tiling = json.load(f)["tiling"]
    assert tiling["inference_mode"] == "accurate" and tiling["views"] == list(VIEWS)
    views, built = [], []
    for name in VIEWS:
        seen = {m: _seen(p, name, str(tmp_path / f"{m}_{name}.tif")) for m, p in inputs.items()}
        res = run_classification(ClassifyRequest(seen, URBAN_FUSION,
                                                 str(tmp_path / f"{name}.tif"),
                                                 inference_mode="fast", **kw))
        assert res.inference_mode == "fast"
        views.append(apply_view(_probs(res.extra_outputs["probabilities"]), name))
        built.append(apply_view(_probs(res.extra_outputs["built_up"]), name))
    expected = np.mean(views, axis=0)
    got = _probs(acc.extra_outputs["probabilities"])
    valid = np.isfinite(got).all(axis=0)
    assert valid.mean() > 0.9
    assert np.abs(got - expected)[:, valid].max() < 1e-4
    # the network's other outputs (the built-up fraction) are averaged over the same views
    assert np.abs(_probs(acc.extra_outputs["built_up"]) - np.mean(built, axis=0))[valid].max() \
        < 1e-3
    # and the views do see different things: one view alone is not the average
    assert np.abs(views[0] - expected)[:, valid].max() > 1e-3
    # the default of the bundled model is one view, the map of the identity run
    default = run_classification(ClassifyRequest(inputs, URBAN_FUSION, str(tmp_path / "d.tif"),
                                                 **kw))
    assert default.inference_mode == "fast" and "Inference mode: fast (one view)." in \
        default.messages
    assert np.allclose(_probs(default.extra_outputs["probabilities"])[:, valid],
                       views[0][:, valid], atol=1e-6)


def test_each_view_is_its_own_inverse():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    for name in VIEWS:
        assert np.array_equal(apply_view(apply_view(x, name), name), x)
    assert apply_view(x, "transpose").shape == (2, 3, 5, 4)
    assert np.array_equal(apply_view(x, "flip_x")[..., 0], x[..., -1])
    assert np.array_equal(apply_view(x, "flip_y")[..., 0, :], x[..., -1, :])


def test_tiles_that_are_not_square_are_transposed_too(city, tmp_path):
    """A grid of 64 x 40 cells in one tile: the transposed view goes through the graph as a
    40 x 64 tile and is turned back onto the map (a misplaced view would scramble it)."""
    inputs = {m: city.inputs[m] for m in ("s2_summer", "s2_winter")}
    ds = gdal.Open(inputs["s2_summer"])
    x0, cell, _, y0, _, _ = ds.GetGeoTransform()
    extent = (x0, y0 - 40 * 10.0, x0 + 64 * 10.0, y0, ds.GetProjection())
    ds = None
    runs = {m: run_classification(ClassifyRequest(inputs, MODEL, str(tmp_path / f"{m}.tif"),
                                                  extent=extent, tile_size=512, overlap=0,
                                                  inference_mode=m))
            for m in ("fast", "accurate")}
    assert (runs["fast"].grid.width, runs["fast"].grid.height) == (64, 40)
    assert any("Views: identity, flip_x, flip_y, transpose." in m
               for m in runs["accurate"].messages)
    a, b = (gdal.Open(runs[m].output_path).ReadAsArray() for m in ("fast", "accurate"))
    valid = a > 0
    agree = (a[valid] == b[valid]).mean()
    assert 0.85 <= agree < 1.0, agree


def test_tiled_accurate_mode_matches_one_tile(city, tmp_path):
    """Views are taken tile by tile and blended like one view: small overlapping tiles give
    nearly the map of one tile."""
    inputs = {m: city.inputs[m] for m in ("s2_summer", "s2_winter")}
    one = run_classification(ClassifyRequest(inputs, MODEL, str(tmp_path / "one.tif"),
                                             tile_size=512, overlap=0,
                                             inference_mode="accurate"))
    tiled = run_classification(ClassifyRequest(inputs, MODEL, str(tmp_path / "tiled.tif"),
                                               tile_size=32, overlap=16,
                                               inference_mode="accurate"))
    a = gdal.Open(one.output_path).ReadAsArray()
    b = gdal.Open(tiled.output_path).ReadAsArray()
    valid = a > 0
    assert (a[valid] == b[valid]).mean() >= 0.97


def test_mode_choice_for_a_segmentation_card():
    output = read_card(MODEL).output
    assert output.default_mode == "fast" and output.test_time_views == VIEWS
    assert segmentation_views(output, None) == ("fast", ("identity",), None)
    assert segmentation_views(output, "accurate") == ("accurate", VIEWS, None)
    # 'windows' belongs to patch classifiers: said, and the closest mode is used
    mode, views, note = segmentation_views(output, "windows")
    assert mode == "accurate" and views == VIEWS and "patch classifiers only" in note
    with pytest.raises(InputError, match="Unknown inference mode 'quick'"):
        segmentation_views(output, "quick")

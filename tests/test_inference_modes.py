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
    acc = run_classification(ClassifyRequest(inputs, MODEL, str(tmp_path / "acc.tif"),
                                             inference_mode="accurate", **kw))
    assert acc.inference_mode == "accurate"
    assert acc.grid.width == acc.grid.height <= 512, "one tile covers the grid"
    assert ("Inference mode: accurate (test-time views: flips and transpose, averaged). "
            "Views: identity, flip_x, flip_y, transpose.") in acc.messages
    with open(acc.manifest_path, encoding="utf-8") as f:
        assert json.load(f)["tiling"]["inference_mode"] == "accurate"
    views = []
    for name in VIEWS:
        seen = {m: _seen(p, name, str(tmp_path / f"{m}_{name}.tif")) for m, p in inputs.items()}
        res = run_classification(ClassifyRequest(seen, MODEL, str(tmp_path / f"{name}.tif"),
                                                 inference_mode="fast", **kw))
        assert res.inference_mode == "fast"
        views.append(apply_view(_probs(res.extra_outputs["probabilities"]), name))
    expected = np.mean(views, axis=0)
    got = _probs(acc.extra_outputs["probabilities"])
    valid = np.isfinite(got).all(axis=0)
    assert valid.mean() > 0.9
    assert np.abs(got - expected)[:, valid].max() < 1e-4
    # and the views do see different things: one view alone is not the average
    assert np.abs(views[0] - expected)[:, valid].max() > 1e-3
    # the default of the bundled model is one view, the map of the identity run
    default = run_classification(ClassifyRequest(inputs, MODEL, str(tmp_path / "d.tif"), **kw))
    assert default.inference_mode == "fast" and "Inference mode: fast (one view)." in \
        default.messages
    assert np.allclose(_probs(default.extra_outputs["probabilities"])[:, valid],
                       views[0][:, valid], atol=1e-6)


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
    assert segmentation_views(output, None, 64, 64) == ("fast", ("identity",), None)
    assert segmentation_views(output, "accurate", 64, 64) == ("accurate", VIEWS, None)
    # tiles that are not square cannot be transposed in place: said, and left out
    mode, views, note = segmentation_views(output, "accurate", 40, 64)
    assert views == ("identity", "flip_x", "flip_y") and "not square" in note
    # 'windows' belongs to patch classifiers: said, and the closest mode is used
    mode, views, note = segmentation_views(output, "windows", 64, 64)
    assert mode == "accurate" and views == VIEWS and "patch classifiers only" in note
    with pytest.raises(InputError, match="Unknown inference mode 'quick'"):
        segmentation_views(output, "quick", 64, 64)
